"""SIGINT and SIGTERM stop a real build at any moment: exit 130/143 with one line, no staging directory,
the earlier build untouched. Each case waits for a stage's line in the output, then a delay, then signals."""

import hashlib
import os
import select
import signal
import subprocess
import sys
import time

import pytest

from edgesparse.builddir import artifact_matches_report, load_report

pytestmark = [pytest.mark.slow, pytest.mark.tensorflow]

# (stage line in the output, delay after it in seconds, signal). The first build of a session trains the
# dense demo model (the "training" line), later ones load it from the cache the fixture shares.
CASES = [
    ("Loading model and data", 0.0, signal.SIGINT),
    ("training the dense demo model", 1.0, signal.SIGTERM),
    ("Pruning and fine-tuning", 0.5, signal.SIGTERM),
    ("fine-tuning with UpdatePruningStep", 1.5, signal.SIGINT),
    ("Converting to TFLite", 0.0, signal.SIGINT),
    ("Converting to TFLite", 0.8, signal.SIGTERM),
    ("Running the artifact", 0.0, signal.SIGTERM),
    ("Running the artifact", 0.3, signal.SIGINT),
    ("Checking against the", 0.0, signal.SIGINT),
    ("Writing", 0.0, signal.SIGTERM),
]


def _tree_digest(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def earlier_build(tmp_path_factory):
    """A real earlier build the interrupted builds must never touch; its dense-model cache is shared."""
    root = tmp_path_factory.mktemp("signals")
    env = dict(os.environ, EDGESPARSE_CACHE=str(root / "cache"), PYTHONUNBUFFERED="1", COLUMNS="200")
    out = root / "build"
    proc = subprocess.run([sys.executable, "-m", "edgesparse", "build", "--profile", "rpi4", "--epochs", "3",
                           "--max-accuracy-drop", "50", "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return root, out, env


def _wait_for(proc, marker, deadline):
    """Read the output until a line contains `marker` (stage lines arrive as they happen in a pipe)."""
    seen = ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            seen += line
            if marker in line:
                return seen
        elif proc.poll() is not None:
            break
    return None


@pytest.mark.parametrize(("marker", "delay", "signum"), CASES,
                         ids=[f"{m.split()[0].lower()}+{d}s-{s.name}" for m, d, s in CASES])
def test_a_signal_at_any_stage_keeps_the_earlier_build(earlier_build, marker, delay, signum, tmp_path):
    root, out, env = earlier_build
    if marker == "training the dense demo model":
        env = dict(env, EDGESPARSE_CACHE=str(tmp_path / "fresh-cache"))  # make this build train the dense model
    before = _tree_digest(out)
    proc = subprocess.Popen([sys.executable, "-m", "edgesparse", "build", "--profile", "rpi4", "--epochs", "3",
                             "--out", str(out), "--force"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1)
    try:
        seen = _wait_for(proc, marker, time.monotonic() + 300)
        assert seen is not None, f"never saw {marker!r}"
        time.sleep(delay)
        finished_first = proc.poll() is not None
        if not finished_first:
            proc.send_signal(signum)
        rest, _ = proc.communicate(timeout=120)
        output = seen + rest
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not [p.name for p in root.iterdir() if ".staging-" in p.name or ".old-" in p.name]
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")]
    if _tree_digest(out) != before:
        # Only a build that was already publishing may have replaced the earlier one, and then whole.
        assert marker == "Writing", (proc.returncode, output[-2000:])
        assert artifact_matches_report(load_report(out), (out / "model.tflite").read_bytes())
        return
    assert not finished_first, "the build finished before the signal and did not publish"
    assert proc.returncode == 128 + signum, output[-3000:]
    assert "Traceback" not in output
    assert "interrupted" in output.lower() and signum.name in output

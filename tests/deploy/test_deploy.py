"""`edgesparse deploy`: bundles, and a real push over ssh to a throwaway sshd on 127.0.0.1.

The build directories here are made by conftest's `make_build_dir` (model.tflite,
report.json, sample.npz and labels.txt in the shape `edgesparse build` writes)
from tiny int8 models built in the test session: a DS-CNN-like keyword spotter
(1, 49, 10, 1) -> 12 and a digits-like CNN (1, 8, 8, 1) -> 10.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support.builds import KWS_LABELS, make_build_dir

from edgesparse.builddir import SAMPLE
from edgesparse.data import audio
from edgesparse.deploy import MANIFEST, make_bundle
from edgesparse.errors import OutputExistsError
from edgesparse.runtime import verify
from edgesparse.tflite import edit as tflite_edit
from edgesparse.tflite.graph import io_quantization, op_types

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- a throwaway sshd

SSHD = shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)
needs_sshd = pytest.mark.skipif(SSHD is None or shutil.which("ssh") is None or os.geteuid() != 0,
                                reason="needs Debian's openssh-server and openssh-client, run as root "
                                       "(make system-deps installs them)")


def _device_python() -> str:
    """The interpreter the 'device' makes its venv with: Debian's python3 (as on Raspberry Pi OS) when it
    can (python3-venv), else the base interpreter of this test run."""
    probe = subprocess.run(["/usr/bin/python3", "-c", "import ensurepip, venv"], capture_output=True)
    if probe.returncode == 0:
        return "/usr/bin/python3"
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edgesparse-test", "-f", str(path)],
                   check=True, capture_output=True)
    return path


class Sshd:
    """sshd -D on 127.0.0.1:<free port> with a throwaway host key and authorized_keys in tmp."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.host_key = _keygen(root / "ssh_host_ed25519_key")
        self.user_key = _keygen(root / "id_user")
        self.stranger_key = _keygen(root / "id_stranger")            # never authorized
        (root / "authorized_keys").write_text((root / "id_user.pub").read_text())
        self.config = root / "sshd_config"
        self.config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
            f"PidFile {root / 'sshd.pid'}", f"AuthorizedKeysFile {root / 'authorized_keys'}",
            "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password",
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
            "AllowTcpForwarding no", "X11Forwarding no", "PrintMotd no", "LogLevel ERROR", ""]))
        Path("/run/sshd").mkdir(exist_ok=True)                       # privilege separation directory
        self.log = open(root / "sshd.log", "wb")  # noqa: SIM115 - sshd writes it until stop() closes it
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("sshd exited: " + (root / "sshd.log").read_text())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError("sshd did not start listening")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()


def _cli(*args: str) -> subprocess.CompletedProcess:
    # A clean environment, less anything that looks like a secret, so the output check below means something.
    env = {k: v for k, v in os.environ.items() if not any(s in k.upper() for s in ("TOKEN", "SECRET", "KEY", "PASS"))}
    return subprocess.run([sys.executable, "-m", "edgesparse", "deploy", *args], capture_output=True, text=True,
                          env={**env, "COLUMNS": "200"}, timeout=1200)


def _assert_no_secrets(sshd: Sshd, text: str) -> None:
    for key in (sshd.user_key, sshd.stranger_key, sshd.host_key):
        body = key.read_text().splitlines()[1]
        assert body not in text
    assert "PRIVATE KEY" not in text
    assert "PATH=" not in text and "HOME=" not in text       # no environment dumps


# ----------------------------------------------------------------------------- remote tests

@needs_sshd
def test_kws_bundle_runs_remotely_in_a_fresh_tflite_runtime_venv(sshd, kws_build, tmp_path):
    """Deploy over ssh; the host's venv holds only tflite-runtime 2.14 + numpy<2, like a Pi image."""
    build, wav = kws_build
    remote_dir = tmp_path / "device" / "edgesparse-kws"
    out = tmp_path / "bundle"
    proc = _cli(str(build), "--target", "rpi", "--sample", str(wav), "--out", str(out),
                "--host", f"root@127.0.0.1:{remote_dir}", "--port", str(sshd.port),
                "--identity", str(sshd.user_key), "--runtime", "tflite-runtime", "--remote-python", _device_python(),
                "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_no_secrets(sshd, proc.stdout + proc.stderr)
    document = json.loads(proc.stdout)
    remote = document["remote"]
    assert remote["matches_local"] is True
    assert remote["result"]["runtime"].startswith("tflite_runtime 2.14.0")
    assert remote["result"]["latency_ms"] > 0

    # The fresh venv holds the runtime and numpy<2 and nothing of TensorFlow.
    venv_python = remote_dir / "venv" / "bin" / "python"
    listing = subprocess.run([str(venv_python), "-m", "pip", "list", "--format=json"], capture_output=True,
                             text=True, check=True).stdout
    installed = {p["name"].lower(): p["version"] for p in json.loads(listing)}
    assert installed["tflite-runtime"] == "2.14.0"
    assert int(installed["numpy"].split(".")[0]) < 2
    assert not any(name.startswith(("tensorflow", "ai-edge-litert", "tf-keras")) for name in installed)

    # Remote predictions equal verify.run_tflite (ai_edge_litert) on the same input, features included.
    samples, rate = audio.read_wav(wav)
    x = audio.features_for_model(samples, rate)
    local = verify.run_tflite((build / "model.tflite").read_bytes(), x[None], runtime="litert")
    scores = np.asarray(local.outputs, np.float32).reshape(-1)
    assert remote["result"]["scores"] == [float(s) for s in scores]
    assert remote["result"]["index"] == int(np.argmax(scores))
    assert remote["result"]["features_sha256"] == hashlib.sha256(x.astype(np.float32).tobytes()).hexdigest()
    assert (out / "known_hosts").is_file()                        # the host key was pinned in the bundle


@needs_sshd
def test_unreachable_host_is_one_clear_error(sshd, kws_build, tmp_path):
    build, wav = kws_build
    closed = _free_port()
    started = time.monotonic()
    proc = _cli(str(build), "--target", "rpi", "--sample", str(wav), "--out", str(tmp_path / "b"),
                "--host", f"root@127.0.0.1:{tmp_path / 'r'}", "--port", str(closed),
                "--identity", str(sshd.user_key), "--connect-timeout", "5")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Cannot reach the host over ssh" in proc.stderr
    assert "Connection refused" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "b").exists()                           # checked before any bundle was written
    assert time.monotonic() - started < 60
    _assert_no_secrets(sshd, proc.stdout + proc.stderr)


@needs_sshd
def test_refused_key_is_one_clear_error(sshd, kws_build, tmp_path):
    build, wav = kws_build
    proc = _cli(str(build), "--target", "rpi", "--sample", str(wav), "--out", str(tmp_path / "b"),
                "--host", f"root@127.0.0.1:{tmp_path / 'r'}", "--port", str(sshd.port),
                "--identity", str(sshd.stranger_key))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "The host refused the ssh key" in proc.stderr
    assert "Permission denied (publickey)" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "b").exists()                           # checked before any bundle was written
    _assert_no_secrets(sshd, proc.stdout + proc.stderr)


# ----------------------------------------------------------------------------- bundles (no network)

def test_rpi_bundle_is_self_contained_and_tensorflow_free(kws_build, tmp_path):
    build, wav = kws_build
    bundle = make_bundle(build, "rpi", tmp_path / "b", sample=wav)
    names = set(bundle.files)
    for name in ("model.tflite", "labels.txt", "kws_app.py", "edgesparse_app.py", "config.json",
                 "requirements.txt", "run.sh", "test_input.wav", "expected.json", "README.md",
                 "edgesparse-kws.service", "lib/edgesparse/data/audio.py", "lib/edgesparse/errors.py", "bundle.json"):
        assert name in names or (name == "bundle.json" and (bundle.path / name).is_file()), name
    assert (bundle.path / "model.tflite").read_bytes() == (build / "model.tflite").read_bytes()
    assert (bundle.path / "labels.txt").read_text().split() == KWS_LABELS
    requirements = (bundle.path / "requirements.txt").read_text()
    assert 'tflite-runtime==2.14.0; python_version < "3.12"' in requirements
    assert "numpy>=1.23,<2" in requirements and "ai-edge-litert" in requirements
    assert "tensorflow" not in requirements.replace("# The on-device runtime: no TensorFlow", "").lower()
    assert os.access(bundle.path / "run.sh", os.X_OK)
    unit = (bundle.path / "edgesparse-kws.service").read_text()
    assert "ExecStart=/bin/sh /home/pi/edgesparse-kws/run.sh --mic" in unit and "[Install]" in unit
    manifest = json.loads((bundle.path / "bundle.json").read_text())
    assert manifest["model_sha256"] == hashlib.sha256((build / "model.tflite").read_bytes()).hexdigest()
    assert manifest["expected"]["label"] == bundle.expected["label"]
    # No staging directories are left beside the bundle.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "build", "clip.wav"]


def test_existing_bundle_is_never_overwritten_without_force(kws_build, tmp_path):
    build, wav = kws_build
    first = make_bundle(build, "android", tmp_path / "b", sample=wav)
    marker = first.path / "assets" / "model.tflite"
    before = marker.stat().st_mtime_ns
    with pytest.raises(OutputExistsError):
        make_bundle(build, "android", tmp_path / "b", sample=wav)
    assert marker.stat().st_mtime_ns == before
    make_bundle(build, "android", tmp_path / "b", sample=wav, force=True)
    assert (tmp_path / "b" / "README.md").is_file()


def test_failed_build_is_refused_unless_forced(tiny_models, tmp_path):
    data, _, _ = tiny_models["digits"]
    build = make_build_dir(tmp_path / "failed", data, name="digits", input_shape=(8, 8, 1), num_classes=10,
                           passed=False)
    sample = tmp_path / "x.npy"
    np.save(sample, np.zeros((8, 8, 1), np.float32))
    proc = _cli(str(build), "--target", "android", "--sample", str(sample), "--out", str(tmp_path / "a"))
    assert proc.returncode == 2
    assert "did not pass its checks" in proc.stderr and "accuracy drop 9.00 points" in proc.stderr
    assert "--force" in proc.stderr and not (tmp_path / "a").exists()
    proc = _cli(str(build), "--target", "android", "--sample", str(sample), "--out", str(tmp_path / "a"), "--force")
    assert proc.returncode == 0, proc.stderr


def test_tampered_model_is_refused(digits_build, tmp_path):
    (digits_build / "model.tflite").write_bytes((digits_build / "model.tflite").read_bytes() + b"\0")
    proc = _cli(str(digits_build), "--target", "rpi", "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and "not the file report.json describes" in proc.stderr


def test_android_bundle_documents_quantization_and_says_it_is_untested(digits_build, tmp_path):
    bundle = make_bundle(digits_build, "pixel4", tmp_path / "android")     # a phone profile picks android
    assert bundle.target == "android"
    readme = (bundle.path / "README.md").read_text()
    assert "**Not tested on a phone.**" in readme
    assert 'implementation("com.google.ai.edge.litert:litert:' in readme
    assert 'context.assets.openFd(name)' in readme and "import org.tensorflow.lite.Interpreter" in readme
    io = io_quantization((digits_build / "model.tflite").read_bytes())
    assert f"| input 0 (1x8x8x1) | int8 | {io['input']['scale']!r} | {io['input']['zero_point']} |" in readme
    assert f"| output 0 | int8 | {io['output']['scale']!r} | {io['output']['zero_point']} |" in readme
    assert (bundle.path / "assets" / "labels.txt").read_text().split() == [str(i) for i in range(10)]
    expected = json.loads((bundle.path / "expected.json").read_text())
    assert len(expected["scores"]) == 10


def test_cli_errors_are_one_message_exit_2(digits_build, tmp_path):
    cases = [
        (["--target", "toaster"], "Unknown deploy target"),
        (["--target", "rpi", "--host", "pi@@x"], "Bad --host"),
        (["--target", "rpi", "--host", "pi@localhost:~"], "must be a directory of its own"),
        (["--target", "mcu", "--host", "pi@localhost"], "--host deploys only the rpi target"),
        (["--target", "mcu"], "needs a microcontroller profile"),
        (["--target", "rpi", "--labels", str(tmp_path / "nope.txt")], "Labels file not found"),
    ]
    for args, message in cases:
        proc = _cli(str(digits_build), *args, "--out", str(tmp_path / "o"))
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr
    proc = _cli(str(tmp_path / "missing"), "--target", "rpi")
    assert proc.returncode == 2 and "Build directory not found" in proc.stderr


def test_default_test_input_is_the_builds_first_held_out_sample(kws_build, tiny_models, tmp_path):
    """No --sample: the keyword-spotting bundle ships x[0] of the build's sample.npz as MFCC features (.npy).

    Nothing is regenerated: deploy imports neither the pipeline nor TensorFlow, and synthesises no speech.
    """
    build, _ = kws_build
    _, x, y = tiny_models["kws"]
    out = tmp_path / "b"
    code = ("import sys; from edgesparse.deploy import make_bundle; b = make_bundle(sys.argv[1], 'rpi', sys.argv[2]); "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tf_keras', 'sklearn') "
            "or m.startswith('edgesparse.pipeline')); print(b.test_input, bad)")
    proc = subprocess.run([sys.executable, "-c", code, str(build), str(out)], capture_output=True, text=True,
                          timeout=600, env={**os.environ, "PATH": os.path.dirname(sys.executable)})  # no espeak-ng
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["test_input.npy", "[]"]
    shipped = np.load(out / "test_input.npy")
    assert shipped.dtype == np.float32 and shipped.tobytes() == x[0].astype(np.float32).tobytes()
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["test_input_source"] == f"{build / SAMPLE}: x[0]"
    assert manifest["test_input_label"] == int(y[0])
    config = json.loads((out / "config.json").read_text())
    assert config["test_input"] == "test_input.npy"
    expected = json.loads((out / "expected.json").read_text())
    assert expected["true_label"] == KWS_LABELS[int(y[0])]
    assert expected["features_sha256"] == hashlib.sha256(x[0].astype(np.float32).tobytes()).hexdigest()
    local = verify.run_tflite((build / "model.tflite").read_bytes(), x[:1], runtime="litert")
    assert expected["scores"] == [float(v) for v in np.asarray(local.outputs).reshape(-1)]


def test_build_without_a_sample_asks_for_a_rebuild_or_sample(tiny_models, tmp_path):
    """A build made before builds wrote sample.npz: one clear message, exit 2, nothing written; --sample works."""
    data, x, _ = tiny_models["digits"]
    build = make_build_dir(tmp_path / "old", data, name="digits", input_shape=(8, 8, 1), num_classes=10)
    proc = _cli(str(build), "--target", "android", "--out", str(tmp_path / "a"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "The build directory has no test sample" in proc.stderr
    assert "no sample.npz: the build was made by an earlier edgesparse" in proc.stderr
    assert "Rebuild with `edgesparse build`" in proc.stderr and "--sample FILE" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "a").exists()
    np.save(tmp_path / "x.npy", x[1])
    proc = _cli(str(build), "--target", "android", "--out", str(tmp_path / "a"), "--sample", str(tmp_path / "x.npy"))
    assert proc.returncode == 0, proc.stderr
    # Without labels.txt or labels in report.json, classes are named by their index.
    assert (tmp_path / "a" / "assets" / "labels.txt").read_text().split() == [f"class_{i}" for i in range(10)]


@pytest.mark.parametrize("content,received", [
    (b"not a zip", "not such an .npz"),
    (None, "x of shape (3, 2)"),
])
def test_unusable_sample_npz_is_one_message(digits_build, tmp_path, content, received):
    if content is None:
        np.savez(digits_build / SAMPLE, x=np.zeros((3, 2), np.float32), y=np.zeros(3, np.int64))
    else:
        (digits_build / SAMPLE).write_bytes(content)
    proc = _cli(str(digits_build), "--target", "android", "--out", str(tmp_path / "a"))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "sample.npz" in proc.stderr and received in proc.stderr and "Rebuild" in proc.stderr
    assert "allow_pickle" not in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "a").exists()


def test_bundle_uses_the_builds_labels_file(digits_build, tmp_path):
    (digits_build / "labels.txt").write_text("".join(f"digit {i}\n" for i in range(10)))
    bundle = make_bundle(digits_build, "android", tmp_path / "a")
    assert (bundle.path / "assets" / "labels.txt").read_text().splitlines() == [f"digit {i}" for i in range(10)]
    assert bundle.expected["label"].startswith("digit ")


def _tree(path: Path) -> dict[str, str]:
    """Every file under `path` (relative name -> sha256), and every directory (-> 'dir')."""
    return {str(p.relative_to(path)): "dir" if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*"))}


def test_force_never_replaces_a_users_files(digits_build, tmp_path):
    """--force replaces an earlier bundle only: a directory of the user's files, or a file, is refused (exit 2)."""
    mine = tmp_path / "thesis"
    (mine / "sub").mkdir(parents=True)
    (mine / "thesis.txt").write_text("three years of work\n")
    (mine / "sub" / "data.csv").write_text("a,b\n1,2\n")
    (mine / "bundle.json").write_text('{"note": "my own bundle.json, not edgesparse\'s"}')
    plain = tmp_path / "notes.txt"
    plain.write_text("keep me\n")
    before = _tree(tmp_path)
    for out, received in ((mine, "a directory that is not an earlier edgesparse deploy bundle"),
                          (plain, "an existing file")):
        proc = _cli(str(digits_build), "--target", "android", "--out", str(out), "--force")
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "The output location holds something edgesparse did not write" in proc.stderr
        assert received in proc.stderr and "--force never replaces your own files" in proc.stderr
        assert "Traceback" not in proc.stderr
    assert _tree(tmp_path) == before                                   # nothing changed, nothing left behind


def test_force_replaces_an_earlier_bundle(digits_build, tmp_path):
    out = tmp_path / "bundle"
    proc = _cli(str(digits_build), "--target", "android", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    (out / "stale.txt").write_text("from an earlier run\n")
    proc = _cli(str(digits_build), "--target", "rpi", "--out", str(out))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "already exists" in proc.stderr and "an earlier edgesparse deploy bundle" in proc.stderr
    proc = _cli(str(digits_build), "--target", "rpi", "--out", str(out), "--force")
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / MANIFEST).read_text())["target"] == "rpi"
    assert not (out / "stale.txt").exists() and not (out / "assets").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build", "bundle"]        # no staging, no .old copy


def test_bundle_files_follow_the_umask(kws_build, digits_build, tmp_path):
    """Under umask 022 every bundle file is readable by others (0644, run.sh 0755) and every directory 0755."""
    build, _ = kws_build
    old = os.umask(0o022)
    try:
        bundles = [make_bundle(build, "rpi", tmp_path / "kws-rpi"), make_bundle(build, "mcu", tmp_path / "kws-mcu"),
                   make_bundle(digits_build, "rpi", tmp_path / "digits-rpi"),
                   make_bundle(digits_build, "android", tmp_path / "digits-android")]
    finally:
        os.umask(old)
    for bundle in bundles:
        assert stat.S_IMODE(bundle.path.stat().st_mode) == 0o755, bundle.path
        for path in bundle.path.rglob("*"):
            mode = stat.S_IMODE(path.stat().st_mode)
            executable = path.is_dir() or path.name == "run.sh"
            assert mode == (0o755 if executable else 0o644), (path, oct(mode))
    kws_files = set(bundles[0].files)
    assert {"kws_app.py", "edgesparse_app.py", "lib/edgesparse/data/audio.py", "test_input.npy"} <= kws_files
    assert "vision_app.py" in bundles[2].files


@needs_sshd
def test_block_sparse_int8_fully_connected_needs_ai_edge_litert_on_the_device(sshd, tiny_models, tmp_path):
    """tflite-runtime 2.14 (numpy<2) runs a 1x16 block-sparse int8 FULLY_CONNECTED build WRONGLY.

    DESIGN.md expected it to work. Measured here: every input gives the same
    output, without an error. So `--runtime auto` ships ai-edge-litert for such a
    model, `--runtime tflite-runtime` is refused, and forcing it is caught by the
    device-vs-here comparison (exit 3).
    """
    data, x, _ = tiny_models["sparse_fc"]
    assert "DENSIFY" not in op_types(data)
    assert [t.block_size for t in tflite_edit.sparse_encoding_report(data)] == [(1, 16), (1, 16)]
    build = make_build_dir(tmp_path / "build" / "mlp-rpi4", data, name="mlp", input_shape=(8, 8, 1),
                           num_classes=10, labels=[f"digit{i}" for i in range(10)])
    sample = tmp_path / "x.npy"
    np.save(sample, x[3])
    local = verify.run_tflite(data, x[3:4], runtime="litert")
    assert "FULLY_CONNECTED" in local.builtin_ops                # XNNPACK leaves the sparse FC to LiteRT
    scores = [float(v) for v in np.asarray(local.outputs).reshape(-1)]
    assert len(set(scores)) > 1

    def run(name: str, *extra: str) -> subprocess.CompletedProcess:
        return _cli(str(build), "--target", "rpi4", "--sample", str(sample), "--out", str(tmp_path / name),
                    "--host", f"root@127.0.0.1:{tmp_path / 'device' / name}", "--port", str(sshd.port),
                    "--identity", str(sshd.user_key), "--remote-python", _device_python(), *extra)

    refused = run("trt", "--runtime", "tflite-runtime")
    assert refused.returncode == 2 and "does not run correctly in tflite-runtime 2.14" in refused.stderr

    forced = run("trt", "--runtime", "tflite-runtime", "--force", "--json")
    assert forced.returncode == 3, forced.stdout + forced.stderr
    assert "The device's result differs from the build machine's" in forced.stderr
    wrong = json.loads(forced.stdout)["remote"]["result"]
    assert wrong["runtime"].startswith("tflite_runtime 2.14.0")
    assert len(set(wrong["scores"])) == 1                         # the same value for every class

    fixed = run("auto", "--json")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    document = json.loads(fixed.stdout)
    assert any("installs ai-edge-litert instead" in n for n in document["bundle"]["notes"])
    assert (tmp_path / "auto" / "requirements.txt").read_text().count("ai-edge-litert==2.3.0") == 1
    result = document["remote"]["result"]
    assert result["runtime"].startswith("ai_edge_litert 2.3.0")
    assert result["scores"] == scores

    # Again into the same (now existing) venv without pip: the quick re-deploy path.
    marker = tmp_path / "device" / "auto" / "venv" / "pyvenv.cfg"
    created = marker.stat().st_mtime_ns
    again = run("auto", "--json", "--force", "--skip-install")
    assert again.returncode == 0, again.stdout + again.stderr
    assert json.loads(again.stdout)["remote"]["matches_local"] is True
    assert marker.stat().st_mtime_ns == created

"""Atomic writes and output locations: a failed or interrupted build never leaves half a build behind,
and --force never deletes anything edgesparse did not write."""

import contextlib
import os
import signal
import stat
import subprocess
import threading
import time

import pytest

from edgesparse import interrupts
from edgesparse.builddir import is_build_dir
from edgesparse.errors import OutputExistsError, OutputLocationError
from edgesparse.fsutil import atomic_write_bytes, check_output_free, check_writable_location, staged_output_dir, umask


def _earlier_build(path):
    path.mkdir(parents=True)
    (path / "model.tflite").write_bytes(b"earlier build")
    (path / "report.json").write_text('{"schema_version": 1}')
    return path


def _snapshot(root):
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@contextlib.contextmanager
def _tmpfs(path, options):
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a" / "model.tflite"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["model.tflite"]


def test_staged_dir_publishes_only_on_success(tmp_path):
    out = tmp_path / "build"
    with staged_output_dir(out, force=False, ours=is_build_dir) as staging:
        (staging / "report.json").write_text("{}")
        assert not out.exists()
    assert (out / "report.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failure_or_ctrl_c_keeps_the_earlier_build(tmp_path, exc):
    out = _earlier_build(tmp_path / "build")
    with pytest.raises(type(exc)):
        with staged_output_dir(out, force=True, ours=is_build_dir) as staging:
            (staging / "model.tflite").write_bytes(b"half")
            raise exc
    assert (out / "model.tflite").read_bytes() == b"earlier build"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]


def test_a_swallowed_signal_still_stops_the_publish(tmp_path):
    """A KeyboardInterrupt some library swallowed must not let the build replace the earlier one."""
    out = _earlier_build(tmp_path / "build")
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    interrupts.reset()
    interrupts.install_handlers()
    try:
        with pytest.raises(interrupts.SignalInterrupt):
            with staged_output_dir(out, force=True, ours=is_build_dir) as staging:
                (staging / "model.tflite").write_bytes(b"new")
                with contextlib.suppress(KeyboardInterrupt):  # some library swallows it
                    os.kill(os.getpid(), signal.SIGTERM)
                    signal.pthread_kill(threading.main_thread().ident, 0)
                    time.sleep(0.5)
    finally:
        interrupts.reset()
        for signum, handler in saved.items():
            signal.signal(signum, handler)
    assert (out / "model.tflite").read_bytes() == b"earlier build"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]


def test_existing_build_needs_force(tmp_path):
    out = _earlier_build(tmp_path / "build")
    with pytest.raises(OutputExistsError, match="--force"):
        check_output_free(out, force=False, ours=is_build_dir)
    with staged_output_dir(out, force=True, ours=is_build_dir) as staging:
        (staging / "model.tflite").write_bytes(b"new")
    assert (out / "model.tflite").read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]


def test_empty_existing_directory_is_free(tmp_path):
    check_output_free(tmp_path / "empty", force=False, ours=is_build_dir)
    (tmp_path / "empty").mkdir()
    check_output_free(tmp_path / "empty", force=False, ours=is_build_dir)


@pytest.mark.parametrize("layout", ["user files", "plain file", "model.tflite without report", "symlink"])
def test_force_never_replaces_what_edgesparse_did_not_write(tmp_path, layout):
    out = tmp_path / "out"
    if layout == "user files":
        (out / "sub").mkdir(parents=True)
        (out / "thesis.txt").write_text("three years of work")
        (out / "sub" / "data.csv").write_text("1,2,3")
    elif layout == "plain file":
        out.write_text("not a directory")
    elif layout == "model.tflite without report":
        out.mkdir()
        (out / "model.tflite").write_bytes(b"someone else's model")
    else:
        (tmp_path / "target").mkdir()
        (tmp_path / "target" / "keep.txt").write_text("keep")
        out.symlink_to(tmp_path / "target")
    before = _snapshot(tmp_path)
    with pytest.raises(OutputExistsError, match="did not write") as info:
        with staged_output_dir(out, force=True, ours=is_build_dir):
            pytest.fail("the body must not run")
    assert info.value.exit_code == 2
    assert _snapshot(tmp_path) == before  # nothing changed, nothing hidden left behind


def test_outputs_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        with staged_output_dir(tmp_path / "build", force=False, ours=is_build_dir) as staging:
            atomic_write_bytes(staging / "model.tflite", b"x")
            (staging / "baselines").mkdir()
            atomic_write_bytes(staging / "baselines" / "dense_int8.tflite", b"y")
        assert umask() == 0o022
    finally:
        os.umask(old)
    out = tmp_path / "build"
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "model.tflite").stat().st_mode) == 0o644
    assert stat.S_IMODE((out / "baselines" / "dense_int8.tflite").stat().st_mode) == 0o644


def test_output_below_a_regular_file_is_refused_before_any_work(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(OutputLocationError, match="below a regular file") as info:
        check_writable_location(tmp_path / "afile" / "sub" / "build")
    assert info.value.exit_code == 2


def test_current_directory_is_never_an_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    for out in (".", str(tmp_path), str(tmp_path.parent)):
        with pytest.raises(OutputExistsError, match="current directory"):
            check_output_free(out, force=True, ours=is_build_dir)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_read_only_location_is_refused_before_any_work(tmp_path):
    with _tmpfs(tmp_path / "ro", "ro,size=64k") as ro:
        with pytest.raises(OutputLocationError, match="not writable") as info:
            check_output_free(ro / "build", force=False, ours=is_build_dir)
        assert "Read-only file system" in str(info.value)


def test_disk_full_mid_write_is_bad_input_and_keeps_the_earlier_build(tmp_path):
    with _tmpfs(tmp_path / "small", "size=64k") as small:
        out = _earlier_build(small / "build")
        with pytest.raises(OutputLocationError, match="No space left") as info:
            with staged_output_dir(out, force=True, ours=is_build_dir) as staging:
                atomic_write_bytes(staging / "model.tflite", os.urandom(256 * 1024))
        assert info.value.exit_code == 2 and "model.tflite" in str(info.value)
        assert (out / "model.tflite").read_bytes() == b"earlier build"
        assert sorted(p.name for p in small.iterdir()) == ["build"]

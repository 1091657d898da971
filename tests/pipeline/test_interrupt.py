"""Ctrl-C mid-training: one readable message, exit code 130, nothing half-written, earlier build kept."""

import os
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.slow


def test_ctrl_c_during_fine_tuning_leaves_the_earlier_build_untouched(tmp_path):
    out = tmp_path / "build"
    out.mkdir()
    (out / "model.tflite").write_bytes(b"earlier build")
    (out / "report.json").write_text('{"schema_version": 1}')   # an earlier build: what --force may replace
    env = dict(os.environ, EDGESPARSE_CACHE=str(tmp_path / "cache"), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgesparse", "build", "--profile", "rpi4", "--epochs", "400",
         "--out", str(out), "--force"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    # Wait until fine-tuning has started (the dense demo model is trained first), then press Ctrl-C.
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and not list((tmp_path / "cache").rglob("*")):
        time.sleep(0.5)
    time.sleep(6)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, (stdout, stderr)
    assert "interrupted" in stderr and "Traceback" not in stderr + stdout
    assert (out / "model.tflite").read_bytes() == b"earlier build"
    assert (out / "report.json").read_text() == '{"schema_version": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build", "cache"]

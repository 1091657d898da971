"""The CLI shell: fast help without TensorFlow, one message and an exit code per error."""

import json
import subprocess
import sys

from click.testing import CliRunner

from edgesparse.cli.commands import main


def _run(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "edgesparse", *args], capture_output=True, text=True, cwd=cwd)


def test_help_does_not_import_tensorflow():
    code = ("import sys, edgesparse.cli.commands as c; from click.testing import CliRunner; "
            "r = CliRunner().invoke(c.main, ['build', '--help']); assert r.exit_code == 0, r.output; "
            "print('tensorflow' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


def test_python_dash_m_matches_console_script():
    proc = _run("--version")
    assert proc.returncode == 0
    assert "edgesparse" in proc.stdout


def test_unknown_profile_is_one_message_exit_2():
    result = CliRunner().invoke(main, ["build", "--profile", "rpi44"])
    assert result.exit_code == 2
    assert "Unknown device profile" in result.output
    assert "Did you mean 'rpi4'" in result.output
    assert "Traceback" not in result.output


def test_existing_output_directory_is_refused(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.tflite").write_bytes(b"earlier")
    result = CliRunner().invoke(main, ["build", "--out", str(out)])
    assert result.exit_code == 2
    assert "already exists" in result.output and "--force" in result.output
    assert (out / "model.tflite").read_bytes() == b"earlier"

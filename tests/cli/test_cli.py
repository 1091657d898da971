"""The CLI shell: fast help without TensorFlow, one message and an exit code per error."""

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
    (out / "report.json").write_text('{"schema_version": 1}')  # an earlier build, as builddir recognises one
    result = CliRunner().invoke(main, ["build", "--out", str(out)])
    assert result.exit_code == 2
    assert "already exists" in result.output and "--force" in result.output
    assert (out / "model.tflite").read_bytes() == b"earlier"


# --------------------------------------------------------------------------- assumed bases, one rule

ASSUMED = ("assumption", "transferred", "fitted+transferred", "interpreter+assumption", "planner+assumption", "none")
OWN = ("fitted", "planner", "interpreter", "sourced")


def test_basis_markup_is_the_one_assumption_rule():
    from edgesparse._types import is_assumption
    from edgesparse.cli.render import basis_markup

    for basis in ASSUMED:
        assert is_assumption(basis) and basis_markup(basis) == f"[yellow]{basis}[/]", basis
    for basis in OWN:
        assert not is_assumption(basis) and basis_markup(basis) == basis, basis


def test_single_profile_check_marks_a_transferred_basis_like_the_matrix(mlperf_dir):
    """rpizero2w's latency is transferred from rpi3bplus and its RAM rests on an assumption: yellow in both views."""
    yellow = "\x1b[33m"
    model = str(mlperf_dir / "keyword_spotting" / "kws_ref_model.tflite")
    outputs = {}
    for view, profiles in (("single", ["rpizero2w"]), ("matrix", ["rpizero2w", "rpi4"])):
        args = ["check", model] + [a for p in profiles for a in ("--profile", p)]
        result = CliRunner().invoke(main, args, env={"FORCE_COLOR": "1", "COLUMNS": "160"})
        assert result.exit_code == 0, result.output
        outputs[view] = result.output
    for view, out in outputs.items():
        for basis in ("transferred", "interpreter+assumption"):
            assert f"{yellow}{basis}" in out, (view, basis)

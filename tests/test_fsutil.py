"""Atomic writes: a failed or interrupted build never leaves half a build behind."""

import pytest

from edgesparse.errors import OutputExistsError
from edgesparse.fsutil import atomic_write_bytes, check_output_free, staged_output_dir


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "a" / "model.tflite"
    atomic_write_bytes(target, b"first")
    atomic_write_bytes(target, b"second")
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["model.tflite"]


def test_staged_dir_publishes_only_on_success(tmp_path):
    out = tmp_path / "build"
    with staged_output_dir(out, force=False) as staging:
        (staging / "report.json").write_text("{}")
        assert not out.exists()
    assert (out / "report.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]


@pytest.mark.parametrize("exc", [RuntimeError("boom"), KeyboardInterrupt()])
def test_failure_or_ctrl_c_keeps_the_earlier_build(tmp_path, exc):
    out = tmp_path / "build"
    out.mkdir()
    (out / "model.tflite").write_bytes(b"earlier build")
    with pytest.raises(type(exc)):
        with staged_output_dir(out, force=True) as staging:
            (staging / "model.tflite").write_bytes(b"half")
            raise exc
    assert (out / "model.tflite").read_bytes() == b"earlier build"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["build"]


def test_existing_build_needs_force(tmp_path):
    out = tmp_path / "build"
    out.mkdir()
    (out / "model.tflite").write_bytes(b"x")
    with pytest.raises(OutputExistsError, match="--force"):
        check_output_free(out, force=False)
    with staged_output_dir(out, force=True) as staging:
        (staging / "model.tflite").write_bytes(b"new")
    assert (out / "model.tflite").read_bytes() == b"new"


def test_empty_existing_directory_is_free(tmp_path):
    check_output_free(tmp_path, force=False)

"""Bad input across every command: the exit code, a message that names the cause, and nothing changed on disk.

One row per case (issue 9): the command line, what is on disk first, the exit code
(2 = bad input) and a fragment the message must hold. Every case runs in-process
through click's CliRunner in a fresh directory, and the whole directory, hidden
files included, is hashed before and after: a refused command writes, moves and
leaves nothing (no `.old-*` copy, no staging directory), even one level above
its --out. None of the cases loads TensorFlow or trains, so the table is fast:
each must be refused before any work starts.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from support.builds import make_build_dir

from edgesparse.cli.commands import main
from edgesparse.tflite.edit import save_model
from edgesparse.tflite.schema import schema


def tiny_tflite() -> bytes:
    """A valid 500-byte float model (one FULLY_CONNECTED, 4 inputs, 2 outputs), written without TensorFlow."""
    fb = schema()

    def buffer(data=None):
        b = fb.BufferT()
        b.data = None if data is None else np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)
        return b

    def tensor(name, shape, buf):
        t = fb.TensorT()
        t.name, t.shape, t.type, t.buffer = name, np.array(shape, np.int32), fb.TensorType.FLOAT32, buf
        return t

    code = fb.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = fb.BuiltinOperator.FULLY_CONNECTED
    code.version = 1
    op = fb.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, np.array([0, 1, 2], np.int32), np.array([3], np.int32)
    op.builtinOptionsType = fb.BuiltinOptions.FullyConnectedOptions
    op.builtinOptions = fb.FullyConnectedOptionsT()
    sub = fb.SubGraphT()
    sub.tensors = [tensor("x", [1, 4], 1), tensor("w", [2, 4], 2), tensor("b", [2], 3), tensor("y", [1, 2], 4)]
    sub.inputs, sub.outputs, sub.operators = np.array([0], np.int32), np.array([3], np.int32), [op]
    model = fb.ModelT()
    model.version, model.description, model.operatorCodes, model.subgraphs = 3, "tiny", [code], [sub]
    model.buffers = [buffer(), buffer(), buffer(np.eye(2, 4, dtype=np.float32)), buffer(np.zeros(2, np.float32)),
                     buffer()]
    return save_model(model)


# --------------------------------------------------------------------------- what is on disk before a case

def user_files(work: Path) -> None:
    """A user's unrelated directory (what --force must never delete), and a plain file."""
    (work / "user" / "sub").mkdir(parents=True)
    (work / "user" / "thesis.txt").write_text("three years of work\n")
    (work / "user" / "sub" / "data.csv").write_text("a,b\n1,2\n")
    (work / "plain").write_text("a plain file\n")


def models(work: Path) -> None:
    """A valid .tflite, a text file posing as models and data, a garbage .npz, a binary CSV."""
    user_files(work)
    (work / "tiny.tflite").write_bytes(tiny_tflite())
    (work / "notes.tflite").write_text("not a model\n")
    (work / "notes.keras").write_text("not a model\n")
    (work / "garbage.npz").write_bytes(bytes(range(256)) * 8)
    (work / "binary.csv").write_bytes(bytes(range(256)) * 4)


def builds(work: Path) -> None:
    """An earlier build (what --force may replace), one with a wrong-typed report field, one tampered with."""
    models(work)
    data = tiny_tflite()
    make_build_dir(work / "earlier", data, name="tiny", input_shape=(4,), num_classes=2)
    make_build_dir(work / "typed", data, name="tiny", input_shape=(4,), num_classes=2)
    report = json.loads((work / "typed" / "report.json").read_text())
    report["sizes"] = "big"
    (work / "typed" / "report.json").write_text(json.dumps(report))
    make_build_dir(work / "tampered", data, name="tiny", input_shape=(4,), num_classes=2)
    (work / "tampered" / "model.tflite").write_bytes(data + b"\0")


Case = tuple[str, Callable[[Path], None], list[str], int, str]

CASES: list[Case] = [
    # build: the output location (items 1 and 2), checked before anything is loaded
    ("build --force over a user's directory", user_files, ["build", "--force", "--out", "user"], 2,
     "--force never replaces your own files"),
    ("build over a user's directory", user_files, ["build", "--out", "user"], 2, "did not write"),
    ("build --force over a plain file", user_files, ["build", "--force", "--out", "plain"], 2, "an existing file"),
    ("build --out below a regular file", user_files, ["build", "--out", "plain/below"], 2, "below a regular file"),
    ("build --out . --force", user_files, ["build", "--out", ".", "--force"], 2, "current directory"),
    ("build --out .. --force", user_files, ["build", "--out", "..", "--force"], 2, "Choose another --out"),
    ("build over an earlier build without --force", builds, ["build", "--out", "earlier"], 2, "Pass --force"),
    # build: options (items 10 and 12), each naming its flag
    ("build --batch-size 0", user_files, ["build", "--batch-size", "0"], 2, "--batch-size"),
    ("build --batch-size -4", user_files, ["build", "--batch-size", "-4"], 2, "--batch-size"),
    ("build --epochs -1", user_files, ["build", "--epochs", "-1"], 2, "--epochs"),
    ("build --epochs 0", user_files, ["build", "--epochs", "0"], 2, "--epochs"),
    ("build --tensorboard at a file", user_files, ["build", "--tensorboard", "plain"], 2, "--tensorboard"),
    ("build --tensorboard below a file", user_files, ["build", "--tensorboard", "plain/logs"], 2, "--tensorboard"),
    ("build --final-sparsity 1.5", user_files, ["build", "--final-sparsity", "1.5"], 2, "--final-sparsity"),
    ("build --final-sparsity 80", user_files, ["build", "--final-sparsity", "80"], 2, "--final-sparsity"),
    ("build --initial-sparsity above --final-sparsity", user_files,
     ["build", "--initial-sparsity", "0.9", "--final-sparsity", "0.5"], 2, "--initial-sparsity"),
    ("build --structured 2:4 --final-sparsity 0.8", user_files,
     ["build", "--structured", "2:4", "--final-sparsity", "0.8"], 2, "--final-sparsity 0.5"),
    ("build --structured 2:4 --begin-step 5", user_files, ["build", "--structured", "2:4", "--begin-step", "5"], 2,
     "--begin-step"),
    ("build --schedule constant --initial-sparsity 0.2", user_files,
     ["build", "--schedule", "constant", "--initial-sparsity", "0.2"], 2, "--initial-sparsity"),
    ("build --end-step before --begin-step", user_files, ["build", "--begin-step", "50", "--end-step", "10"], 2,
     "--end-step"),
    ("build --frequency 0", user_files, ["build", "--frequency", "0"], 2, "--frequency"),
    ("build --structured 4:2", user_files, ["build", "--structured", "4:2"], 2, "--structured"),
    ("build --min-agreement 2", user_files, ["build", "--min-agreement", "2"], 2, "--min-agreement"),
    ("build --min-params -1", user_files, ["build", "--min-params", "-1"], 2, "--min-params"),
    ("build --max-accuracy-drop -1", user_files, ["build", "--max-accuracy-drop", "-1"], 2, "--max-accuracy-drop"),
    # build: inputs
    ("build a missing model", models, ["build", "--model", "missing.keras", "--data", "garbage.npz"], 2,
     "does not exist"),
    ("build a text file as a model", models, ["build", "--model", "notes.keras", "--data", "garbage.npz"], 2,
     "not a Keras model"),
    ("build a .tflite", models, ["build", "--model", "tiny.tflite", "--data", "garbage.npz"], 2,
     "cannot be pruned"),
    ("build --model without --data", models, ["build", "--model", "notes.keras"], 2, "--model needs --data"),
    ("build --data without --model", models, ["build", "--data", "garbage.npz"], 2, "without --model"),
    ("build an unknown profile", user_files, ["build", "--profile", "nosuch"], 2, "Unknown device profile"),
    # sweep
    ("sweep over a user's directory", user_files, ["sweep", "--profile", "rpi4", "--out", "user"], 2, "not a sweep"),
    ("sweep over a plain file", user_files, ["sweep", "--profile", "rpi4", "--out", "plain"], 2, "not a sweep"),
    ("sweep over an earlier build", builds, ["sweep", "--profile", "rpi4", "--out", "earlier"], 2, "not a sweep"),
    ("sweep --out below a regular file", user_files, ["sweep", "--profile", "rpi4", "--out", "plain/below"], 2,
     "below a regular file"),
    ("sweep --out .", user_files, ["sweep", "--profile", "rpi4", "--out", "."], 2, "current directory"),
    ("sweep --epochs 0", user_files, ["sweep", "--profile", "rpi4", "--epochs", "0"], 2, "--epochs"),
    ("sweep --batch-size 0", user_files, ["sweep", "--profile", "rpi4", "--batch-size", "0"], 2, "--batch-size"),
    ("sweep --sparsities 1.5", user_files, ["sweep", "--profile", "rpi4", "--sparsities", "1.5"], 2, "--sparsities"),
    ("sweep --quantize int4", user_files, ["sweep", "--profile", "rpi4", "--quantize", "int4"], 2, "--quantize"),
    ("sweep --max-accuracy-drop -1", user_files, ["sweep", "--profile", "rpi4", "--max-accuracy-drop", "-1"], 2,
     "--max-accuracy-drop"),
    ("sweep an unknown profile", user_files, ["sweep", "--profile", "nosuch"], 2, "Unknown device profile"),
    # check (items 11 and 12)
    ("check a directory", models, ["check", "user", "--profile", "rpi4"], 2, "directory"),
    ("check a missing file", models, ["check", "missing.tflite", "--profile", "rpi4"], 2, "missing.tflite"),
    ("check a text file", models, ["check", "notes.tflite", "--profile", "rpi4"], 2, "notes.tflite"),
    ("check --battery-mah -5", models, ["check", "tiny.tflite", "--profile", "rpi4", "--battery-mah", "-5"], 2,
     "--battery-mah"),
    ("check --sleep-mw -1", models, ["check", "tiny.tflite", "--profile", "rpi4", "--sleep-mw", "-1"], 2,
     "--sleep-mw"),
    ("check --threads 0", models, ["check", "tiny.tflite", "--profile", "rpi4", "--threads", "0"], 2, "--threads"),
    ("check --rate nonsense", models, ["check", "tiny.tflite", "--profile", "rpi4", "--rate", "often"], 2, "rate"),
    ("check an unknown profile", models, ["check", "tiny.tflite", "--profile", "nosuch"], 2,
     "Unknown device profile"),
    # measure
    ("measure --threads 0", models, ["measure", "tiny.tflite", "--threads", "0"], 2, "--threads"),
    ("measure --runs 0", models, ["measure", "tiny.tflite", "--runs", "0"], 2, "--runs"),
    ("measure a missing file", models, ["measure", "missing.tflite"], 2, "missing.tflite"),
    ("measure a text file", models, ["measure", "notes.tflite"], 2, "notes.tflite"),
    ("measure a text file in TFLM", models, ["measure", "notes.tflite", "--runtime", "tflm"], 2, "notes.tflite"),
    # report
    ("report with a wrong-typed field", builds, ["report", "typed"], 2, "wrong type"),
    ("report on a user's directory", builds, ["report", "user"], 2, "No report.json"),
    ("report on a missing directory", builds, ["report", "missing"], 2, "No report.json"),
    # calibrate
    ("calibrate a binary CSV", models, ["calibrate", "--profile", "rpi4", "--measurements", "binary.csv"], 2,
     "not a readable CSV"),
    ("calibrate a missing CSV", models, ["calibrate", "--profile", "rpi4", "--measurements", "missing.csv"], 2,
     "not found"),
    # deploy
    ("deploy a user's directory", builds, ["deploy", "user", "--target", "rpi"], 2, "report.json"),
    ("deploy an unknown target", builds, ["deploy", "earlier", "--target", "toaster"], 2, "toaster"),
    ("deploy a tampered artifact", builds, ["deploy", "tampered", "--target", "rpi", "--out", "bundle"], 2,
     "not the file report.json describes"),
    ("deploy over a user's directory", builds, ["deploy", "earlier", "--target", "rpi", "--out", "user"], 2,
     "did not write"),
    ("deploy --force over a user's directory", builds,
     ["deploy", "earlier", "--target", "rpi", "--out", "user", "--force"], 2, "never replaces your own files"),
    # battery
    ("battery --battery-mah -5", builds, ["battery", "earlier", "--battery-mah", "-5"], 2, "--battery-mah"),
    ("battery --sleep-mw -1", builds, ["battery", "earlier", "--sleep-mw", "-1"], 2, "--sleep-mw"),
    ("battery on a user's directory", builds, ["battery", "user"], 2, "report.json"),
    # profiles
    ("profiles show an unknown profile", user_files, ["profiles", "show", "nosuch"], 2, "nosuch"),
]


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under `root`, hidden ones too: kind, mode and content hash (what 'nothing changed' means)."""
    out: dict[str, tuple] = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        if path.is_symlink():
            out[str(path.relative_to(root))] = ("link", str(path.readlink()))
        elif path.is_dir():
            out[str(path.relative_to(root))] = ("dir", st.st_mode)
        else:
            out[str(path.relative_to(root))] = ("file", st.st_mode, hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def run_in(work: Path, args: list[str], monkeypatch) -> tuple[int, str]:
    monkeypatch.chdir(work)
    result = CliRunner().invoke(main, args)
    return result.exit_code, " ".join(result.output.split())


@pytest.mark.parametrize("name, setup, args, code, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_and_changes_nothing(tmp_path, monkeypatch, name, setup, args, code, fragment):
    work = tmp_path / "work"   # the command runs here; tmp_path is hashed, so even --out .. changes nothing
    work.mkdir()
    setup(work)
    before = snapshot(tmp_path)
    started = time.perf_counter()
    exit_code, output = run_in(work, args, monkeypatch)
    assert exit_code == code, output
    assert fragment in output, output
    assert "internal error" not in output and "Traceback" not in output, output
    assert snapshot(tmp_path) == before, "the refused command changed the disk"
    assert time.perf_counter() - started < 20, "refused only after doing work"


@contextlib.contextmanager
def read_only_tmpfs(path: Path):
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


@pytest.mark.parametrize("args", [["build", "--out", "ro/build"], ["build", "--out", "ro/a/b", "--force"],
                                  ["sweep", "--profile", "rpi4", "--out", "ro/sweep"],
                                  ["build", "--tensorboard", "ro/logs"]], ids=" ".join)
def test_read_only_location_is_refused_before_any_work(tmp_path, monkeypatch, args):
    work = tmp_path / "work"
    work.mkdir()
    with read_only_tmpfs(work / "ro"):
        before = snapshot(tmp_path)
        started = time.perf_counter()
        exit_code, output = run_in(work, args, monkeypatch)
        assert exit_code == 2, output
        assert "not writable" in output and "Read-only file system" in output, output
        assert "fine-tuning" not in output and "internal error" not in output, output
        assert time.perf_counter() - started < 20
        assert snapshot(tmp_path) == before

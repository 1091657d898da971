"""run_isolated: a crash, a hang or an allocation bomb in the child is a clean ModelError (exit 2) naming the
signal or the stage; the child's own errors come back with their class and exit code; Ctrl-C kills and reaps
the child; `measure` and `verify` go through it, so a crashing interpreter is exit 2, not a dead process."""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgesparse import interrupts
from edgesparse.cli.commands import main
from edgesparse.errors import EXIT_BAD_INPUT, EXIT_INTERNAL, DataError, ModelError, VerificationError
from edgesparse.runtime import tflm
from edgesparse.runtime.isolate import IsolatedInternalError, run_isolated
from edgesparse.runtime.measure import measure
from edgesparse.runtime.verify import run_tflite

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fork runner is Linux's")

KWS = "keyword_spotting/kws_ref_model.tflite"
TINY = Path(__file__).resolve().parent / "data" / "tiny_int8.tflite"


def doubled(x, progress):
    progress("doubling")
    return {"value": x * 2, "array": np.arange(3)}


def segfault(progress):
    progress("preparing")
    os.write(2, b"MicroPrintf: about to crash\n")
    os.kill(os.getpid(), signal.SIGSEGV)


def floating_point_error(progress):
    progress("invoke 1/1")
    os.kill(os.getpid(), signal.SIGFPE)


def spin(progress):
    progress("invoke 3/50")
    while True:
        time.sleep(0.05)


def slow_but_alive(progress):
    for i in range(8):
        progress(f"invoke {i + 1}/8")
        time.sleep(0.2)
    return "done"


def raise_data_error(progress):
    raise DataError("Input data does not match", where="input 0", expected="(N, 24)", received=(5, 9), fix="Reshape")


def raise_verification_error(progress):
    raise VerificationError("The artifact does not run in TFLite Micro", where="tflm")


def divide_by_zero(progress):
    return 1 / 0


def allocate_too_much(progress):
    return bytearray(8 << 30)


def exit_quietly(progress):
    os._exit(7)


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_the_value_comes_back(method):
    value = run_isolated(doubled, 21, label="LiteRT", where="m.tflite", method=method)
    assert value["value"] == 42 and list(value["array"]) == [0, 1, 2]


@pytest.mark.parametrize("work, number, name", [(segfault, 11, "SIGSEGV"), (floating_point_error, 8, "SIGFPE")])
def test_a_crash_is_a_model_error_naming_the_signal_and_the_stage(work, number, name):
    with pytest.raises(ModelError) as info:
        run_isolated(work, label="TFLite Micro", where="model.tflite")
    error = info.value
    assert error.exit_code == EXIT_BAD_INPUT
    assert error.what == f"TFLite Micro crashed on this file (signal {number}, {name})"
    assert error.where == "model.tflite" and "edgesparse check" in error.fix
    if work is segfault:
        assert "SIGSEGV while preparing" in error.received and "about to crash" in error.received


def test_a_hang_is_stopped_after_the_idle_timeout_with_its_stage():
    start = time.monotonic()
    with pytest.raises(ModelError) as info:
        run_isolated(spin, label="TFLite Micro", where="m.tflite", idle_timeout=1.0)
    assert time.monotonic() - start < 5
    assert "stopped responding" in info.value.what and "while invoke 3/50" in info.value.received


def test_progress_keeps_a_long_run_alive():
    assert run_isolated(slow_but_alive, label="TFLite Micro", where=None, idle_timeout=0.6) == "done"


def test_the_childs_errors_keep_their_class_fields_and_exit_code():
    with pytest.raises(DataError) as info:
        run_isolated(raise_data_error, label="LiteRT", where=None)
    assert (info.value.where, info.value.expected, info.value.received, info.value.fix) == (
        "input 0", "(N, 24)", (5, 9), "Reshape")
    with pytest.raises(VerificationError) as verification:
        run_isolated(raise_verification_error, label="LiteRT", where=None)
    assert verification.value.exit_code == EXIT_INTERNAL


def test_a_bug_in_the_child_is_an_internal_error_with_its_traceback():
    with pytest.raises(IsolatedInternalError) as info:
        run_isolated(divide_by_zero, label="LiteRT", where=None)
    assert "ZeroDivisionError" in str(info.value) and "divide_by_zero" in str(info.value)


def test_an_allocation_bomb_is_a_model_error_not_the_oom_killer():
    with pytest.raises(ModelError) as info:
        run_isolated(allocate_too_much, label="TFLite Micro", where=None, memory_limit=1 << 30)
    assert "more memory" in info.value.what


def test_a_child_that_exits_without_a_result():
    with pytest.raises(ModelError, match=r"exited unexpectedly on this file \(status 7\)"):
        run_isolated(exit_quietly, label="TFLite Micro", where=None)


class _CrashesOutsideItsProcess:
    """Garbage like a library's (TensorFlow's after a conversion): its finalizer touches state only its
    own process has, so collecting it in a forked child crashes."""

    def __init__(self) -> None:
        self.owner, self.cycle = os.getpid(), self

    def __del__(self) -> None:
        if os.getpid() != self.owner:
            os.kill(os.getpid(), signal.SIGSEGV)


def collect_garbage(progress):
    progress("collecting")
    return gc.collect() >= 0


def test_the_child_never_collects_the_parents_garbage():
    gc.disable()
    try:
        _CrashesOutsideItsProcess()  # unreachable now, but not yet collected
        assert run_isolated(collect_garbage, label="TFLite Micro", where=None)
    finally:
        gc.enable()
        gc.collect()  # in its own process: harmless


def _children() -> set[int]:
    task = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children")
    return {int(p) for p in task.read_text().split()} if task.exists() else set()


def test_ctrl_c_kills_and_reaps_the_child():
    before = _children()
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    start = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_isolated(spin, label="TFLite Micro", where=None, idle_timeout=30)
    finally:
        timer.join()
        interrupts.reset()  # the CLI's handler may be installed and have recorded the signal
    assert time.monotonic() - start < 5
    assert _children() == before  # killed and reaped: no zombie left


# --------------------------------------------------------------------------- measure and verify use it


def _crash_on_open(model_bytes):
    os.kill(os.getpid(), signal.SIGSEGV)


def test_measure_turns_a_crashing_interpreter_into_exit_2(mlperf_dir, monkeypatch):
    pytest.importorskip("tflite_micro")
    monkeypatch.setattr(tflm, "open_interpreter", _crash_on_open)  # the forked child inherits it
    res = CliRunner().invoke(main, ["measure", str(mlperf_dir / KWS), "--runtime", "tflm", "--runs", "1"])
    assert res.exit_code == 2, res.output
    assert "TFLite Micro crashed on this file (signal 11, SIGSEGV)" in res.output
    assert "internal error" not in res.output
    # the parent lives on: the same call without the crash works
    monkeypatch.undo()
    assert measure(mlperf_dir / KWS, runtime="tflm", runs=1, warmup=0).runs == 1


def test_verify_turns_a_crashing_interpreter_into_a_model_error(monkeypatch):
    pytest.importorskip("tflite_micro")
    monkeypatch.setattr(tflm, "open_interpreter", _crash_on_open)
    with pytest.raises(ModelError, match=r"signal 11, SIGSEGV"):
        run_tflite(TINY.read_bytes(), np.zeros((1, 8, 8, 1), np.float32), runtime="tflm")


@pytest.mark.parametrize("runtime", ["litert", "tflm"])
def test_verify_runs_the_tiny_model_in_a_child(runtime):
    if runtime == "tflm":
        pytest.importorskip("tflite_micro")
    run = run_tflite(TINY.read_bytes(), np.random.default_rng(0).normal(size=(3, 8, 8, 1)), runtime=runtime)
    assert run.outputs.shape == (3, 3) and np.allclose(run.outputs.sum(axis=1), 1.0, atol=0.05)

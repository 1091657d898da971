"""The one TFLite Micro adapter: its Python interpreter, one arena policy, its errors and its arena report.

Why one adapter: verify and measure each made TFLM interpreters with different
arena sizes (one grew the arena on demand, one used a fixed 1 MiB), and verify
imported `tflite_micro` unguarded, so on a Raspberry Pi (no wheel there) a
microcontroller build failed with an internal error instead of an install hint.

The arena policy: start at ten times the model size (at least 1 MiB, since
TFLM can crash rather than fail cleanly on a far too small arena) and grow it
fourfold, up to 256 MiB, while TFLM reports that it is too small. What the
model really uses is read from TFLM's RecordingMicroAllocator report.

Raises: `MissingDependency` when tflite-micro is not installed (x86-64 wheels
only); `VerificationError` when TFLM cannot load or run the model (with the
missing kernel named when that is the reason). TFLM verifies nothing and can
crash on a corrupt file: callers validate the file first
(`load_graph(validate=True)`, `litert.check_structure`) and run this adapter
in a child process (`runtime.isolate`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from edgesparse.errors import MissingDependency, VerificationError
from edgesparse.runtime.capture import captured_stderr, dist_version, first_lines

__all__ = [
    "MAX_ARENA_BYTES",
    "MIN_ARENA_BYTES",
    "arena_usage",
    "initial_arena_bytes",
    "interpreter_name",
    "invoke_each",
    "open_interpreter",
    "tflm_module",
]

MIN_ARENA_BYTES = 1 << 20
MAX_ARENA_BYTES = 256 * 1024 * 1024
_MISSING_OP = re.compile(r"Didn't find op for builtin opcode '(\w+)'")
_ARENA_TOO_SMALL = re.compile(r"missing: \d+|too small|Failed to allocate (?:tail|temp|head|memory)", re.I)


def tflm_module() -> ModuleType:
    """TFLite Micro's Python runtime module; MissingDependency (exit 2) with an install hint when absent."""
    try:
        from tflite_micro.python.tflite_micro import runtime
    except ImportError:
        raise MissingDependency(
            "TFLite Micro's Python interpreter is not installed", where="tflite_micro",
            expected="the tflite-micro package (wheels for x86-64 Linux only)", received="not importable",
            fix="pip install tflite-micro on an x86-64 machine and run this step there; a Raspberry Pi or an "
                "ARM Mac cannot run microcontroller builds") from None
    return runtime


def interpreter_name() -> str:
    return f"TFLite Micro (tflite-micro {dist_version('tflite-micro')})"


def initial_arena_bytes(model_bytes: bytes) -> int:
    """The arena the first attempt gets: ten times the model, at least MIN_ARENA_BYTES."""
    return max(len(model_bytes) * 10, MIN_ARENA_BYTES)


def open_interpreter(model_bytes: bytes) -> Any:
    """A TFLM interpreter for the model, its arena grown until TFLM can allocate every tensor.

    Anything `from_bytes` raises is a VerificationError: besides TFLM's own
    RuntimeError, its Python pre-pass (a full unpack of the flatbuffer) raises
    struct.error, TypeError, IndexError... on a damaged file.
    """
    runtime = tflm_module()
    arena = initial_arena_bytes(model_bytes)
    while True:
        with captured_stderr() as err:
            try:
                return runtime.Interpreter.from_bytes(bytes(model_bytes), arena_size=arena)
            except Exception as exc:  # the pre-pass raises whatever a broken buffer makes it raise
                failure = exc
        if _ARENA_TOO_SMALL.search(err.text) and arena < MAX_ARENA_BYTES:
            arena *= 4
            continue
        raise _error(err.text, failure)


def invoke_each(interpreter: Any, samples: np.ndarray,
                progress: Callable[[str], None] | None = None) -> np.ndarray:
    """Output 0 for each sample of input 0, one sample per invoke as on the microcontroller (raw dtype).

    `progress("invoke i/n")` before each invoke (a child process's heartbeat).
    """
    in_shape = tuple(int(d) for d in interpreter.get_input_details(0)["shape"])
    out_shape = tuple(int(d) for d in interpreter.get_output_details(0)["shape"])
    outs = []
    with captured_stderr() as err:
        try:
            for i in range(len(samples)):
                if progress is not None:
                    progress(f"invoke {i + 1}/{len(samples)}")
                interpreter.set_input(np.ascontiguousarray(samples[i:i + 1]).reshape(in_shape), 0)
                interpreter.reset()  # variable tensors (a fused LSTM's state) start fresh for each sample
                interpreter.invoke()
                outs.append(np.array(interpreter.get_output(0)).reshape((1, *out_shape[1:])))
            failure = None
        except (RuntimeError, ValueError) as exc:
            failure = exc
    if failure is not None:
        raise _error(err.text, failure)
    return np.concatenate(outs)


def arena_usage(interpreter: Any) -> dict[str, int]:
    """TFLM's RecordingMicroAllocator report: "total", "head", "tail" and bytes per allocation category."""
    with captured_stderr() as err:
        interpreter.print_allocations()
    out: dict[str, int] = {}
    for key in ("total", "head", "tail"):
        match = re.search(rf"Arena allocation {key} (\d+) bytes", err.text)
        if match:
            out[key] = int(match.group(1))
    for name, used in re.findall(r"'([^']+)' used (\d+) bytes", err.text):
        out[name] = int(used)
    return out


def _reason(exc: BaseException) -> str:
    if isinstance(exc, (RuntimeError, ValueError)):
        return str(exc)[:300]
    return f"tflite_micro could not read the file ({type(exc).__name__}: {exc})"[:300]


def _error(text: str, exc: BaseException) -> VerificationError:
    """TFLM's own words as a VerificationError: a missing kernel is named, with what to do about it."""
    name = interpreter_name()
    missing = _MISSING_OP.search(text)
    if missing:
        op = missing.group(1)
        fix = ("TFLM cannot expand sparse weights: build for a TFLM profile (a dense int8 flatbuffer), "
               "or convert without EXPERIMENTAL_SPARSITY" if op == "DENSIFY"
               else f"Replace the layer that produces {op}, or register a custom kernel for it in the firmware")
        return VerificationError(f"TFLite Micro has no kernel for {op}", where=name,
                                 expected="ops in TFLM's op resolver", received=first_lines(text), fix=fix)
    return VerificationError("The artifact does not run in TFLite Micro", where=name,
                             expected="a model TFLM can allocate and invoke",
                             received=first_lines(text) or _reason(exc),
                             fix="TFLM runs full-integer int8 models (and float32 reference kernels): "
                                 "convert with --quantize int8")

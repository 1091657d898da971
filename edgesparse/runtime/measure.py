"""Time a .tflite on this machine the way TFLite's benchmark_model does.

Warm-up runs first (caches, XNNPACK weight packing, lazy DENSIFY), then timed
`invoke()` calls on one random input of the right dtype; report median, p90,
min, mean and std. Needs only an interpreter: ai-edge-litert, else
tflite-runtime (what many Raspberry Pi images have), or TFLite Micro's Python
interpreter. Never imports TensorFlow.

    measure(model, threads=1, runs=50, warmup=5, runtime="litert") -> Measurement
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse.errors import MissingDependency, ModelError, VerificationError

_XNNPACK_REFUSED = "XNNPACK refused this model (e.g. a sparse int8 FULLY_CONNECTED); builtin kernels used"


@dataclass
class Measurement:
    model: str
    runtime: str
    interpreter: str
    threads: int
    runs: int
    warmup: int
    median_ms: float
    p90_ms: float
    min_ms: float
    mean_ms: float
    std_ms: float
    kernels: list[str] = field(default_factory=list)
    arena_bytes: int | None = None
    samples_ms: list[float] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "runtime": self.runtime, "interpreter": self.interpreter,
                "threads": self.threads, "runs": self.runs, "warmup": self.warmup,
                "median_ms": round(self.median_ms, 5), "p90_ms": round(self.p90_ms, 5),
                "min_ms": round(self.min_ms, 5), "mean_ms": round(self.mean_ms, 5),
                "std_ms": round(self.std_ms, 5), "kernels": list(self.kernels), "arena_bytes": self.arena_bytes}


def random_input(shape: Any, dtype: Any, rng: np.random.Generator) -> np.ndarray:
    """Random data of the tensor's dtype and range (int8 covers -128..127, floats ~N(0,1))."""
    dtype = np.dtype(dtype)
    shape = tuple(max(int(d), 1) for d in shape)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        low, high = max(info.min, -128), min(info.max, 127)
        return rng.integers(low, high + 1, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _stats(samples: list[float]) -> tuple[float, float, float, float, float]:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, int(np.ceil(0.9 * len(ordered))) - 1)]
    std = statistics.pstdev(ordered) if len(ordered) > 1 else 0.0
    return statistics.median(ordered), p90, ordered[0], statistics.fmean(ordered), std


def _litert_module():
    """ai_edge_litert's interpreter module, else tflite_runtime's; (module, name)."""
    try:
        from ai_edge_litert import interpreter as mod

        return mod, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime import interpreter as mod  # type: ignore[import-not-found]

        return mod, "tflite-runtime"
    except ImportError:
        raise MissingDependency(
            "No TFLite interpreter is installed", expected="ai-edge-litert or tflite-runtime",
            received="neither importable", fix="pip install ai-edge-litert (or tflite-runtime on a Pi)") from None


def make_litert_interpreter(data: bytes, threads: int) -> tuple[Any, str, list[str]]:
    """A ready (allocated) LiteRT interpreter; falls back to builtin kernels when XNNPACK refuses the model."""
    mod, name = _litert_module()
    kernels: list[str] = []
    try:
        interp = mod.Interpreter(model_content=data, num_threads=threads)
        interp.allocate_tensors()
        kernels.append("default delegates (XNNPACK) + builtin kernels")
        return interp, name, kernels
    except (RuntimeError, ValueError) as exc:
        first_error = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    resolver = getattr(getattr(mod, "OpResolverType", None), "BUILTIN_WITHOUT_DEFAULT_DELEGATES", None)
    if resolver is None:
        raise ModelError("The interpreter could not prepare the model", received=first_error,
                         fix="Check the file with `edgesparse check`; this interpreter has no builtin-only mode")
    try:
        interp = mod.Interpreter(model_content=data, num_threads=threads,
                                 experimental_op_resolver_type=resolver)
        interp.allocate_tensors()
    except (RuntimeError, ValueError) as exc:
        raise ModelError("The interpreter could not prepare the model", received=str(exc).strip()[:300],
                         fix="Is this a valid .tflite for LiteRT?") from None
    kernels.append(f"{_XNNPACK_REFUSED} ({first_error[:160]})")
    return interp, name, kernels


def _read_model(model: bytes | str | Path) -> tuple[bytes, str]:
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model), "<bytes>"
    path = Path(model)
    if not path.is_file():
        raise ModelError("Model file not found", where=str(path), expected="a .tflite file", received="no such file")
    return path.read_bytes(), str(path)


def measure(model: bytes | str | Path, *, threads: int = 1, runs: int = 50, warmup: int = 5,
            runtime: str = "litert", seed: int = 0, max_seconds: float | None = None) -> Measurement:
    """Warm up, then time `runs` invokes; stats in milliseconds. `max_seconds` caps the timed loop."""
    if runs < 1 or warmup < 0 or threads < 1:
        raise ModelError("Bad measurement options", expected="runs >= 1, warmup >= 0, threads >= 1",
                         received=f"runs={runs}, warmup={warmup}, threads={threads}")
    data, label = _read_model(model)
    rng = np.random.default_rng(seed)
    if runtime == "litert":
        interp, name, kernels = make_litert_interpreter(data, threads)
        for detail in interp.get_input_details():
            interp.set_tensor(detail["index"], random_input(detail["shape"], detail["dtype"], rng))
        invoke = interp.invoke
        arena = None
    elif runtime == "tflm":
        interp, arena = make_tflm_interpreter(data)
        name, kernels = "tflite-micro (Python, reference kernels)", ["TFLM reference kernels"]
        try:
            from edgesparse.tflite.graph import load_graph

            n_inputs = max(len(load_graph(data).inputs), 1)
        except Exception:  # noqa: BLE001 - TFLM loaded it; assume the usual single input
            n_inputs = 1
        for index in range(n_inputs):
            detail = interp.get_input_details(index)
            interp.set_input(random_input(detail["shape"], detail["dtype"], rng), index)
        invoke = interp.invoke
        threads = 1
    else:
        raise ModelError("Unknown runtime", expected="litert or tflm", received=repr(runtime))
    try:
        for _ in range(warmup):
            invoke()
        samples = []
        deadline = None if max_seconds is None else time.perf_counter() + max_seconds
        for _ in range(runs):
            start = time.perf_counter_ns()
            invoke()
            samples.append((time.perf_counter_ns() - start) / 1e6)
            if deadline is not None and time.perf_counter() > deadline:
                break
    except RuntimeError as exc:
        raise VerificationError("The model failed while running", where=label, received=str(exc)[:300]) from None
    median, p90, low, mean, std = _stats(samples)
    return Measurement(model=label, runtime=runtime, interpreter=name, threads=threads, runs=len(samples),
                       warmup=warmup, median_ms=median, p90_ms=p90, min_ms=low, mean_ms=mean, std_ms=std,
                       kernels=kernels, arena_bytes=arena, samples_ms=samples)


# --------------------------------------------------------------------------- TFLM


def _tflm_runtime():
    try:
        from tflite_micro.python.tflite_micro import runtime as tflm
    except ImportError:
        raise MissingDependency("TFLite Micro's Python interpreter is not installed",
                                expected="the tflite-micro package (x86-64 wheels only)",
                                received="not importable", fix="pip install tflite-micro on an x86-64 machine") from None
    return tflm


def make_tflm_interpreter(data: bytes, arena_size: int | None = None) -> tuple[Any, int | None]:
    """A TFLM interpreter and its arena use (bytes) as its RecordingMicroAllocator reports it."""
    tflm = _tflm_runtime()
    size = arena_size or max(len(data) * 10, 1 << 20)
    try:
        interp = tflm.Interpreter.from_bytes(data, arena_size=size)
    except (RuntimeError, ValueError) as exc:
        raise ModelError("TFLite Micro could not load the model", received=str(exc).strip()[:300],
                         fix="TFLM runs dense int8 flatbuffers without DENSIFY; convert for the TFLM target") from None
    usage = tflm_arena_usage(interp)
    return interp, usage.get("total")


def tflm_arena_usage(interp: Any) -> dict[str, int]:
    """Parse the RecordingMicroAllocator report (head, tail, total and per category) of a TFLM interpreter.

    TFLM prints it from C++ to stderr, so the process's fd 2 is captured for the call.
    """
    import re

    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        try:
            os.dup2(capture.fileno(), 2)
            interp.print_allocations()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        text = capture.read().decode("utf-8", "replace")
    out: dict[str, int] = {}
    for key in ("total", "head", "tail"):
        match = re.search(rf"Arena allocation {key} (\d+) bytes", text)
        if match:
            out[key] = int(match.group(1))
    for name, used in re.findall(r"'([^']+)' used (\d+) bytes", text):
        out[name] = int(used)
    return out


def tflm_arena_bytes(model: bytes | str | Path) -> dict[str, int]:
    """TFLM's own arena figures for a model (after one invoke): total, head, tail and per category."""
    data, _ = _read_model(model)
    interp, _ = make_tflm_interpreter(data)
    rng = np.random.default_rng(0)
    detail = interp.get_input_details(0)
    interp.set_input(random_input(detail["shape"], detail["dtype"], rng), 0)
    interp.invoke()
    return tflm_arena_usage(interp)

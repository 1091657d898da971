"""Proof, in TFLite Micro itself, that a DECODE-compressed model is the model it replaces; and its arena.

Why: a compressed flatbuffer is only worth shipping if the device computes
exactly what the uncompressed int8 model computes. This runs both in TFLM's
Python interpreter (the kernels a microcontroller runs, DECODE included):
outputs must be bitwise identical on the given samples and on random inputs,
and every decoded tensor, read back with the interpreter's preserve-all-tensors
mode after an invoke, must equal the original weights. The arena each model
needs is TFLM's own recorded allocation.

Anything that sizes an arena runs in a child process: TFLM can segfault,
instead of failing, when the arena is too small for some compressed models,
and a crash must cost a probe, not the build.

Raises: `MissingDependency` without tflite-micro; `VerificationError` when a
model does not run, outputs or decoded tensors differ, or a child crashes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse.errors import VerificationError
from edgesparse.runtime.capture import captured_stderr, first_lines
from edgesparse.runtime.tflm import (
    MAX_ARENA_BYTES,
    arena_usage,
    initial_arena_bytes,
    interpreter_name,
    invoke_each,
    open_interpreter,
    tflm_module,
)
from edgesparse.tflite.decode import decode_sites
from edgesparse.tflite.decode_compress import decoded_originals
from edgesparse.tflite.graph import load_graph

__all__ = [
    "CHILD_TIMEOUT_S",
    "DecodeVerification",
    "arena_fits",
    "child_task",
    "decoded_tensors",
    "measured_arena",
    "random_inputs",
    "smallest_arena",
    "verify_compressed",
]

CHILD_TIMEOUT_S = 300.0


# --------------------------------------------------------------------------- child processes


def _in_child(task: str, model_bytes: bytes, arena_bytes: int = 0, alt_bytes: int = 0) -> tuple[str, Any]:
    """("ok", arena report) | ("error", text) | ("crashed", how) of one task run in a fresh Python process.

    A plain subprocess (not multiprocessing): nothing of the caller's __main__
    is re-imported, no file descriptor is shared, and a segfault is only a
    negative return code.
    """
    with tempfile.TemporaryDirectory(prefix="edgesparse-tflm-") as tmp:
        model_path, result_path = Path(tmp) / "model.tflite", Path(tmp) / "result.json"
        model_path.write_bytes(bytes(model_bytes))
        code = "import sys; from edgesparse.runtime.tflm_decode import child_task; child_task(*sys.argv[1:])"
        try:
            done = subprocess.run([sys.executable, "-c", code, task, str(model_path), str(int(arena_bytes)),
                                   str(int(alt_bytes)), str(result_path)],
                                  capture_output=True, timeout=CHILD_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            return "crashed", f"no answer in {CHILD_TIMEOUT_S:.0f} s"
        if done.returncode < 0:
            return "crashed", f"signal {-done.returncode}"
        if not result_path.exists():
            text = first_lines(done.stderr.decode("utf-8", "replace"))
            return "crashed", f"exit code {done.returncode}: {text}"
        outcome = json.loads(result_path.read_text())
        return outcome["status"], outcome["result"]


def child_task(task: str, model_path: str, arena_bytes: str, alt_bytes: str, result_path: str) -> None:
    """The child's side of `_in_child` (public only so the child can import it): run, write JSON."""
    data = Path(model_path).read_bytes()
    try:
        result: Any = (_allocate_and_invoke(data, int(arena_bytes), int(alt_bytes)) if task == "fits"
                       else _recorded_arena(data, int(alt_bytes)))
        status = "ok"
    except Exception as exc:  # reported to the parent, which decides what it means
        status, result = "error", f"{type(exc).__name__}: {exc}"
    Path(result_path).write_text(json.dumps({"status": status, "result": result}))


def _allocate_and_invoke(model_bytes: bytes, arena_bytes: int, alt_bytes: int) -> dict[str, int]:
    """In the child: one TFLM interpreter with exactly this arena, one invoke, its recorded allocation."""
    runtime = tflm_module()
    with captured_stderr() as err:
        try:
            interpreter = runtime.Interpreter.from_bytes(bytes(model_bytes), arena_size=int(arena_bytes),
                                                         alt_decompression_memory_size=int(alt_bytes))
            interpreter.invoke()
            failure = None
        except (RuntimeError, ValueError) as exc:
            failure = exc
    if failure is not None:
        raise RuntimeError(first_lines(err.text) or str(failure))
    return arena_usage(interpreter)


def _recorded_arena(model_bytes: bytes, alt_bytes: int) -> dict[str, int]:
    """In the child: the adapter's arena policy (start large, grow fourfold), one invoke, TFLM's record."""
    arena = initial_arena_bytes(model_bytes)
    while True:
        try:
            return _allocate_and_invoke(model_bytes, arena, alt_bytes)
        except RuntimeError:
            if arena * 4 > MAX_ARENA_BYTES:
                raise
            arena *= 4


def arena_fits(model_bytes: bytes, arena_bytes: int, *, alt_decompression_bytes: int = 0) -> bool:
    """Whether TFLM allocates and invokes the model in an arena of exactly this size (probed in a child).

    `alt_decompression_bytes`: a separate memory for DECODE outputs (TFLM's
    alt_decompression_memory_size), where a device has one; 0 = the arena.
    """
    return _in_child("fits", model_bytes, arena_bytes, alt_decompression_bytes)[0] == "ok"


def measured_arena(model_bytes: bytes, *, alt_decompression_bytes: int = 0) -> dict[str, int]:
    """TFLM's recorded arena use after one invoke ("total", "head", "tail", per category), from a child."""
    status, result = _in_child("recorded", model_bytes, 0, alt_decompression_bytes)
    if status != "ok":
        raise VerificationError("TFLite Micro could not allocate the model", where=interpreter_name(),
                                expected="a model TFLM can allocate and invoke", received=result,
                                fix="Build without --mcu-compression to see whether DECODE is the cause")
    return dict(result)


def smallest_arena(model_bytes: bytes, *, granule: int = 16, alt_decompression_bytes: int = 0) -> int:
    """The smallest arena TFLM runs the model in, to `granule` bytes, every probe in its own process.

    Starts from TFLM's recorded allocation, which on the demos is exactly the
    answer (16 B less fails), so this usually costs three child processes; it
    bisects when the recorded figure is off either way.
    """
    alt = alt_decompression_bytes
    recorded = int(measured_arena(model_bytes, alt_decompression_bytes=alt)["total"])
    if arena_fits(model_bytes, recorded, alt_decompression_bytes=alt):
        fails, fits = recorded - granule, recorded
        if fails <= 0 or not arena_fits(model_bytes, fails, alt_decompression_bytes=alt):
            return recorded
        fails, fits = 0, fails
    else:
        fails, fits = recorded, recorded * 2
        while not arena_fits(model_bytes, fits, alt_decompression_bytes=alt):
            fails, fits = fits, fits * 2
            if fits > MAX_ARENA_BYTES:
                raise VerificationError("No arena size lets TFLite Micro run the model", where=interpreter_name(),
                                        expected=f"an arena up to {MAX_ARENA_BYTES:,} B",
                                        received=f"failures from {recorded:,} B up")
    while fits - fails > granule:
        mid = (fails + fits) // 2
        fails, fits = (fails, mid) if arena_fits(model_bytes, mid, alt_decompression_bytes=alt) else (mid, fits)
    return fits


# --------------------------------------------------------------------------- reading decoded tensors


def _open_preserving(model_bytes: bytes) -> Any:
    """A TFLM interpreter that keeps every tensor after invoke (its own arena for each), arena grown as needed."""
    runtime = tflm_module()
    arena = initial_arena_bytes(model_bytes) + 4 * sum(t.nbytes for t in load_graph(model_bytes).tensors)
    while True:
        with captured_stderr() as err:
            try:
                return runtime.Interpreter.from_bytes(
                    bytes(model_bytes), arena_size=arena,
                    intrepreter_config=runtime.InterpreterConfig.kPreserveAllTensors)
            except (RuntimeError, ValueError) as exc:
                failure = exc
        if arena * 4 > MAX_ARENA_BYTES:
            raise VerificationError("The compressed model does not run in TFLite Micro", where=interpreter_name(),
                                    expected="a model TFLM can allocate with every tensor preserved",
                                    received=first_lines(err.text) or str(failure))
        arena *= 4


def decoded_tensors(model_bytes: bytes, sample: np.ndarray) -> dict[tuple[int, int], np.ndarray]:
    """(subgraph, tensor) -> each DECODE output as TFLM holds it after invoking on `sample` (input 0)."""
    interpreter = _open_preserving(model_bytes)
    invoke_each(interpreter, np.asarray(sample)[:1])
    out = {}
    for site in decode_sites(model_bytes):
        held = interpreter.GetTensor(site.output, site.subgraph)
        out[(site.subgraph, site.output)] = np.array(held["tensor_data"]).reshape(site.shape)
    return out


# --------------------------------------------------------------------------- the proof


@dataclass(frozen=True)
class DecodeVerification:
    """What was compared in TFLM, all equal, and the arena TFLM recorded for each model."""

    samples: int                                 # inputs whose outputs were compared bit for bit
    decoded_tensors: int                         # DECODE outputs compared with the original weights
    arena_dense: dict[str, int] = field(default_factory=dict)
    arena_compressed: dict[str, int] = field(default_factory=dict)

    @property
    def arena_added_bytes(self) -> int:
        return self.arena_compressed.get("total", 0) - self.arena_dense.get("total", 0)


def random_inputs(model_bytes: bytes, count: int, *, seed: int = 0) -> np.ndarray:
    """`count` random samples for input 0 over its type's whole range (uniform integers, normal floats)."""
    graph = load_graph(model_bytes)
    tensor = graph.tensors[graph.inputs[0]]
    shape = (count, *(int(d) for d in tensor.shape[1:]))
    rng = np.random.default_rng(seed)
    if tensor.dtype in ("int8", "uint8", "int16", "int32"):
        info = np.iinfo(tensor.dtype)
        return rng.integers(info.min, int(info.max) + 1, shape, dtype=tensor.dtype)
    return rng.normal(size=shape).astype(tensor.dtype)


def _constant(model_bytes: bytes, subgraph: int, index: int) -> np.ndarray:
    graph = load_graph(model_bytes)
    tensor = graph.subgraphs[subgraph].tensors[index]
    start = int(tensor.buffer_offset or 0)
    return np.frombuffer(graph.data, np.dtype(tensor.dtype), tensor.num_elements, start).reshape(tensor.shape)


def verify_compressed(original: bytes, compressed: bytes, samples: np.ndarray | None = None, *,
                      random_samples: int = 16, seed: int = 0) -> DecodeVerification:
    """Run both models in TFLM: identical outputs, decoded tensors equal to the weights, both arenas.

    `samples` are raw inputs for input 0 in the model's input type (int8 for
    an int8 model), e.g. the validation set quantized; `random_samples` more
    are drawn over the input type's whole range.
    """
    parts = [np.asarray(samples)] if samples is not None and len(samples) else []
    if random_samples:
        parts.append(random_inputs(original, random_samples, seed=seed))
    if not parts:
        raise VerificationError("Nothing to compare the compressed model on", where="verify_compressed",
                                expected="samples or random_samples > 0", received="neither")
    x = np.concatenate(parts)
    dense_out = invoke_each(open_interpreter(original), x)
    comp_out = invoke_each(open_interpreter(compressed), x)
    differ = [i for i in range(len(x)) if dense_out[i].tobytes() != comp_out[i].tobytes()]
    if differ:
        raise VerificationError("The compressed model's outputs differ from the uncompressed model's",
                                where=interpreter_name(), expected="bitwise identical outputs",
                                received=f"{len(differ)} of {len(x)} inputs differ (first: input {differ[0]})",
                                fix="Build without --mcu-compression and report this")
    origins = decoded_originals(original, compressed)
    decoded = decoded_tensors(compressed, x[:1])
    for (sg, index), values in decoded.items():
        expected = _constant(original, sg, origins[(sg, index)])
        if values.tobytes() != expected.tobytes():
            raise VerificationError("A tensor TFLM decoded differs from the original weights",
                                    where=f"tensor {index} of subgraph {sg}", expected="the original values",
                                    received=f"{int(np.sum(values != expected))} of {values.size} elements differ",
                                    fix="Build without --mcu-compression and report this")
    return DecodeVerification(len(x), len(decoded), measured_arena(original), measured_arena(compressed))

"""Proof, in TFLite Micro itself, that a DECODE-compressed model is the model it replaces; and its arena.

Why: a compressed flatbuffer is only worth shipping if the device computes
exactly what the uncompressed int8 model computes. This runs both in TFLM's
Python interpreter (the kernels a microcontroller runs, DECODE included):
outputs must be bitwise identical on the given samples and on random inputs,
and every decoded tensor, read back with the interpreter's preserve-all-tensors
mode after an invoke, must equal the original weights. The arena each model
needs is TFLM's own recorded allocation. Where a device has an alternate
decompression memory (TFLM's `alt_decompression_memory_size`) it runs the
model that way, so the proof is repeated with it: outputs again, and the
decoded tensors TFLM still holds (each DECODE reuses that memory from its
start, so after an invoke only the last DECODE's outputs are intact).

Every TFLM call runs in a child process (`runtime.isolate.run_isolated`):
TFLM can segfault, instead of failing, when the arena is too small for some
compressed models, so an arena probe that crashes is only a "does not fit".

Raises: `MissingDependency` without tflite-micro; `VerificationError` when a
model does not run, or outputs or decoded tensors differ; `ModelError` when
TFLM crashes or hangs on a model (not in a probe).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edgesparse.errors import ModelError, VerificationError
from edgesparse.runtime.capture import captured_stderr, first_lines
from edgesparse.runtime.isolate import run_isolated
from edgesparse.runtime.tflm import (
    MAX_ARENA_BYTES,
    arena_usage,
    initial_arena_bytes,
    interpreter_name,
    invoke_each,
    open_interpreter,
    tflm_module,
)
from edgesparse.tflite.decode import DecodeSite, decode_sites
from edgesparse.tflite.decode_compress import decoded_originals
from edgesparse.tflite.graph import load_graph

__all__ = [
    "DecodeVerification",
    "arena_fits",
    "decoded_tensors",
    "measured_arena",
    "random_inputs",
    "smallest_arena",
    "verify_compressed",
]

_LABEL = "TFLite Micro"
Progress = Callable[[str], None]


def _isolated(work: Callable[..., Any], *args: Any, where: str) -> Any:
    """`work(*args, progress)` in a child; tflite-micro's absence is reported here, before the fork."""
    tflm_module()
    return run_isolated(work, *args, label=_LABEL, where=where)


# --------------------------------------------------------------------------- arenas


def _allocate_and_invoke(model_bytes: bytes, arena_bytes: int, alt_bytes: int, progress: Progress) -> dict[str, int]:
    """In the child: one TFLM interpreter with exactly this arena, one invoke, its recorded allocation."""
    runtime = tflm_module()
    progress(f"allocating {arena_bytes:,} B")
    with captured_stderr() as err:
        try:
            interpreter = runtime.Interpreter.from_bytes(bytes(model_bytes), arena_size=int(arena_bytes),
                                                         alt_decompression_memory_size=int(alt_bytes))
            interpreter.invoke()
            failure = None
        except (RuntimeError, ValueError) as exc:
            failure = exc
    if failure is not None:
        raise VerificationError("TFLite Micro could not allocate and run the model", where=interpreter_name(),
                                expected=f"a model that fits a {arena_bytes:,} B arena",
                                received=first_lines(err.text) or str(failure))
    return arena_usage(interpreter)


def _recorded_arena(model_bytes: bytes, alt_bytes: int, progress: Progress) -> dict[str, int]:
    """In the child: the adapter's arena policy (start large, grow fourfold), one invoke, TFLM's record."""
    arena = initial_arena_bytes(model_bytes)
    while True:
        try:
            return _allocate_and_invoke(model_bytes, arena, alt_bytes, progress)
        except VerificationError:
            if arena * 4 > MAX_ARENA_BYTES:
                raise
            arena *= 4


def arena_fits(model_bytes: bytes, arena_bytes: int, *, alt_decompression_bytes: int = 0) -> bool:
    """Whether TFLM allocates and invokes the model in an arena of exactly this size (probed in a child).

    `alt_decompression_bytes`: a separate memory for DECODE outputs (TFLM's
    alt_decompression_memory_size), where a device has one; 0 = the arena.
    A failure, a crash or a hang of the child is "does not fit".
    """
    try:
        _isolated(_allocate_and_invoke, bytes(model_bytes), int(arena_bytes), int(alt_decompression_bytes),
                  where=f"arena probe ({arena_bytes:,} B)")
    except (VerificationError, ModelError):
        return False
    return True


def measured_arena(model_bytes: bytes, *, alt_decompression_bytes: int = 0) -> dict[str, int]:
    """TFLM's recorded arena use after one invoke ("total", "head", "tail", per category), from a child."""
    result: dict[str, int] = _isolated(_recorded_arena, bytes(model_bytes), int(alt_decompression_bytes),
                                       where="arena measurement")
    return result


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


def _open(model_bytes: bytes, *, alt_bytes: int = 0, preserve: bool = False) -> Any:
    """A TFLM interpreter with `alt_bytes` of alternate decompression memory and/or every tensor preserved.

    The arena starts as the adapter's (plus room for every tensor when preserved) and grows fourfold:
    only the arena is searched, never the decompression memory, which is the device's fixed size.
    """
    runtime = tflm_module()
    arena = initial_arena_bytes(model_bytes)
    options: dict[str, Any] = {"alt_decompression_memory_size": int(alt_bytes)}
    if preserve:
        arena += 4 * sum(t.nbytes for t in load_graph(model_bytes).tensors)
        options["intrepreter_config"] = runtime.InterpreterConfig.kPreserveAllTensors
    while True:
        with captured_stderr() as err:
            try:
                return runtime.Interpreter.from_bytes(bytes(model_bytes), arena_size=arena, **options)
            except (RuntimeError, ValueError) as exc:
                failure = exc
        if arena * 4 > MAX_ARENA_BYTES:
            how = [f"{alt_bytes:,} B of alternate decompression memory"] if alt_bytes else []
            how += ["every tensor preserved"] if preserve else []
            raise VerificationError("The compressed model does not run in TFLite Micro", where=interpreter_name(),
                                    expected=f"a model TFLM can allocate{' with ' if how else ''}{' and '.join(how)}",
                                    received=first_lines(err.text) or str(failure))
        arena *= 4


def _read_decoded(model_bytes: bytes, sample: np.ndarray, alt_bytes: int,
                  progress: Progress) -> dict[tuple[int, int], np.ndarray]:
    """In the child: one invoke with every tensor preserved, then each DECODE output TFLM still holds."""
    progress("allocating with every tensor preserved")
    interpreter = _open(model_bytes, alt_bytes=alt_bytes, preserve=True)
    invoke_each(interpreter, np.asarray(sample)[:1], progress)
    out = {}
    for site in _held_sites(model_bytes, alt_bytes):
        held = interpreter.GetTensor(site.output, site.subgraph)
        out[(site.subgraph, site.output)] = np.array(held["tensor_data"]).reshape(site.shape)
    return out


def _held_sites(model_bytes: bytes, alt_bytes: int) -> list[DecodeSite]:
    """The DECODE outputs an invoke leaves readable: all of them in the arena; with alternate decompression
    memory only the last DECODE's of subgraph 0 (each DECODE writes that memory from its start)."""
    sites = decode_sites(model_bytes)
    if not alt_bytes:
        return sites
    main = [site for site in sites if site.subgraph == 0]
    last = max((site.op for site in main), default=None)
    return [site for site in main if site.op == last]


def decoded_tensors(model_bytes: bytes, sample: np.ndarray, *,
                    alt_decompression_bytes: int = 0) -> dict[tuple[int, int], np.ndarray]:
    """(subgraph, tensor) -> each DECODE output as TFLM holds it after invoking on `sample` (input 0).

    With `alt_decompression_bytes` the decoded tensors live in that memory, which every DECODE overwrites
    from its start: only the last DECODE op's outputs (in subgraph 0) can be read back, so only they are
    returned.
    """
    result: dict[tuple[int, int], np.ndarray] = _isolated(_read_decoded, bytes(model_bytes), np.asarray(sample),
                                                          int(alt_decompression_bytes), where="decoded tensors")
    return result


def _outputs(model_bytes: bytes, x: np.ndarray, alt_bytes: int, progress: Progress) -> np.ndarray:
    """In the child: output 0 for each sample; the adapter's arena policy, or this decompression memory."""
    progress("preparing")
    interpreter = _open(model_bytes, alt_bytes=alt_bytes) if alt_bytes else open_interpreter(model_bytes)
    return invoke_each(interpreter, x, progress)


# --------------------------------------------------------------------------- the proof


@dataclass(frozen=True)
class DecodeVerification:
    """What was compared in TFLM, all equal, and the arena TFLM recorded for each model."""

    samples: int                                 # inputs whose outputs were compared bit for bit
    decoded_tensors: int                         # DECODE outputs compared with the original weights
    arena_dense: dict[str, int] = field(default_factory=dict)
    arena_compressed: dict[str, int] = field(default_factory=dict)
    alt_decompression_bytes: int = 0             # 0: no run with alternate decompression memory
    alt_samples: int = 0                         # inputs compared again with it (all of them when it was given)
    alt_decoded_tensors: int = 0                 # decoded tensors read back with it (the last DECODE's)
    arena_compressed_alt: dict[str, int] = field(default_factory=dict)   # the compressed model's arena with it

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


def _compare_outputs(expected: np.ndarray, x: np.ndarray, compressed: bytes, alt_bytes: int) -> None:
    """VerificationError unless the compressed model's output 0 is bitwise `expected` on every sample."""
    how = f" with {alt_bytes:,} B of alternate decompression memory" if alt_bytes else ""
    got = _isolated(_outputs, bytes(compressed), x, int(alt_bytes), where=f"compressed model{how}")
    differ = [i for i in range(len(x)) if expected[i].tobytes() != got[i].tobytes()]
    if differ:
        raise VerificationError(f"The compressed model's outputs{how} differ from the uncompressed model's",
                                where=interpreter_name(), expected="bitwise identical outputs",
                                received=f"{len(differ)} of {len(x)} inputs differ (first: input {differ[0]})",
                                fix="Build without --mcu-compression and report this")


def _compare_decoded(original: bytes, compressed: bytes, sample: np.ndarray, alt_bytes: int) -> int:
    """How many decoded tensors TFLM held equal to the original weights; VerificationError on a difference."""
    origins = decoded_originals(original, compressed)
    decoded = decoded_tensors(compressed, sample, alt_decompression_bytes=alt_bytes)
    how = f", with {alt_bytes:,} B of alternate decompression memory" if alt_bytes else ""
    for (sg, index), values in decoded.items():
        expected = _constant(original, sg, origins[(sg, index)])
        if values.tobytes() != expected.tobytes():
            raise VerificationError("A tensor TFLM decoded differs from the original weights",
                                    where=f"tensor {index} of subgraph {sg}{how}", expected="the original values",
                                    received=f"{int(np.sum(values != expected))} of {values.size} elements differ",
                                    fix="Build without --mcu-compression and report this")
    return len(decoded)


def verify_compressed(original: bytes, compressed: bytes, samples: np.ndarray | None = None, *,
                      random_samples: int = 16, seed: int = 0, alt_decompression_bytes: int = 0) -> DecodeVerification:
    """Run both models in TFLM: identical outputs, decoded tensors equal to the weights, both arenas.

    `samples` are raw inputs for input 0 in the model's input type (int8 for
    an int8 model), e.g. the validation set quantized; `random_samples` more
    are drawn over the input type's whole range. `alt_decompression_bytes`
    (the device's separate decompression memory, 0 = none): the compressed
    model is proven again the way that device runs it, decoding into that
    memory: the same outputs on every sample, the tensors it still holds
    after an invoke (the last DECODE's) equal to the weights, and its arena.
    """
    parts = [np.asarray(samples)] if samples is not None and len(samples) else []
    if random_samples:
        parts.append(random_inputs(original, random_samples, seed=seed))
    if not parts:
        raise VerificationError("Nothing to compare the compressed model on", where="verify_compressed",
                                expected="samples or random_samples > 0", received="neither")
    x = np.concatenate(parts)
    expected = _isolated(_outputs, bytes(original), x, 0, where="uncompressed model")
    _compare_outputs(expected, x, compressed, 0)
    decoded = _compare_decoded(original, compressed, x[:1], 0)
    proof = DecodeVerification(len(x), decoded, measured_arena(original), measured_arena(compressed))
    alt = int(alt_decompression_bytes)
    if not alt or not decode_sites(compressed):
        return proof
    _compare_outputs(expected, x, compressed, alt)
    return replace(proof, alt_decompression_bytes=alt, alt_samples=len(x),
                   alt_decoded_tensors=_compare_decoded(original, compressed, x[:1], alt),
                   arena_compressed_alt=measured_arena(compressed, alt_decompression_bytes=alt))

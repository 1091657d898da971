"""Time a .tflite on this machine the way TFLite's benchmark_model does.

Why: the latency model is fitted to, and checked against, real timings, and a
user with a board wants the board's own figure. Warm-up runs first (caches,
XNNPACK weight packing, lazy DENSIFY), then timed `invoke()` calls on one
random input of the right dtype; the result has median, p90, min, mean and std.
Needs only an interpreter (`runtime.litert`: ai-edge-litert or tflite-runtime;
`runtime.tflm`: TFLite Micro's Python interpreter). Never imports TensorFlow.
A user's file is validated before an interpreter sees it, and the interpreter
runs in a child process (`runtime.isolate`): a corrupt file that still
crashes native code is exit 2 with the signal named, never a dead process.

Raises: `ModelError` (missing, corrupt or inconsistent file, bad options, a
model the interpreter cannot prepare or run, an interpreter that crashed or
hung on it: bad input here, exit 2), `MissingDependency` (the interpreter is
not installed).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse._types import RUNTIMES
from edgesparse.errors import ModelError, VerificationError
from edgesparse.runtime import litert, tflm
from edgesparse.runtime.isolate import DEFAULT_IDLE_TIMEOUT, run_isolated
from edgesparse.runtime.verify import check_not_npu_compiled
from edgesparse.tflite.graph import Graph, load_graph

__all__ = ["COMPARE_ROUNDS", "COMPARE_RUNS_PER_ROUND", "MIN_RUNS_PER_ROUND", "Measurement", "compare_latency",
           "measure", "random_input", "tflm_arena_bytes"]

_NAMES = {"litert": "LiteRT", "tflm": "TFLite Micro"}   # the interpreter, as crash messages name it


@dataclass
class Measurement:
    """Timing statistics of one model on this machine (milliseconds), and what ran it."""

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


def measure(model: bytes | str | Path, *, threads: int = 1, runs: int = 50, warmup: int = 5,
            runtime: str = "litert", seed: int = 0, max_seconds: float | None = None,
            timeout: float = DEFAULT_IDLE_TIMEOUT) -> Measurement:
    """Warm up, then time `runs` invokes; stats in milliseconds. `max_seconds` caps the timed loop.

    The file is validated first (`load_graph(validate=True)`), then prepared
    and timed in a child process (`runtime.isolate`): an interpreter that
    crashes, or makes no progress for `timeout` seconds, is a ModelError.
    """
    if runs < 1 or warmup < 0 or threads < 1:
        raise ModelError("Bad measurement options", expected="runs >= 1, warmup >= 0, threads >= 1",
                         received=f"runs={runs}, warmup={warmup}, threads={threads}")
    if runtime not in RUNTIMES:
        raise ModelError("Unknown runtime", expected=" or ".join(RUNTIMES), received=repr(runtime))
    graph = load_graph(model, validate=True)  # before an interpreter follows the file's offsets
    label = str(graph.path) if graph.path else "<bytes>"
    check_not_npu_compiled(graph, where=label)
    _load_interpreter(runtime)  # MissingDependency here; the children inherit the imported module
    return run_isolated(_measure_here, graph, runtime, threads, runs, warmup, seed, max_seconds, label,
                        label=_NAMES[runtime], where=label, idle_timeout=timeout)


def _load_interpreter(runtime: str) -> None:
    if runtime == "tflm":
        tflm.tflm_module()
    else:
        litert.interpreter_module()


def _measure_here(graph: Graph, runtime: str, threads: int, runs: int, warmup: int, seed: int,
                  max_seconds: float | None, label: str, progress: Callable[[str], None]) -> Measurement:
    """The measurement itself, in the child process."""
    data = graph.data
    rng = np.random.default_rng(seed)
    arena = None
    try:
        if runtime == "litert":
            progress("preparing")
            invoke, name, kernels = _prepare_litert(data, graph, threads, rng)
        else:
            progress("checking the file")
            litert.check_structure(data, where=label, graph=graph)  # TFLM verifies nothing; LiteRT's loader
            progress("preparing")
            invoke, arena = _prepare_tflm(data, graph, rng)
            name, kernels, threads = "tflite-micro (Python, reference kernels)", ["TFLM reference kernels"], 1
    except VerificationError as exc:  # for `measure`, a model TFLM cannot load is bad input (exit 2)
        raise ModelError(exc.what, where=exc.where or label, expected=exc.expected, received=exc.received,
                         fix=exc.fix) from None
    samples = _time(invoke, runs, warmup, max_seconds, label, progress)
    median, p90, low, mean, std = _stats(samples)
    return Measurement(model=label, runtime=runtime, interpreter=name, threads=threads, runs=len(samples),
                       warmup=warmup, median_ms=median, p90_ms=p90, min_ms=low, mean_ms=mean, std_ms=std,
                       kernels=kernels, arena_bytes=arena, samples_ms=samples)


def _prepare_litert(data: bytes, graph: Graph, threads: int,
                    rng: np.random.Generator) -> tuple[Callable[[], None], str, list[str]]:
    """An interpreter with random inputs set (XNNPACK, else builtin kernels): its invoke, dist name, kernels."""
    def set_inputs(interp: Any) -> None:
        for detail in interp.get_input_details():
            interp.set_tensor(detail["index"], random_input(detail["shape"], detail["dtype"], rng))

    try:
        prepared, _ = litert.run_with_fallback(data, set_inputs, threads=threads)
    except litert.NotRunnable as exc:
        raise ModelError("The interpreter could not prepare the model", where=exc.name,
                         received=(exc.builtin_only or exc.with_delegates)[:300],
                         fix="Is this a valid .tflite for LiteRT? Check its ops against LiteRT's builtin op set"
                         ) from None
    return prepared.interpreter.invoke, prepared.dist, litert.kernel_report(prepared, graph).kernels


def _prepare_tflm(data: bytes, graph: Graph, rng: np.random.Generator) -> tuple[Callable[[], None], int | None]:
    """A TFLM interpreter with random inputs set: its invoke and its arena use in bytes."""
    interp = tflm.open_interpreter(data)
    try:
        for index in range(max(len(graph.inputs), 1)):
            detail = interp.get_input_details(index)
            interp.set_input(random_input(detail["shape"], detail["dtype"], rng), index)
    except (RuntimeError, ValueError, IndexError, TypeError) as exc:
        raise ModelError("TFLite Micro could not take the model's inputs", where=tflm.interpreter_name(),
                         expected="inputs shaped as the file declares them", received=str(exc)[:300],
                         fix="The file is probably corrupt: re-export it with the TFLite converter") from None
    return interp.invoke, tflm.arena_usage(interp).get("total")


def _time(invoke: Callable[[], None], runs: int, warmup: int, max_seconds: float | None, label: str,
          progress: Callable[[str], None]) -> list[float]:
    """Milliseconds per timed invoke, after `warmup` untimed ones."""
    try:
        for i in range(warmup):
            progress(f"warm-up invoke {i + 1}/{warmup}")
            invoke()
        samples = []
        deadline = None if max_seconds is None else time.perf_counter() + max_seconds
        for i in range(runs):
            progress(f"invoke {i + 1}/{runs}")
            start = time.perf_counter_ns()
            invoke()
            samples.append((time.perf_counter_ns() - start) / 1e6)
            if deadline is not None and time.perf_counter() > deadline:
                break
    except (RuntimeError, ValueError) as exc:  # the user's file fails in the interpreter: bad input
        raise ModelError("The model failed while running", where=label, expected="a model the interpreter can invoke",
                         received=str(exc)[:300],
                         fix="The file is probably corrupt: check it with `edgesparse check` and re-export it"
                         ) from None
    return samples


# Side by side: 15 rounds of 20 invokes per model. On this shared 2-vCPU VM a whole timing loop sometimes runs
# at half speed; with the models alternating round by round such a slow spell hits all of them, and the
# ratio of medians moves by a few percent where back-to-back `measure` runs disagreed by up to 2x.
COMPARE_ROUNDS = 15
COMPARE_RUNS_PER_ROUND = 20
MIN_RUNS_PER_ROUND = 3     # fewer and a round's median is one outlier away from noise


def compare_latency(models: Mapping[str, bytes], *, runtime: str = "litert", threads: int = 1,
                    rounds: int = COMPARE_ROUNDS, runs_per_round: int = COMPARE_RUNS_PER_ROUND, warmup: int = 5,
                    seed: int = 0, timeout: float = DEFAULT_IDLE_TIMEOUT,
                    max_seconds: float | None = None) -> dict[str, Any]:
    """Time several models side by side in ONE process, alternating them round by round; medians and ratios.

    Why not `measure` twice: on a noisy machine two back-to-back measurements
    can differ more than the models do. Here every model is prepared in the
    same child process (`runtime.isolate`), warmed up, then each round runs
    `runs_per_round` invokes of every model, the order rotating by one model
    per round so none always goes first. `ratios[name]` is the median of that
    model's samples over the first model's median (the baseline: > 1 is
    slower). Returns {runtime, interpreter, threads, rounds, runs_per_round,
    warmup, baseline, order: [names per round], models: {name: {median_ms,
    min_ms, p90_ms, mean_ms, runs, interpreter, kernels}}, ratios: {name:
    ratio}, round_ratios: {name: [ratio of the round medians, per round]}}.
    `max_seconds` caps the timed rounds (a slow model gets fewer runs per
    round, at least MIN_RUNS_PER_ROUND; `runs_per_round` says what ran).
    """
    if len(models) < 2 or rounds < 1 or runs_per_round < 1 or warmup < 0 or threads < 1:
        raise ModelError("Bad comparison options",
                         expected="two or more models, rounds >= 1, runs_per_round >= 1, warmup >= 0, threads >= 1",
                         received=f"{len(models)} model(s), rounds={rounds}, runs_per_round={runs_per_round}, "
                                  f"warmup={warmup}, threads={threads}")
    if runtime not in RUNTIMES:
        raise ModelError("Unknown runtime", expected=" or ".join(RUNTIMES), received=repr(runtime))
    graphs = {name: load_graph(data, validate=True) for name, data in models.items()}
    _load_interpreter(runtime)
    where = ", ".join(graphs)
    return run_isolated(_compare_here, graphs, runtime, threads, rounds, runs_per_round, warmup, seed, max_seconds,
                        label=_NAMES[runtime], where=where, idle_timeout=timeout)


def _compare_here(graphs: dict[str, Graph], runtime: str, threads: int, rounds: int, runs_per_round: int,
                  warmup: int, seed: int, max_seconds: float | None,
                  progress: Callable[[str], None]) -> dict[str, Any]:
    """The comparison itself, in the child process: prepare every model, then interleave the rounds."""
    rng = np.random.default_rng(seed)
    prepared: dict[str, tuple[Callable[[], None], str, list[str]]] = {}
    for name, graph in graphs.items():
        progress(f"preparing {name}")
        try:
            if runtime == "litert":
                prepared[name] = _prepare_litert(graph.data, graph, threads, rng)
            else:
                litert.check_structure(graph.data, where=name, graph=graph)
                prepared[name] = (_prepare_tflm(graph.data, graph, rng)[0],
                                  "tflite-micro (Python, reference kernels)", ["TFLM reference kernels"])
        except VerificationError as exc:
            raise ModelError(exc.what, where=exc.where or name, expected=exc.expected, received=exc.received,
                             fix=exc.fix) from None
    names = list(graphs)
    for name in names:
        _time(prepared[name][0], 0, warmup, None, name, progress)
    if max_seconds is not None:   # what one round of every model costs, from a few invokes of each
        per_run_s = sum(statistics.median(_time(prepared[name][0], 3, 0, None, name, lambda _stage: None))
                        for name in names) / 1000.0
        fits = int(max_seconds / max(per_run_s * rounds, 1e-9))
        runs_per_round = max(MIN_RUNS_PER_ROUND, min(runs_per_round, fits))
    samples: dict[str, list[float]] = {name: [] for name in names}
    round_medians: dict[str, list[float]] = {name: [] for name in names}
    order = []
    for r in range(rounds):
        turn = names[r % len(names):] + names[:r % len(names)]
        order.append(turn)
        for name in turn:
            progress(f"round {r + 1}/{rounds}: {name}")
            timed = _time(prepared[name][0], runs_per_round, 0, None, name, lambda _stage: None)
            samples[name] += timed
            round_medians[name].append(statistics.median(timed))
    base = names[0]
    stats = {name: _stats(samples[name]) for name in names}
    return {
        "runtime": runtime, "interpreter": prepared[base][1], "threads": threads if runtime == "litert" else 1,
        "rounds": rounds, "runs_per_round": runs_per_round, "warmup": warmup, "baseline": base, "order": order,
        "models": {name: {"median_ms": stats[name][0], "p90_ms": stats[name][1], "min_ms": stats[name][2],
                          "mean_ms": stats[name][3], "runs": len(samples[name]), "interpreter": prepared[name][1],
                          "kernels": list(prepared[name][2])} for name in names},
        "ratios": {name: stats[name][0] / stats[base][0] for name in names},
        "round_ratios": {name: [a / b for a, b in zip(round_medians[name], round_medians[base])] for name in names},
    }


def tflm_arena_bytes(model: bytes | str | Path, *, timeout: float = DEFAULT_IDLE_TIMEOUT) -> dict[str, int]:
    """TFLM's own arena figures for a model (after one invoke): total, head, tail and per category."""
    graph = load_graph(model, validate=True)
    label = str(graph.path) if graph.path else "<bytes>"
    tflm.tflm_module()
    return run_isolated(_tflm_arena_here, graph, label, label=_NAMES["tflm"], where=label, idle_timeout=timeout)


def _tflm_arena_here(graph: Graph, label: str, progress: Callable[[str], None]) -> dict[str, int]:
    progress("checking the file")
    litert.check_structure(graph.data, where=label, graph=graph)
    progress("preparing")
    interp = tflm.open_interpreter(graph.data)
    detail = interp.get_input_details(0)
    interp.set_input(random_input(detail["shape"], detail["dtype"], np.random.default_rng(0)), 0)
    progress("invoking")
    interp.invoke()
    return tflm.arena_usage(interp)

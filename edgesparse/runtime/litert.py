"""The one LiteRT adapter: make an interpreter, fall back from XNNPACK to builtin kernels, say what ran.

Why one adapter: verify, measure and the RAM estimate all create LiteRT
interpreters, and their copies had drifted (one fell back from XNNPACK only
when tensors were allocated, one also when invoking; only one could use
tflite-runtime). Here is the one way: `ai_edge_litert` (else `tflite_runtime`,
what many Raspberry Pi images have), default delegates first, and when they
refuse the model (XNNPACK cannot run a sparse int8 FULLY_CONNECTED) the same
work again with builtin kernels only, keeping the refusal as the reason. The
private `_get_ops_details` call that tells which kernels ran lives only here.

LiteRT's loader is also the best verifier installed: building an Interpreter
(without allocating) runs the C++ flatbuffers Verifier and InterpreterBuilder's
index, size and quantization checks over the whole file, including the parts
`load_graph` never reads (options tables, deprecated fields). `check_structure`
asks it, in about a millisecond, before TFLite Micro (which verifies nothing)
sees a file.

Raises: `MissingDependency` when no LiteRT interpreter is installed;
`ModelError` from `check_structure` when the loader rejects the file;
`NotRunnable` (not an EdgesparseError: the caller decides whether an
interpreter failure is bad input or a failed verification) when the model
fails with and without the default delegates.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, TypeVar

from edgesparse.errors import MissingDependency, ModelError
from edgesparse.runtime.capture import captured_stderr, dist_version, first_lines
from edgesparse.runtime.isolate import run_isolated
from edgesparse.tflite.graph import Graph
from edgesparse.tflite.validate import read_only_by_custom_ops

__all__ = [
    "KernelReport",
    "NotRunnable",
    "Prepared",
    "activation_arena_bytes",
    "check_structure",
    "count_names",
    "delegate_partition",
    "interpreter_module",
    "kernel_report",
    "ops_details",
    "run_with_fallback",
]

T = TypeVar("T")


def interpreter_module() -> tuple[ModuleType, str]:
    """ai_edge_litert's interpreter module, else tflite_runtime's; with the distribution's name."""
    try:
        from ai_edge_litert import interpreter as litert

        return litert, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime import interpreter as tflite_runtime

        return tflite_runtime, "tflite-runtime"
    except ImportError:
        raise MissingDependency(
            "No TFLite interpreter is installed", expected="ai-edge-litert or tflite-runtime",
            received="neither importable", fix="pip install ai-edge-litert (or tflite-runtime on a Pi)") from None


@dataclass
class Prepared:
    """An allocated interpreter and how it was made."""

    interpreter: Any
    dist: str                            # "ai-edge-litert" | "tflite-runtime"
    name: str                            # "LiteRT 2.3.0 (ai-edge-litert)"
    fallback_reason: str | None = None   # why the default delegates refused the model (builtin kernels ran)


class NotRunnable(Exception):
    """The model failed in LiteRT with the default delegates and with builtin kernels only."""

    def __init__(self, name: str, with_delegates: str, builtin_only: str | None) -> None:
        self.name = name
        self.with_delegates = with_delegates
        self.builtin_only = builtin_only
        super().__init__(f"{name}: with XNNPACK: {with_delegates}; builtin kernels only: {builtin_only}")


def run_with_fallback(model_bytes: bytes, work: Callable[[Any], T], *,
                      threads: int | None = None) -> tuple[Prepared, T]:
    """Make and allocate an interpreter, then `work(interpreter)`; retry with builtin kernels on failure.

    A RuntimeError or ValueError anywhere (creation, allocation, `work`'s
    invokes) counts as the delegates refusing the model; an EdgesparseError
    from `work` (bad input data) is raised as it is.
    """
    mod, dist = interpreter_module()
    name = (f"LiteRT {dist_version(dist)} (ai-edge-litert)" if dist == "ai-edge-litert"
            else f"tflite-runtime {dist_version(dist)}")
    resolvers = getattr(mod, "OpResolverType", None)
    done, reason = _attempt(mod, model_bytes, work, threads, getattr(resolvers, "AUTO", None))
    if done is not None:
        return Prepared(done[0], dist, name), done[1]
    builtin = getattr(resolvers, "BUILTIN_WITHOUT_DEFAULT_DELEGATES", None)
    if builtin is None:  # an old tflite-runtime: no builtin-only mode to fall back to
        raise NotRunnable(name, reason, None)
    done, reason2 = _attempt(mod, model_bytes, work, threads, builtin)
    if done is None:
        raise NotRunnable(name, reason, reason2)
    return Prepared(done[0], dist, name, fallback_reason=reason), done[1]


def _attempt(mod: ModuleType, model_bytes: bytes, work: Callable[[Any], T], threads: int | None,
             resolver: Any) -> tuple[tuple[Any, T] | None, str]:
    """((interpreter, work's result), "") or (None, why it failed)."""
    options: dict[str, Any] = {"model_content": model_bytes}
    if threads is not None:
        options["num_threads"] = threads
    if resolver is not None:
        options["experimental_op_resolver_type"] = resolver
    with captured_stderr() as err:
        try:
            interp = mod.Interpreter(**options)
            interp.allocate_tensors()
            return (interp, work(interp)), ""
        except (RuntimeError, ValueError) as exc:
            failure = exc
    text = re.sub(r"(#\d+)(Node number)", r"\1; \2", str(failure).strip())  # LiteRT joins two lines
    return None, text or first_lines(err.text) or type(failure).__name__


# What the loader says when it only lacks a kernel (a custom op, a Flex op, TFLM's DECODE): not damage.
_NOT_DAMAGE = ("Missing registration for opcode", "Encountered unresolved custom op",
               "Didn't find op for builtin opcode")
# Two complaints of LiteRT's loader about files TFLM runs (both made by TFLM's DECODE compression): an
# activation whose buffer holds an empty (rather than no) data vector, as files rewritten through the
# flatbuffer object API have; per-channel quantization left on a tensor only a custom op (DECODE) reads.
_EMPTY_BUFFER = re.compile(r"(?:[\w/]+\.cc:\d+ )?required_bytes <= bytes was not true\.\s*"
                           r"Tensor (\d+) is invalidly specified in schema\.")
_CUSTOM_QUANTIZATION = re.compile(r"num_scales must be [^.]*\.\s*Tensor (\d+) has invalid quantization parameters\.")
# A third (edgesparse.tflite.strip for TFLM): one zero point for per-channel scales, which TFLM's allocator expands.
_ONE_ZERO_POINT = re.compile(r"QuantizationParam has 1 zero_point values and \d+ scale values\. Must have same "
                             r"number\.\s*Tensor (\d+) has invalid quantization parameters\.")


def check_structure(model_bytes: bytes, *, where: str, graph: Graph | None = None) -> None:
    """ModelError when LiteRT's loader (flatbuffers Verifier + InterpreterBuilder) rejects the file.

    Nothing is allocated or run. Kernels the loader lacks are not damage, nor
    (given the parsed `graph`) an empty data vector on a tensor without values;
    without any LiteRT interpreter installed the check is skipped: the graph
    checks and the child process still stand between the file and TFLM.
    """
    try:
        mod, _ = interpreter_module()
    except MissingDependency:
        return
    options: dict[str, Any] = {"model_content": bytes(model_bytes)}
    resolvers = getattr(mod, "OpResolverType", None)
    if resolvers is not None:
        options["experimental_op_resolver_type"] = resolvers.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    with captured_stderr() as err:
        try:
            mod.Interpreter(**options)
            return
        except (RuntimeError, ValueError) as exc:
            text = str(exc).strip()
    if any(s in text or s in err.text for s in _NOT_DAMAGE) or _only_tolerated(text, graph):
        return
    raise ModelError("corrupt TFLite flatbuffer", where=where,
                     expected="a file LiteRT's loader accepts (flatbuffers Verifier, tensor and buffer checks)",
                     received=re.sub(r"\s+", " ", text or first_lines(err.text))[:300],
                     fix="Re-export the model with tf.lite.TFLiteConverter, or copy it again: "
                         "the file is corrupted")


def _only_tolerated(text: str, graph: Graph | None) -> bool:
    """Whether every complaint of the loader is one about a file TFLM runs (see _EMPTY_BUFFER), given the graph."""
    if graph is None or not text.strip():
        return False
    valueless = {t.index for sg in graph.subgraphs for t in sg.tensors if t.buffer_bytes == 0 and not t.is_constant}
    custom_only = {t for sg in graph.subgraphs for t in read_only_by_custom_ops(sg)}
    rest = _EMPTY_BUFFER.sub(lambda m: "" if int(m.group(1)) in valueless else m.group(0), text)
    rest = _CUSTOM_QUANTIZATION.sub(lambda m: "" if int(m.group(1)) in custom_only else m.group(0), rest)
    one_zero_point = {t.index for sg in graph.subgraphs for t in sg.tensors
                      if t.quantization and len(t.quantization.zero_points) == 1 and len(t.quantization.scales) > 1}
    rest = _ONE_ZERO_POINT.sub(lambda m: "" if int(m.group(1)) in one_zero_point else m.group(0), rest)
    return not rest.strip()


def ops_details(interpreter: Any) -> list[dict[str, Any]]:
    """LiteRT's node list: the model's ops, then one DELEGATE node per delegated partition ([] if unknown).

    The interpreter exposes it only as the private `_get_ops_details`; this is
    the one place that calls it.
    """
    details = getattr(interpreter, "_get_ops_details", None)
    if details is None:
        return []
    try:
        return list(details())
    except (RuntimeError, ValueError):
        return []


def delegate_partition(ops: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
    """(original op indices taken by delegates, op indices run by builtin kernels).

    A partition is everything between a DELEGATE node's inputs and outputs:
    walk back from its outputs through producers, stopping at its inputs.
    """
    original = [o for o in ops if o["op_name"] != "DELEGATE"]
    producer = {int(t): o["index"] for o in original for t in o["outputs"]}
    taken: set[int] = set()
    for d in (o for o in ops if o["op_name"] == "DELEGATE"):
        stop = {int(t) for t in d["inputs"]}
        todo = [int(t) for t in d["outputs"]]
        seen: set[int] = set()
        while todo:
            t = todo.pop()
            if t in stop or t in seen or t not in producer:
                continue
            seen.add(t)
            k = producer[t]
            if k not in taken:
                taken.add(k)
                todo.extend(int(i) for i in ops[k]["inputs"] if int(i) >= 0)
    return sorted(taken), [o["index"] for o in original if o["index"] not in taken]


@dataclass
class KernelReport:
    """Which kernels ran the model: sentences for a report, and the op names per kernel family."""

    kernels: list[str]
    delegated_ops: list[str] = field(default_factory=list)
    builtin_ops: list[str] = field(default_factory=list)


def kernel_report(prepared: Prepared, graph: Graph) -> KernelReport:
    """What ran the model in `prepared`: the XNNPACK delegate, builtin kernels, or builtin kernels after a refusal."""
    kernels = []
    if prepared.fallback_reason is not None:
        kernels.append(f"{_describe_refused(graph, prepared.fallback_reason)} ({prepared.fallback_reason}); "
                       "builtin kernels used")
    ops = ops_details(prepared.interpreter)
    if not ops:
        return KernelReport(kernels or ["default delegates (XNNPACK) + builtin kernels"])
    taken, builtin = delegate_partition(ops)
    delegated = [ops[k]["op_name"] for k in taken]
    builtin_names = [ops[k]["op_name"] for k in builtin]
    if not delegated and prepared.fallback_reason is None:
        kernels.append(f"XNNPACK (the default delegate) took none of the {len(builtin_names)} ops")
    if delegated:
        kernels.append(f"XNNPACK delegate ran {len(delegated)} of {len(taken) + len(builtin)} ops: "
                       f"{count_names(delegated)}")
    if builtin_names:
        kernels.append(f"builtin kernels ran {len(builtin_names)} ops: {count_names(builtin_names)}")
    return KernelReport(kernels, delegated, builtin_names)


def count_names(names: list[str]) -> str:
    """"CONV_2D x3, SOFTMAX": op names with their counts, in order of first appearance."""
    return ", ".join(f"{n} x{c}" if c > 1 else n for n, c in Counter(names).items())


def _describe_refused(graph: Graph, reason: str) -> str:
    """'XNNPACK refused the sparse int8 FULLY_CONNECTED' when the refused node reads a sparse weight."""
    m = re.search(r"failed to delegate (\w+) node #(\d+)", reason)
    if not m:
        return "XNNPACK refused the model"
    op_name, k = m.group(1), int(m.group(2))
    ops = graph.ops
    words = op_name
    if k < len(ops) and len(ops[k].inputs) > 1 and ops[k].inputs[1] >= 0:
        w = ops[k].inputs[1]
        producer = next((op for op in ops if w in op.outputs), None)
        sparse = graph.tensors[w].sparsity is not None or (producer is not None and producer.opcode == "DENSIFY")
        words = ("sparse " if sparse else "") + f"{graph.tensors[w].dtype} {op_name}"
    return f"XNNPACK refused the {words}"


def activation_arena_bytes(model_bytes: bytes, alignment: int = 64) -> int | None:
    """Span of LiteRT's activation arena (builtin kernels), from the addresses of the tensors it planned there.

    Only tensors produced per inference (not by run-once ops such as DENSIFY,
    whose outputs LiteRT keeps in its persistent arena) are read. If their
    addresses do not form one arena (span larger than the sum of their sizes),
    or LiteRT cannot prepare the model here (or crashes on it: it runs in a
    child process), the answer is None.
    """
    try:
        interpreter_module()
        arena: int | None = run_isolated(_arena_here, bytes(model_bytes), alignment, label="LiteRT", where=None)
        return arena
    except Exception:  # any failure means "not readable": the caller's planner answers
        return None


def _arena_here(model_bytes: bytes, alignment: int, progress: Callable[[str], None]) -> int | None:
    """activation_arena_bytes' work, in the child process."""
    mod, _ = interpreter_module()
    builtin = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    progress("allocating")
    with captured_stderr():
        interp = mod.Interpreter(model_content=model_bytes, experimental_op_resolver_type=builtin)
        interp.allocate_tensors()
    ops = ops_details(interp)
    once = {t for op in ops if op["op_name"] == "DENSIFY" for t in op["outputs"]}
    planned = {d["index"] for d in interp.get_input_details()}
    planned |= {t for op in ops if op["op_name"] != "DENSIFY" for t in op["outputs"]}
    lo, hi, total = None, 0, 0
    for idx in sorted(planned - once):
        try:
            array = interp.tensor(idx)()
        except (ValueError, RuntimeError):
            continue
        if array.nbytes == 0:
            continue
        addr = array.ctypes.data
        lo = addr if lo is None else min(lo, addr)
        hi = max(hi, addr + array.nbytes)
        total += -(-array.nbytes // alignment) * alignment
    if lo is None or hi - lo > total + alignment:
        return None
    return int(hi - lo)

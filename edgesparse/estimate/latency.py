"""Flash, RAM, latency, energy and battery from a parsed graph and a device profile.

Why a model, not a guess: every figure says what it rests on. RAM is a
tensor-lifetime plan made the way TFLM's GreedyMemoryPlanner makes it (checked
against the TFLM interpreter's own arena figures), latency is a per-op cost
model whose coefficients were fitted to measurements (the profile's [latency]
table says which), and anything that rests on an unfitted coefficient or an
unsourced number is listed in `assumptions` and flagged in the output.

Public API:
    check_model(model_bytes_or_path, profile, *, rate=None, battery_mah=None,
                sleep_mw=None) -> CheckResult
    plan_greedy(buffers, alignment=16) -> MemoryPlan
    estimate_ram(graph, profile) -> RamEstimate
    estimate_flash(graph, profile) -> FlashEstimate
    estimate_latency(graph, profile, threads=None) -> LatencyEstimate
    estimate_energy(latency_ms, profile, rate=..., battery_mah=..., sleep_mw=...) -> EnergyEstimate
    parse_rate("1/s" | "10/min" | "3/h") -> inferences per second
    op_features(graph, profile) -> per-op cost features (used by calibrate.py)

Imports no TensorFlow (the `check` path must run on a Raspberry Pi without it).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from edgesparse.errors import DataError, ModelError, ProfileError
from edgesparse.runtime.litert import activation_arena_bytes
from edgesparse.tflite.schema import ONE_TIME_OPS, cost_class, dtype_bytes, dtype_class, normalize_dtype, op_kind

SCHEMA_VERSION = 1

# --------------------------------------------------------------------------- dtypes, ops


def tensor_nbytes(tensor: Any) -> int:
    """Bytes of one tensor's data: product of its shape (dynamic dims as 1) x element size."""
    shape = [int(d) for d in (getattr(tensor, "shape", None) or ())]
    count = 1
    for dim in shape:
        count *= max(dim, 1)
    return count * dtype_bytes(getattr(tensor, "dtype", "float32"))


def op_type(op: Any) -> str:
    """The builtin operator name ('CONV_2D'), whatever the graph IR calls the field."""
    for attr in ("opcode", "op_type", "type", "name"):
        value = getattr(op, attr, None)
        if isinstance(value, str) and value:
            return value.upper()
    return str(getattr(op, "opcode", "UNKNOWN")).upper()


# --------------------------------------------------------------------------- greedy planner


@dataclass(frozen=True)
class Buffer:
    """One buffer to place: its size and the first/last time step (op scope) it is live."""

    size: int
    first: int
    last: int
    name: str = ""
    offline_offset: int | None = None
    kind: str = "tensor"  # tensor | scratch


@dataclass
class MemoryPlan:
    buffers: list[Buffer]
    offsets: list[int]
    peak_bytes: int

    def overlaps(self) -> list[tuple[int, int]]:
        """Pairs of buffers live at the same time and overlapping in memory (should be none)."""
        bad = []
        for i, a in enumerate(self.buffers):
            for j in range(i + 1, len(self.buffers)):
                b = self.buffers[j]
                if a.first > b.last or b.first > a.last:
                    continue
                ao, bo = self.offsets[i], self.offsets[j]
                if ao < bo + b.size and bo < ao + a.size:
                    bad.append((i, j))
        return bad


def align_up(value: int, alignment: int) -> int:
    return -(-int(value) // alignment) * alignment if alignment > 1 else int(value)


def plan_greedy(buffers: Sequence[Buffer], alignment: int = 16) -> MemoryPlan:
    """Place buffers the way TFLM's GreedyMemoryPlanner does.

    Offline-planned buffers keep their offsets and are placed first; the rest,
    largest first (ties: later-added first, as TFLM's stable sort of a reversed
    list gives), go at the lowest offset whose gap between time-overlapping,
    already-placed buffers is big enough. Sizes are rounded up to `alignment`
    (TFLM: MicroArenaBufferAlignment() = 16) before planning.
    """
    sized = [Buffer(align_up(b.size, alignment), b.first, b.last, b.name, b.offline_offset, b.kind)
             for b in buffers]
    offline = [i for i, b in enumerate(sized) if b.offline_offset is not None]
    online = [i for i, b in enumerate(sized) if b.offline_offset is None]
    online_rev = list(reversed(online))  # TFLM fills the sort array from its tail
    online_sorted = sorted(online_rev, key=lambda i: -sized[i].size)  # stable, like ReverseSortInPlace
    order = offline + online_sorted
    offsets = [0] * len(sized)
    placed: list[int] = []  # indices, kept sorted by offset (ties keep insertion order)
    for idx in order:
        buf = sized[idx]
        if buf.offline_offset is not None:
            candidate = int(buf.offline_offset)
        else:
            candidate = 0
            for other in placed:  # ordered by offset
                o = sized[other]
                if o.first > buf.last or buf.first > o.last:
                    continue
                if offsets[other] - candidate >= buf.size:
                    break
                candidate = max(candidate, offsets[other] + o.size)
        offsets[idx] = candidate
        pos = len(placed)
        for k, other in enumerate(placed):
            if offsets[other] > candidate:
                pos = k
                break
        placed.insert(pos, idx)
    peak = max((offsets[i] + sized[i].size for i in range(len(sized))), default=0)
    return MemoryPlan(buffers=sized, offsets=offsets, peak_bytes=peak)


# --------------------------------------------------------------------------- RAM

# TFLM persistent (tail) allocations, measured on the tflite-micro Python
# interpreter (x86-64, reference kernels) with its RecordingMicroAllocator and
# matched to the struct definitions in tflite-micro's source. Per-op
# "op data" = bytes the kernel's Init/Prepare asks AllocatePersistentBuffer for;
# `per_channel` ops also allocate an int32 multiplier and an int32 shift per
# output channel. "builtin" = the parsed builtin options (TfLiteConvParams...).
# Unknown ops use _TFLM_OPDATA_DEFAULT and are listed in the estimate's notes.
_TFLM_OPDATA = {
    "CONV_2D": 80, "DEPTHWISE_CONV_2D": 80, "FULLY_CONNECTED": 72, "AVERAGE_POOL_2D": 32,
    "MAX_POOL_2D": 32, "SOFTMAX": 80, "RELU": 28, "RELU6": 28, "LEAKY_RELU": 28, "HARD_SWISH": 20,
    "LOGISTIC": 16, "TANH": 16, "PAD": 56, "PADV2": 56, "MEAN": 44, "ADD": 60, "SUB": 60, "MUL": 36,
    "CONCATENATION": 80, "RESHAPE": 0, "SQUEEZE": 0, "EXPAND_DIMS": 0, "SHAPE": 0, "PACK": 28,
    "STRIDED_SLICE": 56, "QUANTIZE": 40, "DEQUANTIZE": 40,
}
_TFLM_OPDATA_DEFAULT = 48
_TFLM_BUILTIN = {
    "CONV_2D": 28, "DEPTHWISE_CONV_2D": 28, "AVERAGE_POOL_2D": 40, "MAX_POOL_2D": 40,
    "RESHAPE": 40, "FULLY_CONNECTED": 32, "ADD": 8, "SUB": 8, "MUL": 4, "CONCATENATION": 8,
    "MEAN": 24, "SOFTMAX": 0, "STRIDED_SLICE": 24, "PACK": 8,
}


@dataclass(frozen=True)
class TflmLayout:
    """Sizes of TFLM's per-model bookkeeping for one pointer width."""

    name: str
    eval_tensor: int        # sizeof(TfLiteEvalTensor)
    node_and_registration: int
    io_tensor: int          # a persistent TfLiteTensor for each model input/output
    io_quantization: int    # TfLiteAffineQuantization + zero-point array, per quantized I/O tensor
    fixed: int              # allocator, planner, subgraph tables: constant per model
    persistent_base: int    # persistent buffers every model allocates
    alignment_slack: int    # typical padding between tail allocations


# Measured: RecordingMicroAllocator categories on x86-64 (see docs/estimation.md).
TFLM_HOST64 = TflmLayout("tflm x86-64 (measured)", 24, 64, 64, 32, 488, 16, 32)
# 32-bit MCUs: pointer-only structs shrink (TfLiteEvalTensor 3 words, TfLiteNode 7
# words + registration pointer); the rest is kept at the host figure (an upper bound).
TFLM_MCU32 = TflmLayout("tflm 32-bit (derived)", 12, 32, 64, 32, 488, 16, 32)


@dataclass
class RamEstimate:
    """RAM the model needs on the device, split the way the runtime allocates it."""

    total_bytes: int
    planned_bytes: int          # non-persistent: activations (+ kernel scratch) under the plan
    persistent_bytes: int       # tensor structs, op data, variables, runtime persistent RAM
    scratch_bytes: int          # kernel scratch buffers (part of planned_bytes)
    method: str
    basis: str                  # "planner" | "interpreter" | "planner+assumption"
    breakdown: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    plan: MemoryPlan | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"total_bytes": self.total_bytes, "planned_bytes": self.planned_bytes,
                "persistent_bytes": self.persistent_bytes, "scratch_bytes": self.scratch_bytes,
                "method": self.method, "basis": self.basis, "breakdown": dict(self.breakdown),
                "notes": list(self.notes)}


def _subgraph_view(graph: Any) -> tuple[list, list, list[int], list[int]]:
    """(ops, tensors, inputs, outputs) of the main subgraph."""
    return list(graph.ops), list(graph.tensors), list(graph.inputs), list(graph.outputs)


def _is_constant(tensor: Any) -> bool:
    return bool(getattr(tensor, "is_constant", False))


def _is_variable(tensor: Any) -> bool:
    return bool(getattr(tensor, "is_variable", False))


def tensor_lifetimes(graph: Any) -> dict[int, tuple[int, int]]:
    """First/last op scope of every non-constant tensor, as TFLM's AllocationInfoBuilder marks them.

    Scope 0 is the subgraph's start (its inputs); op i runs in scope i + 1;
    outputs stay live to the last op.
    """
    ops, tensors, inputs, outputs = _subgraph_view(graph)
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for t in inputs:
        first[t] = last[t] = 0
    for t in outputs:
        first[t] = last[t] = 0
    for i, op in enumerate(ops, start=1):
        for t in op.outputs:
            if t >= 0:
                first[t] = last[t] = i
        for t in op.inputs:
            if t >= 0 and t in first:
                last[t] = max(last[t], i)
        for t in op.outputs:
            if t >= 0:
                last[t] = max(last[t], i)
    end = len(ops)
    for t in outputs:
        last[t] = max(last.get(t, 0), end)
    return {t: (first[t], last[t]) for t in first}


def _per_channel(tensors: Sequence[Any], index: int) -> int:
    """Number of quantization scales of a (weight) tensor: > 1 means per-channel."""
    if index < 0 or index >= len(tensors):
        return 0
    quant = getattr(tensors[index], "quantization", None)
    if quant is None:
        return 0
    scales = getattr(quant, "scales", None)
    if scales is None and isinstance(quant, Mapping):
        scales = quant.get("scales") or quant.get("scale")
    try:
        return len(scales) if scales is not None else 0
    except TypeError:
        return 1


def _out_channels(tensors: Sequence[Any], op: Any) -> int:
    if not op.outputs:
        return 0
    shape = getattr(tensors[op.outputs[0]], "shape", None) or (1,)
    return max(int(shape[-1]), 1)


def cmsis_nn_scratch_bytes(op: Any, tensors: Sequence[Any]) -> int:
    """Scratch (im2col) bytes CMSIS-NN asks the arena for, per its *_get_buffer_size functions (DSP build).

    Source: CMSIS-NN arm_convolve_wrapper_s8_get_buffer_size,
    arm_depthwise_conv_wrapper_s8_get_buffer_size, arm_avgpool_s8_get_buffer_size
    (Cortex-M with DSP extension: M4, M7, M33).
    """
    name = op_type(op)
    if len(op.inputs) < 1 or op.inputs[0] < 0:
        return 0
    in_shape = [int(d) for d in (getattr(tensors[op.inputs[0]], "shape", None) or ())]
    if len(in_shape) != 4:
        return 0
    cin = in_shape[-1]
    opts = getattr(op, "options", None) or {}
    get = opts.get if isinstance(opts, Mapping) else (lambda k, d=None: getattr(opts, k, d))
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D") and len(op.inputs) > 1:
        fshape = [int(d) for d in (getattr(tensors[op.inputs[1]], "shape", None) or ())]
        if len(fshape) != 4:
            return 0
        kh, kw = fshape[1], fshape[2]
        stride = (int(get("stride_h", 1) or 1), int(get("stride_w", 1) or 1))
        padding = str(get("padding", "VALID")).upper()
        if name == "CONV_2D":
            if kh == 1 and kw == 1 and stride == (1, 1) and cin % 4 == 0:
                return 0
            return 2 * cin * kh * kw * 2
        mult = fshape[3] // max(cin, 1)
        if mult == 1 and kh == 3 and kw == 3 and cin % 4 == 0 and padding != "INVALID":
            return 0
        return cin * kh * kw * 2
    if name == "AVERAGE_POOL_2D":
        return cin * 4
    return 0


def tflm_ram(graph: Any, *, layout: TflmLayout = TFLM_HOST64, kernels: str = "reference",
             persistent_ram_bytes: int = 0) -> RamEstimate:
    """The tensor arena TFLM allocates for this graph: planned head + persistent tail.

    Head = the greedy plan of every non-constant, non-variable tensor (and, for
    CMSIS-NN, each op's scratch buffer, live only during its op). Tail = eval
    tensors, node structs, I/O TfLiteTensors, kernel op data (per-channel
    quantization arrays included), builtin options and variable tensors.
    """
    ops, tensors, inputs, outputs = _subgraph_view(graph)
    notes: list[str] = []
    lifetimes = tensor_lifetimes(graph)
    buffers: list[Buffer] = []
    variable_bytes = 0
    for t, (first, last) in lifetimes.items():
        tensor = tensors[t]
        if _is_constant(tensor):
            continue
        size = tensor_nbytes(tensor)
        if _is_variable(tensor):
            variable_bytes += align_up(size, 16)
            continue
        if size:
            buffers.append(Buffer(size, first, last, name=str(getattr(tensor, "name", t))))
    for tensor in tensors:
        if _is_variable(tensor) and not any(tensor is tensors[t] for t in lifetimes):
            variable_bytes += align_up(tensor_nbytes(tensor), 16)
    scratch = 0
    if "cmsis" in kernels.lower():
        for i, op in enumerate(ops, start=1):
            size = cmsis_nn_scratch_bytes(op, tensors)
            if size:
                scratch += size
                buffers.append(Buffer(size, i, i, name=f"scratch:{op_type(op)}#{i - 1}", kind="scratch"))
    plan = plan_greedy(buffers, alignment=16)

    op_data = layout.persistent_base
    builtin = 0
    unknown: set[str] = set()
    for op in ops:
        name = op_type(op)
        if name not in _TFLM_OPDATA:
            unknown.add(name)
        op_data += _TFLM_OPDATA.get(name, _TFLM_OPDATA_DEFAULT)
        builtin += _TFLM_BUILTIN.get(name, 0)
        channels = _out_channels(tensors, op)
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            op_data += 8 * channels
        elif name == "FULLY_CONNECTED" and len(op.inputs) > 1 and _per_channel(tensors, op.inputs[1]) > 1:
            op_data += 8 * channels
    io = list(dict.fromkeys(list(inputs) + list(outputs)))
    io_quant = sum(1 for t in io if _per_channel(tensors, t) > 0)
    breakdown = {
        "eval_tensors": layout.eval_tensor * len(tensors),
        "node_structs": layout.node_and_registration * len(ops),
        "io_tensors": layout.io_tensor * len(io) + layout.io_quantization * io_quant,
        "op_data": op_data + layout.alignment_slack,
        "builtin_options": builtin,
        "runtime_fixed": layout.fixed,
        "variable_tensors": variable_bytes,
    }
    if persistent_ram_bytes:
        breakdown["runtime_persistent_ram"] = int(persistent_ram_bytes)
    persistent = sum(breakdown.values())
    breakdown = {"planned_activations": plan.peak_bytes, **breakdown}
    if unknown:
        notes.append("TFLM op data for " + ", ".join(sorted(unknown)) +
                     f" not measured; {_TFLM_OPDATA_DEFAULT} bytes each assumed")
    if scratch:
        notes.append(f"CMSIS-NN scratch buffers ({scratch} bytes in all, each live during its op) are in the plan")
    return RamEstimate(
        total_bytes=plan.peak_bytes + persistent, planned_bytes=plan.peak_bytes,
        persistent_bytes=persistent, scratch_bytes=scratch,
        method=f"TFLM greedy plan, alignment 16; persistent layout {layout.name}; kernels {kernels}",
        basis="planner", breakdown=breakdown, notes=notes, plan=plan)


def litert_ram(graph: Any, *, model_bytes: bytes | None = None, kernels: str = "xnnpack",
               persistent_ram_bytes: int = 0) -> RamEstimate:
    """RAM under LiteRT: activation arena + the model (mmapped) + XNNPACK's packed weights + runtime.

    The arena comes from LiteRT's own plan when ai-edge-litert can load the
    model here (addresses of the planned tensors), else from a greedy plan with
    LiteRT's 64-byte tensor alignment.
    """
    notes: list[str] = []
    arena = None
    method = "LiteRT arena plan read from the interpreter"
    if model_bytes is not None:
        arena = activation_arena_bytes(model_bytes)
    if arena is None:
        once = {t for op in graph.ops if getattr(op, "one_time", False) or op_type(op) in ONE_TIME_OPS
                for t in op.outputs}
        buffers = [Buffer(tensor_nbytes(graph.tensors[t]), f, l)
                   for t, (f, l) in tensor_lifetimes(graph).items()
                   if t not in once and not _is_constant(graph.tensors[t]) and tensor_nbytes(graph.tensors[t])]
        arena = plan_greedy(buffers, alignment=64).peak_bytes
        method = "greedy plan, alignment 64 (LiteRT's arena was not readable here)"
    file_bytes = int(getattr(graph, "file_bytes", 0) or (len(model_bytes) if model_bytes else 0))
    if not isinstance(file_bytes, int):
        file_bytes = len(file_bytes)
    packed = 0
    if "xnnpack" in kernels.lower():
        for op in graph.ops:
            if _kind(op) in ("conv", "dwconv", "fc"):
                packed += sum(tensor_nbytes(graph.tensors[t]) for t in op.inputs[1:]
                              if t >= 0 and _is_constant(graph.tensors[t]))
        notes.append("XNNPACK repacks conv/FC weights into its own buffers: counted once more "
                     "(approximately their size)")
    densified = sum(tensor_nbytes(graph.tensors[t]) for op in graph.ops
                    if getattr(op, "one_time", False) or op_type(op) in ONE_TIME_OPS for t in op.outputs if t >= 0)
    if densified:
        notes.append(f"DENSIFY keeps {densified} bytes of dense weights in RAM for the model's lifetime")
    breakdown = {"planned_activations": arena, "model_file_mmapped": file_bytes,
                 "xnnpack_packed_weights": packed, "densified_weights": densified}
    if persistent_ram_bytes:
        breakdown["runtime_persistent_ram"] = int(persistent_ram_bytes)
    persistent = file_bytes + packed + densified + int(persistent_ram_bytes)
    return RamEstimate(total_bytes=arena + persistent, planned_bytes=arena, persistent_bytes=persistent,
                       scratch_bytes=0, method=method,
                       basis="interpreter+assumption" if "read" in method else "planner+assumption",
                       breakdown=breakdown, notes=notes)


def estimate_ram(graph: Any, profile: Any, *, model_bytes: bytes | None = None) -> RamEstimate:
    runtime = _profile_runtime(profile)
    kernels = str(runtime.get("kernels", "reference"))
    persistent = int(runtime.get("persistent_ram_bytes", 0) or 0)
    if _runtime_name(profile) == "tflm":
        layout = TFLM_MCU32 if _device(profile).get("class") == "mcu" else TFLM_HOST64
        return tflm_ram(graph, layout=layout, kernels=kernels, persistent_ram_bytes=persistent)
    return litert_ram(graph, model_bytes=model_bytes, kernels=kernels, persistent_ram_bytes=persistent)


# --------------------------------------------------------------------------- flash


@dataclass
class FlashEstimate:
    total_bytes: int
    model_bytes: int
    runtime_code_bytes: int
    basis: str
    source: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"total_bytes": self.total_bytes, "model_bytes": self.model_bytes,
                "runtime_code_bytes": self.runtime_code_bytes, "basis": self.basis,
                "source": self.source, "notes": list(self.notes)}


def estimate_flash(graph: Any, profile: Any, *, model_size: int | None = None) -> FlashEstimate:
    """Flash = the .tflite bytes + the runtime's code (profile [runtime] code_bytes, plus per-op kernels)."""
    size = model_size if model_size is not None else int(getattr(graph, "file_bytes", 0) or 0)
    runtime = _profile_runtime(profile)
    sources = _sources(profile)
    code = runtime.get("code_bytes")
    notes = []
    per_op = runtime.get("kernel_code_bytes") or {}
    extra = 0
    if isinstance(per_op, Mapping) and per_op:
        for name in sorted({op_type(op) for op in graph.ops}):
            extra += int(per_op.get(name, per_op.get("default", 0)))
    if code is None:
        notes.append("the profile gives no [runtime] code_bytes: runtime code not counted")
        return FlashEstimate(size, size, 0, "artifact only", "artifact size", notes)
    src = str(sources.get("runtime.code_bytes", ""))
    basis = "assumption" if (not src or src.strip().lower().startswith("assumption")) else "sourced"
    if basis == "assumption":
        notes.append("runtime code_bytes is an assumption: " + (src or "no source"))
    return FlashEstimate(size + int(code) + extra, size, int(code) + extra, basis,
                         src or "profile [runtime] code_bytes (unsourced)", notes)


# --------------------------------------------------------------------------- latency


@dataclass
class OpCost:
    """Cost features of one op, as the latency model sees them."""

    index: int
    op: str
    kind: str
    dtype: str
    coef_key: str            # e.g. conv_int8: which macs_per_cycle entry prices it
    macs: int                # dense MACs
    macs_used: int           # MACs the kernel really executes (sparsity only where exploited)
    elementwise_ops: int
    bytes_moved: int
    kernel: str              # what runs it and what it exploits
    dispatched: bool = True  # whether it pays overhead_us_per_op (see XNNPACK_DISPATCH_MIN_WORK)


def _graph_op_attr(op: Any, name: str, default: int = 0) -> int:
    value = getattr(op, name, None)
    try:
        return int(value) if value is not None else default
    except (TypeError, ValueError):
        return default


def _op_dtype(op: Any, tensors: Sequence[Any]) -> str:
    dtype = getattr(op, "dtype", None)
    if dtype:
        return normalize_dtype(dtype)
    for t in list(op.inputs[:1]) + list(op.outputs[:1]):
        if t >= 0:
            return normalize_dtype(getattr(tensors[t], "dtype", "float32"))
    return "float32"


def _kind(op: Any) -> str:
    """conv | dwconv | fc | elementwise | data: the graph IR's kind folded into the model's cost classes."""
    return cost_class(getattr(op, "kind", None) or op_kind(op_type(op)))


# int8 ops without MACs that the XNNPACK delegate of LiteRT 2.3 leaves to LiteRT's builtin kernels (timed on
# the host, bench/estimation.py: a standalone int8 RELU/RELU6, HARD_SWISH or SOFTMAX is not delegated and costs
# 1-3 ns per element there, against well under 0.1 ns for delegated ones such as ADD, MUL, LOGISTIC, TANH,
# MEAN, MAX_POOL_2D, PAD, CONCATENATION, LEAKY_RELU). Only ops seen undelegated are listed.
# On LiteRT + XNNPACK the per-op overhead is paid by ops big enough to be split over the thread pool: timed
# on the host, 30 chained 16x16 FULLY_CONNECTED (256 MACs each) or ADDs of 128 elements cost ~0.03-0.04 us
# per op, 30 chained 1x1 convolutions of 4x4x8 (1,024 MACs each) ~0.2 us per op. Ops with fewer MACs plus
# element ops than this are charged no overhead_us_per_op there (TFLM and other runtimes: every op pays it).
XNNPACK_DISPATCH_MIN_WORK = 1000

# XNNPACK computes convolution output channels in SIMD tiles; with AVX-512 a layer of 8 or 24 channels
# costs about as much as one of 32 (timed on the host: thin-channel convolutions ran 2x slower per MAC). The
# tile was chosen among 8/16/32/64 by the in-sample error of the host fit (bench/estimation.py), never by the
# held-out models. Other devices: no tile known, no padding.
def xnnpack_channel_tile(profile: Any) -> int:
    simd = [str(s).lower() for s in (_device(profile).get("simd") or [])]
    return 32 if any(s.startswith("avx512") for s in simd) else 1


XNNPACK_BUILTIN_INT8 = frozenset({"RELU", "RELU6", "HARD_SWISH", "SOFTMAX", "AVERAGE_POOL_2D"})


def _element_class(op: Any, dtype: str = "", runtime: str = "", kernels: str = "", refused: bool = False) -> str:
    """Cost class of an op without MACs (arithmetic, activations, pooling, reductions, data movement), priced
    per dtype: 'elementwise', or on LiteRT + XNNPACK 'elementwise_int8_builtin' for an int8 op that runs in
    LiteRT's builtin kernels (the delegate does not take it, or refused the whole model). A profile without a
    coefficient for that class falls back to 'elementwise_<dtype>'. Splitting by op family (pooling,
    reductions, LUT/transcendental) over-fitted; splitting by WHO RUNS the op is what the timings show."""
    if runtime == "litert" and "xnnpack" in kernels and dtype == "int8" and (
            refused or op_type(op) in XNNPACK_BUILTIN_INT8):
        return "elementwise_int8_builtin"
    return "elementwise"


def op_features(graph: Any, profile: Any) -> list[OpCost]:
    """Per-op cost features for this profile's runtime: which kernel runs it, what it exploits.

    LiteRT: a FULLY_CONNECTED whose weights are stored sparse (and not handed
    over dense by a DENSIFY op) runs in the builtin sparse kernel, which skips
    zero blocks (effective MACs): XNNPACK refuses sparse int8 FC. With DENSIFY
    in front the kernel sees dense weights and does every MAC. TFLM runs dense
    (it cannot even load DENSIFY). Ops whose inputs are all constant (DENSIFY)
    run once, not per inference.
    """
    ops, tensors, _, _ = _subgraph_view(graph)
    runtime = _runtime_name(profile)
    kernels = str(_profile_runtime(profile).get("kernels", "")).lower()
    refused = runtime == "litert" and "xnnpack" in kernels and any(
        _kind(op) == "fc" and getattr(op, "sparse_weights", False)
        and dtype_class(_op_dtype(op, tensors)) == "int8" for op in ops)
    tile = xnnpack_channel_tile(profile) if runtime == "litert" and "xnnpack" in kernels and not refused else 1
    rows = []
    for i, op in enumerate(ops):
        name = op_type(op)
        kind = _kind(op)
        dtype = dtype_class(_op_dtype(op, tensors))
        macs = _graph_op_attr(op, "macs")
        effective = _graph_op_attr(op, "effective_macs", macs)
        elem = _graph_op_attr(op, "elementwise_ops")
        moved = _graph_op_attr(op, "bytes_moved")
        if not moved:
            moved = sum(tensor_nbytes(tensors[t]) for t in list(op.inputs) + list(op.outputs) if t >= 0)
        used = macs
        kernel = f"{runtime} {kernels or 'default'}"
        if kind in ("conv", "dwconv", "fc"):
            key = f"{kind}_{dtype}"
        else:
            eclass = _element_class(op, dtype, runtime, kernels, refused)
            key = eclass if eclass.endswith("_builtin") else f"{eclass}_{dtype}"
            if key.endswith("_builtin"):
                # builtin int8 kernels cost per OUTPUT element (a 2x2 and a 4x4 average pool over the same
                # input differ 4x in window ops but not in time per output element)
                elem = sum(tensor_nbytes(tensors[t]) // dtype_bytes(getattr(tensors[t], "dtype", "int8"))
                           for t in op.outputs if t >= 0) if elem else 0
                if not refused:
                    kernel = "LiteRT builtin kernel (the XNNPACK delegate does not take this int8 op)"
        sparse = bool(getattr(op, "sparse_weights", False))
        densified = bool(getattr(op, "weights_densified", False))
        filter_sparse = _filter_carries_sparsity(op, tensors)
        if refused:
            kernel = "LiteRT builtin kernels (XNNPACK refuses models with a sparse int8 FULLY_CONNECTED)"
            if kind in ("conv", "dwconv", "fc"):
                key = f"{kind}_{dtype}_builtin"
        if getattr(op, "one_time", False) or name in ONE_TIME_OPS:
            kernel = "runs once (all inputs constant): not part of an inference"
            used, elem, moved, key = 0, 0, 0, "once"
        elif sparse and (densified or not filter_sparse):
            # The kernel's filter is DENSIFY's (or DEQUANTIZE's) dense output: no sparsity metadata, so
            # fully_connected.cc takes its dense path (the sparse one needs filter->sparsity != nullptr).
            kernel += " (weights densified by DENSIFY: dense kernel, every MAC)"
        elif runtime == "litert" and name == "FULLY_CONNECTED" and filter_sparse:
            used = effective
            key = f"fc_{dtype}_sparse"
            kernel = ("builtin sparse FULLY_CONNECTED (XNNPACK refuses sparse int8 FC); skips zero blocks"
                      if dtype == "int8" else "builtin sparse FULLY_CONNECTED; skips zero blocks")
        elif sparse:
            kernel += " (sparse weights not exploited: dense MACs)"
        if tile > 1 and kind in ("conv", "dwconv") and used and op.outputs and op.outputs[0] >= 0:
            shape = getattr(tensors[op.outputs[0]], "shape", None) or ()
            channels = int(shape[-1]) if len(shape) else 0
            if channels > 0 and channels % tile:
                used = used * (-(-channels // tile) * tile) // channels
                kernel += f" ({channels} output channels computed in SIMD tiles of {tile})"
        dispatched = not (runtime == "litert" and "xnnpack" in kernels and used + elem < XNNPACK_DISPATCH_MIN_WORK)
        rows.append(OpCost(index=i, op=name, kind=kind, dtype=dtype, coef_key=key, macs=macs,
                           macs_used=used, elementwise_ops=elem, bytes_moved=moved, kernel=kernel,
                           dispatched=dispatched))
    return rows


def _filter_carries_sparsity(op: Any, tensors: Sequence[Any]) -> bool:
    """Whether the weight tensor the kernel itself reads has sparsity metadata (not a DENSIFY output).

    LiteRT's FULLY_CONNECTED runs its sparse kernel only when `filter->sparsity != nullptr`
    (tensorflow/lite/kernels/fully_connected.cc); DENSIFY's output is a plain dense tensor.
    """
    index = getattr(op, "weight_tensor", None)
    if index is None:
        index = op.inputs[1] if len(op.inputs) > 1 else -1
    if index is None or index < 0 or index >= len(tensors):
        return False
    return getattr(tensors[index], "sparsity", None) is not None


@dataclass
class LatencyCoefficients:
    """A profile's [latency] table, validated, with where each coefficient comes from."""

    fitted: bool
    fit_source: str
    fit_rows: list[str]
    clock_mhz: float
    macs_per_cycle: dict[str, float]
    bytes_per_cycle: float
    elementwise_per_cycle: float
    overhead_us_per_op: float
    fixed_overhead_us: float
    parallel_efficiency: float
    fit_threads: int
    notes: str = ""
    basis: str = ""                      # the table's declared basis ([latency] basis), "" if not declared
    transferred_from: str = ""
    transfer_factor: float | None = None
    overhead_from: str = ""
    overhead_factor: float | None = None
    sources: dict[str, str] = field(default_factory=dict)  # "macs_per_cycle.int8" -> [sources] text

    def elementwise_rate(self, dtype: str, key: str = "") -> float:
        """Element ops per cycle of an op without MACs: macs_per_cycle[key] ('pool_int8', 'nonlinear_float32'...)
        if fitted, else macs_per_cycle['elementwise_<dtype>'], else elementwise_per_cycle. (int8 ones often
        run in LiteRT's builtin kernels, float ones in XNNPACK: their costs differ a lot.)"""
        return self.elementwise_rate_key(dtype, key)[0]

    def elementwise_rate_key(self, dtype: str, key: str = "") -> tuple[float, str]:
        """(rate, coefficient path) for an op without MACs; path '' when nothing prices it."""
        for cand in (key, f"elementwise_{dtype}"):
            rate = self.macs_per_cycle.get(cand, 0.0) if cand else 0.0
            if rate > 0:
                return rate, f"macs_per_cycle.{cand}"
        if self.elementwise_per_cycle > 0:
            return self.elementwise_per_cycle, "elementwise_per_cycle"
        return 0.0, ""

    def macs_rate(self, key: str) -> tuple[float, str]:
        """MACs per cycle for a class key like 'conv_int8' (falls back: kind_dtype -> dtype -> default)."""
        parts = key.split("_")
        candidates = [key, "_".join(parts[:2]), parts[1] if len(parts) > 1 else key, parts[0], "default"]
        for cand in candidates:
            if cand in self.macs_per_cycle and self.macs_per_cycle[cand] > 0:
                return self.macs_per_cycle[cand], cand
        return 0.0, ""

    def source_of(self, path: str) -> str:
        """Where one coefficient ('macs_per_cycle.int8', 'overhead_us_per_op') comes from."""
        if path in self.sources:
            return self.sources[path]
        parent = path.split(".", 1)[0]
        if parent != path and parent in self.sources:
            return self.sources[parent]
        if self.fitted and self.fit_source.strip():
            return "fitted: " + self.fit_source
        return ""

    def basis_of(self, path: str) -> str:
        """fitted | transferred | assumption for one coefficient (its [sources] entry, else the table's fit)."""
        return coefficient_basis(self.source_of(path), table_fitted=self.fitted and bool(self.fit_source.strip()),
                                 has_own_source=path in self.sources or path.split(".", 1)[0] in self.sources)


def coefficient_basis(source: str, *, table_fitted: bool = False, has_own_source: bool = True) -> str:
    """Classify a coefficient's source text: 'transferred' (from another device), 'fitted' or 'assumption'.

    A source starting 'assumption: transferred' or 'transferred' is a transfer; 'assumption' anything else
    is an assumption; 'fitted'/'fit to' is fitted; a coefficient of a fitted table without its own
    [sources] entry takes the fit. Anything else on an unfitted table is treated as an assumption.
    """
    text = str(source or "").strip().lower()
    if text.startswith("assumption: transferred") or text.startswith("transferred"):
        return "transferred"
    if text.startswith("assumption"):
        return "assumption"
    if text.startswith("fitted") or text.startswith("fit to"):
        return "fitted"
    if table_fitted and not has_own_source:
        return "fitted"
    return "fitted" if table_fitted and text else "assumption"


def latency_coefficients(profile: Any) -> LatencyCoefficients | None:
    raw = _raw(profile)
    lat = raw.get("latency")
    if not lat:
        return None
    clock = float(lat.get("clock_mhz") or raw.get("device", {}).get("clock_mhz") or 0)
    if clock <= 0:
        raise ProfileError("The latency model needs a clock", where=f"{_profile_name(profile)}: device.clock_mhz",
                           expected="a positive clock in MHz", received=clock,
                           fix="Add clock_mhz to [device]")
    mpc = {str(k): float(v) for k, v in (lat.get("macs_per_cycle") or {}).items()}
    sources = {str(k)[len("latency."):]: str(v) for k, v in _sources(profile).items()
               if str(k).startswith("latency.")}

    def opt_float(key: str) -> float | None:
        value = lat.get(key)
        return None if value is None else float(value)

    return LatencyCoefficients(
        fitted=bool(lat.get("fitted", False)), fit_source=str(lat.get("fit_source", "")),
        fit_rows=[str(r) for r in (lat.get("fit_rows") or [])], clock_mhz=clock, macs_per_cycle=mpc,
        bytes_per_cycle=float(lat.get("bytes_per_cycle", 0) or 0),
        elementwise_per_cycle=float(lat.get("elementwise_per_cycle", 0) or 0),
        overhead_us_per_op=float(lat.get("overhead_us_per_op", 0) or 0),
        fixed_overhead_us=float(lat.get("fixed_overhead_us", 0) or 0),
        parallel_efficiency=float(lat.get("parallel_efficiency", 0) or 0),
        fit_threads=int(lat.get("fit_threads", 0) or _profile_runtime(profile).get("threads", 1) or 1),
        notes=str(lat.get("notes", "")), basis=str(lat.get("basis", "") or ""),
        transferred_from=str(lat.get("transferred_from", "") or ""), transfer_factor=opt_float("transfer_factor"),
        overhead_from=str(lat.get("overhead_from", "") or ""), overhead_factor=opt_float("overhead_factor"),
        sources=sources)


@dataclass
class OpLatency:
    index: int
    op: str
    kind: str
    dtype: str
    macs: int
    macs_used: int
    bytes_moved: int
    predicted_us: float
    share: float
    coefficient: str
    kernel: str
    flag: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"index": self.index, "op": self.op, "type": self.kind, "dtype": self.dtype,
                "macs": self.macs, "macs_used": self.macs_used, "bytes": self.bytes_moved,
                "predicted_us": round(self.predicted_us, 3), "share": round(self.share, 4),
                "coefficient": self.coefficient, "kernel": self.kernel, "flag": self.flag}


@dataclass
class CoefficientUse:
    """One coefficient's part in a prediction: what it is, where it comes from, how much time it prices."""

    coefficient: str     # 'macs_per_cycle.int8', 'overhead_us_per_op', 'fixed_overhead_us'...
    basis: str           # fitted | transferred | assumption
    source: str
    us: float
    share: float

    def to_dict(self) -> dict[str, Any]:
        return {"coefficient": self.coefficient, "basis": self.basis, "source": self.source,
                "us": round(self.us, 4), "share": round(self.share, 4)}


@dataclass
class LatencyEstimate:
    latency_ms: float | None
    basis: str                 # "fitted" | "fitted+transferred" | "transferred" | "assumption" | "none"
    fit_source: str
    threads: int
    ops: list[OpLatency]
    fixed_overhead_us: float
    warnings: list[str] = field(default_factory=list)
    coefficients: list[CoefficientUse] = field(default_factory=list)
    summary: str = ""          # one line: which coefficients are fitted to what, which transferred/assumed

    def to_dict(self) -> dict[str, Any]:
        return {"latency_ms": None if self.latency_ms is None else round(self.latency_ms, 4),
                "basis": self.basis, "fit_source": self.fit_source, "summary": self.summary,
                "threads": self.threads, "fixed_overhead_us": round(self.fixed_overhead_us, 3),
                "coefficients": [c.to_dict() for c in self.coefficients],
                "ops": [o.to_dict() for o in self.ops], "warnings": list(self.warnings)}


def thread_factor(coefs: LatencyCoefficients, threads: int, cores: int | None = None) -> float:
    """How much faster compute runs at `threads` than at the fitted thread count (Amdahl-style)."""
    def speed(t: int) -> float:
        t = max(1, min(t, cores or t))
        return 1.0 + coefs.parallel_efficiency * (t - 1)
    return speed(threads) / speed(coefs.fit_threads)


def price_ops(features: Sequence[OpCost], coefs: LatencyCoefficients, threads: int | None = None,
              cores: int | None = None) -> list[tuple[float, str, dict[str, float]]]:
    """Per op: (predicted µs, MAC coefficient used, µs per coefficient path)."""
    speedup = thread_factor(coefs, threads or coefs.fit_threads, cores)
    out = []
    for f in features:
        parts: dict[str, float] = {}
        used = ""
        scale = 1.0 / coefs.clock_mhz / speedup
        if f.macs_used:
            rate, used = coefs.macs_rate(f.coef_key)
            if rate > 0:
                parts[f"macs_per_cycle.{used}"] = f.macs_used / rate * scale
        if f.elementwise_ops:
            rate, path = coefs.elementwise_rate_key(f.dtype, f.coef_key)
            if rate > 0:
                parts[path] = parts.get(path, 0.0) + f.elementwise_ops / rate * scale
        if f.bytes_moved and coefs.bytes_per_cycle > 0:
            parts["bytes_per_cycle"] = f.bytes_moved / coefs.bytes_per_cycle * scale
        if f.coef_key != "once" and f.dispatched and coefs.overhead_us_per_op > 0:
            parts["overhead_us_per_op"] = coefs.overhead_us_per_op
        out.append((sum(parts.values()), used, parts))
    return out


def predict_ops_us(features: Sequence[OpCost], coefs: LatencyCoefficients,
                   threads: int | None = None, cores: int | None = None) -> list[tuple[float, str]]:
    """Predicted µs and the coefficient used, per op."""
    return [(us, used) for us, used, _ in price_ops(features, coefs, threads, cores)]


def _overall_basis(uses: Sequence[CoefficientUse]) -> str:
    """The weakest basis among the coefficients that price this model: never 'fitted' if any is not."""
    priced = [u for u in uses if u.us > 0]
    if not priced:
        return "none"
    if any(u.basis == "assumption" for u in priced):
        return "assumption"
    transferred = sum(u.share for u in priced if u.basis == "transferred")
    if transferred <= 0:
        return "fitted"
    return "transferred" if transferred >= 0.5 else "fitted+transferred"


def _origin(coefs: LatencyCoefficients, path: str) -> str:
    """The device a transferred coefficient comes from: MAC rates from transferred_from, overheads from
    overhead_from (each falling back to the other)."""
    if path in ("overhead_us_per_op", "fixed_overhead_us"):
        return coefs.overhead_from or coefs.transferred_from or "another device"
    return coefs.transferred_from or coefs.overhead_from or "another device"


def _basis_summary(coefs: LatencyCoefficients, uses: Sequence[CoefficientUse]) -> str:
    """'MACs fitted to ...; per-op overhead transferred from host (assumption) ...' in one line."""
    groups: dict[str, list[CoefficientUse]] = {}
    for u in uses:
        if u.us > 0:
            groups.setdefault(u.basis, []).append(u)
    parts = []
    for basis in ("fitted", "transferred", "assumption"):
        items = groups.get(basis, [])
        if not items:
            continue
        share = sum(u.share for u in items)
        names = ", ".join(u.coefficient for u in items)
        if basis == "fitted":
            wheres = []
            for u in items:
                if coefs.fit_source and u.source == "fitted: " + coefs.fit_source:
                    where = "; ".join(coefs.fit_rows) or coefs.fit_source
                else:
                    where = u.source[len("fitted: "):] if u.source.lower().startswith("fitted: ") else u.source
                if where not in wheres:
                    wheres.append(where)
            where = " | ".join(wheres)
            where = where if len(where) <= 160 else where[:157] + "..."
            parts.append((share, f"fitted ({share:.0%} of the time: {names}) to {where}"))
        elif basis == "transferred":
            by_origin: dict[str, list[CoefficientUse]] = {}
            for u in items:
                by_origin.setdefault(_origin(coefs, u.coefficient), []).append(u)
            for origin, group in by_origin.items():
                factor = coefs.transfer_factor if origin == coefs.transferred_from else coefs.overhead_factor
                how = f" x{factor:.3g}" if factor and origin in (coefs.transferred_from, coefs.overhead_from) else ""
                part_share = sum(u.share for u in group)
                parts.append((part_share, f"transferred from {origin}{how} (assumption; {part_share:.0%} of the "
                                          f"time: {', '.join(u.coefficient for u in group)})"))
        else:
            parts.append((share, f"assumption ({share:.0%} of the time: {names})"))
    return "; ".join(text for _, text in sorted(parts, key=lambda p: -p[0]))


def estimate_latency(graph: Any, profile: Any, *, threads: int | None = None) -> LatencyEstimate:
    features = op_features(graph, profile)
    coefs = latency_coefficients(profile)
    runtime = _profile_runtime(profile)
    threads = int(threads or runtime.get("threads", 1) or 1)
    if coefs is None or not coefs.macs_per_cycle:
        rows = [OpLatency(f.index, f.op, f.kind, f.dtype, f.macs, f.macs_used, f.bytes_moved, 0.0, 0.0,
                          "", f.kernel, "no coefficients") for f in features]
        return LatencyEstimate(None, "none", "", threads, rows, 0.0,
                               [f"profile {_profile_name(profile)} has no [latency] coefficients: "
                                "no latency estimate"], summary="no latency coefficients")
    cores = int(_device(profile).get("cores", 0) or 0) or None
    priced = price_ops(features, coefs, threads, cores)
    total_us = sum(us for us, _, _ in priced) + coefs.fixed_overhead_us
    per_path: dict[str, float] = {}
    for _, _, parts in priced:
        for path, us in parts.items():
            per_path[path] = per_path.get(path, 0.0) + us
    if coefs.fixed_overhead_us > 0:
        per_path["fixed_overhead_us"] = coefs.fixed_overhead_us
    uses = [CoefficientUse(path, coefs.basis_of(path), coefs.source_of(path), us,
                           us / total_us if total_us > 0 else 0.0) for path, us in per_path.items()]
    basis = _overall_basis(uses)
    summary = _basis_summary(coefs, uses)
    name = _profile_name(profile)
    warnings: list[str] = []
    if basis == "assumption":
        warnings.append(f"latency coefficients of {name} are NOT fitted to measurements: "
                        "the latency, energy and battery figures are assumptions")
    elif basis in ("transferred", "fitted+transferred"):
        moved = [u for u in uses if u.basis == "transferred" and u.us > 0]
        share = sum(u.share for u in moved)
        frm = ", ".join(sorted({_origin(coefs, u.coefficient) for u in moved}))
        warnings.append(f"latency of {name}: {share:.0%} of the predicted time rests on coefficients transferred "
                        f"from {frm} (assumption, not measured on this device): "
                        + ", ".join(u.coefficient for u in moved))
    rows = []
    unpriced = set()
    for f, (us, used, parts) in zip(features, priced):
        flag = ""
        if f.macs_used and not used:
            flag = "no coefficient for this op class"
            unpriced.add(f.coef_key)
        elif used and used not in (f.coef_key, f.dtype) and f.kind in ("conv", "dwconv", "fc"):
            flag = f"priced with '{used}' (no own coefficient)"
        op_bases = {coefs.basis_of(p) for p, v in parts.items() if v > 0}
        if "assumption" in op_bases or (not parts and not coefs.fitted):
            flag = ("assumption; " + flag) if flag else "assumption"
        elif used and coefs.basis_of(f"macs_per_cycle.{used}") == "transferred":
            note = f"transferred from {coefs.transferred_from or 'another device'} (assumption)"
            flag = (note + "; " + flag) if flag else note
        rows.append(OpLatency(f.index, f.op, f.kind, f.dtype, f.macs, f.macs_used, f.bytes_moved, us,
                              us / total_us if total_us > 0 else 0.0, used, f.kernel, flag))
    if unpriced:
        # A total that leaves MACs unpriced would understate latency (e.g. float32 on an
        # MCU profile fitted to int8 only): say "unknown" rather than print a wrong number.
        warnings.append(f"no latency estimate: {name} has no coefficient for op class(es) "
                        + ", ".join(sorted(unpriced)) + ", so their MACs cannot be priced")
        return LatencyEstimate(None, "none", "", threads, rows, coefs.fixed_overhead_us, warnings,
                               coefficients=uses, summary="incomplete: no coefficient for "
                               + ", ".join(sorted(unpriced)))
    if threads != coefs.fit_threads:
        note = (f"coefficients were fitted at {coefs.fit_threads} thread(s); {threads} requested")
        if coefs.parallel_efficiency <= 0:
            note += " and no parallel efficiency was fitted: thread count ignored"
        warnings.append(note)
    fit_source = coefs.fit_source if coefs.fitted and coefs.fit_source else summary
    return LatencyEstimate(total_us / 1000.0, basis, fit_source, threads, rows, coefs.fixed_overhead_us,
                           warnings, coefficients=uses, summary=summary)


# --------------------------------------------------------------------------- energy, battery

_RATE_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0, "m": 60.0,
               "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "d": 86400.0, "day": 86400.0}


def parse_rate(text: str | float | int) -> float:
    """'1/s', '10/min', '3/h', '0.5/s', '2/day' -> inferences per second."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text <= 0:
            raise DataError("Bad inference rate", expected="a positive rate such as 1/s, 10/min or 3/h",
                            received=repr(text))
        return float(text)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\s*/\s*([A-Za-z]+?)s?\s*", str(text))
    unit = match.group(2).lower() if match else ""
    if unit not in _RATE_UNITS and unit + "s" in _RATE_UNITS:
        unit = unit + "s"
    if not match or unit not in _RATE_UNITS or float(match.group(1)) <= 0:
        raise DataError("Bad inference rate", where="--rate",
                        expected="N/s, N/min or N/h with N > 0 (e.g. 1/s, 10/min, 3/h)",
                        received=repr(text), fix="Write the rate as a count per unit of time, e.g. --rate 2/min")
    return float(match.group(1)) / _RATE_UNITS[unit]


def format_rate(per_second: float) -> str:
    if per_second >= 1:
        return f"{per_second:g}/s"
    if per_second * 60 >= 1:
        return f"{per_second * 60:g}/min"
    return f"{per_second * 3600:g}/h"


@dataclass
class EnergyEstimate:
    energy_mj: float | None          # per inference, active
    rate_per_s: float | None
    average_power_mw: float | None
    battery_hours: float | None
    model_share: float | None        # share of the battery drain spent on inference
    active_mw: float | None
    sleep_mw: float | None
    battery_mah: float | None
    voltage_v: float | None
    basis: str
    notes: list[str] = field(default_factory=list)

    @property
    def battery_days(self) -> float | None:
        return None if self.battery_hours is None else self.battery_hours / 24.0

    def to_dict(self) -> dict[str, Any]:
        def r(x, n=6):
            return None if x is None else round(x, n)
        return {"energy_mj": r(self.energy_mj), "rate": None if self.rate_per_s is None else format_rate(self.rate_per_s),
                "rate_per_s": r(self.rate_per_s, 9), "average_power_mw": r(self.average_power_mw),
                "battery_hours": r(self.battery_hours, 3), "battery_days": r(self.battery_days, 3),
                "model_share": r(self.model_share, 4), "active_mw": self.active_mw, "sleep_mw": self.sleep_mw,
                "battery_mah": self.battery_mah, "voltage_v": self.voltage_v, "basis": self.basis,
                "notes": list(self.notes)}


def energy_and_battery(latency_ms: float | None, *, active_mw: float | None, sleep_mw: float | None,
                       rate_per_s: float | None, battery_mah: float | None,
                       voltage_v: float | None) -> tuple[float | None, float | None, float | None, float | None, list[str]]:
    """(energy_mj per inference, average power mW, battery hours, inference share of drain, notes).

    Energy per inference = latency x active power. Over one period 1/rate the
    device runs one inference at active power and sleeps the rest at sleep
    power; average power = rate x E + (1 - rate x latency) x P_sleep. Battery
    life = capacity (mAh x V = mWh) / average power.
    """
    notes: list[str] = []
    if latency_ms is None or active_mw is None:
        return None, None, None, None, notes
    energy_mj = latency_ms * active_mw / 1000.0
    if rate_per_s is None:
        return energy_mj, None, None, None, notes
    busy = rate_per_s * latency_ms / 1000.0
    if busy > 1.0:
        notes.append(f"at {format_rate(rate_per_s)} the device would need {busy:.2f} s of inference per second: "
                     "it cannot keep up; battery life computed at 100% duty")
        busy = 1.0
        inference_mw = active_mw
    else:
        inference_mw = rate_per_s * energy_mj  # mJ/s = mW
    sleeping_mw = (1.0 - busy) * (sleep_mw or 0.0)
    average = inference_mw + sleeping_mw
    hours = None
    if battery_mah and voltage_v and average > 0:
        hours = battery_mah * voltage_v / average
    share = inference_mw / average if average > 0 else None
    return energy_mj, average, hours, share, notes


def estimate_energy(latency_ms: float | None, profile: Any, *, rate: str | float | None = None,
                    battery_mah: float | None = None, sleep_mw: float | None = None,
                    latency_basis: str = "fitted") -> EnergyEstimate:
    raw = _raw(profile)
    power = raw.get("power", {}) or {}
    battery = raw.get("battery", {}) or {}
    sources = _sources(profile)
    notes: list[str] = []
    active = power.get("active_mw")
    rest = str(battery.get("rest_state", "sleep"))
    rest_key = f"{rest}_mw" if f"{rest}_mw" in power else "sleep_mw"
    sleep = sleep_mw if sleep_mw is not None else power.get(rest_key)
    mah = battery_mah if battery_mah is not None else battery.get("capacity_mah")
    volts = battery.get("voltage_v")
    if rate is None and battery.get("inferences_per_hour"):
        rate = float(battery["inferences_per_hour"]) / 3600.0
    rate_per_s = parse_rate(rate) if rate is not None else None
    basis = latency_basis
    def unsourced(key: str) -> bool:
        text = str(sources.get(key, "")).strip().lower()
        return not text or text.startswith("assumption")

    if active is None:
        notes.append("the profile gives no [power] active_mw: no energy estimate")
        basis = "none"
    elif unsourced("power.active_mw"):
        notes.append("[power] active_mw is an assumption (no measured source)")
        basis = "assumption"
    if sleep_mw is None and sleep is not None and unsourced(f"power.{rest_key}"):
        notes.append(f"[power] {rest_key} (power between inferences) is an assumption")
    if rate_per_s is not None and battery_mah is None and mah is not None and unsourced("battery.capacity_mah"):
        notes.append(f"battery capacity {mah:g} mAh is the profile's assumed battery; pass --battery-mah for yours")
    if rate_per_s is not None and sleep is None:
        notes.append("no sleep power: the device is assumed to draw nothing between inferences")
    energy, average, hours, share, more = energy_and_battery(
        latency_ms, active_mw=None if active is None else float(active),
        sleep_mw=None if sleep is None else float(sleep), rate_per_s=rate_per_s,
        battery_mah=None if mah is None else float(mah), voltage_v=None if volts is None else float(volts))
    notes += more
    if rate_per_s is not None and (mah is None or volts is None):
        notes.append("no battery capacity/voltage: battery life not computed (pass --battery-mah)")
    return EnergyEstimate(energy, rate_per_s, average, hours, share,
                          None if active is None else float(active), None if sleep is None else float(sleep),
                          None if mah is None else float(mah), None if volts is None else float(volts),
                          basis, notes)


# --------------------------------------------------------------------------- check


@dataclass
class BudgetCheck:
    """One budget: ok is True (the value is within its limit), False (a known value exceeds it) or None
    (unknown: the value cannot be estimated on this profile, so the budget is neither passed nor failed)."""

    name: str
    limit: float
    value: float | None
    ok: bool | None
    unit: str
    kind: str  # "max" | "min"

    @property
    def status(self) -> str:
        """'pass', 'FAIL' or 'unknown'."""
        return "unknown" if self.ok is None else ("pass" if self.ok else "FAIL")

    @property
    def margin(self) -> float | None:
        if self.value is None:
            return None
        return (self.limit - self.value) if self.kind == "max" else (self.value - self.limit)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "limit": self.limit, "value": self.value, "ok": self.ok,
                "status": self.status, "unit": self.unit, "kind": self.kind,
                "margin": None if self.margin is None else round(self.margin, 6)}


_BUDGETS = {  # key in [budget] -> (estimate attribute, unit, kind)
    "flash_bytes": ("flash_bytes", "B", "max"),
    "ram_bytes": ("ram_bytes", "B", "max"),
    "latency_ms": ("latency_ms", "ms", "max"),
    "energy_mj": ("energy_mj", "mJ", "max"),
    "battery_hours": ("battery_hours", "h", "min"),
    "battery_days": ("battery_days", "d", "min"),
}


@dataclass
class CheckResult:
    """Everything `edgesparse check` knows about one model on one profile."""

    profile: str
    profile_path: str
    profile_sha256: str
    runtime: str
    model: str | None
    model_size: int
    flash: FlashEstimate
    ram: RamEstimate
    latency: LatencyEstimate
    energy: EnergyEstimate
    budgets: list[BudgetCheck]
    assumptions: list[str]
    warnings: list[str]

    @property
    def fits(self) -> bool:
        """False only when a known value exceeds its budget; unknown budgets do not fail (see `complete`)."""
        return not any(b.ok is False for b in self.budgets)

    @property
    def complete(self) -> bool:
        """True when every budget could be checked (no unknown value)."""
        return all(b.ok is not None for b in self.budgets)

    @property
    def unknown_budgets(self) -> list[str]:
        return [b.name for b in self.budgets if b.ok is None]

    @property
    def flash_bytes(self) -> int:
        return self.flash.total_bytes

    @property
    def ram_bytes(self) -> int:
        return self.ram.total_bytes

    @property
    def latency_ms(self) -> float | None:
        return self.latency.latency_ms

    @property
    def energy_mj(self) -> float | None:
        return self.energy.energy_mj

    @property
    def battery_hours(self) -> float | None:
        return self.energy.battery_hours

    @property
    def battery_days(self) -> float | None:
        return self.energy.battery_days

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "profile": self.profile, "profile_path": self.profile_path, "profile_sha256": self.profile_sha256,
            "runtime": self.runtime, "model": self.model, "model_size": self.model_size,
            "fits": self.fits, "complete": self.complete, "unknown_budgets": self.unknown_budgets,
            "flash_bytes": self.flash_bytes, "ram_bytes": self.ram_bytes,
            "latency_ms": None if self.latency_ms is None else round(self.latency_ms, 4),
            "energy_mj": None if self.energy_mj is None else round(self.energy_mj, 6),
            "battery_hours": None if self.battery_hours is None else round(self.battery_hours, 3),
            "basis": {"flash": self.flash.basis, "ram": self.ram.basis, "latency": self.latency.basis,
                      "energy": self.energy.basis},
            "latency_basis": self.latency.basis, "latency_basis_detail": self.latency.summary,
            "budgets": [b.to_dict() for b in self.budgets],
            "flash": self.flash.to_dict(), "ram": self.ram.to_dict(), "latency": self.latency.to_dict(),
            "energy": self.energy.to_dict(),
            "ops": [o.to_dict() for o in self.latency.ops],
            "assumptions": list(self.assumptions), "warnings": list(self.warnings),
        }


def _check_budgets(profile: Any, values: Mapping[str, float | None]) -> list[BudgetCheck]:
    budget = _raw(profile).get("budget", {}) or {}
    out = []
    for key, limit in budget.items():
        if key not in _BUDGETS or limit is None or isinstance(limit, bool):
            continue
        attr, unit, kind = _BUDGETS[key]
        value = values.get(attr)
        if value is None:
            ok = None  # unknown: an estimate that cannot be made neither passes nor fails its budget
        else:
            ok = value <= limit if kind == "max" else value >= limit
        out.append(BudgetCheck(key, float(limit), None if value is None else float(value), ok, unit, kind))
    return out


def load_graph_any(model: bytes | str | Path) -> tuple[Any, bytes, str | None]:
    """(graph, model bytes, path or None) from bytes or a path; ModelError on anything unreadable."""
    from edgesparse.tflite import graph as graph_mod

    path = None
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
    else:
        path = str(model)
        p = Path(model)
        if not p.is_file():
            raise ModelError("Model file not found", where=path, expected="a .tflite file", received="no such file")
        data = p.read_bytes()
    loaded = graph_mod.load_graph(data)
    return loaded, data, path


def check_model(model_bytes_or_path: bytes | str | Path, profile: Any, *, rate: str | float | None = None,
                battery_mah: float | None = None, sleep_mw: float | None = None,
                threads: int | None = None) -> CheckResult:
    """Estimate flash, RAM, latency, energy and battery of a .tflite on a profile, and check its budgets."""
    from edgesparse.profiles.profile import Profile, load_profile

    prof = profile if isinstance(profile, Profile) else load_profile(str(profile))
    graph, data, path = load_graph_any(model_bytes_or_path)
    flash = estimate_flash(graph, prof, model_size=len(data))
    ram = estimate_ram(graph, prof, model_bytes=data)
    latency = estimate_latency(graph, prof, threads=threads)
    energy = estimate_energy(latency.latency_ms, prof, rate=rate, battery_mah=battery_mah, sleep_mw=sleep_mw,
                             latency_basis=latency.basis)
    values = {"flash_bytes": flash.total_bytes, "ram_bytes": ram.total_bytes, "latency_ms": latency.latency_ms,
              "energy_mj": energy.energy_mj, "battery_hours": energy.battery_hours,
              "battery_days": energy.battery_days}
    budgets = _check_budgets(prof, values)
    assumptions: list[str] = []
    if latency.basis in ("transferred", "fitted+transferred"):
        assumptions.append(f"latency basis: {latency.basis}: {latency.summary}")
    elif latency.basis != "fitted":
        assumptions.append(f"latency: {latency.basis} (coefficients not fitted to measurements)")
    if energy.basis in ("assumption", "none"):
        assumptions.append(f"energy: {energy.basis}")
    assumptions += [f"ram: {n}" for n in ram.notes]
    assumptions += [f"energy: {n}" for n in energy.notes]
    assumptions += [f"flash: {n}" for n in flash.notes]
    if not getattr(graph, "ops", None):
        raise ModelError("The model has no operators", where=path or "<bytes>",
                         expected="a .tflite with at least one op", received="an empty graph")
    unanalyzed = [op_type(op) for op in graph.ops if getattr(op, "analyzed", True) is False]
    if unanalyzed:
        assumptions.append("latency: MACs unknown for " + ", ".join(sorted(set(unanalyzed))) +
                           " (priced by bytes moved and per-op overhead only)")
    warnings = list(latency.warnings)
    unknown = [b.name for b in budgets if b.ok is None]
    if unknown:
        warnings.append("incomplete check: budget(s) " + ", ".join(unknown) + " unknown (no estimate on this "
                        "profile); they neither pass nor fail, so `fits` covers only the known budgets")
    if _runtime_name(prof) == "tflm" and any(op_type(op) == "DENSIFY" for op in graph.ops):
        warnings.append("TFLM cannot run DENSIFY (sparse weights): this file will not load on the device; "
                        "build a dense int8 flatbuffer for TFLM targets")
    return CheckResult(profile=prof.name, profile_path=str(prof.path), profile_sha256=prof.sha256,
                       runtime=_runtime_name(prof), model=path, model_size=len(data), flash=flash, ram=ram,
                       latency=latency, energy=energy, budgets=budgets, assumptions=assumptions,
                       warnings=warnings)


# --------------------------------------------------------------------------- profile access


def _raw(profile: Any) -> Mapping[str, Any]:
    raw = getattr(profile, "raw", profile)
    return raw if isinstance(raw, Mapping) else {}


def _profile_runtime(profile: Any) -> Mapping[str, Any]:
    return _raw(profile).get("runtime", {}) or {}


def _device(profile: Any) -> Mapping[str, Any]:
    return _raw(profile).get("device", {}) or {}


def _runtime_name(profile: Any) -> str:
    return str(_profile_runtime(profile).get("name", "litert"))


def _profile_name(profile: Any) -> str:
    return str(getattr(profile, "name", None) or _raw(profile).get("name", "profile"))


def _sources(profile: Any) -> Mapping[str, str]:
    return _raw(profile).get("sources", {}) or {}


def iter_budget_keys() -> Iterable[str]:
    return iter(_BUDGETS)


def battery_comparison(variants: dict[str, bytes | str | Path], profile: Any, *, rate: str | float | None = None,
                       battery_mah: float | None = None, sleep_mw: float | None = None) -> list[dict[str, Any]]:
    """Energy per inference and battery life of several builds of one model on one profile.

    `edgesparse battery` passes the pruned artifact and its dense baselines, so the
    battery gain from pruning and quantization is visible side by side.
    """
    rows = []
    for variant, model in variants.items():
        result = check_model(model, profile, rate=rate, battery_mah=battery_mah, sleep_mw=sleep_mw)
        energy = result.energy
        rows.append({
            "variant": variant, "model_bytes": result.model_size, "latency_ms": result.latency_ms,
            "latency_basis": result.latency.basis, "energy_mj": result.energy_mj,
            "average_power_mw": energy.average_power_mw, "battery_hours": result.battery_hours,
            "battery_days": result.battery_days, "model_share": energy.model_share,
            "rate": None if energy.rate_per_s is None else format_rate(energy.rate_per_s),
            "battery_mah": energy.battery_mah, "sleep_mw": energy.sleep_mw, "active_mw": energy.active_mw,
            "energy_basis": energy.basis, "fits": result.fits, "assumptions": list(result.assumptions),
        })
    return rows

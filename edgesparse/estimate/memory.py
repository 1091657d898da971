"""RAM and flash a model needs on a device: tensor live ranges, the greedy planner, TFLM and LiteRT RAM, flash.

Why a module of its own (as Arm Vela keeps live ranges and allocation apart
from its performance model): memory does not depend on how fast a kernel runs,
only on which tensors are live at once and how the runtime lays them out. RAM
is a tensor-lifetime plan made the way TFLM's GreedyMemoryPlanner makes it
(checked against the TFLM interpreter's own arena figures) plus the runtime's
persistent allocations; LiteRT's arena is read from the interpreter when
ai-edge-litert can load the model here. Flash is the file plus the runtime's
code as the profile gives it. Raises nothing of its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from edgesparse.estimate.decoding import DecodeWork, decode_work
from edgesparse.estimate.ops import is_constant, is_one_time, is_variable, op_cost_class, op_type, tensor_nbytes
from edgesparse.profiles import Profile
from edgesparse.runtime.litert import activation_arena_bytes
from edgesparse.tflite.schema import DECODE_OPS

__all__ = [
    "TFLM_HOST64",
    "TFLM_MCU32",
    "Buffer",
    "FlashEstimate",
    "MemoryPlan",
    "RamEstimate",
    "TflmLayout",
    "align_up",
    "cmsis_nn_scratch_bytes",
    "estimate_flash",
    "estimate_ram",
    "litert_ram",
    "offline_offsets",
    "plan_greedy",
    "tensor_lifetimes",
    "tflm_ram",
]

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
    """Where each buffer sits in the arena, and the arena's peak."""

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
    """`value` rounded up to a multiple of `alignment`."""
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


def tensor_lifetimes(graph: Any) -> dict[int, tuple[int, int]]:
    """First/last op scope of every non-constant tensor, as TFLM's AllocationInfoBuilder marks them.

    Scope 0 is the subgraph's start (its inputs); op i runs in scope i + 1;
    outputs stay live to the last op.
    """
    ops, outputs, tensors = list(graph.ops), list(graph.outputs), list(graph.tensors)
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for t in list(graph.inputs) + outputs:
        first[t] = last[t] = 0
    for i, op in enumerate(ops, start=1):
        for t in op.outputs:
            if t >= 0:
                first[t] = last[t] = i
        for t in op.inputs:
            if t >= 0 and t not in first and _unproduced_buffer(tensors, t):
                first[t] = last[t] = 0  # TFLM leaves its creation unset (-1): live from the start
            if t >= 0 and t in first:
                last[t] = max(last[t], i)
        for t in op.outputs:
            if t >= 0:
                last[t] = max(last[t], i)
    end = len(ops)
    for t in outputs:
        last[t] = max(last.get(t, 0), end)
    return {t: (first[t], last[t]) for t in first}


def _unproduced_buffer(tensors: Sequence[Any], t: int) -> bool:
    """A tensor an op reads that no op writes and that is neither constant nor a graph input: a Vela-compiled
    file's NPU scratch area. TFLM plans it (needs_allocating) with its creation never marked, i.e. live from
    the subgraph's start to its last reader. Only tensors that say `is_constant = False` qualify, so stand-in
    graphs without the attribute keep their old reading."""
    if t >= len(tensors):
        return False
    tensor = tensors[t]
    return getattr(tensor, "is_constant", None) is False and not is_variable(tensor)


OFFLINE_PLAN = "OfflineMemoryAllocation"


def offline_offsets(graph: Any) -> dict[int, int]:
    """Arena offsets of the main subgraph's tensors fixed by the model's OfflineMemoryAllocation metadata
    (Vela writes it: its NPU scratch area and the tensors at the NPU's boundary share the arena it planned).

    TFLM's planner places these tensors at exactly these offsets (micro_allocation_info.cc,
    GetOfflinePlannedOffsets: int32 [version, subgraphs, tensor count, offset per tensor], -1 = plan online).
    {} when the model has no such metadata or it does not describe this model's tensors.
    """
    located = getattr(graph, "metadata_bytes", None)   # a tflite.ir.Graph; other graph views have no metadata
    raw = located(OFFLINE_PLAN) if located is not None else None
    if not raw:
        return {}
    import numpy as np

    words = np.frombuffer(raw[:len(raw) // 4 * 4], dtype="<i4")
    if len(words) < 3 or len(words) < 3 + int(words[2]) or int(words[2]) < len(graph.tensors):
        return {}
    return {t: int(words[3 + t]) for t in range(len(graph.tensors)) if int(words[3 + t]) >= 0}


# --------------------------------------------------------------------------- RAM under TFLM

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
    pointer: int = 8        # sizeof(void*): DECODE's DecodeState* array, the alt-memory allocation counter
    decode_state: int = 80  # sizeof(DecodeStatePrune), the larger of the PRUNING and LUT states


# Measured: RecordingMicroAllocator categories on x86-64 (see docs/estimation.md). DecodeStatePrune is
# vptr, context, profiler, 6 pointer/size_t fields and 2 bytes: 80 B (LUT's 72 B takes the same 80 once
# 16-byte aligned); measured 96 B of persistent buffers per one-output DECODE with its 8 B pointer array.
TFLM_HOST64 = TflmLayout("tflm x86-64 (measured)", 24, 64, 64, 32, 488, 16, 32, pointer=8, decode_state=80)
# 32-bit MCUs: pointer-only structs shrink (TfLiteEvalTensor 3 words, TfLiteNode 7
# words + registration pointer); the rest is kept at the host figure (an upper bound).
# DecodeStatePrune on ILP32: 9 words + 2 bytes = 40 B (LUT: 36 B), 48 B once 16-byte aligned, + 16 B for
# the 4 B pointer array: 64 B per one-output DECODE (derived from the class layout, not measured).
TFLM_MCU32 = TflmLayout("tflm 32-bit (derived)", 12, 32, 64, 32, 488, 16, 32, pointer=4, decode_state=40)


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
    decode: dict[str, Any] | None = None     # TFLM DECODE: decoded tensors, their arena and state (None: none)
    alt_decompression: dict[str, Any] | None = None  # the alternate decompression memory, when the profile has it

    def to_dict(self) -> dict[str, Any]:
        return {"total_bytes": self.total_bytes, "planned_bytes": self.planned_bytes,
                "persistent_bytes": self.persistent_bytes, "scratch_bytes": self.scratch_bytes,
                "method": self.method, "basis": self.basis, "breakdown": dict(self.breakdown),
                "notes": list(self.notes), "decode": self.decode, "alt_decompression": self.alt_decompression}


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


def _tflm_head(graph: Any, kernels: str, elsewhere: frozenset[int] = frozenset()) -> tuple[list[Buffer], int, int]:
    """(buffers the planner places, variable-tensor bytes kept in the tail, CMSIS-NN scratch bytes).

    `elsewhere`: tensors with memory outside the arena before planning (DECODE outputs in the
    alternate decompression memory): TFLM's planner skips a tensor whose data is already set.
    """
    tensors = list(graph.tensors)
    lifetimes = tensor_lifetimes(graph)
    offsets = offline_offsets(graph)
    buffers: list[Buffer] = []
    variable_bytes = 0
    for t, (first, last) in lifetimes.items():
        tensor = tensors[t]
        if is_constant(tensor) or t in elsewhere:
            continue
        size = tensor_nbytes(tensor)
        if is_variable(tensor):
            variable_bytes += align_up(size, 16)
            continue
        if size:
            buffers.append(Buffer(size, first, last, name=str(getattr(tensor, "name", t)),
                                  offline_offset=offsets.get(t)))
    for tensor in tensors:
        if is_variable(tensor) and not any(tensor is tensors[t] for t in lifetimes):
            variable_bytes += align_up(tensor_nbytes(tensor), 16)
    scratch = 0
    if "cmsis" in kernels.lower():
        for i, op in enumerate(graph.ops, start=1):
            size = cmsis_nn_scratch_bytes(op, tensors)
            if size:
                scratch += size
                buffers.append(Buffer(size, i, i, name=f"scratch:{op_type(op)}#{i - 1}", kind="scratch"))
    return buffers, variable_bytes, scratch


def _tflm_tail(graph: Any, layout: TflmLayout) -> tuple[dict[str, int], set[str]]:
    """TFLM's persistent allocations by category (variable tensors aside), and the ops of unmeasured op data."""
    ops, tensors = list(graph.ops), list(graph.tensors)
    op_data = layout.persistent_base
    builtin = 0
    unknown: set[str] = set()
    for op in ops:
        name = op_type(op)
        if name in DECODE_OPS:
            continue  # DECODE's persistent state is counted from its outputs (DecodeWork.persistent_bytes)
        if name not in _TFLM_OPDATA:
            unknown.add(name)
        op_data += _TFLM_OPDATA.get(name, _TFLM_OPDATA_DEFAULT)
        builtin += _TFLM_BUILTIN.get(name, 0)
        per_channel_fc = name == "FULLY_CONNECTED" and len(op.inputs) > 1 and _per_channel(tensors, op.inputs[1]) > 1
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D") or per_channel_fc:
            op_data += 8 * _out_channels(tensors, op)  # an int32 multiplier and shift per output channel
    io = list(dict.fromkeys(list(graph.inputs) + list(graph.outputs)))
    io_quant = sum(1 for t in io if _per_channel(tensors, t) > 0)
    breakdown = {
        "eval_tensors": layout.eval_tensor * len(tensors),
        "node_structs": layout.node_and_registration * len(ops),
        "io_tensors": layout.io_tensor * len(io) + layout.io_quantization * io_quant,
        "op_data": op_data + layout.alignment_slack,
        "builtin_options": builtin,
        "runtime_fixed": layout.fixed,
    }
    return breakdown, unknown


def tflm_ram(graph: Any, *, layout: TflmLayout = TFLM_HOST64, kernels: str = "reference",
             persistent_ram_bytes: int = 0, decode: DecodeWork | None = None,
             alt_decompression_bytes: int = 0) -> RamEstimate:
    """The tensor arena TFLM allocates for this graph: planned head + persistent tail.

    Head = the greedy plan of every non-constant, non-variable tensor (and, for
    CMSIS-NN, each op's scratch buffer, live only during its op). A DECODE
    output is such a tensor, live from its DECODE to its last reader, unless it
    goes to the alternate decompression memory (`alt_decompression_bytes` > 0,
    TFLM's alt_decompression_memory_size). Tail = eval tensors, node structs,
    I/O TfLiteTensors, kernel op data (per-channel quantization arrays
    included), builtin options, DECODE's state and variable tensors.
    `decode` is the graph's `decoding.decode_work` (computed when omitted;
    ModelError for a corrupt DECODE).
    """
    work = decode if decode is not None else decode_work(graph)
    alt = work.alt_placement(int(alt_decompression_bytes)) if work and alt_decompression_bytes > 0 else None
    buffers, variable_bytes, scratch = _tflm_head(graph, kernels, alt.in_alt if alt else frozenset())
    plan = plan_greedy(buffers, alignment=16)
    breakdown, unknown = _tflm_tail(graph, layout)
    breakdown["variable_tensors"] = variable_bytes
    notes: list[str] = []
    if work:
        breakdown["decode_state"] = work.persistent_bytes(layout.pointer, layout.decode_state)
        if alt is not None:
            breakdown["decode_state"] += -(-layout.pointer // 16) * 16  # the alt memory's allocation counter
    if persistent_ram_bytes:
        breakdown["runtime_persistent_ram"] = int(persistent_ram_bytes)
    persistent = sum(breakdown.values())
    breakdown = {"planned_activations": plan.peak_bytes, **breakdown}
    if unknown:
        notes.append("TFLM op data for " + ", ".join(sorted(unknown)) +
                     f" not measured; {_TFLM_OPDATA_DEFAULT} bytes each assumed")
    if scratch:
        notes.append(f"CMSIS-NN scratch buffers ({scratch} bytes in all, each live during its op) are in the plan")
    decode_info = _decode_summary(work, plan, alt, breakdown.get("decode_state", 0), notes) if work else None
    return RamEstimate(
        total_bytes=plan.peak_bytes + persistent, planned_bytes=plan.peak_bytes,
        persistent_bytes=persistent, scratch_bytes=scratch,
        method=f"TFLM greedy plan, alignment 16; persistent layout {layout.name}; kernels {kernels}",
        basis="planner", breakdown=breakdown, notes=notes, plan=plan, decode=decode_info,
        alt_decompression=alt.to_dict() if alt is not None else None)


def _decode_summary(work: DecodeWork, plan: MemoryPlan, alt: Any, state_bytes: int,
                    notes: list[str]) -> dict[str, Any]:
    """What DECODE costs in RAM: decoded tensors in the arena (live from their DECODE to their reader), state."""
    names = {s.name for s in work.sites if alt is None or s.output not in alt.in_alt}
    in_arena = [b.size for b in plan.buffers if b.name in names]
    if alt is not None and alt.in_arena:
        notes.append(f"alternate decompression memory of {alt.available_bytes} B is too small for "
                     + ", ".join(alt.in_arena) + f" (needs {alt.needed_bytes} B): TFLM decodes "
                     "them into the arena instead")
    return {**work.to_dict(), "persistent_bytes": state_bytes,
            "arena_decoded_tensors": len(in_arena), "arena_decoded_bytes": sum(in_arena),
            "alt_decompression_bytes": alt.available_bytes if alt is not None else 0}


# --------------------------------------------------------------------------- RAM under LiteRT


def _litert_planned_arena(graph: Any) -> int:
    """LiteRT's activation arena as a greedy plan with its 64-byte tensor alignment (run-once outputs aside)."""
    once = {t for op in graph.ops if is_one_time(op) for t in op.outputs}
    buffers = [Buffer(tensor_nbytes(graph.tensors[t]), f, last)
               for t, (f, last) in tensor_lifetimes(graph).items()
               if t not in once and not is_constant(graph.tensors[t]) and tensor_nbytes(graph.tensors[t])]
    return plan_greedy(buffers, alignment=64).peak_bytes


def litert_ram(graph: Any, *, model_bytes: bytes | None = None, kernels: str = "xnnpack",
               persistent_ram_bytes: int = 0) -> RamEstimate:
    """RAM under LiteRT: activation arena + the model (mmapped) + XNNPACK's packed weights + runtime.

    The arena comes from LiteRT's own plan when ai-edge-litert can load the
    model here (addresses of the planned tensors), else from a greedy plan with
    LiteRT's 64-byte tensor alignment.
    """
    notes: list[str] = []
    arena = activation_arena_bytes(model_bytes) if model_bytes is not None else None
    method = "LiteRT arena plan read from the interpreter"
    if arena is None:
        arena = _litert_planned_arena(graph)
        method = "greedy plan, alignment 64 (LiteRT's arena was not readable here)"
    file_bytes = int(getattr(graph, "file_bytes", 0) or (len(model_bytes) if model_bytes else 0))
    packed = 0
    if "xnnpack" in kernels.lower():
        for op in graph.ops:
            if op_cost_class(op) in ("conv", "dwconv", "fc"):
                packed += sum(tensor_nbytes(graph.tensors[t]) for t in op.inputs[1:]
                              if t >= 0 and is_constant(graph.tensors[t]))
        notes.append("XNNPACK repacks conv/FC weights into its own buffers: counted once more "
                     "(approximately their size)")
    densified = sum(tensor_nbytes(graph.tensors[t]) for op in graph.ops if is_one_time(op)
                    for t in op.outputs if t >= 0)
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


def estimate_ram(graph: Any, profile: Profile, *, model_bytes: bytes | None = None,
                 decode: DecodeWork | None = None) -> RamEstimate:
    """RAM on the profile's runtime: TFLM's arena (32-bit layout on an MCU) or LiteRT's footprint.

    On TFLM, DECODE outputs go to the profile's alternate decompression memory
    (`[runtime] alt_decompression_bytes`) when it has one and they fit.
    """
    kernels = profile.kernels or "reference"
    persistent = profile.persistent_ram_bytes
    if profile.runtime == "tflm":
        layout = TFLM_MCU32 if profile.device_class == "mcu" else TFLM_HOST64
        return tflm_ram(graph, layout=layout, kernels=kernels, persistent_ram_bytes=persistent, decode=decode,
                        alt_decompression_bytes=profile.alt_decompression_bytes)
    return litert_ram(graph, model_bytes=model_bytes, kernels=kernels, persistent_ram_bytes=persistent)


# --------------------------------------------------------------------------- flash


@dataclass
class FlashEstimate:
    """Flash the model needs: the .tflite and the runtime's code."""

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


def estimate_flash(graph: Any, profile: Profile, *, model_size: int | None = None) -> FlashEstimate:
    """Flash = the .tflite bytes + the runtime's code (profile [runtime] code_bytes, plus per-op kernels)."""
    size = model_size if model_size is not None else int(getattr(graph, "file_bytes", 0) or 0)
    code = profile.code_bytes
    notes = []
    per_op = profile.kernel_code_bytes
    extra = 0
    if per_op:
        for name in sorted({op_type(op) for op in graph.ops}):
            extra += int(per_op.get(name, per_op.get("default", 0)))
    if code is None:
        notes.append("the profile gives no [runtime] code_bytes: runtime code not counted")
        return FlashEstimate(size, size, 0, "artifact only", "artifact size", notes)
    src = str(profile.sources.get("runtime.code_bytes", ""))
    basis = "assumption" if profile.is_assumption("runtime.code_bytes") else "sourced"
    if basis == "assumption":
        notes.append("runtime code_bytes is an assumption: " + (src or "no source"))
    return FlashEstimate(size + code + extra, size, code + extra, basis,
                         src or "profile [runtime] code_bytes (unsourced)", notes)

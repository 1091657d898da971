"""Strip what a runtime never reads from a .tflite: tensor names, repeated zero points, bias quantization, ...

Why: a converted int8 file carries more than weights. In the KWS demo 35 KB of
116.5 KB is graph, and 28 KB of it is per-channel quantization: a float32 scale
and an int64 zero point per channel, on every int8 kernel and again on its
int32 bias, the zero points all 0. On a microcontroller that is flash. This
module removes only what the runtime's source shows it never reads, or what
its loader rebuilds exactly (docs/compression.md, "Graph overhead", cites the
lines):

- TFLite Micro (`runtime="tflm"`; kernels: reference, CMSIS-NN, ESP-NN):
  - `tensor names`: TFLM reads no tensor name. Kept: every subgraph's inputs
    and outputs and the tensors a signature def names.
  - `zero points`: a per-channel zero-point vector whose values are all
    equal becomes one value. micro_allocator.cc copies `zero_point()->Get(0)`
    into every channel when the vector is shorter than the scales ("as a
    space-saving optimization"), so every kernel sees the same per-channel
    array as before.
  - `bias quantization`: removed from constant int32/int64 biases read only
    as the bias of CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV (int8/int16
    input) or a per-channel FULLY_CONNECTED; those kernels never read it
    (kernel_util.cc reads a bias scale only for uint8 input or per-tensor
    FULLY_CONNECTED, which keep theirs). Not DECODE outputs (the LUT decoder
    takes its channels from their scales) and not in files with TFLM's older
    COMPRESSION_METADATA.
  - `shape signatures`: TFLM reads none (static shapes only).
  - `metadata`: `min_runtime_version`, `CONVERSION_METADATA` and the model
    description; TFLM reads only `OfflineMemoryAllocation` and
    `COMPRESSION_METADATA`, which stay.
  - `empty buffers`: tensors without values point to the empty buffer 0 (the
    schema's sentinel) instead of one empty buffer each.
- LiteRT (`runtime="litert"`): only `tensor names`. Its loader requires as
  many zero points as scales and XNNPACK checks every bias's quantization, so
  quantization, signatures and metadata stay.

Every item's saving is measured on the file, each on top of the ones before
(bias zero points are counted under `zero points`). Files with DECODE (compressed by
`decode_compress`) strip the same way; its inputs already carry no
quantization and its tensors' names go with the rest.

Raises: `ModelError` for an unknown runtime or item, or a corrupt file.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from edgesparse.errors import ModelError
from edgesparse.tflite.decode_compress import RewrittenModel
from edgesparse.tflite.edit import load_model, opcode_name, remove_buffers, save_model
from edgesparse.tflite.schema import dtype_name

__all__ = ["ITEMS", "RUNTIMES", "StripResult", "StrippedItem", "strip_overhead"]

RUNTIMES = ("tflm", "litert")
# What each runtime gets stripped, in the order applied.
ITEMS: dict[str, tuple[str, ...]] = {
    "tflm": ("tensor names", "zero points", "bias quantization", "shape signatures", "metadata", "empty buffers"),
    "litert": ("tensor names",),
}
# Metadata TFLM never reads (it reads only OfflineMemoryAllocation and COMPRESSION_METADATA, which stay, as do
# entries unknown here: an application may read them).
_UNREAD_METADATA = frozenset({"min_runtime_version", "CONVERSION_METADATA"})
# (op, bias input position): kernels that never read their bias's quantization for int8/int16 input.
_BIAS_INPUTS = {"CONV_2D": 2, "DEPTHWISE_CONV_2D": 2, "TRANSPOSE_CONV": 3, "FULLY_CONNECTED": 2}
_ACTIVATION_INPUT = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 0, "TRANSPOSE_CONV": 2, "FULLY_CONNECTED": 0}


@dataclass(frozen=True)
class StrippedItem:
    """One kind of removal and the bytes the file saves by it (measured)."""

    what: str
    saved_bytes: int
    detail: str = ""


@dataclass(frozen=True)
class StripResult(RewrittenModel):
    """The stripped model and what each removal saved; `saved_bytes` = the items' savings + `rewrite_bytes`."""

    runtime: str
    items: list[StrippedItem]
    rewrite_bytes: int   # saved by rewriting the file alone (negative: the converter packs buffers tighter)


# --------------------------------------------------------------------------- the removals


def _text(raw: Any) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")


def _named_tensors(model: Any, s: int) -> set[int]:
    """Tensors whose names a user or a signature runner looks up: subgraph I/O and signature tensors."""
    sg = model.subgraphs[s]
    keep = {int(i) for i in list(sg.inputs if sg.inputs is not None else [])
            + list(sg.outputs if sg.outputs is not None else [])}
    for sig in model.signatureDefs or []:
        if sig.subgraphIndex == s:
            keep |= {int(io.tensorIndex) for io in (sig.inputs or []) + (sig.outputs or [])}
    return keep


def _strip_names(model: Any) -> str:
    count = 0
    for s, sg in enumerate(model.subgraphs):
        keep = _named_tensors(model, s)
        for i, t in enumerate(sg.tensors or []):
            if i not in keep and t.name:
                t.name = None
                count += 1
    return f"{count} tensor names" if count else ""


def _collapse_zero_points(model: Any) -> str:
    count = channels = 0
    for sg in model.subgraphs:
        for t in sg.tensors or []:
            q = t.quantization
            if q is None or q.scale is None or q.zeroPoint is None:
                continue
            zps = [int(z) for z in q.zeroPoint]
            if len(zps) > 1 and len(zps) == len(q.scale) and len(set(zps)) == 1:
                q.zeroPoint = [zps[0]]
                count += 1
                channels += len(zps)
    return f"{count} tensors: {channels} zero points -> {count}" if count else ""


def _reads(model: Any, sg: Any) -> dict[int, list[tuple[str, int, Any]]]:
    """tensor -> [(op name, input position, op)] for every op input of a subgraph."""
    out: dict[int, list[tuple[str, int, Any]]] = {}
    for op in sg.operators or []:
        name = opcode_name(model, op.opcodeIndex)
        for pos, idx in enumerate(op.inputs if op.inputs is not None else []):
            if int(idx) >= 0:
                out.setdefault(int(idx), []).append((name, pos, op))
    return out


def _bias_read_without_quantization(model: Any, sg: Any, name: str, pos: int, op: Any) -> bool:
    """Whether this read is one whose kernel ignores the bias's quantization (int8/int16 paths)."""
    if _BIAS_INPUTS.get(name) != pos:
        return False
    inputs = [int(i) for i in op.inputs]
    act = inputs[_ACTIVATION_INPUT[name]]
    if act < 0 or dtype_name(sg.tensors[act].type) not in ("int8", "int16"):
        return False
    if name != "FULLY_CONNECTED":
        return True
    filt = sg.tensors[inputs[1]].quantization   # per-tensor FC checks the bias scale (kernel_util.cc)
    return filt is not None and filt.scale is not None and len(filt.scale) > 1


def _strip_bias_quantization(model: Any) -> str:
    if any(_text(m.name) == "COMPRESSION_METADATA" for m in model.metadata or []):
        return ""   # TFLM's older compression reads a compressed tensor's scales in the allocator
    count = channels = 0
    for sg in model.subgraphs:
        outputs = {int(i) for i in (sg.outputs if sg.outputs is not None else [])}
        for idx, reads in _reads(model, sg).items():
            t = sg.tensors[idx]
            data = model.buffers[t.buffer].data
            if t.quantization is None or dtype_name(t.type) not in ("int32", "int64") or data is None or not len(data):
                continue
            if idx in outputs or not all(_bias_read_without_quantization(model, sg, *r) for r in reads):
                continue
            channels += len(t.quantization.scale) if t.quantization.scale is not None else 0
            t.quantization = None
            count += 1
    return f"{count} biases ({channels} channels)" if count else ""


def _strip_shape_signatures(model: Any) -> str:
    count = 0
    for sg in model.subgraphs:
        for t in sg.tensors or []:
            if t.shapeSignature is not None:
                t.shapeSignature = None
                count += 1
    return f"{count} tensors" if count else ""


def _strip_metadata(model: Any) -> str:
    drop = [m for m in model.metadata or [] if _text(m.name) in _UNREAD_METADATA]
    removed = [_text(m.name) for m in drop]
    if drop:
        model.metadata = [m for m in model.metadata if m not in drop] or None
        _drop_unreferenced_buffers(model)
    if model.description:
        model.description = None
        removed.append("description")
    return ", ".join(removed)


def _share_empty_buffer(model: Any) -> str:
    """Tensors without values read buffer 0, the schema's empty sentinel, instead of an empty buffer each."""
    if not model.buffers or (model.buffers[0].data is not None and len(model.buffers[0].data)):
        return ""
    valueless = [t for sg in model.subgraphs for t in sg.tensors or []
                 if t.buffer != 0 and (model.buffers[t.buffer].data is None or not len(model.buffers[t.buffer].data))]
    before = len(model.buffers)
    model.buffers[0].data = None   # no data vector at all, as the converter writes it
    for t in valueless:
        t.buffer = 0
    _drop_unreferenced_buffers(model)
    removed = before - len(model.buffers)
    return f"{removed} buffer{'' if removed == 1 else 's'}" if valueless else ""


def _drop_unreferenced_buffers(model: Any) -> None:
    used = {0} | {t.buffer for sg in model.subgraphs for t in sg.tensors or []}
    used |= {m.buffer for m in model.metadata or []} | {int(b) for b in model.metadataBuffer or []}
    remove_buffers(model, set(range(len(model.buffers))) - used)


_REMOVALS: dict[str, Callable[[Any], str]] = {
    "tensor names": _strip_names,
    "zero points": _collapse_zero_points,
    "bias quantization": _strip_bias_quantization,
    "shape signatures": _strip_shape_signatures,
    "metadata": _strip_metadata,
    "empty buffers": _share_empty_buffer,
}


# --------------------------------------------------------------------------- measuring


def strip_overhead(model_bytes: bytes, runtime: str, *, keep: Collection[str] = ()) -> StripResult:
    """The model without what `runtime` never reads; each removal's saving measured on the file.

    `runtime` is "tflm" or "litert" (a profile's runtime.name); `keep` names
    items of ITEMS[runtime] to leave alone. The items are applied in ITEMS
    order and each is measured as the file's size before it minus after it,
    so they add up (with `rewrite_bytes`) to the whole saving. Stripping twice
    changes nothing more; a file with nothing to strip comes back unchanged.
    """
    if runtime not in RUNTIMES:
        raise ModelError("Unknown runtime for stripping", where="strip_overhead",
                         expected=" or ".join(RUNTIMES), received=repr(runtime))
    unknown = sorted(set(keep) - set(ITEMS[runtime]))
    if unknown:
        raise ModelError("Unknown item to keep", where="strip_overhead",
                         expected=", ".join(ITEMS[runtime]), received=", ".join(unknown))
    data = bytes(model_bytes)
    model = load_model(data)
    size = len(save_model(model))
    stripped, items = data, list[StrippedItem]()
    for item in ITEMS[runtime]:
        detail = "" if item in keep else _REMOVALS[item](model)
        if detail:
            before = len(stripped) if items else size
            stripped = save_model(model)
            items.append(StrippedItem(item, before - len(stripped), detail))
    if not items:
        return StripResult(data, len(data), runtime, [], 0)
    return StripResult(stripped, len(data), runtime, items, len(data) - size)

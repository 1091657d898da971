"""Flatbuffer surgery on .tflite files: decode sparse tensors, re-densify them, insert DENSIFY.

Why: the converter's EXPERIMENTAL_SPARSITY encodes every weight that is >= 30 %
zero, whether or not the CSR index arrays pay for themselves. This module lets
`pipeline.convert` measure each sparse tensor and turn the ones that do not pay
back into plain constants. It works on the schema's object API (`ModelT`) and
imports no TensorFlow; `load_model` rejects corrupt files before anything
follows their indices. Schema access, enum names and dtypes come from
`tflite.schema`; reading a model for analysis is `tflite.graph.load_graph`.

Raises: `ModelError` for a corrupt file, an unknown tensor name or index, a
tensor that is not sparse where a sparse one is needed, or replacement values
that do not fit.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgesparse.errors import ModelError
from edgesparse.tflite.schema import (
    CUSTOM_CODE,
    FILE_IDENTIFIER,
    builtin_code,
    builtin_op_names,
    numpy_dtype,
    schema,
    tensor_type_name,
)

__all__ = [
    "remove_buffers",
    "SparseTensor",
    "constant_tensor",
    "decode_sparse",
    "densify_tensors",
    "insert_densify",
    "load_model",
    "numpy_dtype",
    "op_names",
    "opcode_name",
    "save_model",
    "sparse_encoding_report",
    "tensor_quantization",
    "tensor_type_name",
    "weight_tensors",
]

_FIX_CORRUPT = "Re-export the model with the TFLite converter; the file may be truncated or not a .tflite"


def _code(opcode: Any) -> int:
    """The builtin code of an OperatorCodeT (schema.builtin_code's rule)."""
    return builtin_code(opcode.deprecatedBuiltinCode, opcode.builtinCode)


def opcode_name(model: Any, opcode_index: int) -> str:
    """Builtin operator name of an opcode index ("CONV_2D"), or "CUSTOM:<name>" for a custom op."""
    opcode = model.operatorCodes[opcode_index]
    code = _code(opcode)
    if code == CUSTOM_CODE:
        custom = opcode.customCode
        return "CUSTOM:" + (custom.decode() if isinstance(custom, bytes) else str(custom))
    return builtin_op_names().get(code, f"op#{code}")


def _name(tensor) -> str:
    raw = tensor.name
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw or "")


# ----------------------------------------------------------------------------- load / save

def _check_lengths(model_bytes: bytes) -> None:
    """Reject vector lengths that cannot fit in the file before the object API loops over them."""
    fbs = schema()
    root = fbs.Model.GetRootAs(model_bytes, 0)
    limit = len(model_bytes) // 4 + 1
    counts = [root.SubgraphsLength(), root.BuffersLength(), root.OperatorCodesLength(),
              root.MetadataLength(), root.SignatureDefsLength()]
    for s in range(min(root.SubgraphsLength(), limit)):
        sg = root.Subgraphs(s)
        counts += [sg.TensorsLength(), sg.OperatorsLength(), sg.InputsLength(), sg.OutputsLength()]
    if any(c < 0 or c > limit for c in counts):
        raise ValueError(f"vector length {max(counts)} larger than the file allows")


def load_model(model_bytes: bytes, *, where: str = "model") -> Any:
    """Parse a .tflite into a mutable ModelT; every structural problem becomes a ModelError.

    TFLite Micro does not verify flatbuffers, so a corrupt file would crash it:
    this check runs first and validates every index an interpreter would follow.
    """
    data = bytes(model_bytes)
    if len(data) < 16 or data[4:8] != FILE_IDENTIFIER:
        raise ModelError("Not a TFLite flatbuffer", where=where,
                         expected="a .tflite file (file identifier 'TFL3' at byte 4)",
                         received=f"{len(data)} bytes starting {data[:8]!r}", fix=_FIX_CORRUPT)
    fbs = schema()
    try:
        _check_lengths(data)
        model = fbs.ModelT.InitFromObj(fbs.Model.GetRootAs(data, 0))
        _inline_offset_buffers(model, data)
        problem = _structural_problem(model)
    except Exception as exc:  # the generated parser raises struct/index/value errors
        problem = f"unreadable flatbuffer ({type(exc).__name__}: {exc})"
    if problem:
        raise ModelError("The .tflite file is corrupt", where=where,
                         expected="a well-formed TFLite flatbuffer", received=problem, fix=_FIX_CORRUPT)
    return model


def _inline_offset_buffers(model, data: bytes) -> None:
    """Buffers stored after the flatbuffer (offset/size, used past 2 GB) are moved inline."""
    for buf in model.buffers or []:
        if buf.offset and buf.offset > 1:
            end = buf.offset + buf.size
            if end > len(data):
                raise ValueError(f"buffer data at offset {buf.offset} runs past the end of the file")
            buf.data = np.frombuffer(data, np.uint8, buf.size, buf.offset).copy()
            buf.offset, buf.size = 0, 0


def _structural_problem(model) -> str | None:
    """First index that points nowhere, or a constant whose bytes do not match its shape."""
    n_buffers = len(model.buffers or [])
    n_opcodes = len(model.operatorCodes or [])
    if not model.subgraphs:
        return "no subgraphs"
    for s, sg in enumerate(model.subgraphs):
        tensors = sg.tensors or []
        n = len(tensors)
        for i, t in enumerate(tensors):
            if not 0 <= t.buffer < max(n_buffers, 1):
                return f"tensor {i} of subgraph {s} points to buffer {t.buffer} of {n_buffers}"
            data = model.buffers[t.buffer].data if n_buffers else None
            if data is not None and len(data) and t.sparsity is None and t.shape is not None:
                try:
                    itemsize = numpy_dtype(t.type).itemsize
                except ModelError:
                    continue
                expected = int(np.prod(t.shape, dtype=np.int64)) * itemsize
                if expected != len(data):
                    return (f"tensor {i} '{_name(t)}' of shape {list(t.shape)} needs {expected} bytes, "
                            f"its buffer has {len(data)}")
        for io in (sg.inputs, sg.outputs):
            for idx in io if io is not None else []:
                if not 0 <= idx < n:
                    return f"subgraph {s} input/output {idx} out of range ({n} tensors)"
        for k, op in enumerate(sg.operators or []):
            if not 0 <= op.opcodeIndex < n_opcodes:
                return f"operator {k} uses opcode {op.opcodeIndex} of {n_opcodes}"
            for idx in list(op.inputs if op.inputs is not None else []) + list(
                    op.outputs if op.outputs is not None else []):
                if not -1 <= idx < n:
                    return f"operator {k} ({opcode_name(model, op.opcodeIndex)}) uses tensor {idx} of {n}"
    return None


class _AlignedBufferT:
    """Packs a Buffer with its data 16-byte aligned, as the converter writes it.

    The generated BufferT.Pack aligns uint8 data to 1 byte; kernels that read
    float32/int32 constants in place (TFLM, ARM) want natural alignment.
    """

    def __init__(self, buf) -> None:
        self.buf = buf

    def Pack(self, builder):
        fbs = schema()
        data_off = None
        if self.buf.data is not None:
            payload = np.ascontiguousarray(self.buf.data, dtype=np.uint8).tobytes()
            builder.StartVector(1, len(payload), 16)
            builder.head = builder.head - len(payload)
            builder.Bytes[builder.head: builder.head + len(payload)] = payload
            builder.vectorNumElems = len(payload)
            data_off = builder.EndVector()
        fbs.BufferStart(builder)
        if data_off is not None:
            fbs.BufferAddData(builder, data_off)
        fbs.BufferAddOffset(builder, self.buf.offset or 0)
        fbs.BufferAddSize(builder, self.buf.size or 0)
        return fbs.BufferEnd(builder)


def save_model(model) -> bytes:
    """Serialise a ModelT with file identifier TFL3."""
    import flatbuffers

    total = sum(len(b.data) for b in model.buffers or [] if b.data is not None)
    builder = flatbuffers.Builder(total + 65536)
    original = model.buffers
    model.buffers = [_AlignedBufferT(b) for b in original] if original is not None else None
    try:
        root = model.Pack(builder)
    finally:
        model.buffers = original
    builder.Finish(root, file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def op_names(model_bytes: bytes, subgraph: int = 0) -> list[str]:
    model = load_model(model_bytes)
    return [opcode_name(model, op.opcodeIndex) for op in model.subgraphs[subgraph].operators or []]


# ----------------------------------------------------------------------------- sparse decoding

_INDEX_WIDTH = {1: 4, 2: 2, 3: 1}  # SparseIndexVector: Int32Vector, Uint16Vector, Uint8Vector


def _index_array(vec) -> np.ndarray:
    if vec is None or vec.values is None:
        return np.zeros(0, np.int64)
    return np.asarray(vec.values, dtype=np.int64)


def _index_bytes(sparsity) -> int:
    """Bytes of all segments + indices arrays of a SparsityParameters."""
    total = 0
    for dm in sparsity.dimMetadata or []:
        if dm.format == schema().DimensionType.SPARSE_CSR:
            total += len(_index_array(dm.arraySegments)) * _INDEX_WIDTH.get(dm.arraySegmentsType, 4)
            total += len(_index_array(dm.arrayIndices)) * _INDEX_WIDTH.get(dm.arrayIndicesType, 4)
    return total


def _block_size(tensor) -> tuple[int, ...] | None:
    """Block shape over the original dims, e.g. (1, 4) for a 1x4 block-sparse FC kernel."""
    sp = tensor.sparsity
    bmap = list(sp.blockMap) if sp.blockMap is not None else []
    if not bmap:
        return None
    rank = len(tensor.shape)
    order = list(sp.traversalOrder)
    block = [1] * rank
    for level, dim in enumerate(order):
        if dim >= rank:
            block[bmap[dim - rank]] = int(sp.dimMetadata[level].denseSize)
    return tuple(block)


def _decode(tensor, data) -> np.ndarray:
    """SparseToDense of the TFLite format converter, vectorised over one level at a time.

    `dim_metadata` is in traversal order; a DENSE level expands every stored
    position by its size, a SPARSE_CSR level by its segments/indices. The
    leaves, in order, are the stored values.
    """
    fbs = schema()
    sp = tensor.sparsity
    shape = [int(d) for d in tensor.shape]
    rank = len(shape)
    order = [int(d) for d in sp.traversalOrder]
    bmap = [int(d) for d in sp.blockMap] if sp.blockMap is not None else []
    dims = sp.dimMetadata or []
    if len(order) != len(dims) or len(order) != rank + len(bmap):
        raise ValueError(f"traversal_order {order}, block_map {bmap} and {len(dims)} dim_metadata "
                         f"do not fit a rank-{rank} tensor")
    values = np.frombuffer(np.ascontiguousarray(data, np.uint8).tobytes(), numpy_dtype(tensor.type))
    prev = np.zeros(1, np.int64)
    coords: list[np.ndarray] = []
    for dm in dims:
        if dm.format == fbs.DimensionType.DENSE:
            size = int(dm.denseSize)
            coords = [np.repeat(c, size) for c in coords]
            coords.append(np.tile(np.arange(size, dtype=np.int64), len(prev)))
            prev = (prev[:, None] * size + np.arange(size, dtype=np.int64)).ravel()
        else:
            segments, indices = _index_array(dm.arraySegments), _index_array(dm.arrayIndices)
            if len(prev) and prev.max() + 1 >= len(segments):
                raise ValueError("array_segments shorter than the level above it")
            starts, counts = segments[prev], segments[prev + 1] - segments[prev]
            if (counts < 0).any():
                raise ValueError("array_segments not ascending")
            owner = np.repeat(np.arange(len(prev)), counts)
            within = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
            prev = starts[owner] + within
            if len(prev) and prev.max() >= len(indices):
                raise ValueError("array_segments point past array_indices")
            coords = [c[owner] for c in coords]
            coords.append(indices[prev])
    if len(prev) != len(values):
        raise ValueError(f"metadata describes {len(prev)} stored values, the buffer holds {len(values)}")
    block = {}
    for level, dim in enumerate(order):
        if dim >= rank:
            block[dim - rank] = int(dims[level].denseSize)
    orig: list[np.ndarray] = [np.zeros(len(values), np.int64) for _ in range(rank)]
    for level, dim in enumerate(order):
        if dim < rank:
            orig[dim] = coords[level]
    for level, dim in enumerate(order):
        if dim >= rank:
            k = dim - rank
            orig[bmap[k]] = orig[bmap[k]] * block[k] + coords[level]
    for d in range(rank):
        if len(orig[d]) and (orig[d].min() < 0 or orig[d].max() >= shape[d]):
            raise ValueError(f"an index along dimension {d} lies outside the shape {shape}")
    dense = np.zeros(shape, dtype=values.dtype)
    dense[tuple(orig)] = values
    return dense


@dataclass
class SparseTensor:
    """One sparse-encoded constant and what its encoding costs, in bytes."""

    subgraph: int
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    dense_bytes: int          # prod(shape) * itemsize: what a plain constant would store
    values_bytes: int         # stored values (non-zeros, plus zeros inside kept blocks)
    index_bytes: int          # array_segments + array_indices
    block_size: tuple[int, ...] | None
    consumers: list[str] = field(default_factory=list)   # op names that read it

    @property
    def sparse_bytes(self) -> int:
        return self.values_bytes + self.index_bytes

    @property
    def via_densify(self) -> bool:
        """True when a DENSIFY op expands it at run time (the kernel cannot read it sparse)."""
        return bool(self.consumers) and all(c == "DENSIFY" for c in self.consumers)


_WEIGHT_OPS = {"FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV"}


def weight_tensors(model_bytes: bytes) -> list[tuple[str, int, str]]:
    """(op name, tensor index, tensor name) of each FC/conv weight in subgraph 0, in op order.

    A weight behind DENSIFY and/or DEQUANTIZE (float16) is reported as the stored
    constant itself. Tensor
    names differ between a dense and a sparse conversion of the same model, so
    this is how the two are matched: by op order.
    """
    model = load_model(model_bytes)
    sg = model.subgraphs[0]
    producer = {int(op.outputs[0]): op for op in sg.operators or [] if op.outputs is not None and len(op.outputs)}
    out = []
    for op in sg.operators or []:
        name = opcode_name(model, op.opcodeIndex)
        if name not in _WEIGHT_OPS or op.inputs is None or len(op.inputs) < 2:
            continue
        w = int(op.inputs[1])
        src = producer.get(w)
        while src is not None and opcode_name(model, src.opcodeIndex) in ("DENSIFY", "DEQUANTIZE"):
            w = int(src.inputs[0])
            src = producer.get(w)
        out.append((name, w, _name(sg.tensors[w])))
    return out


def _consumers(model, s: int, index: int) -> list[str]:
    return [opcode_name(model, op.opcodeIndex) for op in model.subgraphs[s].operators or []
            if op.inputs is not None and index in list(op.inputs)]


def sparse_encoding_report(model_bytes: bytes) -> list[SparseTensor]:
    """Every tensor with SparsityParameters: dense bytes vs values + index bytes."""
    model = load_model(model_bytes)
    out = []
    for s, sg in enumerate(model.subgraphs):
        for i, t in enumerate(sg.tensors or []):
            if t.sparsity is None:
                continue
            data = model.buffers[t.buffer].data
            dtype = numpy_dtype(t.type)
            out.append(SparseTensor(
                subgraph=s, index=i, name=_name(t), shape=tuple(int(d) for d in t.shape),
                dtype=tensor_type_name(t.type),
                dense_bytes=int(np.prod(t.shape, dtype=np.int64)) * dtype.itemsize,
                values_bytes=0 if data is None else len(data),
                index_bytes=_index_bytes(t.sparsity), block_size=_block_size(t),
                consumers=_consumers(model, s, i)))
    return out


def _find(model, tensor: int | str) -> tuple[int, int]:
    """(subgraph, index) of a tensor given by name (any subgraph) or subgraph-0 index."""
    if isinstance(tensor, (int, np.integer)):
        n = len(model.subgraphs[0].tensors or [])
        if not 0 <= int(tensor) < n:
            raise ModelError("Tensor index out of range", where=f"tensor {tensor}",
                             expected=f"0..{n - 1}", received=int(tensor))
        return 0, int(tensor)
    for s, sg in enumerate(model.subgraphs):
        for i, t in enumerate(sg.tensors or []):
            if _name(t) == tensor:
                return s, i
    names = [_name(t) for sg in model.subgraphs for t in sg.tensors or []]
    close = difflib.get_close_matches(str(tensor), names, n=1)
    raise ModelError("No tensor of that name", where=str(tensor), expected="a tensor name in the model",
                     received=repr(tensor), fix=f"Did you mean '{close[0]}'?" if close else None)


def _decode_tensor(model, s: int, i: int) -> np.ndarray:
    t = model.subgraphs[s].tensors[i]
    data = model.buffers[t.buffer].data
    if data is None:
        data = np.zeros(0, np.uint8)
    if t.sparsity is None:
        return np.frombuffer(np.ascontiguousarray(data, np.uint8).tobytes(),
                             numpy_dtype(t.type)).reshape([int(d) for d in t.shape])
    try:
        return _decode(t, data)
    except ValueError as exc:
        raise ModelError("Sparse tensor metadata is inconsistent", where=f"tensor '{_name(t)}'",
                         expected="SparsityParameters that describe the stored values",
                         received=str(exc), fix=_FIX_CORRUPT) from None


def decode_sparse(model_bytes: bytes, tensor: int | str) -> np.ndarray:
    """The dense array a sparse constant stands for (raw stored dtype: int8 stays int8)."""
    model = load_model(model_bytes)
    s, i = _find(model, tensor)
    if model.subgraphs[s].tensors[i].sparsity is None:
        raise ModelError("Tensor is not sparse-encoded", where=_name(model.subgraphs[s].tensors[i]),
                         expected="a tensor with SparsityParameters", received="a dense tensor",
                         fix="Use constant_tensor() for dense constants")
    return _decode_tensor(model, s, i)


def constant_tensor(model_bytes: bytes, tensor: int | str) -> np.ndarray:
    """A constant's values, decoding sparse encoding when present."""
    model = load_model(model_bytes)
    return _decode_tensor(model, *_find(model, tensor))


def tensor_quantization(model_bytes: bytes, tensor: int | str) -> tuple[np.ndarray, np.ndarray, int]:
    """(scales, zero_points, quantized_dimension); empty arrays for an unquantized tensor."""
    model = load_model(model_bytes)
    s, i = _find(model, tensor)
    q = model.subgraphs[s].tensors[i].quantization
    if q is None or q.scale is None:
        return np.zeros(0, np.float32), np.zeros(0, np.int64), 0
    return (np.asarray(q.scale, np.float32), np.asarray(q.zeroPoint, np.int64),
            int(q.quantizedDimension))


# ----------------------------------------------------------------------------- densify

def densify_tensors(model_bytes: bytes, tensors: Iterable[int | str], *,
                    values: Mapping[int | str, np.ndarray] | None = None) -> bytes:
    """Store the given sparse constants densely; remove the DENSIFY ops that expanded them.

    For each target the sparse constant itself becomes a plain constant (same
    name, quantization and buffer slot, dense bytes, no SparsityParameters).
    A DENSIFY op reading it is deleted and its consumers read the constant
    directly; the DENSIFY output tensor and its empty buffer are dropped and
    every tensor/buffer/opcode index (ops, subgraph I/O, signature defs,
    metadata) is renumbered. Kernels that read the sparse tensor directly
    (block-sparse FULLY_CONNECTED) get the dense tensor instead. Nothing else
    in the file changes.

    `values` (same keys as `tensors`) supplies the dense data instead of
    decoding it: for tensors the converter encoded wrongly (see convert.py).
    """
    model = load_model(model_bytes)
    supplied = {_find(model, k): np.asarray(v) for k, v in (values or {}).items()}
    targets = {_find(model, t) for t in tensors} | set(supplied)
    densify_code = schema().BuiltinOperator.DENSIFY
    for s, i in sorted(targets):
        sg = model.subgraphs[s]
        t = sg.tensors[i]
        if t.sparsity is None:
            raise ModelError("Tensor is not sparse-encoded", where=_name(t),
                             expected="a tensor with SparsityParameters", received="a dense tensor",
                             fix="Pass only names from sparse_encoding_report()")
        dense = supplied.get((s, i))
        if dense is None:
            dense = _decode_tensor(model, s, i)
        shape, dtype = tuple(int(d) for d in t.shape), numpy_dtype(t.type)
        if dense.shape != shape or dense.dtype != dtype:
            raise ModelError("Replacement values do not fit the tensor", where=_name(t),
                             expected=f"{dtype.name} array of shape {shape}",
                             received=f"{dense.dtype.name} array of shape {dense.shape}")
        data = np.frombuffer(np.ascontiguousarray(dense).tobytes(), np.uint8).copy()
        if sum(x.buffer == t.buffer for x in sg.tensors) > 1:  # deduplicated buffer: do not touch the other user
            model.buffers.append(schema().BufferT())
            t.buffer = len(model.buffers) - 1
        model.buffers[t.buffer].data = data
        t.sparsity = None
    dropped_tensors: dict[int, set[int]] = {}
    dropped_buffers: set[int] = set()
    for s, i in targets:
        sg = model.subgraphs[s]
        kept_ops = []
        for op in sg.operators or []:
            ins = list(op.inputs) if op.inputs is not None else []
            if _code(model.operatorCodes[op.opcodeIndex]) == densify_code and ins[:1] == [i]:
                out = int(op.outputs[0])
                if out in list(sg.outputs if sg.outputs is not None else []):
                    raise ModelError("DENSIFY output is a model output; cannot remove it",
                                     where=_name(sg.tensors[out]), expected="DENSIFY feeding an op",
                                     received="a subgraph output")
                _rewire(model, s, out, i)
                dropped_tensors.setdefault(s, set()).add(out)
                dropped_buffers.add(sg.tensors[out].buffer)
                continue
            kept_ops.append(op)
        sg.operators = kept_ops
    for s, drop in dropped_tensors.items():
        _remove_tensors(model, s, drop)
    used = {t.buffer for sg in model.subgraphs for t in sg.tensors or []}
    used |= {m.buffer for m in model.metadata or []} | set(model.metadataBuffer or [])
    remove_buffers(model, {b for b in dropped_buffers if b not in used and b != 0})
    _remove_unused_opcodes(model, {densify_code})
    return save_model(model)


def insert_densify(model_bytes: bytes, tensors: Iterable[int | str], *, before: Iterable[str]) -> bytes:
    """Put a DENSIFY op between a sparse constant and the ops in `before` that read it directly.

    The inverse of what densify_tensors removes: the weight stays sparse in the
    file, but the named consumers (e.g. DEQUANTIZE, which LiteRT 2.3 cannot
    read a sparse float16 constant with) get a dense tensor, as the converter
    does for convolutions. The new op goes right before the first consumer.
    """
    fbs = schema()
    model = load_model(model_bytes)
    wanted = set(before)
    code = fbs.BuiltinOperator.DENSIFY
    opcode = next((j for j, oc in enumerate(model.operatorCodes) if _code(oc) == code), None)
    if opcode is None:
        oc = fbs.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, code, 1
        model.operatorCodes.append(oc)
        opcode = len(model.operatorCodes) - 1
    for s, i in sorted({_find(model, t) for t in tensors}):
        sg = model.subgraphs[s]
        src = sg.tensors[i]
        readers = [k for k, op in enumerate(sg.operators or []) if op.inputs is not None
                   and i in list(op.inputs) and opcode_name(model, op.opcodeIndex) in wanted]
        if src.sparsity is None or not readers:
            continue
        out = fbs.TensorT()
        out.shape, out.type, out.name = list(src.shape), src.type, _name(src) + "/densified"
        out.quantization = src.quantization
        model.buffers.append(fbs.BufferT())
        out.buffer = len(model.buffers) - 1
        sg.tensors.append(out)
        new_index = len(sg.tensors) - 1
        for k in readers:
            sg.operators[k].inputs = [new_index if int(x) == i else int(x) for x in sg.operators[k].inputs]
        op = fbs.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = opcode, [i], [new_index]
        op.builtinOptionsType = fbs.BuiltinOptions.DensifyOptions
        op.builtinOptions = fbs.DensifyOptionsT()
        sg.operators.insert(readers[0], op)
    return save_model(model)


def _rewire(model, s: int, old: int, new: int) -> None:
    for op in model.subgraphs[s].operators or []:
        if op.inputs is not None:
            op.inputs = [new if int(x) == old else int(x) for x in op.inputs]


def _remove_tensors(model, s: int, drop: set[int]) -> None:
    sg = model.subgraphs[s]
    keep = [i for i in range(len(sg.tensors)) if i not in drop]
    remap = {old: new for new, old in enumerate(keep)}
    remap[-1] = -1

    def re(seq):
        return None if seq is None else [remap[int(x)] for x in seq]

    sg.tensors = [sg.tensors[i] for i in keep]
    for op in sg.operators or []:
        op.inputs, op.outputs, op.intermediates = re(op.inputs), re(op.outputs), re(op.intermediates)
    sg.inputs, sg.outputs = re(sg.inputs), re(sg.outputs)
    for sig in model.signatureDefs or []:
        if sig.subgraphIndex == s:
            for io in (sig.inputs or []) + (sig.outputs or []):
                io.tensorIndex = remap[int(io.tensorIndex)]


def remove_buffers(model: Any, drop: set[int]) -> None:
    """Delete buffers `drop` from an unpacked model (ModelT), renumbering every tensor and metadata reference."""
    if not drop:
        return
    keep = [b for b in range(len(model.buffers)) if b not in drop]
    remap = {old: new for new, old in enumerate(keep)}
    model.buffers = [model.buffers[b] for b in keep]
    for sg in model.subgraphs:
        for t in sg.tensors or []:
            t.buffer = remap[t.buffer]
    for m in model.metadata or []:
        m.buffer = remap[m.buffer]
    if model.metadataBuffer is not None:
        model.metadataBuffer = [remap[int(b)] for b in model.metadataBuffer]


def _remove_unused_opcodes(model, codes: set[int]) -> None:
    used = {op.opcodeIndex for sg in model.subgraphs for op in sg.operators or []}
    drop = {j for j, oc in enumerate(model.operatorCodes) if j not in used and _code(oc) in codes}
    if not drop:
        return
    keep = [j for j in range(len(model.operatorCodes)) if j not in drop]
    remap = {old: new for new, old in enumerate(keep)}
    model.operatorCodes = [model.operatorCodes[j] for j in keep]
    for sg in model.subgraphs:
        for op in sg.operators or []:
            op.opcodeIndex = remap[op.opcodeIndex]

"""Read a .tflite flatbuffer into the graph IR, checking every offset, length and index on the way.

Why its own module: a file from a user may be truncated, fuzzed or hand-edited,
and TFLite Micro does not verify flatbuffers, so every vector length, buffer
span and tensor/opcode index is checked here against the file before anything
follows it. The result is structure only; `tflite.analysis` adds the costs and
`tflite.graph.load_graph` is the public entry that does both.

Raises: `CorruptModel` (internal; `load_graph` turns it into a `ModelError`) and
whatever the flatbuffers reader raises on a broken buffer (`PARSE_ERRORS`).
"""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse.tflite.ir import (
    DimensionMetadata,
    Graph,
    Op,
    Quantization,
    Signature,
    SizeBreakdown,
    Sparsity,
    Subgraph,
    Tensor,
    dim_extent,
)
from edgesparse.tflite.schema import (
    CUSTOM_CODE,
    TENSOR_TYPES,
    builtin_code,
    builtin_op_names,
    dtype_name,
    enum_names,
    schema,
)

__all__ = ["PARSE_ERRORS", "CorruptModel", "parse_model"]

# Exceptions the flatbuffers reader raises on a truncated or corrupted buffer.
PARSE_ERRORS = (struct.error, IndexError, ValueError, UnicodeDecodeError, RecursionError,
                TypeError, OverflowError, KeyError, AttributeError, MemoryError, ArithmeticError)
_INDEX_VECTORS = {1: ("Int32Vector", "int32", 4), 2: ("Uint16Vector", "uint16", 2),
                  3: ("Uint8Vector", "uint8", 1)}


class CorruptModel(Exception):
    """An inconsistency found while parsing; `load_graph` turns it into one ModelError naming the file."""


# --------------------------------------------------------------------------- flatbuffer access


def _vec(obj: Any, name: str) -> np.ndarray:
    """A scalar vector field as numpy (empty when absent); numpy bounds-checks the read."""
    if getattr(obj, name + "IsNone")():
        return np.zeros(0, dtype=np.int64)
    return np.asarray(getattr(obj, name + "AsNumpy")())


def _ints(obj: Any, name: str) -> tuple[int, ...]:
    return tuple(int(v) for v in _vec(obj, name))


def _count(obj: Any, name: str, data_len: int) -> int:
    """Length of a vector of tables, refused when it could not fit in the file (4-byte offsets)."""
    n = int(getattr(obj, name + "Length")())
    if n < 0 or n * 4 > data_len:
        raise CorruptModel(f"{name} claims {n} entries in a {data_len}-byte file")
    return n


def _span(obj: Any, slot: int, elem_size: int, data_len: int) -> tuple[int, int] | None:
    """(start, end) file offsets of a vector field's values, checked against the file size."""
    tab = obj._tab
    o = tab.Offset(slot)
    if o == 0:
        return None
    start = tab.Vector(o)
    end = start + tab.VectorLen(o) * elem_size
    if start < 0 or end > data_len:
        raise CorruptModel(f"a vector at byte {start} runs past the end of the file ({end} > {data_len})")
    return start, end


def _text(raw: bytes | None) -> str:
    return raw.decode("utf-8", errors="replace") if raw else ""


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


class _Names:
    """Reverse maps of the schema's enums, built once."""

    def __init__(self, schema: Any) -> None:
        self.ops = builtin_op_names()
        self.options = enum_names(schema.BuiltinOptions)
        self.options2 = enum_names(schema.BuiltinOptions2)
        tensor_types = {k: v[0] for k, v in TENSOR_TYPES.items()}
        self.option_enums = {
            "padding": enum_names(schema.Padding),
            "fused_activation_function": enum_names(schema.ActivationFunctionType),
            "weights_format": enum_names(schema.FullyConnectedOptionsWeightsFormat),
            "mode": enum_names(schema.MirrorPadMode),
            "kernel_type": enum_names(schema.LSTMKernelType),
            "combiner": enum_names(schema.CombinerType),
        }
        for key in ("in_data_type", "out_data_type", "output_type", "out_type", "idx_out_type",
                    "key_dtype", "value_dtype", "quantized_bias_type"):
            self.option_enums[key] = tensor_types


@functools.lru_cache(maxsize=1)
def _names() -> _Names:
    return _Names(schema())


def _plain(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, bytes):
        return _text(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _options(op: Any, names: _Names) -> dict[str, Any]:
    """builtin_options (and builtin_options_2) as a dict with snake_case keys and enum names."""
    fbs = schema()
    result: dict[str, Any] = {}
    for type_getter, table_getter, table_names in (
            ("BuiltinOptionsType", "BuiltinOptions", names.options),
            ("BuiltinOptions2Type", "BuiltinOptions2", names.options2)):
        type_id = getattr(op, type_getter)()
        name = table_names.get(type_id)
        table = getattr(op, table_getter)() if type_id else None
        if not name or name == "NONE" or table is None or not hasattr(fbs, name + "T"):
            continue
        reader = getattr(fbs, name)()
        reader.Init(table.Bytes, table.Pos)
        unpacked = getattr(fbs, name + "T").InitFromObj(reader)
        for key, value in vars(unpacked).items():
            key = _snake(key)
            enum = names.option_enums.get(key)
            if enum is not None and isinstance(value, int):
                value = enum.get(value, value)
            result[key] = _plain(value)
    return result


# --------------------------------------------------------------------------- the parser


def parse_model(data: bytes, path: Path | None = None) -> Graph:
    """The graph IR of a .tflite's bytes (after `load_graph` checked the header); op costs not yet filled."""
    model = schema().Model.GetRootAs(data, 0)
    size = len(data)
    buffer_spans = _buffer_spans(model, size)
    opcodes = _opcodes(model, size)
    external = {}
    for i in range(_count(model, "ExternalBuffers", size)):
        ext = model.ExternalBuffers(i)
        external[int(ext.Id())] = int(ext.Length())
    subgraphs = [_parse_subgraph(model.Subgraphs(s), s, _names(), opcodes, buffer_spans, external, size)
                 for s in range(_count(model, "Subgraphs", size))]
    if not subgraphs:
        raise CorruptModel("the model has no subgraphs")
    metadata_spans, min_runtime = _metadata(model, data, buffer_spans)
    op_types = dict.fromkeys(op.opcode for sg in subgraphs for op in sg.ops)
    return Graph(file_bytes=size, subgraphs=subgraphs,
                 size=_size_breakdown(subgraphs, buffer_spans, size), op_types=tuple(op_types),
                 schema_version=int(model.Version()), min_runtime_version=min_runtime,
                 description=_text(model.Description()),
                 metadata={name: span[1] - span[0] if span else 0 for name, span in metadata_spans.items()},
                 metadata_spans=metadata_spans,
                 signatures=_signatures(model, subgraphs, size), path=path, data=data)


def _buffer_spans(model: Any, size: int) -> list[tuple[int, int] | None]:
    """Where each buffer's bytes are in the file (None: no data)."""
    spans: list[tuple[int, int] | None] = []
    for i in range(_count(model, "Buffers", size)):
        buf = model.Buffers(i)
        span = _span(buf, 4, 1, size)
        offset, length = int(buf.Offset()), int(buf.Size())
        if offset > 1:  # data stored outside the flatbuffer (models > 2 GB): relative to the file start
            if offset + length > size:
                raise CorruptModel(f"buffer {i} points past the end of the file "
                                   f"(offset {offset} + size {length} > {size})")
            span = (offset, offset + length)
        spans.append(span if span and span[1] > span[0] else None)
    return spans


def _opcodes(model: Any, size: int) -> list[tuple[str, bool, int]]:
    """(name, builtin?, version) per operator code; a custom op is named by its custom code."""
    names = _names()
    opcodes: list[tuple[str, bool, int]] = []
    for i in range(_count(model, "OperatorCodes", size)):
        code = model.OperatorCodes(i)
        builtin = builtin_code(code.DeprecatedBuiltinCode(), code.BuiltinCode())
        custom = _text(code.CustomCode())
        if custom or builtin == CUSTOM_CODE:
            opcodes.append((custom or "CUSTOM", False, int(code.Version())))
        else:
            opcodes.append((names.ops.get(builtin, f"BUILTIN_{builtin}"), True, int(code.Version())))
    return opcodes


def _metadata(model: Any, data: bytes, buffer_spans: list[tuple[int, int] | None]
              ) -> tuple[dict[str, tuple[int, int] | None], str | None]:
    """Metadata name -> its (start, end) in the file (None: empty), and the min_runtime_version string when present."""
    metadata: dict[str, tuple[int, int] | None] = {}
    min_runtime = None
    for i in range(_count(model, "Metadata", len(data))):
        entry = model.Metadata(i)
        name, b = _text(entry.Name()), int(entry.Buffer())
        if not 0 <= b < len(buffer_spans):
            raise CorruptModel(f"metadata {name!r} refers to buffer {b}; the model has {len(buffer_spans)}")
        span = buffer_spans[b]
        metadata[name] = span
        if name == "min_runtime_version" and span:
            min_runtime = data[span[0]:span[1]].split(b"\0", 1)[0].decode("ascii", errors="replace")
    return metadata, min_runtime


def _signatures(model: Any, subgraphs: list[Subgraph], size: int) -> list[Signature]:
    signatures = []
    for i in range(_count(model, "SignatureDefs", size)):
        sig = model.SignatureDefs(i)
        sg_index = int(sig.SubgraphIndex())
        if not 0 <= sg_index < len(subgraphs):
            raise CorruptModel(f"signature {i} refers to subgraph {sg_index}; the model has {len(subgraphs)}")
        n_tensors = len(subgraphs[sg_index].tensors)
        maps = []
        for count_name, getter in (("Inputs", sig.Inputs), ("Outputs", sig.Outputs)):
            mapping = {}
            for j in range(_count(sig, count_name, size)):
                entry = getter(j)
                index = int(entry.TensorIndex())
                if not 0 <= index < n_tensors:
                    raise CorruptModel(f"signature {i} maps to tensor {index}; subgraph {sg_index} has {n_tensors}")
                mapping[_text(entry.Name())] = index
            maps.append(mapping)
        signatures.append(Signature(_text(sig.SignatureKey()), sg_index, maps[0], maps[1]))
    return signatures


def _parse_subgraph(fb: Any, s: int, names: _Names, opcodes: list[tuple[str, bool, int]],
                    buffer_spans: list[tuple[int, int] | None], external: dict[int, int],
                    size: int) -> Subgraph:
    tensors = [_parse_tensor(fb.Tensors(i), i, s, buffer_spans, external, size)
               for i in range(_count(fb, "Tensors", size))]
    n = len(tensors)

    def checked(indices: tuple[int, ...], what: str, optional: bool = False) -> tuple[int, ...]:
        for t in indices:
            if not (0 <= t < n or (optional and t == -1)):
                raise CorruptModel(f"subgraph {s}: {what} refers to tensor {t}; the subgraph has {n}")
        return indices

    ops = []
    for i in range(_count(fb, "Operators", size)):
        fb_op = fb.Operators(i)
        code = int(fb_op.OpcodeIndex())
        if not 0 <= code < len(opcodes):
            raise CorruptModel(f"subgraph {s} op {i} uses opcode index {code}; the model has {len(opcodes)}")
        name, builtin, version = opcodes[code]
        ops.append(Op(index=i, opcode=name, builtin=builtin, version=version, subgraph=s,
                      inputs=checked(_ints(fb_op, "Inputs"), f"op {i} ({name}) input", optional=True),
                      outputs=checked(_ints(fb_op, "Outputs"), f"op {i} ({name}) output"),
                      intermediates=checked(_ints(fb_op, "Intermediates"), f"op {i} intermediate"),
                      options=_options(fb_op, names) if builtin else {}))
    return Subgraph(index=s, name=_text(fb.Name()), tensors=tensors, ops=ops,
                    inputs=checked(_ints(fb, "Inputs"), "an input"),
                    outputs=checked(_ints(fb, "Outputs"), "an output"))


def _parse_tensor(fb: Any, i: int, s: int, buffer_spans: list[tuple[int, int] | None],
                  external: dict[int, int], size: int) -> Tensor:
    type_id = int(fb.Type())
    dtype = dtype_name(type_id)
    shape = _ints(fb, "Shape")
    signature = _ints(fb, "ShapeSignature") or shape
    if any(d < -1 for d in shape + signature):
        raise CorruptModel(f"subgraph {s} tensor {i} has an impossible shape {list(shape)}")
    b = int(fb.Buffer())
    if not 0 <= b < len(buffer_spans):
        raise CorruptModel(f"subgraph {s} tensor {i} refers to buffer {b}; the model has {len(buffer_spans)}")
    span = buffer_spans[b]
    ext_id = int(fb.ExternalBuffer())
    is_external = ext_id != 0 and ext_id in external
    tensor = Tensor(index=i, name=_text(fb.Name()), shape=shape, dtype=dtype, buffer=b,
                    buffer_bytes=(span[1] - span[0]) if span else (external[ext_id] if is_external else 0),
                    is_constant=(span is not None or is_external) and not fb.IsVariable(),
                    is_variable=bool(fb.IsVariable()),
                    quantization=_parse_quantization(fb.Quantization()),
                    shape_signature=signature, has_rank=bool(fb.HasRank()) or bool(shape), subgraph=s,
                    buffer_offset=span[0] if span else None, external=is_external and span is None)
    sparsity = fb.Sparsity()
    if sparsity is not None:
        tensor.sparsity = _parse_sparsity(sparsity, tensor, size)
    return tensor


def _parse_quantization(q: Any) -> Quantization | None:
    if q is None:
        return None
    details_type = int(q.DetailsType())
    details = None
    if details_type:
        details = enum_names(schema().QuantizationDetails).get(details_type, f"details_{details_type}")
    scales = tuple(float(v) for v in _vec(q, "Scale"))
    zero_points = tuple(int(v) for v in _vec(q, "ZeroPoint"))
    if not scales and not zero_points and not details:
        return None
    return Quantization(scales=scales, zero_points=zero_points,
                        quantized_dimension=int(q.QuantizedDimension()),
                        min=tuple(float(v) for v in _vec(q, "Min")),
                        max=tuple(float(v) for v in _vec(q, "Max")), details=details)


def _index_vector(union_type: int, table: Any,
                  size: int) -> tuple[np.ndarray | None, str | None, tuple[int, int] | None]:
    """The values of an Int32Vector / Uint16Vector / Uint8Vector union member, and their file span."""
    if not union_type or table is None:
        return None, None, None
    if union_type not in _INDEX_VECTORS:
        raise CorruptModel(f"unknown sparse index vector type {union_type}")
    cls_name, dtype, item = _INDEX_VECTORS[union_type]
    reader = getattr(schema(), cls_name)()
    reader.Init(table.Bytes, table.Pos)
    span = _span(reader, 4, item, size)
    if span is None:
        return np.zeros(0, dtype=dtype), dtype, None
    values = np.frombuffer(reader._tab.Bytes, dtype=np.dtype(dtype).newbyteorder("<"),
                           count=(span[1] - span[0]) // item, offset=span[0])
    return values, dtype, span


def _parse_sparsity(sp: Any, tensor: Tensor, size: int) -> Sparsity:
    where = f"subgraph {tensor.subgraph} tensor {tensor.index} ({tensor.name!r})"
    order = _ints(sp, "TraversalOrder")
    block_map = _ints(sp, "BlockMap")
    dims = []
    for j in range(_count(sp, "DimMetadata", size)):
        dm = sp.DimMetadata(j)
        fmt = int(dm.Format())
        segments, seg_type, seg_span = _index_vector(int(dm.ArraySegmentsType()), dm.ArraySegments(), size)
        indices, idx_type, idx_span = _index_vector(int(dm.ArrayIndicesType()), dm.ArrayIndices(), size)
        dims.append(DimensionMetadata(format="SPARSE_CSR" if fmt == 1 else "DENSE",
                                      dense_size=int(dm.DenseSize()), array_segments=segments,
                                      array_indices=indices, segments_type=seg_type,
                                      indices_type=idx_type,
                                      file_spans=tuple(x for x in (seg_span, idx_span) if x)))
    n = len(order) - len(block_map)
    if len(dims) != len(order) or n < 0 or sorted(order[:n]) != list(range(n)) \
            or sorted(order[n:]) != list(range(n, len(order))) \
            or any(not 0 <= d < n for d in block_map):
        raise CorruptModel(f"{where}: inconsistent sparsity parameters (traversal_order {list(order)}, "
                           f"block_map {list(block_map)}, {len(dims)} dim_metadata)")
    block_shape = [1] * n
    for j, dense_dim in enumerate(block_map):
        block_shape[dense_dim] = max(dims[order.index(n + j)].dense_size, 1)
    # Stored values: walk the traversal order; a CSR level keeps len(indices) entries.
    stored = 1
    for k, dm in enumerate(dims):
        if dm.format == "DENSE":
            stored *= max(dm.dense_size, 0)
        else:
            if dm.array_segments is None or dm.array_indices is None \
                    or len(dm.array_segments) != stored + 1:
                raise CorruptModel(f"{where}: sparse dimension {k} has malformed segment/index arrays")
            stored = len(dm.array_indices)
    if len(tensor.shape) == n:
        dense_shape = tuple(dim_extent(d) for d in tensor.shape)
    else:  # no usable shape: rebuild it from the metadata (sparse dims from their largest index)
        sizes = []
        for d in range(n):
            dm = dims[order.index(d)]
            extent = dm.dense_size if dm.format == "DENSE" else (
                int(dm.array_indices.max()) + 1 if dm.array_indices is not None and len(dm.array_indices) else 0)
            sizes.append(extent * block_shape[d])
        dense_shape = tuple(sizes)
    item_bits = tensor.bits
    if item_bits >= 8 and tensor.buffer_bytes and tensor.buffer_bytes * 8 // item_bits != stored:
        raise CorruptModel(f"{where}: sparsity metadata describes {stored} values, "
                           f"its buffer holds {tensor.buffer_bytes * 8 // item_bits}")
    return Sparsity(traversal_order=order, block_map=block_map, dim_metadata=tuple(dims),
                    dense_shape=dense_shape, block_shape=tuple(block_shape), nnz=stored,
                    value_bytes=tensor.buffer_bytes,
                    index_bytes=sum(dm.index_bytes for dm in dims))


def _index_spans(tensor: Tensor) -> Iterator[tuple[int, int]]:
    """File spans of a sparse tensor's segment and index arrays."""
    for dm in tensor.sparsity.dim_metadata if tensor.sparsity else ():
        yield from dm.file_spans


def _union_length(spans: list[tuple[int, int]]) -> int:
    total, end = 0, -1
    for start, stop in sorted(spans):
        if stop <= end:
            continue
        total += stop - max(start, end)
        end = stop
    return total


def _size_breakdown(subgraphs: list[Subgraph], buffer_spans: list[tuple[int, int] | None],
                    size: int) -> SizeBreakdown:
    """Split the file's bytes into constant values, sparse index arrays and everything else."""
    weight_buffers: set[int] = set()
    external = 0
    index_spans: list[tuple[int, int]] = []
    for sg in subgraphs:
        for t in sg.tensors:
            if buffer_spans[t.buffer] is not None:  # constants (and initial values of variables)
                weight_buffers.add(t.buffer)
            elif t.external:
                external += t.buffer_bytes
            index_spans.extend(_index_spans(t))
    weight_spans = [span for b in weight_buffers if (span := buffer_spans[b]) is not None]
    weights = _union_length(weight_spans)
    index = _union_length(weight_spans + index_spans) - weights
    overhead = size - weights - index
    if overhead < 0:
        raise CorruptModel(f"constant data ({weights} bytes) and index arrays ({index} bytes) "
                           f"exceed the file size ({size})")
    breakdown = SizeBreakdown(weight_bytes=weights, sparse_index_bytes=index, overhead_bytes=overhead,
                              total_bytes=size, external_weight_bytes=external)
    assert breakdown.weight_bytes + breakdown.sparse_index_bytes + breakdown.overhead_bytes == size
    return breakdown


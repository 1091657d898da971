"""Parse a .tflite flatbuffer into a small graph IR; imports no TensorFlow.

Why: `check` and `measure` must run on a Raspberry Pi with only ai-edge-litert
and numpy, and every later stage (estimate, report, tflite_edit) needs the same
facts: which ops run in which order, what each costs (MACs, bytes moved), where
the bytes of the file go (weights, sparse index arrays, structure) and which
tensors the converter's EXPERIMENTAL_SPARSITY encoded.

CONTRACT:
    load_graph(source: bytes | str | Path) -> Graph   # ModelError on missing / truncated / non-flatbuffer input
    Graph: file_bytes, subgraphs, ops, tensors, inputs, outputs, op_types, size (SizeBreakdown),
           schema_version, min_runtime_version, metadata, signatures, description, path, data,
           all_ops, all_tensors, sparse_tensors, total_macs, total_effective_macs,
           total_elementwise_ops, total_bytes_moved, param_count, stored_param_count,
           fully_analyzed, unanalyzed_ops, op_type_stats(), summary(), tensor_values(t)
    SizeBreakdown: weight_bytes, sparse_index_bytes, overhead_bytes, total_bytes, external_weight_bytes
    Subgraph: index, name, tensors, ops, inputs, outputs
    Op: index, opcode, inputs, outputs, options, macs, bytes_moved, effective_macs, elementwise_ops,
        weight_bytes, activation_bytes_in, activation_bytes_out, dtype, weight_dtype, weight_tensor,
        weight_source, sparse_weights, weights_densified, weight_density, one_time, analyzed, note,
        builtin, version, subgraph, kind
    Tensor: index, name, shape, dtype, buffer_bytes, is_constant, quantization, sparsity,
        shape_signature, buffer, buffer_offset, is_variable, external, num_elements, nbytes, stored_bytes
    Quantization: scales, zero_points, quantized_dimension, min, max, details, per_channel
    Sparsity: traversal_order, block_map, dim_metadata, dense_shape, block_shape, nnz, density,
        sparsity, value_bytes, index_bytes
    DimensionMetadata: format, dense_size, array_segments, array_indices, segments_type, indices_type
    Signature: key, subgraph, inputs, outputs (name -> tensor index)

Counting conventions (docs/graph.md has the full table):
    macs              multiply-accumulates of CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED,
                      TRANSPOSE_CONV, CONV_3D(_TRANSPOSE), BATCH_MATMUL, recurrent ops
    effective_macs    macs x density of the weight tensor when its source constant is sparse
    elementwise_ops   one per output element for elementwise ops; window reads for pooling;
                      input elements for reductions
    bytes_moved       activation_bytes_in + weight_bytes + activation_bytes_out
    analyzed=False    the op's cost is unknown (custom op, control flow, op not modelled)
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgesparse.errors import ModelError

FILE_IDENTIFIER = b"TFL3"
_FIX_CORRUPT = ("Re-export the model with tf.lite.TFLiteConverter, or copy it again: "
                "the file is truncated or corrupted")

# Exceptions the flatbuffers reader raises on a truncated or corrupted buffer.
_PARSE_ERRORS = (struct.error, IndexError, ValueError, UnicodeDecodeError, RecursionError,
                 TypeError, OverflowError, KeyError, AttributeError, MemoryError, ArithmeticError)


def _schema():
    """The flatbuffer schema shipped with ai-edge-litert (a runtime dependency, not TensorFlow)."""
    from ai_edge_litert import schema_py_generated as schema

    return schema


# TensorType enum value -> (numpy-style dtype name, bits per element).
_DTYPES: dict[int, tuple[str, int]] = {
    0: ("float32", 32), 1: ("float16", 16), 2: ("int32", 32), 3: ("uint8", 8), 4: ("int64", 64),
    5: ("string", 8), 6: ("bool", 8), 7: ("int16", 16), 8: ("complex64", 64), 9: ("int8", 8),
    10: ("float64", 64), 11: ("complex128", 128), 12: ("uint64", 64), 13: ("resource", 0),
    14: ("variant", 0), 15: ("uint32", 32), 16: ("uint16", 16), 17: ("int4", 4),
    18: ("bfloat16", 16), 19: ("int2", 2), 20: ("uint4", 4), 21: ("float8_e4m3fn", 8),
    22: ("float8_e5m2", 8),
}
_DTYPE_BITS = {name: bits for name, bits in _DTYPES.values()}
_NUMPY_DTYPES = {"float32", "float16", "int32", "uint8", "int64", "bool", "int16", "complex64",
                 "int8", "float64", "complex128", "uint64", "uint32", "uint16"}
_INDEX_VECTORS = {1: ("Int32Vector", "int32", 4), 2: ("Uint16Vector", "uint16", 2),
                  3: ("Uint8Vector", "uint8", 1)}

# --------------------------------------------------------------------------- IR


def _extent(dim: int) -> int:
    """A dimension's size for counting: unknown (-1, a dynamic batch) counts as 1."""
    return 1 if dim < 0 else int(dim)


@dataclass(frozen=True)
class Quantization:
    """Affine quantization: real = scale * (q - zero_point), per tensor or per channel."""

    scales: tuple[float, ...] = ()
    zero_points: tuple[int, ...] = ()
    quantized_dimension: int = 0
    min: tuple[float, ...] = ()
    max: tuple[float, ...] = ()
    details: str | None = None  # "CustomQuantization", "BlockwiseQuantization", ... when set

    @property
    def per_channel(self) -> bool:
        return len(self.scales) > 1


@dataclass(frozen=True)
class DimensionMetadata:
    """One traversal dimension of a sparse tensor: DENSE (a size) or SPARSE_CSR (segments + indices)."""

    format: str  # "DENSE" | "SPARSE_CSR"
    dense_size: int
    array_segments: np.ndarray | None = field(default=None, repr=False)
    array_indices: np.ndarray | None = field(default=None, repr=False)
    segments_type: str | None = None  # "int32" | "uint16" | "uint8"
    indices_type: str | None = None
    file_spans: tuple[tuple[int, int], ...] = field(default=(), repr=False, compare=False)

    @property
    def index_bytes(self) -> int:
        """Bytes of this dimension's segment and index arrays (their values, in the file)."""
        return sum(int(a.nbytes) for a in (self.array_segments, self.array_indices) if a is not None)


@dataclass(frozen=True)
class Sparsity:
    """The converter's EXPERIMENTAL_SPARSITY encoding of one constant (TACO-style, schema.fbs)."""

    traversal_order: tuple[int, ...]
    block_map: tuple[int, ...]
    dim_metadata: tuple[DimensionMetadata, ...]
    dense_shape: tuple[int, ...]     # the shape the tensor has once densified
    block_shape: tuple[int, ...]     # block size per dense dimension, (1, 4) for 1x4 blocks
    nnz: int                         # values stored (kept blocks x block size)
    value_bytes: int                 # bytes of the stored values (the tensor's buffer)
    index_bytes: int                 # bytes of all segment + index arrays

    @property
    def dense_elements(self) -> int:
        return math.prod(self.dense_shape)

    @property
    def density(self) -> float:
        """Fraction of the dense tensor that is stored (and multiplied by a sparse kernel)."""
        return self.nnz / self.dense_elements if self.dense_elements else 1.0

    @property
    def sparsity(self) -> float:
        return 1.0 - self.density


@dataclass
class Tensor:
    """One tensor of one subgraph. Shapes keep the file's values; -1 only appears in shape_signature."""

    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    buffer: int
    buffer_bytes: int = 0                    # bytes of constant values (encoded values if sparse)
    is_constant: bool = False
    is_variable: bool = False
    quantization: Quantization | None = None
    sparsity: Sparsity | None = None
    shape_signature: tuple[int, ...] = ()
    has_rank: bool = True
    subgraph: int = 0
    buffer_offset: int | None = None         # file offset of the values (None: no data in this file)
    external: bool = False                   # values live in an external buffer, not in this file

    @property
    def num_elements(self) -> int:
        """Dense element count, unknown (-1) dimensions counted as 1."""
        return math.prod(_extent(d) for d in self.shape)

    @property
    def bits(self) -> int:
        return _DTYPE_BITS.get(self.dtype, 0)

    @property
    def nbytes(self) -> int:
        """Bytes of the dense tensor at run time (what an arena or a kernel holds)."""
        return -(-self.num_elements * self.bits // 8)

    @property
    def stored_bytes(self) -> int:
        """Bytes this constant occupies in the file: values plus sparse index arrays."""
        return self.buffer_bytes + (self.sparsity.index_bytes if self.sparsity else 0)

    @property
    def is_sparse(self) -> bool:
        return self.sparsity is not None


@dataclass
class Op:
    """One operator with its cost features. Counting rules: module docstring and docs/graph.md."""

    index: int
    opcode: str                       # builtin name ("CONV_2D") or the custom op's name
    inputs: tuple[int, ...]           # tensor indices; -1 marks an omitted optional input
    outputs: tuple[int, ...]
    options: dict[str, Any] = field(default_factory=dict)
    builtin: bool = True
    version: int = 1
    subgraph: int = 0
    intermediates: tuple[int, ...] = ()
    macs: int = 0
    effective_macs: int = 0
    elementwise_ops: int = 0
    bytes_moved: int = 0
    weight_bytes: int = 0             # constant inputs as the kernel reads them
    activation_bytes_in: int = 0
    activation_bytes_out: int = 0
    dtype: str = ""                   # dtype of the computation: the activation input's dtype
    weight_dtype: str | None = None
    weight_tensor: int | None = None  # the filter/weights input (conv, depthwise, FC, matmul)
    weight_source: int | None = None  # the constant it comes from (through DENSIFY / DEQUANTIZE)
    sparse_weights: bool = False      # the weight source is stored sparse
    weights_densified: bool = False   # ...but a DENSIFY op hands the kernel dense weights
    weight_density: float = 1.0
    one_time: bool = False            # all inputs constant: a runtime may run it once (DENSIFY)
    analyzed: bool = True
    note: str = ""

    @property
    def kind(self) -> str:
        """Cost class: conv, dwconv, fc, matmul, pool, elementwise, reduce, data, control, unknown."""
        return _KIND.get(self.opcode, "unknown") if self.builtin else "custom"


@dataclass
class Subgraph:
    index: int
    name: str
    tensors: list[Tensor]
    ops: list[Op]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class Signature:
    key: str
    subgraph: int
    inputs: dict[str, int]
    outputs: dict[str, int]


@dataclass(frozen=True)
class SizeBreakdown:
    """Where the file's bytes go. weight + sparse_index + overhead == total, exactly."""

    weight_bytes: int          # values of constant tensors (in the flatbuffer or appended to it)
    sparse_index_bytes: int    # segment / index arrays of sparse tensors
    overhead_bytes: int        # graph structure, options, names, metadata, padding
    total_bytes: int           # the file's size
    external_weight_bytes: int = 0  # constants in external buffers: not in this file

    def as_dict(self) -> dict[str, int]:
        return {"weight_bytes": self.weight_bytes, "sparse_index_bytes": self.sparse_index_bytes,
                "overhead_bytes": self.overhead_bytes, "total_bytes": self.total_bytes,
                "external_weight_bytes": self.external_weight_bytes}


@dataclass
class Graph:
    """A parsed .tflite. `ops`/`tensors`/`inputs`/`outputs` are the main subgraph's (index 0)."""

    file_bytes: int
    subgraphs: list[Subgraph]
    size: SizeBreakdown
    op_types: tuple[str, ...]            # distinct op names in order of first use
    schema_version: int = 3
    min_runtime_version: str | None = None
    description: str = ""
    metadata: dict[str, int] = field(default_factory=dict)   # metadata name -> its byte length
    signatures: list[Signature] = field(default_factory=list)
    path: Path | None = None
    data: bytes = field(default=b"", repr=False)

    @property
    def ops(self) -> list[Op]:
        return self.subgraphs[0].ops if self.subgraphs else []

    @property
    def tensors(self) -> list[Tensor]:
        return self.subgraphs[0].tensors if self.subgraphs else []

    @property
    def inputs(self) -> tuple[int, ...]:
        return self.subgraphs[0].inputs if self.subgraphs else ()

    @property
    def outputs(self) -> tuple[int, ...]:
        return self.subgraphs[0].outputs if self.subgraphs else ()

    @property
    def all_ops(self) -> list[Op]:
        return [op for sg in self.subgraphs for op in sg.ops]

    @property
    def all_tensors(self) -> list[Tensor]:
        return [t for sg in self.subgraphs for t in sg.tensors]

    def _op_total(self, name: str) -> int:
        return sum(getattr(op, name) for op in self.all_ops)

    # One invocation's totals, summed over every subgraph (each counted once).
    total_macs = property(lambda self: self._op_total("macs"))
    total_effective_macs = property(lambda self: self._op_total("effective_macs"))
    total_elementwise_ops = property(lambda self: self._op_total("elementwise_ops"))
    total_bytes_moved = property(lambda self: self._op_total("bytes_moved"))

    @property
    def fully_analyzed(self) -> bool:
        return all(op.analyzed for op in self.all_ops)

    @property
    def unanalyzed_ops(self) -> list[Op]:
        return [op for op in self.all_ops if not op.analyzed]

    @property
    def sparse_tensors(self) -> list[Tensor]:
        return [t for t in self.all_tensors if t.sparsity is not None]

    def _parameter_tensors(self) -> list[Tensor]:
        """Constants that compute ops consume as weights (not shape / index arguments), once each."""
        seen: dict[tuple[int, int], Tensor] = {}
        for sg in self.subgraphs:
            producer = {t: op for op in sg.ops for t in op.outputs}
            for op in sg.ops:
                if op.kind in ("data", "reduce", "control", "custom", "unknown") or op.one_time:
                    continue
                for t in op.inputs:
                    src = _trace_constant(t, sg.tensors, producer)
                    if src is not None:
                        seen[(sg.index, src)] = sg.tensors[src]
        return list(seen.values())

    @property
    def param_count(self) -> int:
        """Weights and biases as dense elements (what Keras' count_params reports, BN folded)."""
        return sum(t.sparsity.dense_elements if t.sparsity else t.num_elements
                   for t in self._parameter_tensors())

    @property
    def stored_param_count(self) -> int:
        """Parameter values actually stored (sparse tensors count their nnz)."""
        return sum(t.sparsity.nnz if t.sparsity else t.num_elements for t in self._parameter_tensors())

    def op_type_stats(self) -> dict[str, dict[str, int]]:
        """Per op type: count, macs, effective_macs, elementwise_ops, bytes_moved, weight_bytes."""
        stats: dict[str, dict[str, int]] = {}
        for op in self.all_ops:
            row = stats.setdefault(op.opcode, {"count": 0, "macs": 0, "effective_macs": 0,
                                               "elementwise_ops": 0, "bytes_moved": 0,
                                               "weight_bytes": 0, "unanalyzed": 0})
            row["count"] += 1
            row["macs"] += op.macs
            row["effective_macs"] += op.effective_macs
            row["elementwise_ops"] += op.elementwise_ops
            row["bytes_moved"] += op.bytes_moved
            row["weight_bytes"] += op.weight_bytes
            row["unanalyzed"] += 0 if op.analyzed else 1
        return stats

    def tensor_values(self, tensor: Tensor | int, subgraph: int = 0) -> np.ndarray:
        """The stored values of a constant: shaped if dense, flat (nnz values) if sparse."""
        t = self.subgraphs[subgraph].tensors[tensor] if isinstance(tensor, int) else tensor
        if not t.is_constant or t.buffer_offset is None:
            raise ModelError(f"tensor {t.index} ({t.name!r}) has no values in this file",
                             where=_where(self.path), expected="a constant tensor",
                             received="an external buffer" if t.external else "an activation",
                             fix="Pick a constant tensor (is_constant=True)")
        if t.dtype not in _NUMPY_DTYPES:
            return np.frombuffer(self.data, dtype=np.uint8, count=t.buffer_bytes, offset=t.buffer_offset)
        dtype = np.dtype(t.dtype).newbyteorder("<")
        values = np.frombuffer(self.data, dtype=dtype, count=t.buffer_bytes // dtype.itemsize,
                               offset=t.buffer_offset)
        if t.sparsity is None and values.size == t.num_elements:
            return values.reshape([_extent(d) for d in t.shape])
        return values

    def summary(self) -> dict[str, Any]:
        """A JSON-ready digest for reports and `check`."""
        def tensor_row(sg: Subgraph, i: int) -> dict[str, Any]:
            t = sg.tensors[i]
            return {"index": i, "name": t.name, "shape": list(t.shape),
                    "shape_signature": list(t.shape_signature), "dtype": t.dtype}

        main = self.subgraphs[0] if self.subgraphs else None
        return {
            "file": str(self.path) if self.path else None,
            "file_bytes": self.file_bytes,
            "schema_version": self.schema_version,
            "min_runtime_version": self.min_runtime_version,
            "subgraphs": len(self.subgraphs),
            "ops": len(self.all_ops),
            "op_types": list(self.op_types),
            "inputs": [tensor_row(main, i) for i in self.inputs] if main else [],
            "outputs": [tensor_row(main, i) for i in self.outputs] if main else [],
            "signatures": [s.key for s in self.signatures],
            "total_macs": self.total_macs,
            "total_effective_macs": self.total_effective_macs,
            "total_elementwise_ops": self.total_elementwise_ops,
            "total_bytes_moved": self.total_bytes_moved,
            "param_count": self.param_count,
            "stored_param_count": self.stored_param_count,
            "size": self.size.as_dict(),
            "per_op_type": self.op_type_stats(),
            "sparse_tensors": [
                {"subgraph": t.subgraph, "index": t.index, "name": t.name,
                 "dense_shape": list(t.sparsity.dense_shape),
                 "block_shape": list(t.sparsity.block_shape), "nnz": t.sparsity.nnz,
                 "sparsity": round(t.sparsity.sparsity, 6), "value_bytes": t.sparsity.value_bytes,
                 "index_bytes": t.sparsity.index_bytes}
                for t in self.sparse_tensors],
            "fully_analyzed": self.fully_analyzed,
            "unanalyzed_ops": sorted({op.opcode for op in self.unanalyzed_ops}),
        }


# --------------------------------------------------------------------------- loading


class _Corrupt(Exception):
    """An inconsistency found while parsing; becomes one ModelError naming the file."""


def _where(path: Path | None) -> str:
    return str(path) if path is not None else "<in-memory model>"


def load_graph(source: bytes | bytearray | memoryview | str | Path) -> Graph:
    """Parse a .tflite file or its bytes. Raises ModelError for anything that is not a sane TFLite flatbuffer."""
    path: Path | None = None
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif isinstance(source, (str, Path)):
        path = Path(source)
        data = _read_file(path)
    else:
        raise ModelError("cannot load a model from this object", expected="bytes or a path to a .tflite",
                         received=type(source).__name__, fix="Pass the .tflite file's path or its bytes")
    where = _where(path)
    _check_header(data, where)
    try:
        return _parse(data, path)
    except ModelError:
        raise
    except _Corrupt as exc:
        raise ModelError("corrupt TFLite flatbuffer", where=where, expected="a consistent TFLite model",
                         received=str(exc), fix=_FIX_CORRUPT) from None
    except _PARSE_ERRORS as exc:
        raise ModelError("truncated or corrupt TFLite flatbuffer", where=where,
                         expected="a complete TFLite model",
                         received=f"{type(exc).__name__} while reading it ({len(data)} bytes)",
                         fix=_FIX_CORRUPT) from exc


def _read_file(path: Path) -> bytes:
    if path.is_dir():
        hint = " (a SavedModel?)" if (path / "saved_model.pb").exists() else ""
        raise ModelError("expected a .tflite file, got a directory", where=str(path),
                         expected="a .tflite flatbuffer", received=f"a directory{hint}",
                         fix="Convert it first (edgesparse build), then pass the .tflite")
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ModelError("model file not found", where=str(path), expected="an existing .tflite file",
                         fix="Check the path") from None
    except OSError as exc:
        raise ModelError("cannot read the model file", where=str(path), received=exc.strerror or str(exc),
                         fix="Check the file's permissions") from None


def _guess_file_type(data: bytes) -> str:
    """A short guess of what a non-TFLite file is, for the error message."""
    head = data[:32]
    known = [
        (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
        (b"\x89HDF", "an HDF5 file (a Keras .h5 model? convert it first)"),
        (b"PK\x03\x04", "a zip archive (a .keras model? convert it first)"),
        (b"\x1f\x8b", "a gzip archive"), (b"\x7fELF", "an ELF binary"), (b"%PDF", "a PDF document"),
        (b"version https://git-lfs", "a Git LFS pointer, not the model (run git lfs pull)"),
        (b"RIFF", "a RIFF (wav) file"), (b"\x93NUMPY", "a .npy array"),
    ]
    for magic, name in known:
        if head.startswith(magic):
            return name
    if len(data) >= 8 and data[4:8] in (b"TFL1", b"TFL2"):
        return f"an old TFLite schema ({data[4:8].decode()})"
    if head[:1] in (b"{", b"["):
        return "JSON text"
    if head and all(32 <= b < 127 or b in (9, 10, 13) for b in head):
        return "text"
    return "unknown binary data"


def _check_header(data: bytes, where: str) -> None:
    first = data[:8].hex(" ") or "nothing"
    if len(data) < 8:
        raise ModelError("file is too short to be a TFLite flatbuffer", where=where,
                         expected="at least 8 bytes starting with a root offset and 'TFL3'",
                         received=f"{len(data)} bytes ({first})", fix=_FIX_CORRUPT)
    if data[4:8] != FILE_IDENTIFIER:
        raise ModelError("not a TFLite flatbuffer", where=where,
                         expected="file identifier 'TFL3' at bytes 4..8",
                         received=f"{_guess_file_type(data)}; first bytes {first}",
                         fix="Pass a .tflite file produced by the TFLite converter")
    root = struct.unpack_from("<I", data, 0)[0]
    if not 8 <= root < len(data):
        raise ModelError("truncated or corrupt TFLite flatbuffer", where=where,
                         expected=f"a root table offset inside the file (< {len(data)})",
                         received=f"root offset {root}", fix=_FIX_CORRUPT)


# --------------------------------------------------------------------------- parsing helpers


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
        raise _Corrupt(f"{name} claims {n} entries in a {data_len}-byte file")
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
        raise _Corrupt(f"a vector at byte {start} runs past the end of the file ({end} > {data_len})")
    return start, end


def _text(raw: bytes | None) -> str:
    return raw.decode("utf-8", errors="replace") if raw else ""


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _enum_names(enum_cls: Any) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


class _Names:
    """Reverse maps of the schema's enums, built once."""

    def __init__(self, schema: Any) -> None:
        self.ops = _enum_names(schema.BuiltinOperator)
        self.options = _enum_names(schema.BuiltinOptions)
        self.options2 = _enum_names(schema.BuiltinOptions2)
        tensor_types = {k: v[0] for k, v in _DTYPES.items()}
        self.option_enums = {
            "padding": _enum_names(schema.Padding),
            "fused_activation_function": _enum_names(schema.ActivationFunctionType),
            "weights_format": _enum_names(schema.FullyConnectedOptionsWeightsFormat),
            "mode": _enum_names(schema.MirrorPadMode),
            "kernel_type": _enum_names(schema.LSTMKernelType),
            "combiner": _enum_names(schema.CombinerType),
        }
        for key in ("in_data_type", "out_data_type", "output_type", "out_type", "idx_out_type",
                    "key_dtype", "value_dtype", "quantized_bias_type"):
            self.option_enums[key] = tensor_types


_NAMES: _Names | None = None


def _names() -> _Names:
    global _NAMES
    if _NAMES is None:
        _NAMES = _Names(_schema())
    return _NAMES


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


def _options(op: Any, schema: Any, names: _Names) -> dict[str, Any]:
    """builtin_options (and builtin_options_2) as a dict with snake_case keys and enum names."""
    result: dict[str, Any] = {}
    for type_getter, table_getter, table_names in (
            ("BuiltinOptionsType", "BuiltinOptions", names.options),
            ("BuiltinOptions2Type", "BuiltinOptions2", names.options2)):
        type_id = getattr(op, type_getter)()
        name = table_names.get(type_id)
        table = getattr(op, table_getter)() if type_id else None
        if not name or name == "NONE" or table is None or not hasattr(schema, name + "T"):
            continue
        reader = getattr(schema, name)()
        reader.Init(table.Bytes, table.Pos)
        unpacked = getattr(schema, name + "T").InitFromObj(reader)
        for key, value in vars(unpacked).items():
            key = _snake(key)
            enum = names.option_enums.get(key)
            if enum is not None and isinstance(value, int):
                value = enum.get(value, value)
            result[key] = _plain(value)
    return result


# --------------------------------------------------------------------------- the parser


def _parse(data: bytes, path: Path | None) -> Graph:
    schema = _schema()
    names = _names()
    size = len(data)
    model = schema.Model.GetRootAs(data, 0)

    # Buffers: where each one's bytes are in the file.
    n_buffers = _count(model, "Buffers", size)
    buffer_spans: list[tuple[int, int] | None] = []
    for i in range(n_buffers):
        buf = model.Buffers(i)
        span = _span(buf, 4, 1, size)
        offset, length = int(buf.Offset()), int(buf.Size())
        if offset > 1:  # data stored outside the flatbuffer (models > 2 GB): relative to the file start
            if offset + length > size:
                raise _Corrupt(f"buffer {i} points past the end of the file "
                               f"(offset {offset} + size {length} > {size})")
            span = (offset, offset + length)
        buffer_spans.append(span if span and span[1] > span[0] else None)

    n_codes = _count(model, "OperatorCodes", size)
    opcodes: list[tuple[str, bool, int]] = []
    for i in range(n_codes):
        code = model.OperatorCodes(i)
        builtin = max(int(code.BuiltinCode()), int(code.DeprecatedBuiltinCode()))
        custom = _text(code.CustomCode())
        if custom or builtin == 32:  # CUSTOM
            opcodes.append((custom or "CUSTOM", False, int(code.Version())))
        else:
            opcodes.append((names.ops.get(builtin, f"BUILTIN_{builtin}"), True, int(code.Version())))

    external = {}
    for i in range(_count(model, "ExternalBuffers", size)):
        ext = model.ExternalBuffers(i)
        external[int(ext.Id())] = int(ext.Length())

    subgraphs = []
    for s in range(_count(model, "Subgraphs", size)):
        subgraphs.append(_parse_subgraph(model.Subgraphs(s), s, schema, names, opcodes,
                                         buffer_spans, external, size))
    if not subgraphs:
        raise _Corrupt("the model has no subgraphs")

    metadata: dict[str, int] = {}
    min_runtime = None
    for i in range(_count(model, "Metadata", size)):
        entry = model.Metadata(i)
        name, b = _text(entry.Name()), int(entry.Buffer())
        if not 0 <= b < n_buffers:
            raise _Corrupt(f"metadata {name!r} refers to buffer {b}; the model has {n_buffers}")
        span = buffer_spans[b]
        metadata[name] = span[1] - span[0] if span else 0
        if name == "min_runtime_version" and span:
            min_runtime = data[span[0]:span[1]].split(b"\0", 1)[0].decode("ascii", errors="replace")

    signatures = []
    for i in range(_count(model, "SignatureDefs", size)):
        sig = model.SignatureDefs(i)
        sg_index = int(sig.SubgraphIndex())
        if not 0 <= sg_index < len(subgraphs):
            raise _Corrupt(f"signature {i} refers to subgraph {sg_index}; the model has {len(subgraphs)}")
        n_tensors = len(subgraphs[sg_index].tensors)
        maps = []
        for count_name, getter in (("Inputs", sig.Inputs), ("Outputs", sig.Outputs)):
            mapping = {}
            for j in range(_count(sig, count_name, size)):
                entry = getter(j)
                index = int(entry.TensorIndex())
                if not 0 <= index < n_tensors:
                    raise _Corrupt(f"signature {i} maps to tensor {index}; subgraph {sg_index} has {n_tensors}")
                mapping[_text(entry.Name())] = index
            maps.append(mapping)
        signatures.append(Signature(_text(sig.SignatureKey()), sg_index, maps[0], maps[1]))

    op_types: dict[str, None] = {}
    for sg in subgraphs:
        for op in sg.ops:
            op_types.setdefault(op.opcode, None)

    graph = Graph(file_bytes=size, subgraphs=subgraphs,
                  size=_size_breakdown(subgraphs, buffer_spans, size), op_types=tuple(op_types),
                  schema_version=int(model.Version()), min_runtime_version=min_runtime,
                  description=_text(model.Description()), metadata=metadata,
                  signatures=signatures, path=path, data=data)
    for sg in subgraphs:
        _analyze_subgraph(sg)
    return graph


def _parse_subgraph(fb: Any, s: int, schema: Any, names: _Names, opcodes: list[tuple[str, bool, int]],
                    buffer_spans: list[tuple[int, int] | None], external: dict[int, int],
                    size: int) -> Subgraph:
    tensors = [_parse_tensor(fb.Tensors(i), i, s, buffer_spans, external, size)
               for i in range(_count(fb, "Tensors", size))]
    n = len(tensors)

    def checked(indices: tuple[int, ...], what: str, optional: bool = False) -> tuple[int, ...]:
        for t in indices:
            if not (0 <= t < n or (optional and t == -1)):
                raise _Corrupt(f"subgraph {s}: {what} refers to tensor {t}; the subgraph has {n}")
        return indices

    ops = []
    for i in range(_count(fb, "Operators", size)):
        fb_op = fb.Operators(i)
        code = int(fb_op.OpcodeIndex())
        if not 0 <= code < len(opcodes):
            raise _Corrupt(f"subgraph {s} op {i} uses opcode index {code}; the model has {len(opcodes)}")
        name, builtin, version = opcodes[code]
        ops.append(Op(index=i, opcode=name, builtin=builtin, version=version, subgraph=s,
                      inputs=checked(_ints(fb_op, "Inputs"), f"op {i} ({name}) input", optional=True),
                      outputs=checked(_ints(fb_op, "Outputs"), f"op {i} ({name}) output"),
                      intermediates=checked(_ints(fb_op, "Intermediates"), f"op {i} intermediate"),
                      options=_options(fb_op, schema, names) if builtin else {}))
    return Subgraph(index=s, name=_text(fb.Name()), tensors=tensors, ops=ops,
                    inputs=checked(_ints(fb, "Inputs"), "an input"),
                    outputs=checked(_ints(fb, "Outputs"), "an output"))


def _parse_tensor(fb: Any, i: int, s: int, buffer_spans: list[tuple[int, int] | None],
                  external: dict[int, int], size: int) -> Tensor:
    type_id = int(fb.Type())
    dtype = _DTYPES.get(type_id, (f"unknown_{type_id}", 0))[0]
    shape = _ints(fb, "Shape")
    signature = _ints(fb, "ShapeSignature") or shape
    if any(d < -1 for d in shape + signature):
        raise _Corrupt(f"subgraph {s} tensor {i} has an impossible shape {list(shape)}")
    b = int(fb.Buffer())
    if not 0 <= b < len(buffer_spans):
        raise _Corrupt(f"subgraph {s} tensor {i} refers to buffer {b}; the model has {len(buffer_spans)}")
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
        details = _enum_names(_schema().QuantizationDetails).get(details_type, f"details_{details_type}")
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
        raise _Corrupt(f"unknown sparse index vector type {union_type}")
    cls_name, dtype, item = _INDEX_VECTORS[union_type]
    reader = getattr(_schema(), cls_name)()
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
        raise _Corrupt(f"{where}: inconsistent sparsity parameters (traversal_order {list(order)}, "
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
                raise _Corrupt(f"{where}: sparse dimension {k} has malformed segment/index arrays")
            stored = len(dm.array_indices)
    if len(tensor.shape) == n:
        dense_shape = tuple(_extent(d) for d in tensor.shape)
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
        raise _Corrupt(f"{where}: sparsity metadata describes {stored} values, "
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
    weight_spans = [buffer_spans[b] for b in weight_buffers]
    weights = _union_length(weight_spans)
    index = _union_length(weight_spans + index_spans) - weights
    overhead = size - weights - index
    if overhead < 0:
        raise _Corrupt(f"constant data ({weights} bytes) and index arrays ({index} bytes) "
                       f"exceed the file size ({size})")
    breakdown = SizeBreakdown(weight_bytes=weights, sparse_index_bytes=index, overhead_bytes=overhead,
                              total_bytes=size, external_weight_bytes=external)
    assert breakdown.weight_bytes + breakdown.sparse_index_bytes + breakdown.overhead_bytes == size
    return breakdown


# --------------------------------------------------------------------------- per-op analysis

_ELEMENTWISE = {
    "ADD", "SUB", "MUL", "DIV", "SQUARED_DIFFERENCE", "MAXIMUM", "MINIMUM", "POW", "FLOOR_DIV",
    "FLOOR_MOD", "ATAN2", "RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "LEAKY_RELU", "PRELU",
    "HARD_SWISH", "LOGISTIC", "TANH", "EXP", "LOG", "SQRT", "RSQRT", "ABS", "NEG", "SIN", "COS",
    "SQUARE", "GELU", "ELU", "SIGN", "FLOOR", "CEIL", "ROUND", "QUANTIZE", "DEQUANTIZE", "CAST",
    "LESS", "LESS_EQUAL", "GREATER", "GREATER_EQUAL", "EQUAL", "NOT_EQUAL", "LOGICAL_AND",
    "LOGICAL_OR", "LOGICAL_NOT", "SELECT", "SELECT_V2", "BITWISE_XOR", "RIGHT_SHIFT", "SOFTMAX",
    "LOG_SOFTMAX", "L2_NORMALIZATION", "LOCAL_RESPONSE_NORMALIZATION", "FAKE_QUANT", "CUMSUM",
    "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "DENSIFY", "ADD_N", "IMAG", "REAL", "COMPLEX_ABS",
}
_POOL = {"AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D"}
_REDUCE = {"MEAN", "SUM", "REDUCE_PROD", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_ANY", "REDUCE_ALL",
           "ARG_MAX", "ARG_MIN"}
_DATA = {
    "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "CONCATENATION", "PAD", "PADV2", "MIRROR_PAD", "TRANSPOSE",
    "STRIDED_SLICE", "SLICE", "GATHER", "GATHER_ND", "SPLIT", "SPLIT_V", "PACK", "UNPACK", "TILE",
    "BROADCAST_TO", "BROADCAST_ARGS", "SPACE_TO_DEPTH", "DEPTH_TO_SPACE", "SPACE_TO_BATCH_ND",
    "BATCH_TO_SPACE_ND", "SHAPE", "RANK", "FILL", "ZEROS_LIKE", "REVERSE_V2", "EMBEDDING_LOOKUP",
    "ONE_HOT", "RANGE", "DYNAMIC_UPDATE_SLICE", "SCATTER_ND", "READ_VARIABLE", "ASSIGN_VARIABLE",
    "VAR_HANDLE", "BITCAST", "REVERSE_SEQUENCE", "MATRIX_DIAG", "MATRIX_SET_DIAG",
}
_CONTROL = {"CALL_ONCE", "WHILE", "IF", "CALL"}
_KIND = {"CONV_2D": "conv", "TRANSPOSE_CONV": "conv", "CONV_3D": "conv", "CONV_3D_TRANSPOSE": "conv",
         "DEPTHWISE_CONV_2D": "dwconv", "FULLY_CONNECTED": "fc", "BATCH_MATMUL": "matmul",
         "UNIDIRECTIONAL_SEQUENCE_LSTM": "recurrent", "UNIDIRECTIONAL_SEQUENCE_RNN": "recurrent"}
_KIND.update({name: "elementwise" for name in _ELEMENTWISE})
_KIND.update({name: "pool" for name in _POOL})
_KIND.update({name: "reduce" for name in _REDUCE})
_KIND.update({name: "data" for name in _DATA})
_KIND.update({name: "control" for name in _CONTROL})
# Ops whose output is a constant when their input is (the converter leaves these in front of weights).
_PASS_THROUGH = {"DENSIFY", "DEQUANTIZE"}
# Which input holds the weights, by op.
_WEIGHT_INPUT = {"CONV_2D": 1, "DEPTHWISE_CONV_2D": 1, "FULLY_CONNECTED": 1, "TRANSPOSE_CONV": 1,
                 "CONV_3D": 1, "CONV_3D_TRANSPOSE": 1, "BATCH_MATMUL": 1}


def _trace_constant(t: int, tensors: list[Tensor], producer: dict[int, Op]) -> int | None:
    """The constant tensor `t` is, or comes from through DENSIFY / DEQUANTIZE; None for activations."""
    for _ in range(len(tensors) + 1):
        if t < 0:
            return None
        if tensors[t].is_constant:
            return t
        op = producer.get(t)
        if op is None or op.opcode not in _PASS_THROUGH or not op.inputs:
            return None
        t = op.inputs[0]
    return None


def _dims(tensor: Tensor) -> tuple[int, ...]:
    return tuple(_extent(d) for d in tensor.shape)


def _analyze_subgraph(sg: Subgraph) -> None:
    tensors = sg.tensors
    producer: dict[int, Op] = {}
    const_like: set[int] = {t.index for t in tensors if t.is_constant}
    for op in sg.ops:
        inputs = [t for t in op.inputs if t >= 0]
        op.one_time = bool(inputs) and all(t in const_like for t in inputs) and op.builtin \
            and op.opcode not in _CONTROL | {"READ_VARIABLE", "VAR_HANDLE"}
        if op.one_time:
            const_like.update(op.outputs)
        try:
            _analyze_op(op, tensors, const_like, producer)
        except (ArithmeticError, IndexError, KeyError, TypeError, ValueError) as exc:
            op.macs = op.effective_macs = op.elementwise_ops = 0
            op.analyzed = False
            op.note = f"analysis failed: {type(exc).__name__}: {exc}"
        for t in op.outputs:
            producer[t] = op


def _analyze_op(op: Op, tensors: list[Tensor], const_like: set[int], producer: dict[int, Op]) -> None:
    """Fill op's cost fields. Raises on malformed shapes; the caller marks the op unanalyzed."""
    seen: set[int] = set()
    weight_bytes = act_in = 0
    for t in op.inputs:
        if t < 0 or t in seen:
            continue
        seen.add(t)
        tensor = tensors[t]
        if t in const_like:
            weight_bytes += tensor.stored_bytes if tensor.is_constant else tensor.nbytes
        else:
            act_in += tensor.nbytes
    act_out = sum(tensors[t].nbytes for t in set(op.outputs))
    op.weight_bytes, op.activation_bytes_in, op.activation_bytes_out = weight_bytes, act_in, act_out
    op.bytes_moved = weight_bytes + act_in + act_out
    activations = [t for t in op.inputs if t >= 0 and t not in const_like]
    first = activations[0] if activations else next((t for t in op.inputs if t >= 0), None)
    op.dtype = tensors[first].dtype if first is not None else (
        tensors[op.outputs[0]].dtype if op.outputs else "")

    name = op.opcode
    out = tensors[op.outputs[0]] if op.outputs else None
    out_elems = sum(tensors[t].num_elements for t in op.outputs)

    w_pos = _WEIGHT_INPUT.get(name)
    if w_pos is not None and len(op.inputs) > w_pos and op.inputs[w_pos] >= 0:
        w = op.inputs[w_pos]
        op.weight_tensor = w
        op.weight_dtype = tensors[w].dtype
        src = _trace_constant(w, tensors, producer)
        if src is not None:
            op.weight_source = src
            sparsity = tensors[src].sparsity
            if sparsity is not None:
                op.sparse_weights = True
                op.weight_density = sparsity.density
                op.weights_densified = src != w
            if tensors[src].dtype != op.weight_dtype:
                op.weight_dtype = tensors[src].dtype  # e.g. int8 or float16 weights dequantized at load

    if not op.builtin:
        op.analyzed, op.note = False, "custom op: cost unknown"
    elif name in ("CONV_2D", "DEPTHWISE_CONV_2D", "CONV_3D"):
        f = _dims(tensors[op.weight_tensor])  # CONV_2D [oc,kh,kw,ic/groups]; DW [1,kh,kw,oc]; 3D [kd,kh,kw,ic,oc]
        per_output = {"CONV_2D": math.prod(f[1:]), "DEPTHWISE_CONV_2D": f[1] * f[2],
                      "CONV_3D": math.prod(f[:4])}[name]
        op.macs = out.num_elements * per_output
    elif name in ("TRANSPOSE_CONV", "CONV_3D_TRANSPOSE"):
        f = _dims(tensors[op.weight_tensor])  # TRANSPOSE_CONV [oc,kh,kw,ic]; 3D [kd,kh,kw,oc,ic]
        x = tensors[op.inputs[2]]
        op.macs = x.num_elements * (math.prod(f[:3]) if name == "TRANSPOSE_CONV" else math.prod(f[:4]))
    elif name == "FULLY_CONNECTED":
        op.macs = out.num_elements * _dims(tensors[op.weight_tensor])[-1]
    elif name == "BATCH_MATMUL":
        lhs = _dims(tensors[op.inputs[0]])
        k = lhs[-2] if op.options.get("adj_x") else lhs[-1]
        op.macs = out.num_elements * k
    elif name in ("UNIDIRECTIONAL_SEQUENCE_LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN"):
        # Every 2-D weight (input-to-gate, recurrent, projection) is used once per batch row and step.
        x = _dims(tensors[op.inputs[0]])
        rows = math.prod(x[:-1])
        weights = [tensors[t] for t in op.inputs[1:] if t >= 0 and t in const_like
                   and len(tensors[t].shape) == 2]
        op.macs = rows * sum(t.num_elements for t in weights)
        op.elementwise_ops = out_elems * (8 if name.endswith("LSTM") else 1)
    elif name in _POOL:
        window = int(op.options.get("filter_height", 1)) * int(op.options.get("filter_width", 1))
        op.elementwise_ops = out_elems * window
    elif name in _REDUCE:
        op.elementwise_ops = tensors[op.inputs[0]].num_elements
    elif name == "ADD_N":
        op.elementwise_ops = out_elems * max(len([t for t in op.inputs if t >= 0]) - 1, 1)
    elif name in _ELEMENTWISE:
        op.elementwise_ops = out_elems
    elif name in _DATA or name == "CALL_ONCE":
        pass
    elif name in _CONTROL:
        op.analyzed, op.note = False, "control flow: cost is in the called subgraphs"
    else:
        op.analyzed, op.note = False, f"no cost model for {name}"
    op.effective_macs = round(op.macs * op.weight_density) if op.sparse_weights else op.macs

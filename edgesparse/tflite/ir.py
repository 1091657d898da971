"""The graph IR: what a parsed .tflite is, as plain dataclasses.

Why its own module: the parser (`tflite.parse`) builds these objects, the
per-op analysis (`tflite.analysis`) fills their cost fields, and every later
stage (estimate, report, runtime, deploy) reads them; none of those needs the
others to know the shape of a model. `tflite.graph.load_graph` is how to get one.

Raises: `ModelError` from `Graph.tensor_values` for a tensor without values in the file.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse.errors import ModelError
from edgesparse.tflite.schema import PASS_THROUGH_OPS, dtype_bits, has_numpy_dtype, op_kind

__all__ = [
    "DimensionMetadata",
    "Graph",
    "Op",
    "Quantization",
    "Signature",
    "SizeBreakdown",
    "Sparsity",
    "Subgraph",
    "Tensor",
    "dim_extent",
    "trace_constant",
]


def dim_extent(dim: int) -> int:
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
        return math.prod(dim_extent(d) for d in self.shape)

    @property
    def bits(self) -> int:
        return dtype_bits(self.dtype)

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
    """One operator with its cost features. Counting rules: `tflite.graph` and docs/graph.md."""

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
        return op_kind(self.opcode, builtin=self.builtin)


@dataclass
class Subgraph:
    """One subgraph: its tensors, its ops in execution order, and its input/output tensor indices."""

    index: int
    name: str
    tensors: list[Tensor]
    ops: list[Op]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]


@dataclass(frozen=True)
class Signature:
    """A SignatureDef: named inputs and outputs of one subgraph (name -> tensor index)."""

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
    metadata_spans: dict[str, tuple[int, int] | None] = field(default_factory=dict, repr=False)  # name -> in data

    def metadata_bytes(self, name: str) -> bytes | None:
        """A metadata entry's bytes where the parser located them (b"" when empty, None when there is no such
        entry): e.g. Vela's OfflineMemoryAllocation plan, without parsing the flatbuffer again."""
        if name not in self.metadata_spans:
            return None
        span = self.metadata_spans[name]
        return bytes(self.data[span[0]:span[1]]) if span else b""

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
                    src = trace_constant(t, sg.tensors, producer)
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
                             where=str(self.path) if self.path else "<in-memory model>", expected="a constant tensor",
                             received="an external buffer" if t.external else "an activation",
                             fix="Pick a constant tensor (is_constant=True)")
        if not has_numpy_dtype(t.dtype):
            return np.frombuffer(self.data, dtype=np.uint8, count=t.buffer_bytes, offset=t.buffer_offset)
        dtype = np.dtype(t.dtype).newbyteorder("<")
        values = np.frombuffer(self.data, dtype=dtype, count=t.buffer_bytes // dtype.itemsize,
                               offset=t.buffer_offset)
        if t.sparsity is None and values.size == t.num_elements:
            return values.reshape([dim_extent(d) for d in t.shape])
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
                 "dense_shape": list(sp.dense_shape), "block_shape": list(sp.block_shape), "nnz": sp.nnz,
                 "sparsity": round(sp.sparsity, 6), "value_bytes": sp.value_bytes, "index_bytes": sp.index_bytes}
                for t in self.sparse_tensors if (sp := t.sparsity) is not None],
            "fully_analyzed": self.fully_analyzed,
            "unanalyzed_ops": sorted({op.opcode for op in self.unanalyzed_ops}),
        }


def trace_constant(t: int, tensors: list[Tensor], producer: dict[int, Op]) -> int | None:
    """The constant tensor `t` is, or comes from through DENSIFY / DEQUANTIZE; None for activations."""
    for _ in range(len(tensors) + 1):
        if t < 0:
            return None
        if tensors[t].is_constant:
            return t
        op = producer.get(t)
        if op is None or op.opcode not in PASS_THROUGH_OPS or not op.inputs:
            return None
        t = op.inputs[0]
    return None

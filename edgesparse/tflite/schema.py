"""The TFLite flatbuffer schema, its enum names, dtype tables and op kinds: one owner for each.

Why one module: the graph IR, the flatbuffer editor, the estimator and the
deploy bundles all need the same facts about a .tflite (which builtin code an
opcode really has, what a tensor type is called and how wide it is, whether an
op is a convolution or runs only once), and their private copies had started to
disagree (CONV_3D_TRANSPOSE was a convolution in one and element-wise in the
other; bfloat16 was 2 bytes in one and 4 in the other).

The schema is the one `ai-edge-litert` ships (a runtime dependency, not
TensorFlow). Nothing here parses a file or runs a model.

Raises: `ModelError` from `numpy_dtype` for tensor types numpy cannot hold.
"""

from __future__ import annotations

import functools
from types import ModuleType
from typing import Any

import numpy as np

from edgesparse.errors import ModelError

__all__ = [
    "CONTROL_OPS",
    "CONV_OPS",
    "COST_CLASSES",
    "DATA_OPS",
    "DECODE_OP",
    "DECODE_OPS",
    "DWCONV_OPS",
    "ELEMENTWISE_OPS",
    "FC_OPS",
    "FILE_IDENTIFIER",
    "MATMUL_OPS",
    "ONE_TIME_OPS",
    "PASS_THROUGH_OPS",
    "POOL_OPS",
    "RECURRENT_OPS",
    "REDUCE_OPS",
    "TENSOR_TYPES",
    "WEIGHT_INPUT",
    "builtin_code",
    "builtin_op_names",
    "cost_class",
    "dtype_bits",
    "dtype_bytes",
    "dtype_class",
    "dtype_name",
    "enum_names",
    "has_numpy_dtype",
    "normalize_dtype",
    "numpy_dtype",
    "op_kind",
    "schema",
    "tensor_type_name",
]

FILE_IDENTIFIER = b"TFL3"
CUSTOM_CODE = 32  # BuiltinOperator.CUSTOM


# --------------------------------------------------------------------------- schema and enums


def schema() -> ModuleType:
    """The generated flatbuffer schema module (`ai_edge_litert.schema_py_generated`)."""
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


def enum_names(enum_cls: Any) -> dict[int, str]:
    """A schema enum class as value -> name ({9: "INT8", ...})."""
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


@functools.lru_cache(maxsize=1)
def builtin_op_names() -> dict[int, str]:
    """BuiltinOperator value -> name ({3: "CONV_2D", ...})."""
    return enum_names(schema().BuiltinOperator)


def builtin_code(deprecated: int, current: int) -> int:
    """The operator code an OperatorCode really has, from its two fields.

    Codes >= 127 live only in `builtin_code` (`current`); files written before
    that field existed have only `deprecated_builtin_code` (and 0, ADD, in the
    other), so the larger of the two is the code.
    """
    return max(int(deprecated), int(current))


# --------------------------------------------------------------------------- tensor types

# TensorType value -> (numpy-style name, bits per element). The names are the
# schema's enum names in lower case; the widths are not in the schema.
TENSOR_TYPES: dict[int, tuple[str, int]] = {
    0: ("float32", 32), 1: ("float16", 16), 2: ("int32", 32), 3: ("uint8", 8), 4: ("int64", 64),
    5: ("string", 8), 6: ("bool", 8), 7: ("int16", 16), 8: ("complex64", 64), 9: ("int8", 8),
    10: ("float64", 64), 11: ("complex128", 128), 12: ("uint64", 64), 13: ("resource", 0),
    14: ("variant", 0), 15: ("uint32", 32), 16: ("uint16", 16), 17: ("int4", 4),
    18: ("bfloat16", 16), 19: ("int2", 2), 20: ("uint4", 4), 21: ("float8_e4m3fn", 8),
    22: ("float8_e5m2", 8),
}
_BITS = {name: bits for name, bits in TENSOR_TYPES.values()}
# Tensor types numpy holds natively (the others are read as raw bytes).
_NUMPY = {"float32", "float16", "int32", "uint8", "int64", "bool", "int16", "complex64", "int8", "float64",
          "complex128", "uint64", "uint32", "uint16"}
_ALIASES = {"float": "float32", "half": "float16", "double": "float64", "bool_": "bool"}


def dtype_name(type_code: int) -> str:
    """numpy-style name of a TensorType value ("int8"); "unknown_<n>" for values newer than this table."""
    return TENSOR_TYPES.get(int(type_code), (f"unknown_{int(type_code)}", 0))[0]


def tensor_type_name(type_code: int) -> str:
    """The schema's enum name of a TensorType value ("INT8"), as the object API and error messages show it."""
    code = int(type_code)
    return TENSOR_TYPES[code][0].upper() if code in TENSOR_TYPES else f"type#{code}"


def normalize_dtype(dtype: Any) -> str:
    """Any spelling of a tensor type ("INT8", np.int8, np.dtype("int8"), "float") -> "int8"."""
    if isinstance(dtype, (int, np.integer)) and not isinstance(dtype, bool):
        return dtype_name(int(dtype))
    name = getattr(dtype, "name", None) or getattr(dtype, "__name__", None) or str(dtype)
    name = str(name).lower().rsplit(".", 1)[-1]
    return _ALIASES.get(name, name)


def dtype_bits(dtype: Any) -> int:
    """Bits per element (int4: 4); 0 for types without a fixed width (resource, variant) or unknown ones."""
    return _BITS.get(normalize_dtype(dtype), 0)


def dtype_bytes(dtype: Any) -> int:
    """Bytes per element, rounded up (int4 counts 1); 4 for an unknown type, 0 for resource/variant."""
    name = normalize_dtype(dtype)
    return -(-_BITS[name] // 8) if name in _BITS else 4


def dtype_class(dtype: Any) -> str:
    """The arithmetic a kernel does for this dtype: "int8" (int8, uint8), "int16", "float32" (any float)."""
    name = normalize_dtype(dtype)
    if name in ("int8", "uint8"):
        return "int8"
    if name in ("float32", "float16", "float64", "bfloat16"):
        return "float32"
    return name


def has_numpy_dtype(dtype: Any) -> bool:
    """Whether numpy holds this tensor type natively (int4, string, bfloat16... it does not)."""
    return normalize_dtype(dtype) in _NUMPY


def numpy_dtype(type_code: int) -> np.dtype:
    """numpy dtype of a TensorType value; ModelError for types numpy cannot hold (INT4, STRING, ...)."""
    name = dtype_name(type_code)
    if name not in _NUMPY:
        raise ModelError("Tensor type has no numpy equivalent", where=tensor_type_name(type_code),
                         expected="one of " + ", ".join(n.upper() for n in sorted(_NUMPY)),
                         received=tensor_type_name(type_code))
    return np.dtype(name)


# --------------------------------------------------------------------------- op kinds

CONV_OPS = frozenset({"CONV_2D", "TRANSPOSE_CONV", "CONV_3D", "CONV_3D_TRANSPOSE"})
DWCONV_OPS = frozenset({"DEPTHWISE_CONV_2D"})
FC_OPS = frozenset({"FULLY_CONNECTED"})
MATMUL_OPS = frozenset({"BATCH_MATMUL"})
RECURRENT_OPS = frozenset({"UNIDIRECTIONAL_SEQUENCE_LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN"})
ELEMENTWISE_OPS = frozenset({
    "ADD", "SUB", "MUL", "DIV", "SQUARED_DIFFERENCE", "MAXIMUM", "MINIMUM", "POW", "FLOOR_DIV",
    "FLOOR_MOD", "ATAN2", "RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1", "LEAKY_RELU", "PRELU",
    "HARD_SWISH", "LOGISTIC", "TANH", "EXP", "LOG", "SQRT", "RSQRT", "ABS", "NEG", "SIN", "COS",
    "SQUARE", "GELU", "ELU", "SIGN", "FLOOR", "CEIL", "ROUND", "QUANTIZE", "DEQUANTIZE", "CAST",
    "LESS", "LESS_EQUAL", "GREATER", "GREATER_EQUAL", "EQUAL", "NOT_EQUAL", "LOGICAL_AND",
    "LOGICAL_OR", "LOGICAL_NOT", "SELECT", "SELECT_V2", "BITWISE_XOR", "RIGHT_SHIFT", "SOFTMAX",
    "LOG_SOFTMAX", "L2_NORMALIZATION", "LOCAL_RESPONSE_NORMALIZATION", "FAKE_QUANT", "CUMSUM",
    "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "DENSIFY", "ADD_N", "IMAG", "REAL", "COMPLEX_ABS",
})
POOL_OPS = frozenset({"AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D"})
REDUCE_OPS = frozenset({"MEAN", "SUM", "REDUCE_PROD", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_ANY", "REDUCE_ALL",
                        "ARG_MAX", "ARG_MIN"})
DATA_OPS = frozenset({
    "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "CONCATENATION", "PAD", "PADV2", "MIRROR_PAD", "TRANSPOSE",
    "STRIDED_SLICE", "SLICE", "GATHER", "GATHER_ND", "SPLIT", "SPLIT_V", "PACK", "UNPACK", "TILE",
    "BROADCAST_TO", "BROADCAST_ARGS", "SPACE_TO_DEPTH", "DEPTH_TO_SPACE", "SPACE_TO_BATCH_ND",
    "BATCH_TO_SPACE_ND", "SHAPE", "RANK", "FILL", "ZEROS_LIKE", "REVERSE_V2", "EMBEDDING_LOOKUP",
    "ONE_HOT", "RANGE", "DYNAMIC_UPDATE_SLICE", "SCATTER_ND", "READ_VARIABLE", "ASSIGN_VARIABLE",
    "VAR_HANDLE", "BITCAST", "REVERSE_SEQUENCE", "MATRIX_DIAG", "MATRIX_SET_DIAG",
})
CONTROL_OPS = frozenset({"CALL_ONCE", "WHILE", "IF", "CALL"})
# Custom ops with a known kind: TFLite Micro's DECODE (kernels/decode.cc, registered as "TFLM_DECODE") expands
# an encoded constant into the arena before the op that reads it. It passes data through (kind "data": no
# MACs, never a weight-consuming op); the decode work it does on every invoke is priced by the estimator
# from its ancillary data (tflite.decode), not by the per-element classes. It is not a PASS_THROUGH_OP:
# tracing a weight through it would reach the encoded bitmap, not the weights.
DECODE_OP = "TFLM_DECODE"
DECODE_OPS = frozenset({DECODE_OP})
# Ops a runtime runs once, at preparation, when their inputs are constant (their output then is too).
ONE_TIME_OPS = frozenset({"DENSIFY"})
# Ops the converter leaves in front of weights: their output is a constant when their input is.
PASS_THROUGH_OPS = frozenset({"DENSIFY", "DEQUANTIZE"})
# Which input holds the weights, by op.
WEIGHT_INPUT = {name: 1 for name in CONV_OPS | DWCONV_OPS | FC_OPS | MATMUL_OPS}

_KIND: dict[str, str] = {}
for _kind, _names in (("conv", CONV_OPS), ("dwconv", DWCONV_OPS), ("fc", FC_OPS), ("matmul", MATMUL_OPS),
                      ("recurrent", RECURRENT_OPS), ("elementwise", ELEMENTWISE_OPS), ("pool", POOL_OPS),
                      ("reduce", REDUCE_OPS), ("data", DATA_OPS), ("control", CONTROL_OPS)):
    _KIND.update(dict.fromkeys(_names, _kind))

# The latency model's cost classes: MAC-bound kernels by shape, everything else priced per element.
COST_CLASSES = ("conv", "dwconv", "fc", "elementwise", "data")


def op_kind(op_name: str, *, builtin: bool = True) -> str:
    """What an op computes: conv, dwconv, fc, matmul, recurrent, elementwise, pool, reduce, data,
    control, unknown (a builtin without a cost model) or custom (DECODE_OPS: data)."""
    if not builtin:
        return "data" if op_name in DECODE_OPS else "custom"
    return _KIND.get(op_name, "unknown")


def cost_class(kind: str) -> str:
    """An op kind folded into the latency model's cost classes (COST_CLASSES).

    BATCH_MATMUL is priced as a fully-connected layer; pooling, reductions,
    recurrent cells, control flow and unknown ops per element they touch.
    """
    if kind in ("conv", "dwconv", "fc", "data"):
        return kind
    return "fc" if kind == "matmul" else "elementwise"

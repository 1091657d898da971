"""How the estimator reads ops and tensors: names, bytes, dtypes, cost classes.

Why a module of its own: the memory plan, the latency model and the check all
read the same few facts from a graph, and they accept the parsed IR of
`edgesparse.tflite.graph` as well as any stand-in with the same attributes
(tests build graphs from `SimpleNamespace`). Reading them here once keeps the
three halves agreeing on what an op is. Raises nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edgesparse.tflite.schema import ONE_TIME_OPS, cost_class, dtype_bytes, normalize_dtype, op_kind

__all__ = [
    "is_constant",
    "is_one_time",
    "is_variable",
    "op_cost_class",
    "op_dtype",
    "op_type",
    "tensor_nbytes",
]


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


def op_cost_class(op: Any) -> str:
    """conv | dwconv | fc | elementwise | data: the graph IR's kind folded into the latency model's classes."""
    return cost_class(getattr(op, "kind", None) or op_kind(op_type(op)))


def op_dtype(op: Any, tensors: Sequence[Any]) -> str:
    """The dtype an op computes in: its own `dtype`, else its first input's, else its first output's."""
    dtype = getattr(op, "dtype", None)
    if dtype:
        return normalize_dtype(dtype)
    for t in list(op.inputs[:1]) + list(op.outputs[:1]):
        if t >= 0:
            return normalize_dtype(getattr(tensors[t], "dtype", "float32"))
    return "float32"


def is_one_time(op: Any) -> bool:
    """An op whose inputs are all constant (DENSIFY): a runtime runs it once, not per inference."""
    return bool(getattr(op, "one_time", False)) or op_type(op) in ONE_TIME_OPS


def is_constant(tensor: Any) -> bool:
    return bool(getattr(tensor, "is_constant", False))


def is_variable(tensor: Any) -> bool:
    return bool(getattr(tensor, "is_variable", False))

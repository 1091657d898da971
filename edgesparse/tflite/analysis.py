"""Per-op cost features of a parsed graph: MACs, element operations, bytes moved, weight sparsity.

Why its own module: these are the counting conventions every estimate rests on
(documented in `tflite.graph` and docs/graph.md), kept apart from the parser so
a change in how an op is counted never touches how a file is read.

Raises nothing: an op whose shapes do not fit its cost rule is marked
`analyzed=False` with a note, and the rest of the graph is still counted.
"""

from __future__ import annotations

import math

from edgesparse.tflite.ir import Op, Subgraph, Tensor, dim_extent, trace_constant
from edgesparse.tflite.schema import (
    CONTROL_OPS,
    DATA_OPS,
    DECODE_OPS,
    ELEMENTWISE_OPS,
    POOL_OPS,
    REDUCE_OPS,
    WEIGHT_INPUT,
)

__all__ = ["analyze_subgraph"]

# Ops that touch state: never run once at preparation, even with constant inputs.
_STATEFUL = CONTROL_OPS | {"READ_VARIABLE", "VAR_HANDLE"}


def analyze_subgraph(sg: Subgraph) -> None:
    """Fill every op's cost fields, in execution order (an op's weights may come from an earlier op)."""
    tensors = sg.tensors
    producer: dict[int, Op] = {}
    const_like: set[int] = {t.index for t in tensors if t.is_constant}
    for op in sg.ops:
        inputs = [t for t in op.inputs if t >= 0]
        op.one_time = bool(inputs) and all(t in const_like for t in inputs) and op.builtin \
            and op.opcode not in _STATEFUL
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


def _dims(tensor: Tensor) -> tuple[int, ...]:
    return tuple(dim_extent(d) for d in tensor.shape)


def _analyze_op(op: Op, tensors: list[Tensor], const_like: set[int], producer: dict[int, Op]) -> None:
    """Fill op's cost fields. Raises on malformed shapes; the caller marks the op unanalyzed."""
    _count_bytes(op, tensors, const_like)
    _find_weights(op, tensors, producer)
    _count_work(op, tensors, const_like)
    op.effective_macs = round(op.macs * op.weight_density) if op.sparse_weights else op.macs


def _count_bytes(op: Op, tensors: list[Tensor], const_like: set[int]) -> None:
    """Bytes the op reads (weights, activations) and writes, and the dtype it computes in."""
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


def _find_weights(op: Op, tensors: list[Tensor], producer: dict[int, Op]) -> None:
    """The weights input and the constant it comes from, with that constant's sparsity and dtype."""
    w_pos = WEIGHT_INPUT.get(op.opcode)
    if w_pos is None or len(op.inputs) <= w_pos or op.inputs[w_pos] < 0:
        return
    w = op.inputs[w_pos]
    op.weight_tensor = w
    op.weight_dtype = tensors[w].dtype
    src = trace_constant(w, tensors, producer)
    if src is None:
        return
    op.weight_source = src
    sparsity = tensors[src].sparsity
    if sparsity is not None:
        op.sparse_weights = True
        op.weight_density = sparsity.density
        op.weights_densified = src != w
    if tensors[src].dtype != op.weight_dtype:
        op.weight_dtype = tensors[src].dtype  # e.g. int8 or float16 weights dequantized at load


def _count_work(op: Op, tensors: list[Tensor], const_like: set[int]) -> None:
    """MACs of the MAC-bound ops, element operations of the others (counting rules: tflite.graph)."""
    name = op.opcode
    out_elems = sum(tensors[t].num_elements for t in op.outputs)
    if not op.builtin and name in DECODE_OPS:
        # No MACs; the decode work (every element of every output, on every invoke) is priced by the
        # estimator from the ancillary data, which tflite.decode validates (decode_sites).
        op.note = f"TFLM DECODE: {out_elems} elements decoded per invoke"
    elif not op.builtin:
        op.analyzed, op.note = False, "custom op: cost unknown"
    elif name in ("CONV_2D", "DEPTHWISE_CONV_2D", "CONV_3D", "TRANSPOSE_CONV", "CONV_3D_TRANSPOSE",
                  "FULLY_CONNECTED", "BATCH_MATMUL"):
        op.macs = _macs(op, tensors)
    elif name in ("UNIDIRECTIONAL_SEQUENCE_LSTM", "UNIDIRECTIONAL_SEQUENCE_RNN"):
        # Every 2-D weight (input-to-gate, recurrent, projection) is used once per batch row and step.
        x = _dims(tensors[op.inputs[0]])
        rows = math.prod(x[:-1])
        weights = [tensors[t] for t in op.inputs[1:] if t >= 0 and t in const_like
                   and len(tensors[t].shape) == 2]
        op.macs = rows * sum(t.num_elements for t in weights)
        op.elementwise_ops = out_elems * (8 if name.endswith("LSTM") else 1)
    elif name in POOL_OPS:
        window = int(op.options.get("filter_height", 1)) * int(op.options.get("filter_width", 1))
        op.elementwise_ops = out_elems * window
    elif name in REDUCE_OPS:
        op.elementwise_ops = tensors[op.inputs[0]].num_elements
    elif name == "ADD_N":
        op.elementwise_ops = out_elems * max(len([t for t in op.inputs if t >= 0]) - 1, 1)
    elif name in ELEMENTWISE_OPS:
        op.elementwise_ops = out_elems
    elif name in DATA_OPS or name == "CALL_ONCE":
        pass
    elif name in CONTROL_OPS:
        op.analyzed, op.note = False, "control flow: cost is in the called subgraphs"
    else:
        op.analyzed, op.note = False, f"no cost model for {name}"


def _macs(op: Op, tensors: list[Tensor]) -> int:
    """Dense multiply-accumulates of a convolution, fully-connected layer or matrix product."""
    name = op.opcode
    out = tensors[op.outputs[0]]
    weights = tensors[op.weight_tensor] if op.weight_tensor is not None else None
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "CONV_3D"):
        f = _dims(_required(weights))  # CONV_2D [oc,kh,kw,ic/groups]; DW [1,kh,kw,oc]; 3D [kd,kh,kw,ic,oc]
        per_output = {"CONV_2D": math.prod(f[1:]), "DEPTHWISE_CONV_2D": f[1] * f[2],
                      "CONV_3D": math.prod(f[:4])}[name]
        return out.num_elements * per_output
    if name in ("TRANSPOSE_CONV", "CONV_3D_TRANSPOSE"):
        f = _dims(_required(weights))  # TRANSPOSE_CONV [oc,kh,kw,ic]; 3D [kd,kh,kw,oc,ic]
        x = tensors[op.inputs[2]]
        return x.num_elements * (math.prod(f[:3]) if name == "TRANSPOSE_CONV" else math.prod(f[:4]))
    if name == "FULLY_CONNECTED":
        return out.num_elements * _dims(_required(weights))[-1]
    lhs = _dims(tensors[op.inputs[0]])  # BATCH_MATMUL
    k = lhs[-2] if op.options.get("adj_x") else lhs[-1]
    return out.num_elements * k


def _required(weights: Tensor | None) -> Tensor:
    if weights is None:
        raise ValueError("the op has no weights input")
    return weights

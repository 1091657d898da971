"""What a well-formed .tflite can still get wrong: the checks a graph passes before an interpreter runs it.

Why: `load_graph` proves every offset, length and index lies inside the file,
but a flipped byte can still leave a file that parses and makes TFLite Micro
(which verifies nothing) crash with SIGSEGV, SIGFPE or SIGABRT, or spin: a
CONV_2D with no inputs, weights whose shape needs more bytes than their
buffer holds, an activation with scale 0, a SOFTMAX without options. A fuzz
study of 4,600 mutated files found each of these; the checks below (G1-G9,
docs/graph.md "Validation") reject all of them and none of 73 valid models
(MLPerf Tiny, MobileNets, LSTM/GRU with WHILE bodies, Flex ops). They are
heuristics: the interpreter still runs in a child process
(`edgesparse.runtime.isolate`), so what they miss is a clean error too.

Raises: `ModelError` from `validate_graph`, naming the file and the first problems.
"""

from __future__ import annotations

import math

from edgesparse.errors import ModelError
from edgesparse.tflite.ethos_u import ETHOS_U_OP, SCRATCH_INPUTS
from edgesparse.tflite.ir import Graph, Op, Subgraph, Tensor

__all__ = ["MAX_ACTIVATION_BYTES", "graph_problems", "read_only_by_custom_ops", "validate_graph"]

MAX_ACTIVATION_BYTES = 256 << 20   # TFLM's largest arena in edgesparse: no activation can be larger
_MAX_ELEMENTS = 1 << 31
_SHOWN = 3                          # problems quoted in the error message

# Per builtin: (min inputs, max inputs or None, min outputs, max outputs or None, inputs that may be -1).
_ARITY: dict[str, tuple[int, int | None, int, int | None, tuple[int, ...]]] = {}
_UNARY = ("AVERAGE_POOL_2D", "MAX_POOL_2D", "L2_POOL_2D", "SOFTMAX", "LOGISTIC", "TANH", "RELU", "RELU6",
          "RELU_N1_TO_1", "RELU_0_TO_1", "LEAKY_RELU", "HARD_SWISH", "QUANTIZE", "DEQUANTIZE", "ABS", "EXP",
          "LOG", "SQRT", "RSQRT", "NEG", "FLOOR", "CEIL", "ROUND", "ELU", "GELU", "LOG_SOFTMAX",
          "L2_NORMALIZATION", "SQUARE", "SIN", "COS", "LOGICAL_NOT", "CAST", "SHAPE", "ZEROS_LIKE", "SQUEEZE",
          "DENSIFY", "SPACE_TO_DEPTH", "DEPTH_TO_SPACE", "LOCAL_RESPONSE_NORMALIZATION")
_BINARY = ("ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM", "SQUARED_DIFFERENCE", "POW", "FLOOR_DIV",
           "FLOOR_MOD", "EQUAL", "NOT_EQUAL", "LESS", "LESS_EQUAL", "GREATER", "GREATER_EQUAL", "LOGICAL_AND",
           "LOGICAL_OR", "PRELU", "MEAN", "SUM", "REDUCE_MAX", "REDUCE_MIN", "REDUCE_PROD", "TRANSPOSE", "GATHER",
           "EXPAND_DIMS", "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "BATCH_MATMUL", "ARG_MAX", "ARG_MIN",
           "BROADCAST_TO", "TILE", "FILL")
for _names, _spec in (
    (("CONV_2D", "DEPTHWISE_CONV_2D"), (2, 3, 1, 1, (2,))),
    (("FULLY_CONNECTED",), (2, 3, 1, 2, (2,))),
    (("TRANSPOSE_CONV",), (3, 4, 1, 1, (3,))),
    (_UNARY, (1, 1, 1, 1, ())),
    (_BINARY, (2, 2, 1, 1, ())),
    (("RESHAPE",), (1, 2, 1, 1, ())),
    (("PAD", "PADV2", "MIRROR_PAD"), (2, 3, 1, 1, ())),
    (("CONCATENATION", "PACK", "ADD_N"), (1, None, 1, 1, ())),
    (("UNPACK",), (1, 1, 1, None, ())),
    (("SPLIT",), (2, 2, 1, None, ())),
    (("SPLIT_V", "SLICE", "SELECT", "SELECT_V2"), (3, 3, 1, None, ())),
    (("STRIDED_SLICE",), (4, 4, 1, 1, ())),
):
    _ARITY.update(dict.fromkeys(_names, _spec))

_NO_OUTPUTS = frozenset({"ASSIGN_VARIABLE", "CALL_ONCE"})  # builtins that legitimately write no tensor
_SAME_SIZE = frozenset({"SOFTMAX", "LOGISTIC", "TANH", "RELU", "RELU6", "RELU_N1_TO_1", "RELU_0_TO_1",
                        "LEAKY_RELU", "HARD_SWISH", "QUANTIZE", "DEQUANTIZE", "ABS", "EXP", "LOG", "SQRT", "RSQRT",
                        "NEG", "FLOOR", "CEIL", "ROUND", "ELU", "GELU", "LOG_SOFTMAX", "L2_NORMALIZATION", "SQUARE",
                        "CAST", "RESHAPE", "SQUEEZE", "EXPAND_DIMS", "DENSIFY"})
_BROADCAST = frozenset({"ADD", "SUB", "MUL", "DIV", "MAXIMUM", "MINIMUM", "SQUARED_DIFFERENCE"})
_QUANTIZED_KERNELS = frozenset({"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV",
                                "AVERAGE_POOL_2D", "MAX_POOL_2D", "SOFTMAX", "LOGISTIC", "TANH", "ADD", "SUB", "MUL",
                                "MEAN", "HARD_SWISH", "LEAKY_RELU", "BATCH_MATMUL", "CONCATENATION"})
_QUANTIZED_TYPES = frozenset({"int8", "uint8", "int16"})
# Options a kernel divides by (or takes a log of): a missing options table means the schema default, 0.
_REQUIRED_OPTIONS = {"CONV_2D": ("stride_h", "stride_w"), "DEPTHWISE_CONV_2D": ("stride_h", "stride_w"),
                     "AVERAGE_POOL_2D": ("stride_h", "stride_w", "filter_height", "filter_width"),
                     "MAX_POOL_2D": ("stride_h", "stride_w", "filter_height", "filter_width"),
                     "SOFTMAX": ("beta",)}
_POSITIVE_OPTIONS = ("stride_h", "stride_w", "dilation_h_factor", "dilation_w_factor", "filter_height",
                     "filter_width")
_MIN_SOFTMAX_BETA = 1e-6   # TFLM aborts for beta <= ~1e-10, 0, negative and NaN
_MAX_BUILTIN_CODE = 1023   # codes above any schema's range are damage; a newer op below it is not


def validate_graph(graph: Graph) -> Graph:
    """The graph itself when it passes every check; ModelError naming the file and its first problems."""
    found = graph_problems(graph)
    if found:
        more = f" (and {len(found) - _SHOWN} more)" if len(found) > _SHOWN else ""
        raise ModelError("corrupt or inconsistent TFLite model", where=str(graph.path or "<in-memory model>"),
                         expected="a graph an interpreter can run (consistent shapes, inputs, quantization "
                                  "and options)",
                         received="; ".join(found[:_SHOWN]) + more,
                         fix="Re-export the model with tf.lite.TFLiteConverter, or copy it again: "
                             "the file is corrupted")
    return graph


def graph_problems(graph: Graph) -> list[str]:
    """Every problem found, in words a user can follow ([] for a sound graph)."""
    problems: list[str] = []
    main = graph.subgraphs[0]
    if not main.inputs or not main.outputs or not main.ops:   # G1: TFLM crashes on an empty graph
        problems.append(f"the main subgraph has {len(main.inputs)} inputs, {len(main.outputs)} outputs "
                        f"and {len(main.ops)} operators")
    for sg in graph.subgraphs:
        custom_only = read_only_by_custom_ops(sg)
        for t in sg.tensors:
            problems.extend(_where(sg, f"tensor {t.index}") + m
                            for m in _tensor_problems(t, per_channel=t.index not in custom_only))
        problems.extend(_dataflow_problems(sg))
    for name in graph.op_types:                               # G8: opcode damage
        code = name[len("BUILTIN_"):] if name.startswith("BUILTIN_") else ""
        if not (name.isascii() and name.isprintable()) or (
                code.lstrip("-").isdigit() and not 0 <= int(code) <= _MAX_BUILTIN_CODE):
            problems.append(f"operator code {name[:24]!r} is neither a builtin nor a printable custom name")
    return problems


def read_only_by_custom_ops(sg: Subgraph) -> set[int]:
    """Tensors only custom ops read: their quantization is the custom kernel's business.

    TFLM's DECODE compression leaves the decoded tensor's per-channel
    quantization on the encoded UINT8 tensor; TFLM runs such files.
    """
    builtin_reads = {t for op in sg.ops if op.builtin for t in op.inputs}
    return {t for op in sg.ops if not op.builtin for t in op.inputs} - builtin_reads


def _where(sg: Subgraph, what: str) -> str:
    return f"{what}: " if sg.index == 0 else f"subgraph {sg.index} {what}: "


def _elements(shape: tuple[int, ...]) -> int:
    return math.prod(max(d, 1) for d in shape)


def _tensor_problems(t: Tensor, *, per_channel: bool = True) -> list[str]:
    """G4 constant sizes, G5 shape signature, G6 quantization arrays, G9 activation sizes."""
    found = []
    if t.is_constant and t.sparsity is None and not t.external and t.bits:
        needed = -(-_elements(t.shape) * t.bits // 8)
        if any(d < 0 for d in t.shape):
            found.append(f"constant with an unknown dimension {list(t.shape)}")
        elif needed > t.buffer_bytes:
            found.append(f"constant of shape {list(t.shape)} needs {needed} bytes, its buffer holds {t.buffer_bytes}")
    sig = t.shape_signature
    if sig and sig != t.shape and (len(sig) != len(t.shape) or any(s not in (-1, d) for s, d in zip(sig, t.shape))):
        found.append(f"shape {list(t.shape)} disagrees with its signature {list(sig)}")
    q = t.quantization
    if q is not None and q.scales:
        # One zero point for several scales is TFLM's short form: its allocator gives every channel that one
        # value (micro_allocator.cc); edgesparse.tflite.strip writes it for TFLM builds.
        if q.zero_points and len(q.zero_points) not in (1, len(q.scales)):
            found.append(f"{len(q.scales)} quantization scales but {len(q.zero_points)} zero points")
        dim = q.quantized_dimension
        if per_channel and len(q.scales) > 1 and not (0 <= dim < len(t.shape) and t.shape[dim] == len(q.scales)):
            found.append(f"{len(q.scales)} per-channel scales for shape {list(t.shape)} on axis {dim}")
        # A constant's channel may have scale 0 (a pruned, all-zero channel runs in TFLM and LiteRT);
        # an activation with scale 0 makes TFLM abort.
        if not all(math.isfinite(s) and (s > 0 or (s == 0 and t.is_constant)) for s in q.scales):
            found.append("a " + ("negative" if t.is_constant else "zero or negative") + " or non-finite scale")
    if not t.is_constant and (_elements(t.shape) > _MAX_ELEMENTS or t.nbytes > MAX_ACTIVATION_BYTES):
        found.append(f"activation of shape {list(t.shape)} would need {t.nbytes} bytes")
    return found


def _dataflow_problems(sg: Subgraph) -> list[str]:
    """G2 data flow, and per op G3 arity, G6 quantized kernels, G7 shapes (main subgraph), G8 options."""
    found: list[str] = []
    tensors = sg.tensors
    # Sparse constants with no stored value (an all-zero layer) have no buffer data, yet are constants.
    available = set(sg.inputs) | {t.index for t in tensors
                                  if t.is_constant or t.is_variable or t.sparsity is not None or 0 in t.shape}
    produced: set[int] = set()
    for op in sg.ops:
        where = _where(sg, f"operator {op.index} ({op.opcode})")
        arity = _arity_problem(op)
        if arity:
            found.append(where + arity)
            continue
        if sg.index == 0:  # WHILE/IF bodies read their inputs from the caller
            # Vela's ethos-u op gets its scratch memories as inputs nothing writes: the NPU works in them.
            scratch = {op.inputs[i] for i in SCRATCH_INPUTS if i < len(op.inputs)} if op.opcode == ETHOS_U_OP else set()
            found.extend(f"{where}reads tensor {t}, which nothing produced before it"
                         for t in op.inputs if t >= 0 and t not in available and t not in scratch)
        for t in op.outputs:
            if t in produced or (t in available and not tensors[t].is_variable):
                found.append(f"{where}writes tensor {t}, which already has a value")
            produced.add(t)
            available.add(t)
        if op.builtin and op.opcode in _ARITY:
            if sg.index == 0:  # bodies of WHILE/IF get their real shapes at run time
                found.extend(where + m for m in _shape_problems(op, tensors))
            found.extend(where + m for m in _option_problems(op))
        found.extend(where + m for m in _quantization_problems(op, tensors))
    if sg.index == 0:
        found.extend(f"model output tensor {t} is never produced" for t in sg.outputs if t not in available)
    return found


def _arity_problem(op: Op) -> str | None:
    """G3: ops that lost inputs or outputs (TFLM reads past their arrays)."""
    spec = _ARITY.get(op.opcode) if op.builtin else None
    if spec is None:
        if op.builtin and not op.outputs and op.opcode not in _NO_OUTPUTS:
            return "has no outputs"
        return None
    low, high, out_low, out_high, optional = spec
    n_in, n_out = len(op.inputs), len(op.outputs)
    if n_in < low or (high is not None and n_in > high) or n_out < out_low or (
            out_high is not None and n_out > out_high):
        return f"has {n_in} inputs and {n_out} outputs"
    if any(t == -1 and i not in optional for i, t in enumerate(op.inputs)):
        return f"omits a required input (inputs {list(op.inputs)})"
    return None


def _quantization_problems(op: Op, tensors: list[Tensor]) -> list[str]:
    """G6: a quantized kernel needs a scale on each of its integer tensors, and on its bias."""
    ins = op.inputs
    if op.opcode not in _QUANTIZED_KERNELS or not ins or ins[0] < 0 \
            or tensors[ins[0]].dtype not in _QUANTIZED_TYPES:
        return []
    found = [f"quantized tensor {t} has no scale" for t in (*ins, *op.outputs)
             if t >= 0 and tensors[t].dtype in _QUANTIZED_TYPES and not _has_scale(tensors[t])]
    if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED") and len(ins) > 2 and ins[2] >= 0 \
            and not _has_scale(tensors[ins[2]]) and not _bias_scale_unread(op, tensors):
        found.append(f"bias tensor {ins[2]} has no scale")
    return found


def _bias_scale_unread(op: Op, tensors: list[Tensor]) -> bool:
    """Kernels that never read their bias's quantization: int8/int16 convolutions and per-channel FULLY_CONNECTED.

    (kernel_util.cc reads a bias scale only for uint8 input and per-tensor FULLY_CONNECTED;
    edgesparse.tflite.strip removes it from the others on TFLM builds.)
    """
    if tensors[op.inputs[0]].dtype not in ("int8", "int16"):
        return False
    if op.opcode != "FULLY_CONNECTED":
        return True
    filt = tensors[op.inputs[1]] if op.inputs[1] >= 0 else None
    return filt is not None and filt.quantization is not None and len(filt.quantization.scales) > 1


def _has_scale(t: Tensor) -> bool:
    return t.quantization is not None and bool(t.quantization.scales)


def _out_extent(size: int, kernel: int, stride: int, dilation: int, padding: str) -> int:
    """Output length of a window op along one axis (TFLite's SAME / VALID arithmetic)."""
    effective = (kernel - 1) * dilation + 1
    if padding == "SAME":
        return -(-size // stride)
    return (size - effective) // stride + 1 if size >= effective else 0


def _broadcast(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...] | None:
    out = []
    for x, y in zip((1,) * (len(b) - len(a)) + a, (1,) * (len(a) - len(b)) + b):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            return None
    return tuple(out)


def _shape_problems(op: Op, tensors: list[Tensor]) -> list[str]:
    """G7: the output shape follows from the inputs and options (static shapes only)."""
    shapes = [tensors[i].shape if i >= 0 else () for i in op.inputs]
    out = tensors[op.outputs[0]].shape
    signatures = [tensors[i].shape_signature for i in (*op.inputs, *op.outputs) if i >= 0]
    if any(d < 0 for s in (*shapes, out) for d in s) or any(d < 0 for s in signatures[1:] for d in s[1:]):
        return []  # dynamic beyond the batch: nothing to compare statically
    name = op.opcode
    if name == "FULLY_CONNECTED":
        return _fc_problems(shapes, out, op)
    if name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        return _conv_problems(shapes, out, op)
    if name in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        return _pool_problems(shapes[0], out, op)
    if name in _SAME_SIZE:
        if _elements(shapes[0]) != _elements(out) or (0 in shapes[0]) != (0 in out):
            return [f"input {list(shapes[0])} and output {list(out)} differ in size"]
    elif name in _BROADCAST:
        both = _broadcast(shapes[0], shapes[1])
        if both is None or _elements(both) != _elements(out):
            return [f"inputs {list(shapes[0])} and {list(shapes[1])} do not broadcast to {list(out)}"]
    elif name == "CONCATENATION":
        return _concat_problems(shapes, out, int(op.options.get("axis", 0)))
    return []


def _fc_problems(shapes: list[tuple[int, ...]], out: tuple[int, ...], op: Op) -> list[str]:
    x, w = shapes[0], shapes[1]
    if len(w) != 2:
        return [f"weights of rank {len(w)}, expected 2"]
    found = []
    if w[1] == 0 or _elements(x) % w[1]:
        found.append(f"input {list(x)} is not a multiple of the weights' depth {w[1]}")
    elif _elements(out) != _elements(x) // w[1] * w[0]:
        found.append(f"output {list(out)} does not follow from input {list(x)} and weights {list(w)}")
    if len(op.inputs) > 2 and op.inputs[2] >= 0 and _elements(shapes[2]) != w[0]:
        found.append(f"bias {list(shapes[2])} for {w[0]} units")
    return found


def _conv_problems(shapes: list[tuple[int, ...]], out: tuple[int, ...], op: Op) -> list[str]:
    x, f = shapes[0], shapes[1]
    if len(x) != 4 or len(f) != 4 or len(out) != 4:
        return [f"input, filter and output of ranks {len(x)}, {len(f)}, {len(out)}, expected 4"]
    o = op.options
    found = []
    depthwise = op.opcode == "DEPTHWISE_CONV_2D"
    cout = f[3] if depthwise else f[0]
    if not depthwise and (f[3] == 0 or x[3] % f[3] or cout % (x[3] // f[3])):
        found.append(f"{x[3]} input channels for filter {list(f)} (groups must divide the output channels)")
    if depthwise:
        multiplier = int(o.get("depth_multiplier", 0) or 0)
        if x[3] == 0 or cout % x[3] or (multiplier and multiplier * x[3] != cout):
            found.append(f"{x[3]} input channels for depthwise filter {list(f)}, depth_multiplier {multiplier}")
    if out[3] != cout or out[0] != x[0]:
        found.append(f"output {list(out)} for input {list(x)} and filter {list(f)}")
    sh, sw = int(o.get("stride_h", 1)), int(o.get("stride_w", 1))
    dh, dw = int(o.get("dilation_h_factor", 1)), int(o.get("dilation_w_factor", 1))
    if min(sh, sw, dh, dw) < 1:
        return found  # _option_problems names them
    padding = str(o.get("padding", "SAME"))
    expected = (_out_extent(x[1], f[1], sh, dh, padding), _out_extent(x[2], f[2], sw, dw, padding))
    if (out[1], out[2]) != expected:
        found.append(f"output height and width {list(out[1:3])}, expected {list(expected)}")
    if len(op.inputs) > 2 and op.inputs[2] >= 0 and _elements(shapes[2]) != cout:
        found.append(f"bias {list(shapes[2])} for {cout} channels")
    return found


def _pool_problems(x: tuple[int, ...], out: tuple[int, ...], op: Op) -> list[str]:
    if len(x) != 4 or len(out) != 4:
        return [f"input and output of ranks {len(x)} and {len(out)}, expected 4"]
    o = op.options
    sh, sw = int(o.get("stride_h", 1)), int(o.get("stride_w", 1))
    fh, fw = int(o.get("filter_height", 1)), int(o.get("filter_width", 1))
    if min(sh, sw, fh, fw) < 1:
        return []  # _option_problems names them
    padding = str(o.get("padding", "SAME"))
    expected = (x[0], _out_extent(x[1], fh, sh, 1, padding), _out_extent(x[2], fw, sw, 1, padding), x[3])
    return [] if tuple(out) == expected else [f"output {list(out)}, expected {list(expected)}"]


def _concat_problems(shapes: list[tuple[int, ...]], out: tuple[int, ...], axis: int) -> list[str]:
    rank = len(out)
    if rank == 0 or not -rank <= axis < rank or any(len(s) != rank for s in shapes):
        return [f"axis {axis} for inputs of ranks {[len(s) for s in shapes]} and an output of rank {rank}"]
    axis %= rank
    if sum(s[axis] for s in shapes) != out[axis] or any(
            s[k] != out[k] for s in shapes for k in range(rank) if k != axis):
        return [f"inputs {[list(s) for s in shapes]} do not concatenate to {list(out)} on axis {axis}"]
    return []


def _option_problems(op: Op) -> list[str]:
    """G8: options a kernel divides by are present and positive; SOFTMAX's beta is usable; no NaN."""
    o = op.options
    found = [f"option {k} is missing (the schema default, 0)" for k in _REQUIRED_OPTIONS.get(op.opcode, ())
             if k not in o]
    found.extend(f"option {k} = {o[k]}" for k in _POSITIVE_OPTIONS if isinstance(o.get(k), int) and o[k] < 1)
    if op.opcode in ("SOFTMAX", "LOG_SOFTMAX") and "beta" in o:
        beta = float(o["beta"])
        if not (math.isfinite(beta) and beta >= _MIN_SOFTMAX_BETA):
            found.append(f"softmax beta = {beta}")
    found.extend(f"option {k} is NaN" for k, v in o.items() if isinstance(v, float) and math.isnan(v))
    return found

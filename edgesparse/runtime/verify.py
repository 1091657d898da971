"""Run an artifact in the interpreter the device uses (LiteRT or TFLite Micro) and score its predictions.

Why: a converted model is only known to work once the device's own
interpreter has run it, so the build runs the validation set through it and
compares with the labels and with the pruned Keras model (`verify_artifact`).
Imports no TensorFlow: `edgesparse check` runs this on a Raspberry Pi. Every
file is validated first (`load_graph(validate=True)`, and LiteRT's loader
before TFLM, which verifies nothing), and the interpreter runs in a child
process (`runtime.isolate`), so a file that still crashes native code is a
clean error. The interpreters themselves are `runtime.litert` and
`runtime.tflm`; `top1` is the one rule for turning model outputs into class
predictions.

A file compiled by Vela for an Arm Ethos-U NPU (an `ethos-u` custom op holding
the NPU command stream) is refused before any interpreter starts: no NPU and no
Ethos-U simulator run here, so neither interpreter can execute it. What can be
verified is the plain int8 model Vela compiled (an Ethos-U build keeps it as
baselines/pruned_int8.tflite and verifies that); the error says so.

Raises: `ModelError` (not bytes, corrupt or inconsistent file, an interpreter
that crashed or hung on it), `DataError` (input shape or dtype, sample counts,
models with several inputs), `VerificationError` (unknown runtime, or the
interpreter cannot run the model), `MissingDependency` (the interpreter is not
installed).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgesparse._types import RUNTIMES
from edgesparse.errors import DataError, ModelError, VerificationError
from edgesparse.runtime import litert, tflm
from edgesparse.runtime.isolate import run_isolated
from edgesparse.tflite.ethos_u import ETHOS_U_OP, is_ethos_u_model
from edgesparse.tflite.graph import Graph, load_graph

__all__ = ["RunResult", "VerificationResult", "check_not_npu_compiled", "quantize_input", "run_tflite", "top1",
           "verify_artifact"]

_WHERE = "<in-memory model>"


@dataclass
class RunResult:
    """Dequantized outputs of every sample, and what ran them."""

    outputs: np.ndarray
    interpreter: str
    kernels: list[str]                 # e.g. "XNNPACK refused ...; builtin kernels used"
    arena_bytes: int | None            # TFLM's arena use; None for LiteRT
    input_dtype: str = ""
    output_dtype: str = ""
    delegated_ops: list[str] = field(default_factory=list)
    builtin_ops: list[str] = field(default_factory=list)
    fallback_reason: str | None = None


@dataclass
class VerificationResult:
    """Accuracy against the labels and top-1 agreement with the reference model, with how they were run."""

    accuracy: float | None
    agreement: float | None
    interpreter: str
    kernels: list[str]
    arena_bytes: int | None
    n_samples: int
    input_dtype: str = ""
    output_dtype: str = ""
    delegated_ops: list[str] = field(default_factory=list)
    builtin_ops: list[str] = field(default_factory=list)
    fallback_reason: str | None = None
    predictions: np.ndarray | None = field(default=None, repr=False)


# ----------------------------------------------------------------------------- input and output tensors

@dataclass
class _Signature:
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float
    zero_point: int


def _signature(details: dict) -> _Signature:
    q = details.get("quantization_parameters") or {}
    scales = np.asarray(q.get("scales", []), np.float64).ravel()
    zps = np.asarray(q.get("zero_points", []), np.int64).ravel()
    if not len(scales) and "quantization" in details:
        s, z = details["quantization"]
        scales, zps = np.array([s], np.float64), np.array([z], np.int64)
    return _Signature(tuple(int(d) for d in details["shape"]), np.dtype(details["dtype"]),
                      float(scales[0]) if len(scales) else 0.0, int(zps[0]) if len(zps) else 0)


def quantize_input(x: Any, dtype: Any, scale: float, zero_point: int) -> np.ndarray:
    """Samples as an input tensor of `dtype` with `scale` and `zero_point` takes them (the converter's rule).

    The one rule every caller that feeds an interpreter uses (verification here, the build's DECODE proof),
    so a compressed and an uncompressed file are fed exactly the values the device gets: a float tensor
    takes the data cast; data already of the tensor's integer dtype, or a tensor without a scale, passes as
    it is; anything else is round(x / scale) + zero_point, clipped to the dtype's range.
    `tflite.graph.io_quantization(model)["input"]` gives the three parameters of a file's input 0.
    """
    x, dtype = np.asarray(x), np.dtype(dtype)
    if dtype.kind == "f" or x.dtype == dtype or scale == 0.0:
        return x.astype(dtype, copy=False)
    info = np.iinfo(dtype)
    q = np.round(x.astype(np.float64) / scale) + zero_point
    return np.clip(q, info.min, info.max).astype(dtype)


def _quantize(x: np.ndarray, sig: _Signature) -> np.ndarray:
    return quantize_input(x, sig.dtype, sig.scale, sig.zero_point)


def _dequantize(y: np.ndarray, sig: _Signature) -> np.ndarray:
    if sig.dtype.kind in "iu" and sig.scale != 0.0:
        return ((y.astype(np.float64) - sig.zero_point) * sig.scale).astype(np.float32)
    return y.astype(np.float32, copy=False)


def _check_input(x: Any, sig: _Signature, runtime: str) -> np.ndarray:
    x = np.asarray(x)
    expected = ("N", *sig.shape[1:])
    if x.ndim != len(sig.shape) or tuple(x.shape[1:]) != sig.shape[1:] or len(x) == 0:
        fix = "Pass a batch of samples shaped like the model input"
        if x.ndim == len(sig.shape) - 1 and tuple(x.shape) == sig.shape[1:]:
            fix = "This looks like one sample: pass x[None] to add the batch axis"
        raise DataError("Input data does not match the model's input shape", where=f"{runtime} input 0",
                        expected=f"shape {expected} (dtype {sig.dtype.name} or float)",
                        received=f"shape {tuple(x.shape)}", fix=fix)
    if x.dtype.kind not in "fiub":
        raise DataError("Input data is not numeric", where=f"{runtime} input 0",
                        expected="a float or integer array", received=f"dtype {x.dtype}")
    return x


# ----------------------------------------------------------------------------- the two interpreters

def _run_litert(graph: Graph, model_bytes: bytes, x: Any, progress: Callable[[str], None]) -> RunResult:
    def work(it: Any) -> tuple[np.ndarray, _Signature, _Signature]:
        in_sig = _signature(it.get_input_details()[0])
        out_sig = _signature(it.get_output_details()[0])
        xq = _quantize(_check_input(x, in_sig, "litert"), in_sig)
        batch = max(in_sig.shape[0], 1)
        in_idx, out_idx = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
        outs = []
        for start in range(0, len(xq), batch):
            progress(f"invoke {start // batch + 1}/{-(-len(xq) // batch)}")
            chunk = xq[start:start + batch]
            n = len(chunk)
            if n < batch:  # fixed batch > 1: pad the last chunk, drop the padding after
                chunk = np.concatenate([chunk, np.zeros((batch - n, *chunk.shape[1:]), chunk.dtype)])
            it.set_tensor(in_idx, np.ascontiguousarray(chunk))
            it.reset_all_variables()  # a fused LSTM keeps its state in variables: each sample starts fresh, as in Keras
            it.invoke()
            outs.append(it.get_tensor(out_idx)[:n].copy())
        return np.concatenate(outs), in_sig, out_sig

    try:
        prepared, (outputs, in_sig, out_sig) = litert.run_with_fallback(model_bytes, work)
    except litert.NotRunnable as exc:
        raise VerificationError(
            "The artifact does not run in LiteRT", where=exc.name,
            expected="a model LiteRT can prepare and invoke",
            received=f"with XNNPACK: {exc.with_delegates}; builtin kernels only: {exc.builtin_only}",
            fix="Check the ops against LiteRT's builtin op set; re-convert without EXPERIMENTAL_SPARSITY "
                "if the failure names DENSIFY or a sparse tensor") from None
    report = litert.kernel_report(prepared, graph)
    return RunResult(outputs=_dequantize(outputs, out_sig), interpreter=prepared.name, kernels=report.kernels,
                     arena_bytes=None, input_dtype=in_sig.dtype.name, output_dtype=out_sig.dtype.name,
                     delegated_ops=report.delegated_ops, builtin_ops=report.builtin_ops,
                     fallback_reason=prepared.fallback_reason)


def _run_tflm(graph: Graph, model_bytes: bytes, x: Any, progress: Callable[[str], None]) -> RunResult:
    progress("checking the file")
    litert.check_structure(model_bytes, where=_WHERE, graph=graph)  # TFLM verifies nothing; LiteRT's loader
    progress("preparing")
    it = tflm.open_interpreter(model_bytes)
    in_sig, out_sig = _signature(it.get_input_details(0)), _signature(it.get_output_details(0))
    xq = _quantize(_check_input(x, in_sig, "tflm"), in_sig)
    outputs = tflm.invoke_each(it, xq, progress)
    names = [op.opcode for op in graph.ops]
    return RunResult(outputs=_dequantize(outputs, out_sig), interpreter=tflm.interpreter_name(),
                     kernels=[f"TFLM reference kernels ran {len(names)} ops: {litert.count_names(names)}"],
                     arena_bytes=tflm.arena_usage(it).get("total"),
                     input_dtype=in_sig.dtype.name, output_dtype=out_sig.dtype.name, builtin_ops=names)


# ----------------------------------------------------------------------------- public

def check_not_npu_compiled(graph: Graph, where: str = _WHERE) -> None:
    """VerificationError (exit 3) for a Vela-compiled file: its NPU command stream cannot run on this machine."""
    if not is_ethos_u_model(graph):
        return
    raise VerificationError(
        "This .tflite is compiled by Vela for an Arm Ethos-U NPU, and its NPU command stream cannot run here",
        where=where, expected="a plain .tflite that TFLite Micro or LiteRT can run",
        received=f"an '{ETHOS_U_OP}' custom op (the NPU's command stream and encoded weights); no Ethos-U NPU or "
                 "simulator is available on this machine, so NPU execution is not verified",
        fix="Run the int8 model Vela compiled instead: an Ethos-U build keeps it as baselines/pruned_int8.tflite "
            "and verified it in TFLite Micro (report.json's verification says so)")



def run_tflite(model_bytes: bytes, x: Any, *, runtime: str = "litert") -> RunResult:
    """Run every sample of `x` (float or already-quantized) and return dequantized outputs."""
    if runtime not in RUNTIMES:
        raise VerificationError("Unknown interpreter", where="runtime", expected=" or ".join(RUNTIMES),
                                received=repr(runtime), fix="Use the profile's runtime.name")
    if not isinstance(model_bytes, (bytes, bytearray, memoryview)):
        raise ModelError("Model must be the bytes of a .tflite file", where="run_tflite",
                         expected="bytes", received=type(model_bytes).__name__)
    model_bytes = bytes(model_bytes)
    graph = load_graph(model_bytes, validate=True)  # before an interpreter follows the file's offsets
    check_not_npu_compiled(graph)
    if len(graph.inputs) != 1:
        raise DataError("Only single-input models can be verified", where="model inputs",
                        expected="1 input tensor", received=f"{len(graph.inputs)} inputs",
                        fix="Verify multi-input models with your own harness")
    if runtime == "tflm":
        tflm.tflm_module()  # MissingDependency here; the child inherits the imported module
        return run_isolated(_run_tflm, graph, model_bytes, x, label="TFLite Micro", where=_WHERE)
    litert.interpreter_module()
    return run_isolated(_run_litert, graph, model_bytes, x, label="LiteRT", where=_WHERE)


def top1(scores: Any) -> np.ndarray:
    """The predicted class of each row of model outputs (or the labels themselves), as int64.

    - (N, C) scores, C > 1 (softmax, logits, one-hot): the argmax of each row;
    - (N, 1) or (N,) float scores: one sigmoid unit, so class 1 when the score is > 0.5;
    - (N,) integer or boolean arrays are class indices already and pass through.
    """
    p = np.asarray(scores)
    if p.ndim == 1 and p.dtype.kind in "iub":
        return p.astype(np.int64)
    p = p.reshape(len(p), -1)
    if p.shape[1] == 1:
        return (p[:, 0] > 0.5).astype(np.int64)
    return p.argmax(axis=1)


def _labels(y: Any) -> np.ndarray:
    """Class indices from integer labels (any float spelling of them) or one-hot rows."""
    y = np.asarray(y)
    if y.ndim > 1 and y.reshape(len(y), -1).shape[1] > 1:
        return y.reshape(len(y), -1).argmax(axis=1)
    return np.rint(y.reshape(-1)).astype(np.int64)


def verify_artifact(model_bytes: bytes, x_val: Any, y_val: Any, *, runtime: str,
                    reference_predictions: Any = None) -> VerificationResult:
    """Accuracy against labels and top-1 agreement with the pruned Keras model's predictions.

    `y_val`: integer labels or one-hot (None skips accuracy); `reference_predictions`:
    Keras outputs (probabilities/logits, or labels) for the same `x_val` (None skips agreement).
    """
    x_val = np.asarray(x_val)
    n = len(x_val)
    for label, arr in (("y_val", y_val), ("reference_predictions", reference_predictions)):
        if arr is not None and len(arr) != n:
            raise DataError("Arrays have different numbers of samples", where=label,
                            expected=f"{n} rows (as x_val)", received=f"{len(arr)} rows")
    run = run_tflite(model_bytes, x_val, runtime=runtime)
    predicted = top1(run.outputs)
    accuracy = float(np.mean(predicted == _labels(y_val))) if y_val is not None else None
    agreement = (float(np.mean(predicted == top1(reference_predictions)))
                 if reference_predictions is not None else None)
    return VerificationResult(
        accuracy=accuracy, agreement=agreement, interpreter=run.interpreter, kernels=run.kernels,
        arena_bytes=run.arena_bytes, n_samples=n, input_dtype=run.input_dtype,
        output_dtype=run.output_dtype, delegated_ops=run.delegated_ops, builtin_ops=run.builtin_ops,
        fallback_reason=run.fallback_reason, predictions=run.outputs)

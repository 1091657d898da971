"""Run artifacts in the interpreter the device uses: LiteRT or TFLite Micro.

Imports no TensorFlow: this is what `edgesparse check` runs on a Raspberry Pi.
Every file is parsed and index-checked by `tflite_edit.load_model` first, since
TFLM does not verify flatbuffers and would crash on a corrupt one.

CONTRACT:
    run_tflite(model_bytes, x, *, runtime="litert"|"tflm") -> RunResult
        RunResult: outputs (float ndarray, dequantized), interpreter (str),
                   kernels (list[str]: what ran, e.g. "XNNPACK refused ...; builtin kernels used"),
                   arena_bytes (int | None), input_dtype, output_dtype,
                   delegated_ops, builtin_ops (op names per kernel family), fallback_reason
    verify_artifact(model_bytes, x_val, y_val, *, runtime, reference_predictions) -> VerificationResult
        VerificationResult: accuracy, agreement (top-1 vs reference), interpreter, kernels, arena_bytes,
                            n_samples, input_dtype, output_dtype, delegated_ops, builtin_ops,
                            fallback_reason, predictions (dequantized outputs)
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from edgesparse.tflite import edit as tflite_edit
from edgesparse.errors import DataError, ModelError, VerificationError

RUNTIMES = ("litert", "tflm")
_MAX_TFLM_ARENA = 256 * 1024 * 1024


@dataclass
class RunResult:
    outputs: np.ndarray
    interpreter: str
    kernels: list[str]
    arena_bytes: int | None
    input_dtype: str = ""
    output_dtype: str = ""
    delegated_ops: list[str] = field(default_factory=list)
    builtin_ops: list[str] = field(default_factory=list)
    fallback_reason: str | None = None


@dataclass
class VerificationResult:
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


# ----------------------------------------------------------------------------- helpers

class _Captured:
    text = ""


@contextlib.contextmanager
def captured_stderr() -> Iterator[_Captured]:
    """Capture what C++ code writes to fd 2 (TFLM's MicroPrintf, LiteRT's INFO lines).

    Stage modules never print; the interpreters do, and their messages are the
    real reason for a failure, so they are kept and put into the error instead.
    """
    box = _Captured()
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield box
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            box.text = tmp.read().decode("utf-8", "replace")


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def _first_lines(text: str, n: int = 3) -> str:
    lines = [ln.strip() for ln in text.splitlines()
             if ln.strip() and not ln.startswith("INFO:") and "XNNPACK delegate for CPU" not in ln]
    return "; ".join(lines[:n])


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


def _quantize(x: np.ndarray, sig: _Signature) -> np.ndarray:
    """Float data -> the input tensor's dtype with its scale/zero-point; integer data passes."""
    if sig.dtype.kind == "f":
        return x.astype(sig.dtype, copy=False)
    if x.dtype == sig.dtype or sig.scale == 0.0:
        return x.astype(sig.dtype, copy=False)
    info = np.iinfo(sig.dtype)
    q = np.round(x.astype(np.float64) / sig.scale) + sig.zero_point
    return np.clip(q, info.min, info.max).astype(sig.dtype)


def _dequantize(y: np.ndarray, sig: _Signature) -> np.ndarray:
    if sig.dtype.kind in "iu" and sig.scale != 0.0:
        return ((y.astype(np.float64) - sig.zero_point) * sig.scale).astype(np.float32)
    return y.astype(np.float32, copy=False)


def _check_input(x, sig: _Signature, runtime: str) -> np.ndarray:
    x = np.asarray(x)
    expected = ("N",) + sig.shape[1:]
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


def _model_io(model) -> tuple[int, int]:
    sg = model.subgraphs[0]
    return len(sg.inputs if sg.inputs is not None else []), len(sg.outputs if sg.outputs is not None else [])


# ----------------------------------------------------------------------------- LiteRT

def _delegate_partition(ops: list[dict]) -> tuple[list[int], list[int]]:
    """(original op indices taken by delegates, op indices run by builtin kernels).

    `_get_ops_details()` lists the original nodes and then one DELEGATE node per
    partition. A partition is everything between the DELEGATE node's inputs and
    outputs: walk back from its outputs through producers, stopping at its inputs.
    """
    original = [o for o in ops if o["op_name"] != "DELEGATE"]
    producer = {}
    for o in original:
        for t in o["outputs"]:
            producer[int(t)] = o["index"]
    taken: set[int] = set()
    for d in (o for o in ops if o["op_name"] == "DELEGATE"):
        stop = {int(t) for t in d["inputs"]}
        todo = [int(t) for t in d["outputs"]]
        seen: set[int] = set()
        while todo:
            t = todo.pop()
            if t in stop or t in seen or t not in producer:
                continue
            seen.add(t)
            k = producer[t]
            if k not in taken:
                taken.add(k)
                todo.extend(int(i) for i in ops[k]["inputs"] if int(i) >= 0)
    return sorted(taken), [o["index"] for o in original if o["index"] not in taken]


def _count(names: list[str]) -> str:
    return ", ".join(f"{n} x{c}" if c > 1 else n for n, c in Counter(names).items())


def _describe_refused(model, reason: str) -> str:
    """'the sparse int8 FULLY_CONNECTED' when the refused node reads a sparse weight."""
    m = re.search(r"failed to delegate (\w+) node #(\d+)", reason)
    if not m:
        return "XNNPACK refused the model"
    op_name, k = m.group(1), int(m.group(2))
    sg = model.subgraphs[0]
    ops = sg.operators or []
    words = op_name
    if k < len(ops) and ops[k].inputs is not None and len(ops[k].inputs) > 1:
        w = int(ops[k].inputs[1])
        producer = next((op for op in ops if op.outputs is not None and w in list(op.outputs)), None)
        sparse = sg.tensors[w].sparsity is not None or (
            producer is not None and tflite_edit.opcode_name(model, producer.opcodeIndex) == "DENSIFY")
        dtype = tflite_edit.tensor_type_name(sg.tensors[w].type).lower()
        words = ("sparse " if sparse else "") + f"{dtype} {op_name}"
    return f"XNNPACK refused the {words}"


def _litert_once(model_bytes: bytes, x, resolver):
    from ai_edge_litert.interpreter import Interpreter

    with captured_stderr() as err:
        try:
            it = Interpreter(model_content=model_bytes, experimental_op_resolver_type=resolver)
            in_sig = _signature(it.get_input_details()[0])
            out_sig = _signature(it.get_output_details()[0])
            x = _check_input(x, in_sig, "litert")
            it.allocate_tensors()
            xq = _quantize(x, in_sig)
            batch = max(in_sig.shape[0], 1)
            in_idx, out_idx = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
            outs = []
            for start in range(0, len(xq), batch):
                chunk = xq[start:start + batch]
                n = len(chunk)
                if n < batch:  # fixed batch > 1: pad the last chunk, drop the padding after
                    chunk = np.concatenate([chunk, np.zeros((batch - n,) + chunk.shape[1:], chunk.dtype)])
                it.set_tensor(in_idx, np.ascontiguousarray(chunk))
                it.invoke()
                outs.append(it.get_tensor(out_idx)[:n].copy())
            ops = it._get_ops_details()
        except DataError:
            raise
        except (RuntimeError, ValueError) as exc:
            text = re.sub(r"(#\d+)(Node number)", r"\1; \2", f"{exc}".strip())  # LiteRT joins two lines
            return None, text or _first_lines(err.text)
    return (np.concatenate(outs), in_sig, out_sig, ops), None


def _run_litert(model, model_bytes: bytes, x) -> RunResult:
    from ai_edge_litert.interpreter import OpResolverType

    name = f"LiteRT {_version('ai-edge-litert')} (ai-edge-litert)"
    done, reason = _litert_once(model_bytes, x, OpResolverType.AUTO)
    fallback = None
    kernels: list[str] = []
    if done is None:
        done, reason2 = _litert_once(model_bytes, x, OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        if done is None:
            raise VerificationError(
                "The artifact does not run in LiteRT", where=name,
                expected="a model LiteRT can prepare and invoke",
                received=f"with XNNPACK: {reason}; builtin kernels only: {reason2}",
                fix="Check the ops against LiteRT's builtin op set; re-convert without EXPERIMENTAL_SPARSITY "
                    "if the failure names DENSIFY or a sparse tensor")
        fallback = reason
        kernels.append(f"{_describe_refused(model, reason)} ({reason}); builtin kernels used")
    outputs, in_sig, out_sig, ops = done
    taken, builtin = _delegate_partition(ops)
    delegated = [ops[k]["op_name"] for k in taken]
    builtin_names = [ops[k]["op_name"] for k in builtin]
    if not delegated and fallback is None:
        kernels.append(f"XNNPACK (the default delegate) took none of the {len(builtin_names)} ops")
    if delegated:
        kernels.append(f"XNNPACK delegate ran {len(delegated)} of {len(taken) + len(builtin)} ops: "
                       f"{_count(delegated)}")
    if builtin_names:
        kernels.append(f"builtin kernels ran {len(builtin_names)} ops: {_count(builtin_names)}")
    return RunResult(outputs=_dequantize(outputs, out_sig), interpreter=name, kernels=kernels,
                     arena_bytes=None, input_dtype=in_sig.dtype.name, output_dtype=out_sig.dtype.name,
                     delegated_ops=delegated, builtin_ops=builtin_names, fallback_reason=fallback)


# ----------------------------------------------------------------------------- TFLite Micro

_TFLM_MISSING_OP = re.compile(r"Didn't find op for builtin opcode '(\w+)'")
_ARENA_TOO_SMALL = re.compile(r"missing: \d+|too small|Failed to allocate (?:tail|temp|head|memory)", re.I)


def _tflm_error(name: str, text: str, exc: Exception) -> VerificationError:
    missing = _TFLM_MISSING_OP.search(text)
    if missing:
        op = missing.group(1)
        fix = ("TFLM cannot expand sparse weights: build for a TFLM profile (a dense int8 flatbuffer), "
               "or convert without EXPERIMENTAL_SPARSITY" if op == "DENSIFY"
               else f"Replace the layer that produces {op}, or register a custom kernel for it in the firmware")
        return VerificationError(f"TFLite Micro has no kernel for {op}", where=name,
                                 expected="ops in TFLM's op resolver", received=_first_lines(text), fix=fix)
    detail = _first_lines(text) or str(exc)
    fix = "TFLM runs full-integer int8 models (and float32 reference kernels): convert with --quantize int8"
    return VerificationError("The artifact does not run in TFLite Micro", where=name,
                             expected="a model TFLM can allocate and invoke", received=detail, fix=fix)


def _run_tflm(model, model_bytes: bytes, x) -> RunResult:
    from tflite_micro.python.tflite_micro import runtime

    name = f"TFLite Micro (tflite-micro {_version('tflite-micro')})"
    arena = max(len(model_bytes) * 4, 64 * 1024)
    while True:
        with captured_stderr() as err:
            try:
                it = runtime.Interpreter.from_bytes(bytes(model_bytes), arena_size=arena)
                failure = None
            except (RuntimeError, ValueError) as exc:
                failure = exc
        if failure is None:
            break
        if _ARENA_TOO_SMALL.search(err.text) and arena < _MAX_TFLM_ARENA:
            arena *= 4  # arena too small: TFLM says how much is missing, grow and retry
            continue
        raise _tflm_error(name, err.text, failure)
    in_sig, out_sig = _signature(it.get_input_details(0)), _signature(it.get_output_details(0))
    x = _check_input(x, in_sig, "tflm")
    xq = _quantize(x, in_sig)
    outs = []
    with captured_stderr() as err:
        try:
            for i in range(len(xq)):  # TFLM shapes are fixed: one sample per invoke, as on the MCU
                it.set_input(np.ascontiguousarray(xq[i:i + 1]).reshape(in_sig.shape), 0)
                it.invoke()
                outs.append(np.array(it.get_output(0)).reshape((1,) + out_sig.shape[1:]))
            failure = None
        except (RuntimeError, ValueError) as exc:
            failure = exc
    if failure is not None:
        raise _tflm_error(name, err.text, failure)
    with captured_stderr() as err:
        it.print_allocations()
    used = re.search(r"Arena allocation total (\d+) bytes", err.text)
    return RunResult(outputs=_dequantize(np.concatenate(outs), out_sig), interpreter=name,
                     kernels=[f"TFLM reference kernels ran {len(model.subgraphs[0].operators or [])} ops: "
                              f"{_count(tflite_edit.op_names(model_bytes))}"],
                     arena_bytes=int(used.group(1)) if used else None,
                     input_dtype=in_sig.dtype.name, output_dtype=out_sig.dtype.name,
                     builtin_ops=tflite_edit.op_names(model_bytes))


# ----------------------------------------------------------------------------- public

def run_tflite(model_bytes: bytes, x, *, runtime: str = "litert") -> RunResult:
    """Run every sample of `x` (float or already-quantized) and return dequantized outputs."""
    if runtime not in RUNTIMES:
        raise VerificationError("Unknown interpreter", where="runtime", expected=" or ".join(RUNTIMES),
                                received=repr(runtime), fix="Use the profile's runtime.name")
    if not isinstance(model_bytes, (bytes, bytearray, memoryview)):
        raise ModelError("Model must be the bytes of a .tflite file", where="run_tflite",
                         expected="bytes", received=type(model_bytes).__name__)
    model_bytes = bytes(model_bytes)
    model = tflite_edit.load_model(model_bytes)
    n_in, n_out = _model_io(model)
    if n_in != 1:
        raise DataError("Only single-input models can be verified", where="model inputs",
                        expected="1 input tensor", received=f"{n_in} inputs",
                        fix="Verify multi-input models with your own harness")
    if runtime == "tflm":
        return _run_tflm(model, model_bytes, x)
    return _run_litert(model, model_bytes, x)


def _top1(p: np.ndarray) -> np.ndarray:
    p = np.asarray(p)
    if p.ndim == 1:
        return p.astype(np.int64)
    p = p.reshape(len(p), -1)
    if p.shape[1] == 1:  # a single sigmoid unit
        return (p[:, 0] > 0.5).astype(np.int64)
    return p.argmax(axis=1)


def verify_artifact(model_bytes: bytes, x_val, y_val, *, runtime: str,
                    reference_predictions=None) -> VerificationResult:
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
    predicted = _top1(run.outputs)
    accuracy = float(np.mean(predicted == _top1(y_val))) if y_val is not None else None
    agreement = (float(np.mean(predicted == _top1(reference_predictions)))
                 if reference_predictions is not None else None)
    return VerificationResult(
        accuracy=accuracy, agreement=agreement, interpreter=run.interpreter, kernels=run.kernels,
        arena_bytes=run.arena_bytes, n_samples=n, input_dtype=run.input_dtype,
        output_dtype=run.output_dtype, delegated_ops=run.delegated_ops, builtin_ops=run.builtin_ops,
        fallback_reason=run.fallback_reason, predictions=run.outputs)

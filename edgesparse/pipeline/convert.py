"""TFLiteConverter: quantization modes, per-tensor sparse encoding, the TFLM variant.

Why per tensor: EXPERIMENTAL_SPARSITY encodes every FC/conv weight that is
>= 30 % zero. For float32 that nearly always pays; for int8 each stored value
costs 1 byte but its CSR index costs 1-2 more, so unstructured sparsity often
makes a tensor *bigger*. `build_artifact` measures each sparse tensor and
re-densifies the ones that do not shrink the file (`tflite_edit`).

The artifact is checked against the dense build's outputs before it ships
(`output_mismatch`); LiteRT's wrong answers for some directly read sparse
tensors are guarded with an inserted DENSIFY.

Raises ConversionError (an unknown mode, a converter failure, a model the
target runtime cannot run) and MissingDependency (TensorFlow).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgesparse._types import QUANTIZE_MODES
from edgesparse.data import representative_dataset
from edgesparse.errors import ConversionError, EdgesparseError
from edgesparse.pipeline.recurrent import recurrent_converter
from edgesparse.pipeline.tf_env import import_tf
from edgesparse.runtime.capture import captured_stderr
from edgesparse.runtime.verify import run_tflite
from edgesparse.tflite import edit as tflite_edit

__all__ = ["ConversionResult", "TensorEncoding", "build_artifact", "convert_keras", "output_mismatch", "summary"]

_REPRESENTATIVE_SAMPLES = 200


@dataclass
class TensorEncoding:
    """One weight the converter sparse-encoded, and whether the artifact keeps it sparse."""

    name: str
    shape: tuple[int, ...]
    dense_bytes: int
    sparse_bytes: int                 # values + segments + indices
    kept_sparse: bool
    reason: str
    dtype: str = ""
    values_bytes: int = 0
    index_bytes: int = 0
    block_size: tuple[int, ...] | None = None
    file_saving_bytes: int = 0        # measured: file bytes saved by keeping this tensor sparse
    read_by: str = ""                 # "DENSIFY" or the op that reads the sparse form directly


@dataclass
class ConversionResult:
    artifact: bytes = field(repr=False)
    dense_float32: bytes = field(repr=False)
    dense_int8: bytes = field(repr=False)
    tensors: list[TensorEncoding]
    has_densify: bool
    notes: list[str]
    quantize: str = "int8"
    runtime: str = "litert"
    sizes: dict[str, int] = field(default_factory=dict)  # file sizes of every variant built


# ----------------------------------------------------------------------------- convert_keras

def _representative(representative) -> Callable:
    """Accept a generator factory, or an array sampled by data.representative_dataset."""
    if callable(representative):
        return representative
    return representative_dataset(np.asarray(representative, np.float32), max_samples=_REPRESENTATIVE_SAMPLES,
                                  seed=0)


_FLEX = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")
_NOT_INT8 = re.compile(r"'tfl\.(\w+)' op .*(?:quantiz|int8|i8)", re.I)


def _key_line(text: str) -> str:
    """The converter's first `error:` message, without MLIR locations or the traceback."""
    for line in text.splitlines():
        m = re.search(r"error: (.+)", line)
        if m and "failed while converting" not in m.group(1):
            return m.group(1).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else text.strip()


def _conversion_error(exc: Exception, stderr: str, quantize: str, sparse: bool) -> ConversionError:
    text = f"{exc}\n{stderr}"
    key = _key_line(str(exc)) or _key_line(stderr)
    where = f"TFLiteConverter, quantize={quantize}" + (", EXPERIMENTAL_SPARSITY" if sparse else "")
    flex = _FLEX.search(text)
    if flex:
        fix = (f"TFLite builtins have no kernel for {flex.group(1)} and TF Select (Flex) ops do not exist "
               "in LiteRT's default build or on TFLM: replace the layer that uses it")
    elif quantize == "int8" and _NOT_INT8.search(text):
        fix = ("An op has no int8 kernel: use --quantize dynamic or float16 for LiteRT, "
               "or replace that layer for TFLM")
    elif "representative" in text.lower() or "Cannot set tensor" in text or "Dimension mismatch" in text:
        fix = "The representative data must match the model input (shape and float32 dtype)"
    elif "TensorList" in text or "tf.While" in text:
        fix = ("A recurrent loop did not convert in any --quantize mode: use GRU / LSTM / SimpleRNN layers "
               "(stateful=False, no mask, a fixed number of time steps) and report the line above")
    else:
        fix = "Try --quantize none to see whether quantization is the cause; report the line above"
    return ConversionError("The TFLite converter failed", where=where,
                           expected="a convertible Keras model", received=key, fix=fix)


def convert_keras(model, *, quantize: str, representative=None, sparse: bool = False) -> bytes:
    """TFLiteConverter.from_keras_model in one of QUANTIZE_MODES; `sparse` adds EXPERIMENTAL_SPARSITY.

    int8 = full-integer (int8 kernels only, int8 input and output, calibrated
    on `representative`: a generator factory or an array); dynamic = int8
    weights, float activations; float16 = float16 weights; none = float32.
    """
    if quantize not in QUANTIZE_MODES:
        raise ConversionError("Unknown quantization mode", where="quantize",
                              expected=" | ".join(QUANTIZE_MODES), received=repr(quantize))
    if quantize == "int8" and representative is None:
        raise ConversionError("Full-integer int8 needs a representative dataset", where="quantize=int8",
                              expected="representative samples to calibrate activation ranges",
                              received="none", fix="Pass the training data, or use --quantize dynamic")
    tf, _ = import_tf()

    # A recurrent model traced with a dynamic batch does not convert in any mode: batch-1 inference copy.
    converter = recurrent_converter(model) or tf.lite.TFLiteConverter.from_keras_model(model)
    optimizations = [] if quantize == "none" else [tf.lite.Optimize.DEFAULT]
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if quantize == "int8":
        converter.representative_dataset = _representative(representative)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    elif quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    with captured_stderr() as err, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            result = converter.convert()
            failure = None
        except EdgesparseError:
            raise
        except Exception as exc:  # ConverterError, ValueError from calibration, ...
            failure = exc
    if failure is not None:
        raise _conversion_error(failure, err.text, quantize, sparse) from None
    return bytes(result)


# ----------------------------------------------------------------------------- build_artifact

def _fmt(n: int) -> str:
    return f"{n:,} B"


def _weights_by_sparse_index(sparse_all: bytes, dense_same: bytes) -> dict[int, int] | None:
    """Sparse-file tensor index -> dense-file tensor index of the same weight (matched by op order)."""
    ws, wd = tflite_edit.weight_tensors(sparse_all), tflite_edit.weight_tensors(dense_same)
    if [op for op, _, _ in ws] != [op for op, _, _ in wd]:
        return None
    return {i_s: i_d for (_, i_s, _), (_, i_d, _) in zip(ws, wd)}


def _encoding_problem(sparse_all: bytes, dense_same: bytes, t, i_dense: int | None) -> tuple[str | None, Any]:
    """(problem, dense values to use) for one sparse tensor, checked against the dense conversion.

    TF 2.21's converter can sparse-encode a weight wrongly and silently (int8
    FULLY_CONNECTED with an input dimension below its 1x16 block: the kernel
    then reads zeros). Decoding and comparing with the dense build catches it.
    """
    if i_dense is None:
        return "no matching weight in the dense conversion to check it against", None
    want = tflite_edit.constant_tensor(dense_same, i_dense)
    same_quant = all(np.array_equal(a, b) for a, b in zip(tflite_edit.tensor_quantization(sparse_all, t.index),
                                                           tflite_edit.tensor_quantization(dense_same, i_dense)))
    if not same_quant:
        return "its quantization differs from the dense conversion", None
    try:
        got = tflite_edit.decode_sparse(sparse_all, t.index)
    except EdgesparseError as exc:
        return f"its sparse encoding does not decode ({exc.received})", want
    if got.shape != want.shape or not np.array_equal(got, want):
        differ = int(np.sum(got != want)) if got.shape == want.shape else got.size
        return f"its sparse encoding decodes to different weights ({differ:,} values differ)", want
    return None, want


def _same_weights(candidate: bytes, dense_same: bytes) -> bool:
    """Every FC/conv weight of `candidate` (decoded if sparse) equals the dense build's."""
    pairs = _weights_by_sparse_index(candidate, dense_same)
    return pairs is not None and all(
        np.array_equal(tflite_edit.constant_tensor(candidate, a), tflite_edit.constant_tensor(dense_same, b))
        for a, b in pairs.items())


def _decide(sparse_all: bytes, dense_same: bytes) -> tuple[bytes, list[TensorEncoding], list[str]]:
    """Keep sparse encoding only where it shrinks the file; measure, don't assume.

    Every sparse tensor is first decoded and compared with the dense
    conversion; a wrongly encoded one is stored dense with the dense build's values.
    """
    report = tflite_edit.sparse_encoding_report(sparse_all)
    pairs = _weights_by_sparse_index(sparse_all, dense_same)
    encodings, replace, notes = [], {}, []
    for t in report:
        read_by = "DENSIFY" if t.via_densify else "/".join(sorted(set(t.consumers))) or "nothing"
        enc = TensorEncoding(name=t.name, shape=t.shape, dense_bytes=t.dense_bytes,
                             sparse_bytes=t.sparse_bytes, kept_sparse=False, reason="",
                             dtype=t.dtype, values_bytes=t.values_bytes, index_bytes=t.index_bytes,
                             block_size=t.block_size, read_by=read_by)
        encodings.append(enc)
        i_dense = (pairs or {}).get(t.index) if t.subgraph == 0 else None
        problem, want = _encoding_problem(sparse_all, dense_same, t, i_dense)
        if problem:
            if want is None:  # cannot repair this file safely: ship the dense build
                enc.reason = f"not kept: {problem}"
                notes.append(f"Could not check the sparse encoding of {t.name} ({problem}): "
                             "the artifact is the dense flatbuffer")
                return dense_same, encodings, notes
            replace[t.index] = want
            enc.reason = f"the converter encoded it wrongly: {problem}; stored dense from the dense conversion"
            notes.append(f"TFLite converter bug worked around: {t.name} {problem}; stored dense")
            continue
        cost = (f"sparse {_fmt(t.sparse_bytes)} (values {_fmt(t.values_bytes)} + index "
                f"{_fmt(t.index_bytes)}) vs dense {_fmt(t.dense_bytes)}")
        if t.sparse_bytes >= t.dense_bytes:
            enc.reason = f"index arrays cost more than the zeros save: {cost}"
            continue
        # The encoded bytes leave out the DENSIFY op, its output tensor (with its own copy of
        # per-channel scales) and padding: densify this one tensor and measure the file.
        enc.file_saving_bytes = len(tflite_edit.densify_tensors(sparse_all, [t.index])) - len(sparse_all)
        enc.kept_sparse = enc.file_saving_bytes > 0
        enc.reason = (f"{cost}: the file is {_fmt(enc.file_saving_bytes)} smaller with it sparse"
                      if enc.kept_sparse else
                      f"{cost}, but the DENSIFY op and tensor it needs cost more: the file is "
                      f"{_fmt(-enc.file_saving_bytes)} larger with it sparse")
    kept = [e for e in encodings if e.kept_sparse]
    if not kept:
        if encodings:
            notes.append(f"No sparse-encoded tensor made the file smaller ({len(encodings)} measured): "
                         "the artifact is the dense flatbuffer")
        return dense_same, encodings, notes
    drop = [t.index for t, e in zip(report, encodings) if not e.kept_sparse and t.index not in replace]
    chosen = tflite_edit.densify_tensors(sparse_all, drop, values=replace) if drop or replace else sparse_all
    if not _same_weights(chosen, dense_same):
        for e in kept:
            e.kept_sparse = False
        notes.append("Internal check failed: the edited file's weights differ from the dense conversion; "
                     "the artifact is the dense flatbuffer")
        return dense_same, encodings, notes
    if len(chosen) >= len(dense_same):
        for e in kept:
            e.kept_sparse = False
            e.reason += f"; but the whole file was not smaller than dense ({_fmt(len(dense_same))})"
        notes.append("Sparse encoding did not shrink the whole file: the artifact is the dense flatbuffer")
        return dense_same, encodings, notes
    notes.append(f"Sparse encoding kept for {len(kept)} of {len(encodings)} sparse-encoded tensors: "
                 f"{_fmt(len(chosen))} vs {_fmt(len(dense_same))} dense and {_fmt(len(sparse_all))} with "
                 "every tensor sparse")
    return chosen, encodings, notes


# Ops whose LiteRT kernels read sparse constants directly and correctly (float 1x4, int8 1x16).
_SPARSE_READERS = {"FULLY_CONNECTED", "DENSIFY"}


def _guard_direct_readers(sparse_all: bytes) -> tuple[bytes, list[str]]:
    """DENSIFY in front of any other op the converter let read a sparse constant directly.

    With float16 + EXPERIMENTAL_SPARSITY the converter feeds a 1x4 block-sparse
    float16 FC weight straight into DEQUANTIZE; LiteRT 2.3 then computes NaN.
    Expanding it with DENSIFY first (as the converter does for convolutions)
    keeps the file small and the outputs right.
    """
    notes, bytes_out = [], sparse_all
    for t in tflite_edit.sparse_encoding_report(sparse_all):
        readers = sorted(set(t.consumers) - _SPARSE_READERS)
        if readers and t.subgraph == 0:
            bytes_out = tflite_edit.insert_densify(bytes_out, [t.index], before=readers)
            notes.append(f"{'/'.join(readers)} read {t.name} sparse directly, which LiteRT does not compute "
                         "correctly (NaN for float16): a DENSIFY op now expands it first")
    return bytes_out, notes


def output_mismatch(candidate: bytes, dense_same: bytes, x: np.ndarray) -> str | None:
    """Last check before shipping an edited file: same outputs as the dense build on a few samples."""
    got = run_tflite(candidate, x, runtime="litert").outputs
    want = run_tflite(dense_same, x, runtime="litert").outputs
    if not np.isfinite(got).all():
        return "non-finite outputs"
    spread = float(np.ptp(want)) if want.size else 0.0
    worst = float(np.abs(got - want).max()) if want.size else 0.0
    if worst > 0.1 * spread + 1e-6:
        return f"max difference {worst:.3g} for an output range of {spread:.3g}"
    return None


def build_artifact(model, dataset, *, quantize: str, profile) -> ConversionResult:
    """The deployable flatbuffer for `profile`, plus dense float32/int8 builds to compare sizes.

    LiteRT + sparse_weights: convert with sparsity, keep sparse only the tensors
    that shrink the file. TFLM: a dense flatbuffer (TFLM has no DENSIFY kernel).
    """
    if quantize not in QUANTIZE_MODES:
        raise ConversionError("Unknown quantization mode", where="quantize",
                              expected=" | ".join(QUANTIZE_MODES), received=repr(quantize))
    runtime = profile.runtime
    if runtime == "tflm" and quantize in ("dynamic", "float16"):
        raise ConversionError(
            f"TFLite Micro cannot run {quantize} models", where=f"profile {profile.name}",
            expected="quantize int8 (or none for float32 reference kernels)", received=quantize,
            fix="TFLM has no hybrid (dynamic-range) kernels and no float16 DEQUANTIZE: use --quantize int8")
    representative = _representative(dataset.x_train)
    notes: list[str] = []
    dense_float32 = convert_keras(model, quantize="none")
    try:
        dense_int8 = convert_keras(model, quantize="int8", representative=representative)
    except ConversionError as exc:
        if quantize == "int8":
            raise
        dense_int8 = b""
        notes.append(f"No dense int8 build to compare with: {exc.received}")
    by_mode = {"none": dense_float32, "int8": dense_int8}
    dense_same = by_mode.get(quantize) or convert_keras(model, quantize=quantize, representative=representative)
    sizes = {"dense_float32": len(dense_float32), "dense_int8": len(dense_int8),
             f"dense_{quantize}": len(dense_same)}
    tensors: list[TensorEncoding] = []
    if runtime == "tflm":
        artifact = dense_same
        kind = "int8" if quantize == "int8" else "float32"
        notes.append(f"TFLM cannot run DENSIFY: dense {kind} flatbuffer")
        if profile.sparse_weights:
            notes.append("The profile lists sparse_weights, but TFLM kernels read dense weights only")
    elif not profile.sparse_weights:
        artifact = dense_same
        notes.append(f"Profile {profile.name} does not exploit sparse weights: dense {quantize} flatbuffer")
    else:
        converted = convert_keras(model, quantize=quantize, representative=representative, sparse=True)
        sparse_all, fixed = _guard_direct_readers(converted)
        notes += fixed
        if fixed:
            sizes["sparse_converter"] = len(converted)
        sizes["sparse_all"] = len(sparse_all)
        artifact, tensors, decided = _decide(sparse_all, dense_same)
        notes += decided
        if not tensors:
            notes.append("No weight tensor was >= 30 % zero, so the converter stored every tensor dense")
        elif artifact is not dense_same:
            mismatch = output_mismatch(artifact, dense_same, np.asarray(dataset.x_train)[:8])
            if mismatch:
                for t in tensors:
                    t.kept_sparse = False
                notes.append(f"The sparse file's outputs differ from the dense build's ({mismatch}): "
                             "the artifact is the dense flatbuffer")
                artifact = dense_same
    has_densify = "DENSIFY" in tflite_edit.op_names(artifact)
    if runtime == "tflm" and has_densify:
        raise ConversionError("Internal: the TFLM artifact contains DENSIFY", where="build_artifact",
                              expected="a dense flatbuffer", received="DENSIFY op")
    direct = [t for t in tensors if t.kept_sparse and t.read_by != "DENSIFY"]
    for t in direct:
        block = "x".join(map(str, t.block_size)) if t.block_size else "unstructured"
        notes.append(f"{t.read_by} reads {t.name} in {block} block-sparse form (no DENSIFY)")
    if has_densify:
        n = sum(1 for t in tensors if t.kept_sparse and t.read_by == "DENSIFY")
        notes.append(f"DENSIFY expands {n} sparse weight(s) to a dense copy in RAM at the first invoke: "
                     "flash shrinks, RAM does not")
    sizes["artifact"] = len(artifact)
    return ConversionResult(artifact=artifact, dense_float32=dense_float32, dense_int8=dense_int8,
                            tensors=tensors, has_densify=has_densify, notes=notes, quantize=quantize,
                            runtime=runtime, sizes=sizes)


def summary(result: ConversionResult) -> dict[str, Any]:
    """JSON-ready view of a ConversionResult (no bytes)."""
    return {"quantize": result.quantize, "runtime": result.runtime, "sizes": dict(result.sizes),
            "has_densify": result.has_densify, "notes": list(result.notes),
            "tensors": [dict(vars(t), shape=list(t.shape),
                             block_size=list(t.block_size) if t.block_size else None)
                        for t in result.tensors]}

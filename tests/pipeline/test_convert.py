"""convert.py with the real TFLiteConverter and interpreters: modes, per-tensor sparsity, TFLM."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from support.models import SEED, mixed_data, mixed_model

from edgesparse._types import QUANTIZE_MODES
from edgesparse.errors import ConversionError
from edgesparse.pipeline.convert import build_artifact, convert_keras, output_mismatch, summary
from edgesparse.pipeline.tf_env import import_tf
from edgesparse.profiles.profile import Profile
from edgesparse.runtime.verify import run_tflite
from edgesparse.tflite import edit as tflite_edit


def make_profile(runtime: str, sparse_weights: bool) -> Profile:
    raw = {"device": {"class": "mcu" if runtime == "tflm" else "sbc"},
           "runtime": {"name": runtime, "sparse_weights": sparse_weights}}
    return Profile(name=f"test-{runtime}", path=Path("test.toml"), sha256="0" * 64, raw=raw)


@pytest.fixture(scope="module")
def mixed():
    return mixed_model(), mixed_data()


@pytest.fixture(scope="module")
def litert_sparse_build(mixed):
    model, data = mixed
    return build_artifact(model, data, quantize="int8", profile=make_profile("litert", True))


def tiny_dense():
    _, keras = import_tf()
    keras.utils.set_random_seed(SEED)
    return keras.Sequential([keras.layers.Input((32,)), keras.layers.Dense(64, activation="relu"),
                             keras.layers.Dense(3, activation="softmax")])


# (input dtype, output dtype, dtype of the 32x64 FC weight) each mode must produce. Dynamic range
# quantizes only weights of >= 1024 elements, so the 64x3 output layer stays float32 there.
EXPECTED = {"int8": ("int8", "int8", "INT8"), "dynamic": ("float32", "float32", "INT8"),
            "float16": ("float32", "float32", "FLOAT16"), "none": ("float32", "float32", "FLOAT32")}


@pytest.mark.parametrize("quantize", QUANTIZE_MODES)
def test_each_quantize_mode_runs_in_litert_with_expected_dtypes(quantize):
    model = tiny_dense()
    x = np.random.default_rng(3).normal(size=(32, 32)).astype(np.float32)
    tfl = convert_keras(model, quantize=quantize, representative=x)
    run = run_tflite(tfl, x, runtime="litert")
    in_dtype, out_dtype, weight_dtype = EXPECTED[quantize]
    assert (run.input_dtype, run.output_dtype) == (in_dtype, out_dtype)
    model_t = tflite_edit.load_model(tfl)
    first = tflite_edit.weight_tensors(tfl)[0][1]
    assert tflite_edit.tensor_type_name(model_t.subgraphs[0].tensors[first].type) == weight_dtype
    assert run.outputs.dtype == np.float32 and run.outputs.shape == (32, 3)
    keras_out = model.predict(x, verbose=0)
    assert np.abs(run.outputs - keras_out).max() < 0.05          # dequantized probabilities
    assert (run.outputs.argmax(1) == keras_out.argmax(1)).mean() >= 0.9


def test_converter_failure_is_one_line_with_a_fix():
    tf, keras = import_tf()
    model = keras.Sequential([keras.layers.Input((3, 3)),
                              keras.layers.Lambda(lambda t: tf.reshape(tf.linalg.det(t), (-1, 1)))])
    with pytest.raises(ConversionError) as info:
        convert_keras(model, quantize="none")
    err = info.value
    assert "MatrixDeterminant" in str(err.received) and "\n" not in str(err.received)
    assert "Traceback" not in err.message and "replace the layer" in err.fix


def test_bad_mode_and_missing_representative_are_conversion_errors():
    model = tiny_dense()
    with pytest.raises(ConversionError, match="Unknown quantization mode"):
        convert_keras(model, quantize="int4")
    with pytest.raises(ConversionError, match="representative"):
        convert_keras(model, quantize="int8")


def test_per_tensor_choice_keeps_block_sparse_dense_layer_and_drops_the_small_conv(litert_sparse_build):
    result = litert_sparse_build
    by_layer = {("conv" if len(t.shape) == 4 else "dense"): t for t in result.tensors}
    assert set(by_layer) == {"conv", "dense"}, [t.name for t in result.tensors]
    dense, conv = by_layer["dense"], by_layer["conv"]
    assert dense.shape == (128, 512) and dense.kept_sparse and dense.sparse_bytes < 0.7 * dense.dense_bytes
    assert dense.file_saving_bytes > 20_000
    assert not conv.kept_sparse and conv.sparse_bytes >= conv.dense_bytes and "index" in conv.reason
    # The choice really is smaller than both alternatives it was chosen from.
    sizes = result.sizes
    assert sizes["artifact"] == len(result.artifact)
    assert sizes["artifact"] < sizes["sparse_all"] and sizes["artifact"] < sizes["dense_int8"]
    assert sizes["dense_int8"] < sizes["dense_float32"]
    assert result.has_densify and any("DENSIFY" in n for n in result.notes)
    assert summary(result)["tensors"][0]["kept_sparse"] in (True, False)


def test_sparse_artifact_matches_the_dense_int8_build_in_litert(mixed, litert_sparse_build):
    _, data = mixed
    sparse = run_tflite(litert_sparse_build.artifact, data.x_val, runtime="litert")
    dense = run_tflite(litert_sparse_build.dense_int8, data.x_val, runtime="litert")
    assert sparse.input_dtype == "int8"
    # Same int8 weights and scales; only the kernels differ (builtin vs XNNPACK rounding).
    scale = np.abs(dense.outputs).max() / 64
    assert np.abs(sparse.outputs - dense.outputs).max() <= scale


def test_float32_block_sparse_kernel_is_read_directly_and_kept(mixed):
    model, data = mixed
    result = build_artifact(model, data, quantize="none", profile=make_profile("litert", True))
    dense = next(t for t in result.tensors if len(t.shape) == 2)
    assert dense.kept_sparse and dense.block_size == (1, 4) and dense.read_by == "FULLY_CONNECTED"
    assert result.sizes["artifact"] < result.sizes["dense_float32"] / 2
    out = run_tflite(result.artifact, data.x_val, runtime="litert").outputs
    ref = model.predict(data.x_val, verbose=0)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)


def test_tflm_profile_gives_dense_int8_that_runs_in_tflm(mixed):
    model, data = mixed
    result = build_artifact(model, data, quantize="int8", profile=make_profile("tflm", True))
    assert result.artifact == result.dense_int8 and not result.has_densify
    assert "DENSIFY" not in tflite_edit.op_names(result.artifact)
    assert any("TFLM cannot run DENSIFY" in n for n in result.notes)
    run = run_tflite(result.artifact, data.x_val[:4], runtime="tflm")
    assert run.arena_bytes and run.arena_bytes > 0 and run.input_dtype == "int8"
    litert = run_tflite(result.artifact, data.x_val[:4], runtime="litert")
    assert (run.outputs.argmax(1) == litert.outputs.argmax(1)).mean() >= 0.75


def test_tflm_refuses_hybrid_modes():
    with pytest.raises(ConversionError, match="TFLite Micro cannot run dynamic"):
        build_artifact(tiny_dense(), mixed_data(), quantize="dynamic", profile=make_profile("tflm", False))


def test_profile_without_sparse_weights_gets_the_dense_file(mixed):
    model, data = mixed
    result = build_artifact(model, data, quantize="none", profile=make_profile("litert", False))
    assert result.artifact == result.dense_float32 and result.tensors == [] and not result.has_densify


def test_wrongly_encoded_int8_fc_is_caught_and_stored_dense():
    """TF 2.21 sparse-encodes an int8 FC whose input dim (8) is below its 1x16 block as all zeros.

    The broken tensor is stored dense with the dense build's values; the wide
    layer after it keeps its (correct, paying) sparse encoding.
    """
    _, keras = import_tf()
    keras.utils.set_random_seed(SEED)
    model = keras.Sequential([keras.layers.Input((8,)), keras.layers.Dense(64, activation="relu", name="narrow"),
                              keras.layers.Dense(128, activation="relu", name="wide"), keras.layers.Dense(3)])
    for name in ("narrow", "wide"):
        w, b = model.get_layer(name).get_weights()
        w[np.abs(w) < np.quantile(np.abs(w), 0.8)] = 0.0
        model.get_layer(name).set_weights([w, b + 0.1])
    x = np.random.default_rng(5).normal(size=(64, 8)).astype(np.float32)
    raw_sparse = convert_keras(model, quantize="int8", representative=x, sparse=True)
    keras_out = model.predict(x, verbose=0)
    assert np.abs(run_tflite(raw_sparse, x, runtime="litert").outputs - keras_out).max() > 0.3  # the bug

    result = build_artifact(model, SimpleNamespace(x_train=x), quantize="int8",
                            profile=make_profile("litert", True))
    narrow = next(t for t in result.tensors if t.shape == (64, 8))
    wide = next(t for t in result.tensors if t.shape == (128, 64))
    assert not narrow.kept_sparse and "encoded it wrongly" in narrow.reason
    assert wide.kept_sparse and any("converter bug" in n for n in result.notes)
    assert len(result.artifact) < len(result.dense_int8)
    for (_, a, _), (_, b, _) in zip(tflite_edit.weight_tensors(result.artifact),
                                    tflite_edit.weight_tensors(result.dense_int8)):
        np.testing.assert_array_equal(tflite_edit.constant_tensor(result.artifact, a),
                                      tflite_edit.constant_tensor(result.dense_int8, b))
    fixed = run_tflite(result.artifact, x, runtime="litert").outputs
    assert np.abs(fixed - keras_out).max() < 0.1


@pytest.mark.parametrize("quantize", ["dynamic", "float16"])
def test_sparse_build_in_float_io_modes_checks_out_and_runs(mixed, quantize):
    model, data = mixed
    result = build_artifact(model, data, quantize=quantize, profile=make_profile("litert", True))
    assert result.sizes["artifact"] <= result.sizes["sparse_all"] < result.sizes[f"dense_{quantize}"]
    assert not any("outputs differ" in n for n in result.notes)
    assert all("wrongly" not in t.reason for t in result.tensors)
    if quantize == "float16":  # the converter feeds the 1x4 block-sparse FC weight straight into DEQUANTIZE
        assert any("DENSIFY op now expands it first" in n for n in result.notes)
        raw = convert_keras(model, quantize=quantize, sparse=True)
        assert np.isnan(run_tflite(raw, data.x_val[:2], runtime="litert").outputs).all()  # LiteRT 2.3's answer
        dense = convert_keras(model, quantize=quantize)
        assert output_mismatch(raw, dense, data.x_val[:2]) == "non-finite outputs"  # the last-line check
        assert result.sizes["artifact"] < result.sizes["dense_float16"] / 3
    run = run_tflite(result.artifact, data.x_val, runtime="litert")
    assert run.input_dtype == "float32"
    np.testing.assert_allclose(run.outputs, model.predict(data.x_val, verbose=0), atol=0.05)

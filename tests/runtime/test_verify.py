"""verify.py with the real LiteRT and TFLite Micro interpreters on a tiny trained model."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from edgesparse.errors import EXIT_BAD_INPUT, DataError, MissingDependency, ModelError, VerificationError
from edgesparse.pipeline.convert import convert_keras
from edgesparse.pipeline.tf_env import import_tf
from edgesparse.runtime import tflm
from edgesparse.runtime.measure import measure
from edgesparse.runtime.verify import run_tflite, top1, verify_artifact
from edgesparse.tflite import edit as tflite_edit

REPO = __import__("pathlib").Path(__file__).resolve().parents[2]
FEATURES = 24


def blobs(n: int, seed: int):
    """Three well-separated Gaussian classes in 24-D (an FC input dim of 24 avoids the int8 1x16 block path)."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(42).normal(scale=2.0, size=(3, FEATURES))
    y = rng.integers(0, 3, n)
    return (centres[y] + rng.normal(size=(n, FEATURES))).astype(np.float32), y


@pytest.fixture(scope="module")
def trained():
    """A tiny classifier, its hidden kernel pruned by hand to 80 % zeros, and its int8 builds."""
    _, keras = import_tf()
    keras.utils.set_random_seed(0)
    x, y = blobs(600, 1)
    model = keras.Sequential([keras.layers.Input((FEATURES,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=15, batch_size=64, verbose=0)
    w, b = model.layers[0].get_weights()
    w[np.abs(w) < np.quantile(np.abs(w), 0.8)] = 0.0
    model.layers[0].set_weights([w, b])
    x_val, y_val = blobs(200, 2)
    dense = convert_keras(model, quantize="int8", representative=x)
    sparse = convert_keras(model, quantize="int8", representative=x, sparse=True)
    return model, x_val, y_val, dense, sparse


def test_litert_accuracy_and_agreement(trained):
    model, x_val, y_val, dense, _ = trained
    ref = model.predict(x_val, verbose=0)
    result = verify_artifact(dense, x_val, y_val, runtime="litert", reference_predictions=ref)
    assert result.n_samples == 200 and result.arena_bytes is None
    assert result.accuracy >= 0.9 and result.agreement >= 0.97
    assert result.input_dtype == "int8" and result.output_dtype == "int8"
    assert result.predictions.shape == (200, 3) and result.predictions.dtype == np.float32
    assert result.interpreter.startswith("LiteRT") and result.fallback_reason is None
    assert result.delegated_ops == ["FULLY_CONNECTED", "FULLY_CONNECTED"]
    # int8 SOFTMAX stays on the builtin kernel; XNNPACK takes both FULLY_CONNECTED ops.
    assert "XNNPACK delegate ran 2 of 3 ops: FULLY_CONNECTED x2" in result.kernels
    assert "builtin kernels ran 1 ops: SOFTMAX" in result.kernels


def test_tflm_accuracy_agreement_and_arena(trained):
    model, x_val, y_val, dense, _ = trained
    ref = model.predict(x_val, verbose=0)
    one_hot = np.eye(3)[y_val]
    result = verify_artifact(dense, x_val, one_hot, runtime="tflm", reference_predictions=ref)
    assert result.interpreter.startswith("TFLite Micro")
    assert result.accuracy >= 0.9 and result.agreement >= 0.97
    assert result.arena_bytes and 0 < result.arena_bytes < 64 * 1024


def test_sparse_int8_fc_falls_back_to_builtin_kernels_with_the_reason(trained):
    _model, x_val, _y_val, dense, sparse = trained
    assert "DENSIFY" in tflite_edit.op_names(sparse)
    run = run_tflite(sparse, x_val, runtime="litert")
    assert run.fallback_reason and "failed to prepare" in run.fallback_reason
    note = run.kernels[0]
    assert note.startswith("XNNPACK refused the sparse int8 FULLY_CONNECTED") and "builtin kernels used" in note
    assert run.delegated_ops == [] and "DENSIFY" in run.builtin_ops
    same = run_tflite(dense, x_val, runtime="litert")
    assert (run.outputs.argmax(1) == same.outputs.argmax(1)).mean() >= 0.99


def test_tflm_cannot_run_densify(trained):
    *_, sparse = trained
    with pytest.raises(VerificationError) as info:
        run_tflite(sparse, blobs(2, 3)[0], runtime="tflm")
    assert "DENSIFY" in info.value.what and "dense int8" in info.value.fix


@pytest.mark.parametrize("runtime", ["litert", "tflm"])
def test_wrong_input_shape_names_both_shapes(trained, runtime):
    dense = trained[3]
    with pytest.raises(DataError) as info:
        run_tflite(dense, np.zeros((5, 9), np.float32), runtime=runtime)
    assert f"('N', {FEATURES})" in info.value.expected and "(5, 9)" in str(info.value.received)
    with pytest.raises(DataError, match=r"x\[None\]"):
        run_tflite(dense, np.zeros(FEATURES, np.float32), runtime=runtime)


def test_label_count_mismatch_is_a_data_error(trained):
    _, x_val, y_val, dense, _ = trained
    with pytest.raises(DataError, match="different numbers of samples"):
        verify_artifact(dense, x_val, y_val[:10], runtime="litert", reference_predictions=None)


@pytest.mark.parametrize("runtime", ["litert", "tflm"])
def test_corrupt_bytes_are_model_errors_not_crashes(trained, runtime):
    dense = trained[3]
    for bad in (b"garbage", dense[: len(dense) // 2], bytes(len(dense))):
        with pytest.raises(ModelError):
            run_tflite(bad, np.zeros((1, FEATURES), np.float32), runtime=runtime)


def test_already_quantized_input_passes_through(trained):
    _, x_val, _, dense, _ = trained
    from_float = run_tflite(dense, x_val[:20], runtime="litert")
    details = tflite_edit.load_model(dense).subgraphs[0]
    q = details.tensors[details.inputs[0]].quantization
    xq = np.clip(np.round(x_val[:20] / q.scale[0]) + q.zeroPoint[0], -128, 127).astype(np.int8)
    np.testing.assert_array_equal(run_tflite(dense, xq, runtime="litert").outputs, from_float.outputs)


def test_both_interpreters_run_without_tensorflow(trained, tmp_path):
    """The runtime half on a Pi: verify.py must not import TensorFlow."""
    path = tmp_path / "m.tflite"
    path.write_bytes(trained[3])
    script = textwrap.dedent(f"""
        import sys, numpy as np
        sys.modules["tensorflow"] = None  # any import of TensorFlow now fails
        from edgesparse.runtime.verify import run_tflite
        model = open({str(path)!r}, "rb").read()
        x = np.zeros((3, {FEATURES}), np.float32)
        a = run_tflite(model, x, runtime="litert")
        b = run_tflite(model, x, runtime="tflm")
        assert a.outputs.shape == b.outputs.shape == (3, 3) and b.arena_bytes > 0
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_top1_of_softmax_sigmoid_and_labels():
    softmax = np.array([[0.1, 0.7, 0.2], [0.8, 0.1, 0.1]], np.float32)
    np.testing.assert_array_equal(top1(softmax), [1, 0])
    # A single sigmoid unit: class 1 above 0.5, never an argmax over one column (always 0).
    sigmoid = np.array([[0.9], [0.2], [0.51], [0.5]], np.float32)
    np.testing.assert_array_equal(top1(sigmoid), [1, 0, 1, 0])
    np.testing.assert_array_equal(top1(sigmoid.ravel()), [1, 0, 1, 0])
    # Integer labels are predictions already.
    np.testing.assert_array_equal(top1(np.array([2, 0, 1])), [2, 0, 1])
    assert top1(sigmoid).dtype == np.int64


def test_sigmoid_model_accuracy_uses_the_threshold(tmp_path):
    """verify_artifact scores a one-output (sigmoid) model by score > 0.5 against 0/1 labels."""
    _, keras = import_tf()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 4)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    model = keras.Sequential([keras.layers.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.Adam(0.1), loss="binary_crossentropy")
    model.fit(x, y, epochs=30, batch_size=32, verbose=0)
    artifact = convert_keras(model, quantize="none")
    result = verify_artifact(artifact, x, y, runtime="litert", reference_predictions=model.predict(x, verbose=0))
    assert result.accuracy >= 0.9 and result.agreement >= 0.98


def _hide_tflite_micro(monkeypatch):
    """Make `import tflite_micro...` fail as it does where the wheel is not installed (a Raspberry Pi)."""
    for name in [m for m in sys.modules if m == "tflite_micro" or m.startswith("tflite_micro.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "tflite_micro", None)


def test_missing_tflite_micro_is_a_missing_dependency_with_a_hint(trained, monkeypatch):
    dense = trained[3]
    _hide_tflite_micro(monkeypatch)
    with pytest.raises(MissingDependency) as info:
        run_tflite(dense, np.zeros((1, FEATURES), np.float32), runtime="tflm")
    assert info.value.exit_code == EXIT_BAD_INPUT
    assert "pip install tflite-micro" in info.value.fix
    with pytest.raises(MissingDependency):
        tflm.tflm_module()
    with pytest.raises(MissingDependency):
        measure(dense, runs=1, warmup=0, runtime="tflm")
    # LiteRT does not need it.
    assert run_tflite(dense, np.zeros((1, FEATURES), np.float32), runtime="litert").outputs.shape == (1, 3)

"""Recurrent models (Conv1D then GRU / LSTM) end to end: `edgesparse build` converts, verifies and refuses early."""

import json
import time

import keras  # Keras 3, for the .keras file a Keras 3 user saves
import numpy as np
import pytest
import tf_keras as tfk
from click.testing import CliRunner

from edgesparse.cli.commands import main
from edgesparse.tflite.graph import load_graph

pytestmark = pytest.mark.slow

SHAPE = (49, 10)
CLASSES = 3


def _data(path, shape=SHAPE):
    """Learnable: each class shifts a different feature, so a 1-epoch model's output depends on its input."""
    rng = np.random.default_rng(0)

    def split(n):
        y = rng.integers(0, CLASSES, n)
        x = rng.normal(0, 1, (n, *shape)).astype(np.float32)
        x[np.arange(n), :, y] += 2.0
        return x, y.astype(np.int64)

    (xt, yt), (xv, yv) = split(192), split(48)
    np.savez(path, x_train=xt, y_train=yt, x_val=xv, y_val=yv)
    return path


def _model(api, recurrent, data=None, shape=SHAPE, **options):
    layer = {"gru": api.layers.GRU, "lstm": api.layers.LSTM}[recurrent]
    model = api.Sequential([api.Input(shape), api.layers.Conv1D(8, 3, activation="relu", name="conv"),
                            layer(8, name=recurrent, **options),
                            api.layers.Dense(CLASSES, activation="softmax", name="out")], name=f"tiny_{recurrent}")
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    if data is not None:  # above chance before pruning, as a user's trained model is
        arrays = np.load(data)
        model.fit(arrays["x_train"], arrays["y_train"], epochs=3, batch_size=32, verbose=0)
    return model


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _data(tmp_path_factory.mktemp("rnn_data") / "data.npz")


def _build(model_path, data, out, profile, quantize="int8", epochs="1"):
    started = time.perf_counter()
    result = CliRunner().invoke(main, ["build", "--model", str(model_path), "--data", str(data), "--profile", profile,
                                       "--quantize", quantize, "--epochs", epochs, "--batch-size", "32",
                                       "--min-params", "100", "--max-accuracy-drop", "100", "--min-agreement", "0",
                                       "--out", str(out)],
                                catch_exceptions=False)
    return result, time.perf_counter() - started


def _check_built(result, out, runtime, shape=SHAPE):
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] is True and report["failures"] == []
    from edgesparse.runtime.verify import run_tflite

    x = np.random.default_rng(1).normal(0, 1, (2, *shape)).astype(np.float32)
    outputs = run_tflite((out / "model.tflite").read_bytes(), x, runtime=runtime).outputs
    assert outputs.shape == (2, CLASSES) and np.isfinite(outputs).all()
    return {op.opcode for op in load_graph(out / "model.tflite").ops}


@pytest.mark.parametrize("profile,runtime", [("rpi4", "litert"), ("nrf52840", "tflm")])
@pytest.mark.parametrize("recurrent", ["gru", "lstm"])
def test_recurrent_model_builds_and_runs_in_its_interpreter(tmp_path, data, recurrent, profile, runtime):
    path = tmp_path / f"{recurrent}.h5"
    _model(tfk, recurrent, data).save(path)
    result, _ = _build(path, data, tmp_path / "out", profile)
    ops = _check_built(result, tmp_path / "out", runtime)
    assert "WHILE" not in ops  # int8: a fused LSTM or an unrolled GRU, never a loop (TFLM hangs on some)
    if recurrent == "lstm":
        assert "UNIDIRECTIONAL_SEQUENCE_LSTM" in ops


def test_gru_builds_with_float_activations(tmp_path, data):
    """One whole build in a float-activation mode (dynamic); the other modes are converted directly below."""
    # 12 time steps, not 49: converting the unrolled float-activation GRU four ways took over two minutes
    short = _data(tmp_path / "short.npz", shape=(12, SHAPE[1]))
    path = tmp_path / "gru.h5"
    _model(tfk, "gru", short, shape=(12, SHAPE[1]), recurrent_dropout=0.1).save(path)
    result, _ = _build(path, short, tmp_path / "out", "rpi4", quantize="dynamic")
    _check_built(result, tmp_path / "out", "litert", shape=(12, SHAPE[1]))


@pytest.mark.parametrize("quantize", ["none", "float16"])
def test_gru_converts_in_the_other_float_modes_and_matches_keras(quantize):
    """A whole build per mode takes minutes; the conversion is what differs, so it is checked directly."""
    from edgesparse.pipeline.convert import convert_keras
    from edgesparse.runtime.verify import run_tflite

    model = _model(tfk, "gru", recurrent_dropout=0.1)
    tflite = convert_keras(model, quantize=quantize)
    assert "WHILE" not in {op.opcode for op in load_graph(tflite).ops}
    x = np.random.default_rng(2).normal(0, 1, (4, *SHAPE)).astype(np.float32)
    got = run_tflite(tflite, x, runtime="litert").outputs
    want = model.predict(x, verbose=0)
    assert np.allclose(got, want, atol=1e-2 if quantize == "float16" else 1e-4)


def test_keras3_gru_file_builds(tmp_path, data):
    path = tmp_path / "k3gru.keras"
    _model(keras, "gru", data).save(path)
    result, _ = _build(path, data, tmp_path / "out", "rpi4")
    _check_built(result, tmp_path / "out", "litert")


@pytest.mark.parametrize("api,suffix", [(tfk, ".h5"), (keras, ".keras")], ids=["tf_keras", "keras3"])
def test_unsupported_recurrent_layer_is_refused_before_training(tmp_path, data, api, suffix):
    path = tmp_path / f"stateful{suffix}"
    model = api.Sequential([api.Input(SHAPE, batch_size=1), api.layers.Conv1D(8, 3, name="conv"),
                            api.layers.GRU(8, stateful=True, name="gru"),
                            api.layers.Dense(CLASSES, activation="softmax", name="out")])
    model.save(path)
    result, seconds = _build(path, data, tmp_path / "out", "rpi4", quantize="none", epochs="50")
    assert result.exit_code == 2, result.output
    assert "gru" in result.output and "stateful=False" in result.output
    assert "--quantize none" not in result.output
    assert "Pruning and fine-tuning" not in result.output and not (tmp_path / "out").exists()
    assert seconds < 20, seconds

"""models.load_model: formats, Keras 3 rebuild, refusal of code-carrying files, MLPerf models.

Real TensorFlow, tf_keras and Keras 3 throughout: tiny models, saved to tmp_path.
"""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgesparse.errors import ModelError
from edgesparse.pipeline.models import LoadedModel, load_model, safe_name
from edgesparse.pipeline.tf_env import import_tf

tf, tfk = import_tf()
keras = pytest.importorskip("keras")  # the Keras 3 package TensorFlow 2.21 installs


def _randomize(model) -> None:
    """Non-trivial weights everywhere (BN moving variance kept positive) so copies are really tested."""
    rng = np.random.default_rng(1)
    for layer in model.layers:
        values = layer.get_weights()
        if values:
            layer.set_weights([np.abs(rng.normal(1.0, 0.3, v.shape)).astype(v.dtype) if "variance" in w.name
                               else rng.normal(0, 0.3, v.shape).astype(v.dtype)
                               for w, v in zip(layer.weights, values)])


def _keras3_functional():
    inp = keras.Input((12, 12, 3), name="img")
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1",
                            kernel_regularizer=keras.regularizers.L2(1e-4))(inp)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="r1")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.Add(name="add")([x, y])
    x = keras.layers.MaxPooling2D(name="mp")(x)
    x = keras.layers.SeparableConv2D(8, 3, name="sep")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dropout(0.2, name="do")(x)
    out = keras.layers.Dense(5, activation="softmax", name="out")(x)
    model = keras.Model(inp, out, name="k3func")
    _randomize(model)
    return model


def _tf_keras_model():
    return tfk.Sequential([tfk.Input((6,)), tfk.layers.Dense(4, activation="relu", name="d1"),
                           tfk.layers.BatchNormalization(name="bn"), tfk.layers.Dense(3, name="d2")], name="tk")


def _marker_lambda_model(api, marker: Path):
    """A model whose Lambda creates `marker` whenever its function runs."""
    # The path is a constant inside the code object (Keras 3 cannot reload lambdas with defaults).
    fn = eval(f"lambda x: (open({str(marker)!r}, 'a').close(), x)[1]")
    model = api.Sequential([api.Input((4,)), api.layers.Dense(2, name="d"), api.layers.Lambda(fn, name="touch")])
    return model


# ------------------------------------------------------------------ Keras 3 -> tf_keras


def test_keras3_functional_keras_file_is_rebuilt_with_identical_outputs(tmp_path):
    original = _keras3_functional()
    path = tmp_path / "k3func.keras"
    original.save(path)
    loaded = load_model(path)
    assert isinstance(loaded, LoadedModel)
    assert isinstance(loaded.model, tfk.Model)
    assert loaded.rebuilt_from_keras3 and loaded.format == "keras" and loaded.name == "k3func"
    assert loaded.saved_by.startswith("keras 3.")
    assert loaded.rebuild_max_abs_error is not None and loaded.rebuild_max_abs_error < 1e-5
    assert loaded.input_shape == (12, 12, 3) and loaded.output_shape == (5,)
    x = np.random.default_rng(7).normal(size=(3, 12, 12, 3)).astype("float32")
    np.testing.assert_allclose(loaded.model(x, training=False).numpy(), original(x, training=False).numpy(),
                               atol=1e-5)
    conv = loaded.model.get_layer("c1")
    assert conv.kernel_regularizer is not None and abs(float(conv.kernel_regularizer.l2) - 1e-4) < 1e-9
    assert any("quantization_config" in note for note in loaded.notes)


def test_keras3_sequential_h5_is_rebuilt(tmp_path):
    original = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, activation="relu"),
                                 keras.layers.Dense(2)], name="k3seq")
    _randomize(original)
    path = tmp_path / "k3seq.h5"
    original.save(path)
    loaded = load_model(path)
    assert loaded.rebuilt_from_keras3 and loaded.format == "h5"
    x = np.random.default_rng(3).normal(size=(5, 8)).astype("float32")
    np.testing.assert_allclose(loaded.model(x).numpy(), original(x).numpy(), atol=1e-6)


def test_keras3_layer_without_tf_keras_equivalent_is_a_clear_error(tmp_path):
    model = keras.Sequential([keras.Input((8,)), keras.layers.RMSNormalization(name="rms"),
                              keras.layers.Dense(2)])
    path = tmp_path / "rms.keras"
    model.save(path)
    with pytest.raises(ModelError, match=r"layer 'rms' has no tf_keras equivalent") as info:
        load_model(path)
    assert "RMSNormalization" in str(info.value) and "tf_keras" in info.value.fix


def test_keras3_option_that_changes_the_maths_is_not_silently_dropped(tmp_path):
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="lora_dense")])
    model.layers[0].enable_lora(2)
    path = tmp_path / "lora.keras"
    model.save(path)
    with pytest.raises(ModelError, match=r"options of layer 'lora_dense' \(Dense\) have no tf_keras equivalent"):
        load_model(path)


# ------------------------------------------------------------------ tf_keras files


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_tf_keras_round_trip(tmp_path, suffix):
    model = _tf_keras_model()
    _randomize(model)
    path = tmp_path / f"tk{suffix}"
    model.save(path)
    loaded = load_model(path)
    assert not loaded.rebuilt_from_keras3 and loaded.rebuild_max_abs_error is None
    assert loaded.format == suffix[1:] and loaded.saved_by.startswith("keras 2.")
    x = np.random.default_rng(0).normal(size=(4, 6)).astype("float32")
    np.testing.assert_allclose(loaded.model(x).numpy(), model(x).numpy(), atol=1e-6)


def test_misnamed_file_loads_by_content(tmp_path):
    """An HDF5 model named .keras still loads: the bytes decide the loader."""
    model = _tf_keras_model()
    h5 = tmp_path / "real.h5"
    model.save(h5)
    misnamed = tmp_path / "misnamed.keras"
    misnamed.write_bytes(h5.read_bytes())
    assert load_model(misnamed).format == "h5"


# ------------------------------------------------------------------ refusing code


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_tf_keras_lambda_refused_without_trust_and_never_run(tmp_path, suffix):
    marker = tmp_path / "lambda_ran"
    path = tmp_path / f"lam{suffix}"
    _marker_lambda_model(tfk, marker).save(path)
    marker.unlink(missing_ok=True)  # building the model ran the lambda once
    with pytest.raises(ModelError) as info:
        load_model(path)
    message = str(info.value)
    assert "Lambda layer 'touch'" in message and "pass --trust-model if you trust this file" in message.lower()
    assert not marker.exists(), "the Lambda's code ran although the file was not trusted"
    loaded = load_model(path, trust_model=True)
    assert loaded.trusted and marker.exists()  # trusted: it loads, and its code does run


def test_keras3_lambda_refused_without_trust_and_rebuilt_with_trust(tmp_path):
    marker = tmp_path / "k3_lambda_ran"
    model = _marker_lambda_model(keras, marker)
    path = tmp_path / "k3lam.keras"
    model.save(path)
    marker.unlink(missing_ok=True)
    with pytest.raises(ModelError, match="Lambda layer 'touch'"):
        load_model(path)
    assert not marker.exists()
    loaded = load_model(path, trust_model=True)
    assert loaded.rebuilt_from_keras3 and loaded.rebuild_max_abs_error < 1e-6 and marker.exists()


@tfk.saving.register_keras_serializable(package="edgesparse_test")
class Scale(tfk.layers.Layer):
    """A trivial custom layer: its class is code the model file does not carry."""

    def call(self, x):
        return x * 2.0


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_custom_layer_refused_without_trust(tmp_path, suffix):
    model = tfk.Sequential([tfk.Input((3,)), Scale(name="scale"), tfk.layers.Dense(2)])
    path = tmp_path / f"custom{suffix}"
    model.save(path)
    with pytest.raises(ModelError) as info:
        load_model(path)
    assert "custom class" in str(info.value) and "Scale" in str(info.value)
    assert "--trust-model" in info.value.fix
    assert load_model(path, trust_model=True).trusted
    assert isinstance(load_model(path, custom_objects={"edgesparse_test>Scale": Scale}).model, tfk.Model)


def test_config_naming_a_foreign_module_is_refused_before_import(tmp_path, monkeypatch):
    """tf_keras imports a config's 'module'; a module that runs code on import must never load."""
    marker = tmp_path / "imported"
    (tmp_path / "evil_mod.py").write_text(f"open({str(marker)!r}, 'a').close()\nDense = None\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    good = tmp_path / "good.keras"
    _tf_keras_model().save(good)
    with zipfile.ZipFile(good) as archive:
        parts = {n: archive.read(n) for n in archive.namelist()}
    config = json.loads(parts["config.json"])
    config["config"]["layers"][1]["module"] = "evil_mod"
    parts["config.json"] = json.dumps(config).encode()
    bad = tmp_path / "bad.keras"
    with zipfile.ZipFile(bad, "w") as archive:
        for name, data in parts.items():
            archive.writestr(name, data)
    with pytest.raises(ModelError, match="module 'evil_mod'"):
        load_model(bad)
    assert not marker.exists() and "evil_mod" not in sys.modules


def test_tf_op_layers_allowed_only_for_pure_tensor_ops(tmp_path):
    inp = tfk.Input((4,))
    out = tf.math.multiply(tfk.layers.Dense(4, name="d")(inp), 2.0)
    path = tmp_path / "op.h5"
    tfk.Model(inp, out).save(path)
    assert load_model(path).output_shape == (4,)

    def edit(layers):
        next(layer for layer in layers if layer["class_name"] == "TFOpLambda")["config"]["function"] = "io.write_file"

    _edit_h5_config(path, edit)
    with pytest.raises(ModelError, match=r"calls tf\.io\.write_file"):
        load_model(path)


def test_savedmodel_metadata_is_vetted(tmp_path):
    marker = tmp_path / "sm_lambda_ran"
    path = tmp_path / "lam_savedmodel"
    _marker_lambda_model(tfk, marker).save(path, save_format="tf")
    marker.unlink(missing_ok=True)
    assert (path / "keras_metadata.pb").is_file()
    with pytest.raises(ModelError, match="Lambda layer 'touch'"):
        load_model(path)
    assert not marker.exists()


# ------------------------------------------------------------------ not a model


def test_missing_path(tmp_path):
    with pytest.raises(ModelError, match="does not exist") as info:
        load_model(tmp_path / "nope.keras")
    assert info.value.where.endswith("nope.keras") and "--model" in info.value.fix


@pytest.mark.parametrize("name,content,match", [
    ("random.h5", bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8)), "unrecognised bytes"),
    ("notes.keras", b"this is a text file, not a model\n", "a text file"),
    ("empty.h5", b"", "an empty file"),
])
def test_garbage_files(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ModelError, match="not a Keras model") as info:
        load_model(path)
    assert match in str(info.value)


def test_unsupported_extension_and_tflite_hint(tmp_path):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"\x08\x07")
    with pytest.raises(ModelError, match=r"Unsupported model file extension.*'\.onnx'"):
        load_model(onnx)
    tfl = tmp_path / "m.tflite"
    tfl.write_bytes(b"\x1c\x00\x00\x00TFL3")
    with pytest.raises(ModelError, match="edgesparse check"):
        load_model(tfl)


def test_zip_without_config_and_weights_only_h5(tmp_path):
    archive = tmp_path / "other.keras"
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("readme.txt", "hi")
    with pytest.raises(ModelError, match=r"without config\.json"):
        load_model(archive)
    weights = tmp_path / "only.weights.h5"
    model = _tf_keras_model()
    model.save_weights(weights)
    with pytest.raises(ModelError, match=r"weights only \(written by save_weights\)"):
        load_model(weights)
    legacy = tmp_path / "legacy.h5"  # the older save_weights layout (layer_names attribute)
    model.save_weights(legacy)
    with pytest.raises(ModelError, match=r"weights only"):
        load_model(legacy)


def test_directory_that_is_not_a_savedmodel(tmp_path):
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(ModelError, match=r"not a SavedModel.*x\.txt"):
        load_model(tmp_path)


def test_savedmodel_without_keras_metadata(tmp_path):
    module = tf.Module()
    module.v = tf.Variable(1.0)
    module.f = tf.function(lambda x: x * module.v, input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "plain"))
    with pytest.raises(ModelError, match="no Keras metadata"):
        load_model(tmp_path / "plain")


def test_two_inputs_are_refused_clearly(tmp_path):
    a, b = tfk.Input((3,), name="a"), tfk.Input((3,), name="b")
    path = tmp_path / "two.keras"
    tfk.Model([a, b], tfk.layers.Add()([a, b])).save(path)
    with pytest.raises(ModelError, match="exactly one input and one output") as info:
        load_model(path)
    assert "2 input(s)" in str(info.value)


def test_safe_name():
    assert safe_name("/x/My Model (v2).keras") == "My_Model_v2"
    assert safe_name("/x/kws_ref_model") == "kws_ref_model"
    assert safe_name("/x/...h5") == "model"


# ------------------------------------------------------------------ MLPerf Tiny reference models


@pytest.mark.parametrize("rel,in_shape,out_shape", [
    ("image_classification/pretrainedResnet.h5", (32, 32, 3), (10,)),
    ("keyword_spotting/kws_ref_model", (49, 10, 1), (12,)),
    ("visual_wake_words/vww_96.h5", (96, 96, 3), (2,)),
    ("anomaly_detection/ad01.h5", (640,), (640,)),
    ("streaming_wakeword/str_ww_ref_model.h5", (30, 1, 40), (3,)),
])
def test_mlperf_tiny_models_load_in_place(mlperf_dir, rel, in_shape, out_shape):
    loaded = load_model(mlperf_dir / rel)
    assert isinstance(loaded.model, tfk.Model) and not loaded.rebuilt_from_keras3
    assert loaded.input_shape == in_shape and loaded.output_shape == out_shape
    assert loaded.path == mlperf_dir / rel and loaded.name == Path(rel).stem
    y = loaded.model(np.zeros((1, *in_shape), np.float32), training=False).numpy()
    assert y.shape == (1, *out_shape) and np.all(np.isfinite(y))


def test_keras3_wider_layer_set_is_rebuilt(tmp_path):
    """Renamed options (LeakyReLU), wrappers, RNNs, attention and a nested Sequential."""
    L = keras.layers
    seq_in = keras.Input((10, 4), name="seq")
    x = L.Bidirectional(L.LSTM(4, return_sequences=True), name="bilstm")(seq_in)
    x = L.TimeDistributed(L.Dense(6), name="td")(x)
    x = L.MultiHeadAttention(2, 3, name="mha")(x, x)
    x = L.LeakyReLU(0.2, name="leaky")(x)
    x = keras.Sequential([L.Dense(5), L.BatchNormalization()], name="inner")(L.Flatten(name="flat")(x))
    model = keras.Model(seq_in, L.Dense(3, activation="softmax", name="out")(x), name="zoo")
    _randomize(model)
    path = tmp_path / "zoo.keras"
    model.save(path)
    loaded = load_model(path)
    assert loaded.rebuild_max_abs_error < 1e-5
    assert abs(float(loaded.model.get_layer("leaky").alpha) - 0.2) < 1e-7


def _edit_h5_config(path: Path, edit) -> None:
    import h5py

    with h5py.File(path, "r+") as handle:
        config = json.loads(handle.attrs["model_config"])
        edit(config["config"]["layers"])
        handle.attrs["model_config"] = json.dumps(config)


@pytest.mark.parametrize("edit,match", [
    (lambda layers: layers[2]["inbound_nodes"][0][0].__setitem__(0, "ghost"), "from node 0 of 'ghost'"),
    (lambda layers: layers[1]["inbound_nodes"][0][0].__setitem__(0, layers[2]["name"]), "a cycle through layer"),
])
def test_malformed_graph_fails_instead_of_hanging(tmp_path, edit, match):
    """tf_keras re-queues unresolvable nodes forever; such files must fail fast."""
    inp = tfk.Input((4,), name="x")
    out = tfk.layers.Dense(2, name="b")(tfk.layers.Dense(3, name="a")(inp))
    path = tmp_path / "graph.h5"
    tfk.Model(inp, out).save(path)
    _edit_h5_config(path, edit)
    with pytest.raises(ModelError, match=match):
        load_model(path)

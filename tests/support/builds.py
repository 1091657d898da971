"""Tiny int8 models and build directories in the shape `edgesparse build` writes them (deploy, estimate tests).

`make_build_dir` writes model.tflite, report.json, sample.npz and labels.txt; `build_tiny_models` converts
small tf_keras models once per session.
"""

import hashlib
import json
from pathlib import Path

import numpy as np

from edgesparse.builddir import ARTIFACT, LABELS, REPORT_JSON, SAMPLE
from edgesparse.data import audio

KWS_LABELS = ["down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes", "silence", "unknown"]
DIGITS_LABELS = [str(i) for i in range(10)]


def _tone_clip(seed: int) -> np.ndarray:
    """A 1 s 'utterance': two chirped tones in noise, different per seed (deterministic)."""
    rng = np.random.default_rng(seed)
    t = np.arange(audio.CLIP_SAMPLES) / audio.SAMPLE_RATE
    f0, f1 = 200 + 60 * (seed % 12), 900 + 40 * (seed % 7)
    envelope = np.exp(-((t - 0.5) / (0.12 + 0.01 * (seed % 5))) ** 2)
    x = envelope * (np.sin(2 * np.pi * f0 * t * (1 + 0.3 * t)) + 0.5 * np.sin(2 * np.pi * f1 * t))
    return (0.6 * x + 0.01 * rng.normal(size=t.size)).astype(np.float32)


def kws_wav_bytes(seed: int) -> bytes:
    """A 16 kHz WAV of `_tone_clip(seed)`: a test recording for the keyword-spotting app."""
    return audio.wav_bytes(_tone_clip(seed))


def _convert_int8(model, representative: np.ndarray, sparse: bool = False) -> bytes:
    from edgesparse.pipeline.tf_env import import_tf

    tf, _ = import_tf()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT] + ([tf.lite.Optimize.EXPERIMENTAL_SPARSITY] if sparse else [])
    converter.representative_dataset = lambda: ([representative[i:i + 1]] for i in range(len(representative)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def build_tiny_models(cache: Path) -> dict[str, tuple[bytes, np.ndarray, np.ndarray]]:
    """{'kws' | 'digits' | 'sparse_fc': (tflite, x_val, y_val)}; built once per session, cached as files.

    'sparse_fc' is an 8x8 MLP whose hidden Dense kernels are 80% zero in blocks of 16
    inputs, converted with EXPERIMENTAL_SPARSITY: FULLY_CONNECTED reads 1x16 block-sparse
    int8 weights itself (no DENSIFY), as in a real rpi4 build of the digits demo.
    """
    names = ("kws", "digits", "sparse_fc")
    files = {name: (cache / f"{name}.tflite", cache / f"{name}.npz") for name in names}
    if all(a.is_file() and b.is_file() for a, b in files.values()):
        out = {}
        for name, (model_path, npz_path) in files.items():
            with np.load(npz_path) as npz:
                out[name] = (model_path.read_bytes(), npz["x_val"], npz["y_val"])
        return out
    from edgesparse.pipeline.tf_env import import_tf

    _, keras = import_tf()
    keras.utils.set_random_seed(0)
    layers = keras.layers

    # DS-CNN-like: conv, depthwise-separable block, average pool, dense, softmax.
    inputs = keras.Input((49, 10, 1))
    x = layers.Conv2D(16, (10, 4), strides=(2, 2), padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Conv2D(16, 1, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.AveragePooling2D((25, 5))(x)
    x = layers.Flatten()(x)
    outputs = layers.Softmax()(layers.Dense(12)(x))
    kws_model = keras.Model(inputs, outputs)
    kws_x = np.stack([audio.features_for_model(_tone_clip(i)) for i in range(24)]).astype(np.float32)
    kws_y = np.arange(24) % 12

    # Digits-like: 8x8x1 on the 0..16 scale of scikit-learn's digits.
    inputs = keras.Input((8, 8, 1))
    x = layers.Conv2D(8, 3, padding="same", activation="relu")(inputs)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Flatten()(x)
    outputs = layers.Softmax()(layers.Dense(10)(x))
    digits_model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(1)
    digits_x = rng.integers(0, 17, size=(24, 8, 8, 1)).astype(np.float32)
    digits_y = np.arange(24) % 10

    inputs = keras.Input((8, 8, 1))
    x = layers.Flatten()(inputs)
    x = layers.Dense(256, activation="relu")(x)
    x = layers.Dense(128, activation="relu")(x)
    sparse_model = keras.Model(inputs, layers.Softmax()(layers.Dense(10)(x)))
    for layer in sparse_model.layers:
        if isinstance(layer, layers.Dense) and layer.units > 10:
            kernel, bias = layer.get_weights()
            keep = rng.random((kernel.shape[0] // 16, kernel.shape[1])) < 0.2
            layer.set_weights([kernel * np.repeat(keep, 16, axis=0), bias])

    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, model, xs, ys in (("kws", kws_model, kws_x, kws_y), ("digits", digits_model, digits_x, digits_y),
                                ("sparse_fc", sparse_model, digits_x, digits_y)):
        data = _convert_int8(model, xs, sparse=name == "sparse_fc")
        files[name][0].write_bytes(data)
        np.savez(files[name][1], x_train=xs, y_train=ys, x_val=xs, y_val=ys)
        out[name] = (data, xs, ys)
    return out


def make_build_dir(path: Path, model_bytes: bytes, *, name: str, input_shape, num_classes: int,
                   profile: str = "rpi4", runtime: str = "litert", device_class: str = "sbc",
                   data_source: str | None = None, passed: bool = True, labels: list[str] | None = None,
                   sample: tuple[np.ndarray, np.ndarray] | None = None) -> Path:
    """A build directory shaped like `edgesparse build`'s: model.tflite, report.json, and (when given)
    labels.txt and sample.npz (x: held-out inputs as the model takes them, y: their labels)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / ARTIFACT).write_bytes(model_bytes)
    report = {
        "schema_version": 1,
        "tool": {"name": "edgesparse", "version": "test"},
        "profile": {"name": profile, "runtime": runtime, "class": device_class},
        "model": {"name": name, "input_shape": list(input_shape), "num_classes": num_classes,
                  "source": data_source or f"test:{name}"},
        "data": {"source": data_source or f"test:{name}", "num_classes": num_classes},
        "sizes": {"artifact_bytes": len(model_bytes)},
        "accuracy": {}, "verification": {}, "check": None,
        "passed": passed, "failures": [] if passed else ["accuracy drop 9.00 points exceeds --max-accuracy-drop 2"],
        "files": {ARTIFACT: {"bytes": len(model_bytes), "sha256": hashlib.sha256(model_bytes).hexdigest()}},
    }
    if labels:
        report["model"]["labels"] = labels
        (path / LABELS).write_text("".join(f"{label}\n" for label in labels))
    if sample is not None:
        x, y = sample
        np.savez(path / SAMPLE, x=np.asarray(x[:16], np.float32), y=np.asarray(y[:16], np.int64))
    (path / REPORT_JSON).write_text(json.dumps(report, indent=2))
    return path



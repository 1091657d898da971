"""`edgesparse deploy`: bundles, and a real push over ssh to a throwaway sshd on 127.0.0.1.

The build directories here are made by `make_build_dir` (model.tflite + report.json
in the shape `pipeline.build` writes) from two tiny int8 models built in the test
session: a DS-CNN-like keyword spotter (1, 49, 10, 1) -> 12 and a digits-like
CNN (1, 8, 8, 1) -> 10. The other deploy test modules import these helpers.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgesparse import audio

KWS_LABELS = ["_silence_", "_unknown_", "yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go"]
REPO = Path(__file__).resolve().parent.parent


# ----------------------------------------------------------------------------- tiny models

def _tone_clip(seed: int) -> np.ndarray:
    """A 1 s 'utterance': two chirped tones in noise, different per seed (deterministic)."""
    rng = np.random.default_rng(seed)
    t = np.arange(audio.CLIP_SAMPLES) / audio.SAMPLE_RATE
    f0, f1 = 200 + 60 * (seed % 12), 900 + 40 * (seed % 7)
    envelope = np.exp(-((t - 0.5) / (0.12 + 0.01 * (seed % 5))) ** 2)
    x = envelope * (np.sin(2 * np.pi * f0 * t * (1 + 0.3 * t)) + 0.5 * np.sin(2 * np.pi * f1 * t))
    return (0.6 * x + 0.01 * rng.normal(size=t.size)).astype(np.float32)


def kws_wav_bytes(seed: int) -> bytes:
    return audio.wav_bytes(_tone_clip(seed))


def _convert_int8(model, representative: np.ndarray) -> bytes:
    from edgesparse.tf_env import import_tf

    tf, _ = import_tf()
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([representative[i:i + 1]] for i in range(len(representative)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


def build_tiny_models(cache: Path) -> dict[str, tuple[bytes, np.ndarray, np.ndarray]]:
    """{'kws': (tflite, x_val, y_val), 'digits': (...)}; built once per session, cached as files."""
    files = {name: (cache / f"{name}.tflite", cache / f"{name}.npz") for name in ("kws", "digits")}
    if all(a.is_file() and b.is_file() for a, b in files.values()):
        out = {}
        for name, (model_path, npz_path) in files.items():
            with np.load(npz_path) as npz:
                out[name] = (model_path.read_bytes(), npz["x_val"], npz["y_val"])
        return out
    from edgesparse.tf_env import import_tf

    tf, keras = import_tf()
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

    cache.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, model, xs, ys in (("kws", kws_model, kws_x, kws_y), ("digits", digits_model, digits_x, digits_y)):
        data = _convert_int8(model, xs)
        files[name][0].write_bytes(data)
        np.savez(files[name][1], x_train=xs, y_train=ys, x_val=xs, y_val=ys)
        out[name] = (data, xs, ys)
    return out


def make_build_dir(path: Path, model_bytes: bytes, *, name: str, input_shape, num_classes: int,
                   profile: str = "rpi4", runtime: str = "litert", device_class: str = "sbc",
                   data_source: str | None = None, passed: bool = True, labels: list[str] | None = None) -> Path:
    """A build directory shaped like `pipeline.build`'s: model.tflite + report.json."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "model.tflite").write_bytes(model_bytes)
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
        "files": {"model.tflite": {"bytes": len(model_bytes), "sha256": hashlib.sha256(model_bytes).hexdigest()}},
    }
    if labels:
        report["data"]["labels"] = labels
    (path / "report.json").write_text(json.dumps(report, indent=2))
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    return build_tiny_models(tmp_path_factory.getbasetemp() / "tiny_models")


@pytest.fixture()
def kws_build(tmp_path, tiny_models):
    data, x, y = tiny_models["kws"]
    npz = tmp_path / "kws_data.npz"
    np.savez(npz, x_val=x, y_val=y)
    build = make_build_dir(tmp_path / "build" / "kws-nrf52840", data, name="kws", input_shape=(49, 10, 1),
                           num_classes=12, profile="nrf52840", runtime="tflm", device_class="mcu",
                           data_source=str(npz), labels=KWS_LABELS)
    wav = tmp_path / "clip.wav"
    wav.write_bytes(kws_wav_bytes(2))
    return build, wav


@pytest.fixture()
def digits_build(tmp_path, tiny_models):
    data, x, y = tiny_models["digits"]
    npz = tmp_path / "digits_data.npz"
    np.savez(npz, x_val=x, y_val=y)
    return make_build_dir(tmp_path / "build" / "digits-rpi4", data, name="digits", input_shape=(8, 8, 1),
                          num_classes=10, data_source=str(npz))

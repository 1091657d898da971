"""`edgesparse build --model M --data DIR`: image folders and Speech Commands wav folders, end to end.

Small generated folders and tiny models, one fine-tuning epoch: each build takes
a few seconds beyond TensorFlow's import.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from edgesparse import data
from edgesparse.cli.commands import main
from edgesparse.data import audio
from edgesparse.pipeline.demos import kws

pytestmark = pytest.mark.slow

PER_CLASS = 20
WAV_VOICES = ("en-us", "en-gb", "en-us+f2")        # voice 0 trains, 1 validates, 2 tests (list files)


def _build(*args: str):
    return CliRunner().invoke(main, ["build", *args], catch_exceptions=False)


@pytest.fixture(scope="module")
def digits_folder(tmp_path_factory) -> Path:
    """20 scikit-learn digits per class as 16x16 PNGs (8x8 upscaled): the build resizes them back to 8x8."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("folders") / "digits"
    digits = load_digits()
    for c in range(10):
        (root / f"digit_{c}").mkdir(parents=True)
        for i in np.flatnonzero(digits.target == c)[:PER_CLASS]:
            pixels = np.round(digits.images[i] * 255 / 16).astype(np.uint8)
            Image.fromarray(pixels, "L").resize((16, 16), Image.NEAREST).save(root / f"digit_{c}" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def image_model(digits_folder, tmp_path_factory) -> Path:
    """A tiny CNN for 8x8x1, trained briefly on the folder itself so its dense accuracy is meaningful."""
    from edgesparse.pipeline.tf_env import import_tf

    _, keras = import_tf()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
        keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10, activation="softmax"),
    ], name="tiny_digits")
    ds = data.load_image_folder(digits_folder, input_shape=(8, 8, 1))
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(ds.x_train, ds.y_train, epochs=30, batch_size=32, verbose=0)
    path = tmp_path_factory.mktemp("models") / "tiny_digits.keras"
    model.save(path)
    return path


@pytest.fixture(scope="module")
def wav_folder(tmp_path_factory) -> Path:
    """Speech Commands layout: every keyword and one 'unknown' word, three espeak-ng voices, split by list files."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    root = tmp_path_factory.mktemp("folders") / "speech"
    val, test = [], []
    for word in (*kws.KEYWORDS, "marvin"):
        (root / word).mkdir(parents=True)
        for v, voice in enumerate(WAV_VOICES):
            name = f"voice{v}_nohash_0.wav"
            (root / word / name).write_bytes(audio.wav_bytes(kws.synthesize(word, voice)))
            (val if v == 1 else test if v == 2 else []).append(f"{word}/{name}")
    (root / "validation_list.txt").write_text("\n".join(val) + "\n")
    (root / "testing_list.txt").write_text("\n".join(test) + "\n")
    return root


@pytest.fixture(scope="module")
def kws_model(wav_folder, tmp_path_factory) -> Path:
    """A DS-CNN trained briefly on the folder itself: an untrained one's .tflite gives every clip the same output,
    which the build rightly fails (issue 9 item 5)."""
    from edgesparse.pipeline.tf_env import import_tf

    keras = import_tf()[1]
    keras.utils.set_random_seed(0)
    model = kws.build_ds_cnn(filters=32)     # 32: conv_1 and pw_i reach min_params
    train = kws.load_folder(wav_folder).dataset
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(train.x_train, train.y_train, epochs=30, batch_size=8, verbose=0)
    path = tmp_path_factory.mktemp("models") / "kws_tiny.keras"
    model.save(path)
    return path


def test_build_from_an_image_folder(digits_folder, image_model, tmp_path):
    out = tmp_path / "build"
    result = _build("--model", str(image_model), "--data", str(digits_folder), "--profile", "rpi4",
                    "--epochs", "1", "--max-accuracy-drop", "100", "--out", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["n_train"] == 160 and report["data"]["n_val"] == 40
    assert str(digits_folder) in report["data"]["source"] and "image folder" in report["data"]["source"]
    assert report["model"]["labels"] == [f"digit_{c}" for c in range(10)]
    assert report["model"]["input_shape"] == [8, 8, 1]
    assert report["accuracy"]["dense_float"] >= 0.6             # the folder's images are the training scale
    from edgesparse.runtime.verify import run_tflite

    ds = data.load_image_folder(digits_folder, input_shape=(8, 8, 1))
    outputs = run_tflite((out / "model.tflite").read_bytes(), ds.x_val, runtime="litert").outputs
    assert np.mean(np.argmax(outputs, axis=1) == ds.y_val) == pytest.approx(report["accuracy"]["tflite"])
    # deploy's test input and class names come from the build directory, not from the folder again
    assert (out / "labels.txt").read_text().splitlines() == [f"digit_{c}" for c in range(10)]
    with np.load(out / "sample.npz") as sample:
        np.testing.assert_array_equal(sample["x"], ds.x_val[:16])
        np.testing.assert_array_equal(sample["y"], ds.y_val[:16])


def test_build_from_a_speech_commands_wav_folder(wav_folder, kws_model, tmp_path):
    out = tmp_path / "build"
    result = _build("--model", str(kws_model), "--data", str(wav_folder), "--profile", "nrf52840",
                    "--epochs", "1", "--batch-size", "4", "--max-accuracy-drop", "100", "--out", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["data"]["source"] == f"folder:{wav_folder}"
    assert report["model"]["labels"] == list(kws.LABELS)
    splits = kws.load_folder(wav_folder)
    assert report["data"]["n_train"] == splits.dataset.n_train and report["data"]["n_val"] == splits.dataset.n_val
    # the held-out list (testing_list.txt, plus generated silence) is scored on the artifact
    assert report["accuracy"]["test"]["n_samples"] == len(splits.y_test) >= 11
    assert report["profile"]["runtime"] == "tflm"
    assert (out / "labels.txt").read_text().splitlines() == list(kws.LABELS)
    with np.load(out / "sample.npz") as sample:
        n = min(16, splits.dataset.n_val)
        assert sample["x"].shape == (n, 49, 10, 1)
        np.testing.assert_array_equal(sample["x"], splits.dataset.x_val[:n])
        np.testing.assert_array_equal(sample["y"], splits.dataset.y_val[:n])


def test_folder_errors_are_one_message_exit_2(digits_folder, wav_folder, image_model, kws_model, tmp_path):
    other = tmp_path / "other"
    (other / "a").mkdir(parents=True)
    (other / "a" / "x.tif").write_bytes(b"II*\0")
    result = CliRunner().invoke(main, ["build", "--model", str(image_model), "--data", str(other),
                                       "--out", str(tmp_path / "o1")])
    assert result.exit_code == 2
    assert "The data folder holds no images or recordings in class sub-folders" in result.output
    assert "no images or recordings" in result.output and ".npz" in result.output and "1 .tif" in result.output

    result = CliRunner().invoke(main, ["build", "--model", str(image_model), "--data", str(wav_folder),
                                       "--out", str(tmp_path / "o2")])
    assert result.exit_code == 2 and "needs a keyword-spotting model" in result.output
    assert "(8, 8, 1) and 10 outputs" in result.output

    three = tmp_path / "three"
    for c in range(3):
        shutil.copytree(digits_folder / f"digit_{c}", three / f"digit_{c}")
    result = CliRunner().invoke(main, ["build", "--model", str(image_model), "--data", str(three),
                                       "--out", str(tmp_path / "o3")])
    assert result.exit_code == 2 and "do not match the model's outputs" in result.output

    words = tmp_path / "words"
    shutil.copytree(wav_folder / "marvin", words / "marvin")
    result = CliRunner().invoke(main, ["build", "--model", str(kws_model), "--data", str(words),
                                       "--out", str(tmp_path / "o4")])
    assert result.exit_code == 2 and "keyword" in result.output and "kws.load_folder" in result.output
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 5))


def test_a_folder_build_deploys_with_its_own_preprocessing(digits_folder, image_model, tmp_path):
    """deploy finds the folder's validation sample, maps pictures as pixel/255 and never inverts them."""
    out = tmp_path / "build"
    assert _build("--model", str(image_model), "--data", str(digits_folder), "--profile", "rpi4",
                  "--epochs", "1", "--max-accuracy-drop", "100", "--out", str(out)).exit_code == 0
    bundle = tmp_path / "bundle"
    result = CliRunner().invoke(main, ["deploy", str(out), "--target", "rpi", "--out", str(bundle)])
    assert result.exit_code == 0, result.output
    config = json.loads((bundle / "config.json").read_text())
    assert config["image"]["invert"] is False and config["image"]["scale"] == pytest.approx(1 / 255)
    assert "pillow" in (bundle / "requirements.txt").read_text()

    picture = next((digits_folder / "digit_3").glob("*.png"))
    bundle2 = tmp_path / "bundle_png"
    result = CliRunner().invoke(main, ["deploy", str(out), "--target", "rpi", "--out", str(bundle2),
                                       "--sample", str(picture)])
    assert result.exit_code == 0, result.output
    expected = json.loads((bundle2 / "expected.json").read_text())
    from edgesparse.runtime.verify import run_tflite

    x = data.read_image(picture, input_shape=(8, 8, 1))
    local = run_tflite((out / "model.tflite").read_bytes(), x[None], runtime="litert").outputs[0]
    assert expected["label"] == f"digit_{int(np.argmax(local))}"

"""The on-device apps in demos/rpi: same features as training, same predictions as verify.run_tflite.

The apps run as a device runs them: a subprocess started from the bundle
directory, with TensorFlow made unimportable.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.builds import kws_wav_bytes

from edgesparse.data import audio
from edgesparse.deploy import demos_dir, make_bundle
from edgesparse.runtime import verify

# Run a bundle's app with TensorFlow blocked: an import of it raises ImportError.
_NO_TF = ("import runpy, sys; sys.modules['tensorflow'] = None; sys.modules['tf_keras'] = None; "
          "app = sys.argv[1]; sys.argv = sys.argv[1:]; sys.path.insert(0, app.rsplit('/', 1)[0]); "
          "runpy.run_path(app, run_name='__main__')")


def run_app(bundle: Path, app: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _NO_TF, str(bundle / app), *args], capture_output=True,
                          text=True, timeout=300, cwd=bundle)


def json_lines(proc: subprocess.CompletedProcess) -> list[dict]:
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


@pytest.fixture()
def kws_bundle(kws_build, tmp_path):
    build, wav = kws_build
    return make_bundle(build, "rpi", tmp_path / "kws-rpi", sample=wav), build


@pytest.fixture()
def digits_bundle(digits_build, tmp_path):
    return make_bundle(digits_build, "rpi", tmp_path / "digits-rpi"), digits_build


def test_bundle_carries_the_training_feature_code_verbatim(kws_bundle):
    bundle, _ = kws_bundle
    shipped = bundle.path / "lib" / "edgesparse" / "data" / "audio.py"
    assert shipped.read_bytes() == Path(audio.__file__).read_bytes()
    repo_demos = demos_dir()
    # The repository holds no second copy of the feature code.
    assert not list(repo_demos.rglob("audio.py"))


def test_device_features_equal_training_features_bitwise(kws_bundle, tmp_path):
    """The bundled copy of audio.py, imported as the device imports it, gives the same float32 bits."""
    bundle, _ = kws_bundle
    wavs = []
    for seed in (3, 4, 5):
        path = tmp_path / f"clip{seed}.wav"
        path.write_bytes(kws_wav_bytes(seed))
        wavs.append(path)
    # A 44.1 kHz stereo recording exercises the resampler and the channel mix too.
    stereo = np.stack([np.sin(np.linspace(0, 800, 44100)), np.cos(np.linspace(0, 500, 44100))], 1) * 0.3
    import wave

    with wave.open(str(tmp_path / "stereo.wav"), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(44100)
        out.writeframes((stereo * 32767).astype("<i2").tobytes())
    wavs.append(tmp_path / "stereo.wav")
    code = ("import sys, numpy as np; sys.path.insert(0, sys.argv[1]); from edgesparse.data import audio; "
            "assert audio.__file__.startswith(sys.argv[1]), audio.__file__; "
            "xs = [audio.features_for_model(*audio.read_wav(p)) for p in sys.argv[3:]]; "
            "np.save(sys.argv[2], np.stack(xs))")
    out = tmp_path / "device_features.npy"
    subprocess.run([sys.executable, "-c", code, str(bundle.path / "lib"), str(out), *map(str, wavs)],
                   check=True, cwd=tmp_path)
    device = np.load(out)
    training = np.stack([audio.features_for_model(*audio.read_wav(p)) for p in wavs])
    assert device.dtype == np.float32 and device.shape == (4, 49, 10, 1)
    assert device.tobytes() == training.tobytes()


def test_kws_app_predictions_equal_verify_run_tflite(kws_bundle, tmp_path):
    bundle, build = kws_bundle
    wavs = []
    for seed in range(6):
        path = tmp_path / f"w{seed}.wav"
        path.write_bytes(kws_wav_bytes(seed))
        wavs.append(path)
    records = json_lines(run_app(bundle.path, "kws_app.py", *map(str, wavs), "--json", "--repeat", "2"))
    x = np.stack([audio.features_for_model(*audio.read_wav(p)) for p in wavs])
    local = verify.run_tflite((build / "model.tflite").read_bytes(), x, runtime="litert")
    labels = (bundle.path / "labels.txt").read_text().split()
    for record, scores, features in zip(records, np.asarray(local.outputs).reshape(len(wavs), -1), x):
        assert record["scores"] == [float(s) for s in scores]
        assert record["label"] == labels[int(np.argmax(scores))]
        assert record["features_sha256"] == hashlib.sha256(features.tobytes()).hexdigest()
        assert record["latency_ms"] > 0 and record["latency_runs"] == 2
        assert record["runtime"].startswith("ai_edge_litert")


def test_kws_app_takes_mfcc_npy_files_as_well_as_wavs(kws_bundle, tiny_models, tmp_path):
    """A .npy of one model input (the build's sample) is classified as it is, like the same features from a wav."""
    bundle, build = kws_bundle
    _, x, _ = tiny_models["kws"]
    wav = tmp_path / "w.wav"
    wav.write_bytes(kws_wav_bytes(7))
    from_wav = audio.features_for_model(*audio.read_wav(wav))
    np.save(tmp_path / "w.npy", from_wav)
    np.save(tmp_path / "x3.npy", x[3].reshape(49, 10))                  # any shape with 490 values
    records = json_lines(run_app(bundle.path, "kws_app.py", str(wav), str(tmp_path / "w.npy"),
                                 str(tmp_path / "x3.npy"), "--json", "--repeat", "1"))
    assert records[0]["scores"] == records[1]["scores"]
    assert records[0]["features_sha256"] == records[1]["features_sha256"]
    local = verify.run_tflite((build / "model.tflite").read_bytes(), x[3:4], runtime="litert")
    assert records[2]["scores"] == [float(s) for s in np.asarray(local.outputs).reshape(-1)]
    assert records[2]["features_sha256"] == hashlib.sha256(x[3].astype(np.float32).tobytes()).hexdigest()


def test_kws_app_plain_output_names_label_score_latency(kws_bundle):
    bundle, _ = kws_bundle
    proc = run_app(bundle.path, "kws_app.py")                     # no argument: the bundled test input
    assert proc.returncode == 0, proc.stderr
    expected = json.loads((bundle.path / "expected.json").read_text())
    assert f": {expected['label']}  score {expected['score']:.3f}  latency " in proc.stdout
    assert " ms  [ai_edge_litert" in proc.stdout


def test_vision_app_npy_predictions_equal_verify_run_tflite(digits_bundle, tiny_models, tmp_path):
    bundle, build = digits_bundle
    _, x, _ = tiny_models["digits"]
    paths = []
    for i in range(5):
        path = tmp_path / f"d{i}.npy"
        np.save(path, x[i])
        paths.append(path)
    records = json_lines(run_app(bundle.path, "vision_app.py", *map(str, paths), "--json"))
    local = verify.run_tflite((build / "model.tflite").read_bytes(), x[:5], runtime="litert")
    for record, scores in zip(records, np.asarray(local.outputs).reshape(5, -1)):
        assert record["scores"] == [float(s) for s in scores]
        assert record["index"] == int(np.argmax(scores))


def test_vision_app_reads_pictures_resized_and_grayscaled(digits_bundle, tiny_models, tmp_path):
    """A 64x64 RGB picture of a digit sample goes through PIL, grayscale, resize and the 0..16 mapping."""
    from PIL import Image

    bundle, _ = digits_bundle
    _, x, _ = tiny_models["digits"]
    ink = x[0, :, :, 0]
    pixels = np.round(255.0 - ink * 255.0 / 16.0).astype(np.uint8)      # dark ink on white paper
    Image.fromarray(pixels, "L").convert("RGB").resize((64, 64), Image.NEAREST).save(tmp_path / "digit.png")
    Image.fromarray(pixels, "L").save(tmp_path / "digit8.png")
    records = json_lines(run_app(bundle.path, "vision_app.py", str(tmp_path / "digit.png"),
                                 str(tmp_path / "digit8.png"), "--json"))
    assert len(records) == 2 and all(0 <= r["index"] < 10 for r in records)
    # At the model's own size the picture maps back to the training scale, so the label agrees with the .npy.
    np.save(tmp_path / "digit.npy", x[0])
    reference = json_lines(run_app(bundle.path, "vision_app.py", str(tmp_path / "digit.npy"), "--json"))[0]
    assert records[1]["label"] == reference["label"]


def test_apps_fail_clearly_on_bad_input(kws_bundle, digits_bundle, tmp_path):
    kws, _ = kws_bundle
    digits, _ = digits_bundle
    (tmp_path / "not.wav").write_bytes(b"hello")
    proc = run_app(kws.path, "kws_app.py", str(tmp_path / "not.wav"))
    assert proc.returncode == 2 and "Not a readable WAV file" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_app(kws.path, "kws_app.py", str(tmp_path / "missing.wav"))
    assert proc.returncode == 2 and "missing.wav" in proc.stderr and "Traceback" not in proc.stderr
    np.save(tmp_path / "short.npy", np.zeros(10, np.float32))
    proc = run_app(kws.path, "kws_app.py", str(tmp_path / "short.npy"))
    assert proc.returncode == 2 and "the model takes (49, 10, 1) MFCC features" in proc.stderr
    (tmp_path / "garbage.npy").write_bytes(b"\x93NUMPY garbage")
    proc = run_app(kws.path, "kws_app.py", str(tmp_path / "garbage.npy"))
    assert proc.returncode == 2 and "not a numpy .npy array" in proc.stderr and "Traceback" not in proc.stderr
    np.save(tmp_path / "wrong.npy", np.zeros((3, 3)))
    proc = run_app(digits.path, "vision_app.py", str(tmp_path / "wrong.npy"))
    assert proc.returncode == 2 and "the model takes (8, 8, 1)" in proc.stderr
    proc = run_app(digits.path, "vision_app.py", str(tmp_path / "garbage.npy"))
    assert proc.returncode == 2 and "not a numpy .npy array" in proc.stderr and "allow_pickle" not in proc.stderr
    proc = run_app(digits.path, "vision_app.py", "--runtime", "tflite_runtime")
    if proc.returncode != 0:                                    # tflite-runtime is not in the dev venv
        assert proc.returncode == 2 and "no TFLite interpreter is installed" in proc.stderr


def test_microphone_mode_without_sounddevice_says_what_to_install(kws_bundle):
    bundle, _ = kws_bundle
    code = ("import sys; sys.modules['sounddevice'] = None; sys.argv = ['kws_app.py', '--mic']; "
            "sys.path.insert(0, '.'); import runpy; runpy.run_path('kws_app.py', run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=bundle.path, timeout=120)
    assert proc.returncode == 2
    assert "--mic needs the sounddevice package" in proc.stderr


def test_app_sources_import_no_tensorflow():
    import ast

    for path in (demos_dir() / "rpi").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] in ("tensorflow", "tf_keras", "keras", "scipy") for n in names), path

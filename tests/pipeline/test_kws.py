"""Keyword-spotting demo: synthetic espeak-ng data, Speech Commands folders, DS-CNN to int8 LiteRT.

Real espeak-ng, real TensorFlow, tiny sizes: a 12-class set of 4 clips per class
from 14 voices, and DS-CNNs a few filters wide.
"""

import shutil
import time

import numpy as np
import pytest

from edgesparse import data
from edgesparse.data import audio
from edgesparse.errors import DataError
from edgesparse.pipeline.demos import kws

TINY = kws.GenerationOptions(
    clips_per_class=4, unknown_words=("cat", "house", "zero"), accents=("en-us", "en-gb"),
    variants=("m1", "m3", "m7", "f1", "f2", "f4", "klatt"))

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None,
                                  reason="espeak-ng is not installed (make system-deps installs it)")


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory):
    """A cache directory holding the tiny synthetic set, generated once for this module."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    cache = tmp_path_factory.mktemp("kws-cache")
    events = []
    kws.synthetic_splits(TINY, cache=cache, progress=lambda e, f: events.append((e, f)))
    assert [e for e, _ in events] == ["demo_data_begin", "demo_data_end"]
    return cache


def _arrays(splits):
    d = splits.dataset
    return [d.x_train, d.y_train, d.x_val, d.y_val, splits.x_test, splits.y_test]


@needs_espeak
def test_generation_has_every_class_in_every_split(tiny_cache):
    splits = kws.synthetic_splits(TINY, cache=tiny_cache)
    d = splits.dataset
    assert d.labels == list(kws.LABELS) and d.num_classes == 12
    assert d.labels[:10] == sorted(kws.KEYWORDS) and d.labels[10:] == ["silence", "unknown"]
    for x, y, n in ((d.x_train, d.y_train, 2), (d.x_val, d.y_val, 1), (splits.x_test, splits.y_test, 1)):
        assert x.shape == (12 * n, *audio.FEATURE_SHAPE) and x.dtype == np.float32
        assert np.all(np.isfinite(x))
        assert np.bincount(y, minlength=12).tolist() == [n] * 12


@needs_espeak
def test_clips_are_one_second_at_16_khz():
    plan = kws.plan_clips(TINY)
    for clip in (plan[0][0], next(c for c in plan[0] if c.word is None)):
        wave = kws.render_clip(clip, TINY)
        assert wave.shape == (16000,) and wave.dtype == np.float32
        assert 0 < np.max(np.abs(wave)) <= 1.0
    raw = kws.synthesize("yes", "en-us+m3")
    assert raw.dtype == np.float32 and 0.2 * 16000 < len(raw) < 16000    # resampled from 22.05 kHz


@needs_espeak
def test_generation_is_deterministic_and_cached(tiny_cache, tmp_path, monkeypatch):
    path = kws.synthetic_path(TINY, tiny_cache)
    stamp = path.stat().st_mtime_ns
    cached = _arrays(kws.synthetic_splits(TINY, cache=tiny_cache))
    again = _arrays(kws.synthetic_splits(TINY, cache=False, workers=3))     # generated anew, kept nowhere
    assert all(a.tobytes() == b.tobytes() for a, b in zip(cached, again))
    # no espeak-ng on PATH: the cached set still loads, so nothing is regenerated
    monkeypatch.setenv("PATH", str(tmp_path))
    started = time.perf_counter()
    loaded = _arrays(kws.synthetic_splits(TINY, cache=tiny_cache))
    assert time.perf_counter() - started < 2.0
    assert all(a.tobytes() == b.tobytes() for a, b in zip(cached, loaded))
    assert path.stat().st_mtime_ns == stamp
    # another seed is another data set, in another file
    assert kws.synthetic_path(kws.GenerationOptions(seed=1)) != kws.synthetic_path(kws.GenerationOptions())


@needs_espeak
def test_a_corrupt_cache_file_is_regenerated(tiny_cache, tmp_path):
    good = kws.synthetic_path(TINY, tiny_cache).read_bytes()
    broken = kws.synthetic_path(TINY, tmp_path)
    broken.write_bytes(good[:1000])                      # a truncated file, as from a full disk
    regenerated = _arrays(kws.synthetic_splits(TINY, cache=tmp_path))
    assert broken.stat().st_size > 1000
    assert all(a.tobytes() == b.tobytes()
               for a, b in zip(regenerated, _arrays(kws.synthetic_splits(TINY, cache=tiny_cache))))


def test_splits_share_no_voice():
    train, val, test = kws.voices_by_split(kws.GenerationOptions())
    assert not (set(train) & set(val)) and not (set(train) & set(test)) and not (set(val) & set(test))
    assert len(train) + len(val) + len(test) == len(kws.ACCENTS) * len(kws.VARIANTS)
    assert kws.voices_by_split(kws.GenerationOptions()) == [train, val, test]


def test_missing_espeak_is_a_data_error_with_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))          # an empty directory: no espeak-ng anywhere
    with pytest.raises(DataError) as err:
        kws.synthetic_splits(TINY, cache=tmp_path / "cache")
    text = str(err.value)
    assert "espeak-ng" in text and "apt-get install espeak-ng" in text and "Received: not found" in text
    assert not (tmp_path / "cache").exists()


def test_noise_kinds_are_unit_rms():
    rng = np.random.default_rng(0)
    for kind in kws.NOISE_KINDS:
        x = kws.noise(kind, rng)
        assert x.shape == (16000,) and np.sqrt(np.mean(x * x)) == pytest.approx(1.0, rel=1e-6)


# ----------------------------------------------------------------------------- real recordings

def _tone(freq, seconds=1.0, rate=16000):
    t = np.arange(int(seconds * rate)) / rate
    return 0.3 * np.sin(2 * np.pi * freq * t) * np.hanning(len(t))


def _write(path, samples, rate=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(audio.wav_bytes(samples, rate))


def _speech_commands_folder(root, speakers=6):
    """yes/no/cat (unknown), an 8 kHz and a 0.5 s file, background noise and folders to skip."""
    for i in range(speakers):
        for word, base in (("yes", 300), ("no", 500), ("cat", 700)):
            _write(root / word / f"spk{i}_nohash_0.wav", _tone(base + 37 * i))
    _write(root / "yes" / "short_nohash_0.wav", _tone(440, 0.5))
    _write(root / "no" / "lowrate_nohash_0.wav", _tone(440, 1.0, 8000), 8000)
    _write(root / "_background_noise_" / "white.wav", 0.1 * np.random.default_rng(0).standard_normal(56000))
    _write(root / "_unused_" / "x.wav", _tone(100))
    (root / "README.md").write_text("not a folder")


def test_folder_loader_reads_speech_commands_layout(tmp_path):
    root = tmp_path / "sc"
    _speech_commands_folder(root)
    (root / "validation_list.txt").write_text("yes/spk0_nohash_0.wav\nno/lowrate_nohash_0.wav\n")
    (root / "testing_list.txt").write_text("cat/spk1_nohash_0.wav\nyes/short_nohash_0.wav\n")
    splits = kws.load_folder(root)
    d = splits.dataset
    assert d.labels == list(kws.LABELS) and d.num_classes == 12
    idx = {name: i for i, name in enumerate(kws.LABELS)}
    # 20 word files (2 listed for validation, 2 for test) + 3 one-second pieces of background noise
    assert len(d.y_train) + len(d.y_val) + len(splits.y_test) == 23
    assert sorted(d.y_val[:2].tolist()) == sorted([idx["yes"], idx["no"]])
    assert splits.y_test[:2].tolist() == [idx["unknown"], idx["yes"]]
    assert np.sum(np.concatenate([d.y_train, d.y_val, splits.y_test]) == idx["silence"]) == 3
    assert np.sum(d.y_train == idx["unknown"]) == 5
    # the 8 kHz and the short file went through the very same front end
    short = audio.features_for_model(*audio.read_wav(root / "yes" / "short_nohash_0.wav"))
    low = audio.features_for_model(*audio.read_wav(root / "no" / "lowrate_nohash_0.wav"))
    assert any(np.array_equal(short, x) for x in splits.x_test)
    assert any(np.array_equal(low, x) for x in d.x_val)
    assert d.x_train.dtype == np.float32 and d.x_train.shape[1:] == audio.FEATURE_SHAPE


def test_folder_loader_seeded_split_keeps_a_speaker_in_one_split(tmp_path):
    root = tmp_path / "sc"
    _speech_commands_folder(root, speakers=16)
    for word in ("yes", "no", "cat"):       # one voice per speaker: the same audio under every word
        for i in range(16):
            _write(root / word / f"spk{i}_nohash_0.wav", _tone(300 + 37 * i))
    a = kws.load_folder(root, seed=3, val_percent=25, test_percent=25)
    b = kws.load_folder(root, seed=3, val_percent=25, test_percent=25)
    assert all(np.array_equal(x, y) for x, y in zip(_arrays(a), _arrays(b)))
    seen = {}
    for split, x in enumerate((a.dataset.x_train, a.dataset.x_val, a.x_test)):
        for row in x:
            assert seen.setdefault(row.tobytes(), split) == split
    assert len(a.dataset.y_val) and len(a.y_test)


def test_folder_loader_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        kws.load_folder(tmp_path / "missing")
    (tmp_path / "empty" / "yes").mkdir(parents=True)
    with pytest.raises(DataError, match="No recordings"):
        kws.load_folder(tmp_path / "empty")


def test_save_npz_is_what_build_reads(tmp_path):
    root = tmp_path / "sc"
    _speech_commands_folder(root)
    splits = kws.load_folder(root, val_percent=30, test_percent=20)
    kws.save_npz(tmp_path / "kws.npz", splits)
    loaded = data.load_npz(tmp_path / "kws.npz")
    assert loaded.labels == list(kws.LABELS) and loaded.num_classes == 12
    assert np.array_equal(loaded.x_train, splits.dataset.x_train)
    assert np.array_equal(loaded.y_val, splits.dataset.y_val)


# ----------------------------------------------------------------------------- DS-CNN

def test_ds_cnn_converts_to_int8_and_runs_in_litert():
    from ai_edge_litert.interpreter import Interpreter

    from edgesparse.pipeline.tf_env import import_tf

    tf, _ = import_tf()
    model = kws.build_ds_cnn()
    assert model.input_shape == (None, 49, 10, 1) and model.output_shape == (None, 12)
    names = [layer.name for layer in model.layers]
    assert names[1] == "conv_1" and names[-1] == "predictions"
    assert [n for n in names if n.startswith(("dw_", "pw_")) and "_" not in n[3:]] == [
        "dw_1", "pw_1", "dw_2", "pw_2", "dw_3", "pw_3", "dw_4", "pw_4"]
    assert model.get_layer("conv_1").kernel_size == (10, 4) and model.get_layer("conv_1").strides == (2, 2)
    model = kws.build_ds_cnn(filters=8)          # same graph, narrower: a faster conversion
    rng = np.random.default_rng(0)
    x = np.stack([audio.features_for_model(rng.standard_normal(16000).astype(np.float32) * 0.1) for _ in range(8)])
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([row[None]] for row in x)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    interpreter = Interpreter(model_content=converter.convert())
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert inp["dtype"] == np.int8 and tuple(inp["shape"]) == (1, 49, 10, 1)
    scale, zero = inp["quantization"]
    interpreter.set_tensor(inp["index"], np.clip(np.round(x[:1] / scale + zero), -128, 127).astype(np.int8))
    interpreter.invoke()
    assert interpreter.get_tensor(out["index"]).shape == (1, 12)


@needs_espeak
def test_demo_model_trains_once_then_loads_the_cache(tiny_cache):
    events = []
    model, dataset = kws.demo_model(cache=tiny_cache, progress=lambda e, f: events.append((e, f)),
                                    options=TINY, epochs=2, filters=8)
    names = [e for e, _ in events]
    assert names[0] == "demo_train_begin" and events[0][1]["epochs"] == 2
    assert names.count("demo_epoch_end") == 2 and names[-1] == "demo_train_end"
    assert set(events[1][1]) == {"epoch", "loss", "accuracy", "val_accuracy"}
    assert dataset.labels == list(kws.LABELS) and model.output_shape == (None, 12)
    assert kws.model_path(tiny_cache, TINY, epochs=2, filters=8).is_file()
    events.clear()
    again, _ = kws.demo_model(cache=tiny_cache, progress=lambda e, f: events.append((e, f)),
                              options=TINY, epochs=2, filters=8)
    assert [e for e, _ in events] == ["demo_cache_hit"]
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), again.get_weights()))
    x_test, y_test = kws.test_split(cache=tiny_cache, options=TINY)
    assert x_test.shape == (12, *audio.FEATURE_SHAPE) and sorted(y_test.tolist()) == list(range(12))


@needs_espeak
def test_mlperf_reference_model_understands_our_features(mlperf_dir):
    """MLPerf Tiny's int8 DS-CNN, trained on real Speech Commands, reads our MFCCs of espeak-ng words.

    It gets 13 of 20 here; a grossly wrong front end (mel bands shifted by 1.9 kHz,
    coefficients or frames reversed) gets 0-2. It shrugs off small differences
    (orthonormal DCT, power instead of magnitude: 14 of 20), which is why the exact
    comparison with tf.signal lives in test_audio.py.
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(str(mlperf_dir / "keyword_spotting" / "kws_ref_model.tflite"))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = inp["quantization"]
    correct = 0
    for voice in ("en-us", "en-gb"):
        for label, word in enumerate(kws.KEYWORDS):
            x = audio.features_for_model(kws.synthesize(word, voice, speed=150))
            interpreter.set_tensor(inp["index"], np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)[None])
            interpreter.invoke()
            correct += int(np.argmax(interpreter.get_tensor(out["index"]))) == label
    assert correct >= 9, f"{correct} of 20 keywords recognised"

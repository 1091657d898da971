"""The KWS front end: WAV decoding, fitting clips to 1 s at 16 kHz, MLPerf Tiny MFCCs."""

import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.audio import chirp_signal

from edgesparse.data import audio
from edgesparse.errors import DataError

RATE = audio.SAMPLE_RATE


def _tone(freq, seconds=1.0, rate=RATE, amp=0.5):
    t = np.arange(round(seconds * rate)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _riff(fmt_body: bytes, data: bytes) -> bytes:
    chunks = b"fmt " + struct.pack("<I", len(fmt_body)) + fmt_body + b"data" + struct.pack("<I", len(data)) + data
    return b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks


def test_wav_round_trip_16_bit(tmp_path):
    x = _tone(440, 0.25)
    path = tmp_path / "a.wav"
    path.write_bytes(audio.wav_bytes(x, RATE))
    y, rate = audio.read_wav(path)
    assert rate == RATE and y.dtype == np.float32 and y.shape == x.shape
    assert np.max(np.abs(y - x)) < 1e-4


@pytest.mark.parametrize("kind", ["u8", "s24", "f32", "stereo16", "extensible16"])
def test_read_wav_formats(tmp_path, kind):
    x = _tone(300, 0.1, rate=8000, amp=0.5).astype(np.float64)
    if kind == "u8":
        body, data = struct.pack("<HHIIHH", 1, 1, 8000, 8000, 1, 8), np.round(x * 127 + 128).astype(np.uint8).tobytes()
    elif kind == "s24":
        v = np.round(x * (2 ** 23 - 1)).astype(np.int32)
        data = np.stack([v & 255, (v >> 8) & 255, (v >> 16) & 255], axis=1).astype(np.uint8).tobytes()
        body = struct.pack("<HHIIHH", 1, 1, 8000, 24000, 3, 24)
    elif kind == "f32":
        body, data = struct.pack("<HHIIHH", 3, 1, 8000, 32000, 4, 32), x.astype("<f4").tobytes()
    elif kind == "stereo16":
        pcm = np.round(x * 32767).astype("<i2")
        body, data = struct.pack("<HHIIHH", 1, 2, 8000, 32000, 4, 16), np.stack([pcm, pcm], 1).tobytes()
    else:  # WAVE_FORMAT_EXTENSIBLE with the PCM sub-format GUID
        body = struct.pack("<HHIIHHHHI", 0xFFFE, 1, 8000, 16000, 2, 16, 22, 16, 4) + b"\x01\x00" + b"\x00" * 14
        data = np.round(x * 32767).astype("<i2").tobytes()
    path = tmp_path / f"{kind}.wav"
    path.write_bytes(_riff(body, data))
    y, rate = audio.read_wav(path)
    assert rate == 8000 and y.dtype == np.float32 and len(y) == len(x)
    assert np.max(np.abs(y - x)) < 1e-2


def test_unreadable_wav_is_a_data_error(tmp_path):
    path = tmp_path / "junk.wav"
    path.write_bytes(b"not a wav at all")
    with pytest.raises(DataError) as err:
        audio.read_wav(path)
    assert str(path) in str(err.value) and "sox" in str(err.value)
    with pytest.raises(DataError, match="Cannot read"):
        audio.read_wav(tmp_path / "missing.wav")


def test_fit_length_resamples_pads_and_crops():
    short = _tone(500, 0.5, rate=8000)
    fitted = audio.fit_length(short, 8000)
    assert fitted.shape == (RATE,) and fitted.dtype == np.float32
    # centred: 0.25 s of zeros on each side, the tone in the middle
    assert np.all(fitted[:3900] == 0) and np.all(fitted[-3900:] == 0)
    assert np.max(np.abs(fitted[5000:11000])) > 0.45
    # a long clip keeps its loud second
    long = np.zeros(3 * RATE, np.float32)
    long[RATE + 4000:RATE + 8000] = _tone(700, 0.25)
    kept = audio.fit_length(long, RATE)
    assert kept.shape == (RATE,) and np.sum(kept ** 2) == pytest.approx(np.sum(long ** 2), rel=1e-6)


def test_resampling_is_band_limited():
    # 1 kHz at 44.1 kHz -> 16 kHz stays a clean 1 kHz sine
    y = audio.resample(_tone(1000, 1.0, rate=44100), 44100)
    t = np.arange(len(y)) / RATE
    assert np.max(np.abs(y[200:-200] - 0.5 * np.sin(2 * np.pi * 1000 * t[200:-200]))) < 2e-3
    # 10 kHz at 48 kHz is above the new Nyquist: removed, not aliased to 6 kHz
    z = audio.resample(_tone(10000, 1.0, rate=48000), 48000)
    assert np.sqrt(np.mean(z[200:-200] ** 2)) < 0.01


def test_mfcc_shape_dtype_and_exact_repeatability():
    x = chirp_signal()
    a = audio.mfcc(x)
    assert a.shape == (49, 10) and a.dtype == np.float32
    assert audio.mfcc(x.copy()).tobytes() == a.tobytes()
    f = audio.features_for_model(x)
    assert f.shape == audio.FEATURE_SHAPE == (49, 10, 1) and f.dtype == np.float32
    assert np.all(np.isfinite(audio.features_for_model(np.zeros(RATE, np.float32))))


def test_features_are_bit_identical_in_a_fresh_process():
    """No hidden state: another interpreter computes the very same bytes."""
    code = ("import sys, numpy as np; sys.path.insert(0, sys.argv[1]);"
            "from support.audio import chirp_signal; from edgesparse.data import audio;"
            "sys.stdout.write(audio.features_for_model(chirp_signal(), 16000).tobytes().hex())")
    tests_dir = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", code, tests_dir], capture_output=True, text=True, check=True).stdout
    assert out == audio.features_for_model(chirp_signal()).tobytes().hex()


def test_audio_imports_neither_tensorflow_nor_scipy():
    code = ("import sys, edgesparse.data.audio; "
            "bad = [m for m in ('tensorflow', 'scipy', 'tf_keras') if m in sys.modules];"
            "sys.exit(str(bad) if bad else 0)")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_wrong_clip_length_is_a_data_error():
    with pytest.raises(DataError, match="fit_length"):
        audio.mfcc(np.zeros(8000, np.float32))


@pytest.mark.parametrize("seed", [0, 1])
def test_mfcc_matches_tf_signal_reference(seed):
    """Same framing through tf.signal (what the MLPerf Tiny get_dataset.py runs)."""
    from edgesparse.pipeline.tf_env import import_tf

    tf, _ = import_tf()
    x = audio.normalise_peak(chirp_signal(seed)).astype(np.float32)
    stft = tf.signal.stft(x, frame_length=480, frame_step=320, fft_length=None, window_fn=tf.signal.hann_window)
    weights = tf.signal.linear_to_mel_weight_matrix(40, stft.shape[-1], 16000, 20.0, 4000.0)
    log_mel = tf.math.log(tf.tensordot(tf.abs(stft), weights, 1) + 1e-6)
    ref = tf.signal.mfccs_from_log_mel_spectrograms(log_mel)[..., :10].numpy()
    np.testing.assert_allclose(audio.log_mel(x), log_mel.numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(audio.mfcc(x), ref, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(audio.mel_matrix(), weights.numpy(), atol=1e-5)

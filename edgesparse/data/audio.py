"""Audio front end for keyword spotting: WAV decoding, 1 s clips, MLPerf Tiny MFCCs.

Pure numpy and the standard library, no TensorFlow and no scipy: the on-device
app on a Raspberry Pi imports this very module, so the features it computes
from the microphone are the ones the model was trained on.

The MFCC follows the MLPerf Tiny keyword-spotting reference
(mlcommons/tiny benchmark/training/keyword_spotting, get_dataset.py and
kws_util.py defaults): 16 kHz, 1 s clips, 30 ms Hann window, 20 ms hop, no
padding (49 frames), 512-point FFT magnitude, 40 HTK-mel triangles from 20 Hz
to 4 kHz, log(mel + 1e-6), DCT-II scaled as `tf.signal.mfccs_from_log_mel_spectrograms`
does, first 10 coefficients. Like the reference, each clip is peak-normalised
first (we divide by max |x|, the reference by max x).

Arithmetic is float64 internally and rounded to float32 once at the end, so
the result is bit-identical run to run on one machine and does not depend on
summation order beyond the last float32 bit across machines.

`edgesparse deploy` copies this file byte for byte into device bundles, so it
imports only the standard library, numpy and edgesparse.errors.
Raises DataError (unreadable or unsupported WAV files, clips of the wrong length).
"""

from __future__ import annotations

import functools
import math
import struct
import wave
from pathlib import Path

import numpy as np

from edgesparse.errors import DataError

__all__ = [
    "CLIP_SAMPLES",
    "FEATURE_PARAMS",
    "FEATURE_SHAPE",
    "FFT_LENGTH",
    "HOP_SAMPLES",
    "LOG_OFFSET",
    "LOWER_EDGE_HZ",
    "NUM_FRAMES",
    "NUM_MEL_BINS",
    "NUM_MFCC",
    "SAMPLE_RATE",
    "UPPER_EDGE_HZ",
    "WINDOW_SAMPLES",
    "dct_matrix",
    "decode_wav",
    "features_for_model",
    "fit_length",
    "hann_window",
    "log_mel",
    "mel_matrix",
    "mfcc",
    "normalise_peak",
    "read_wav",
    "resample",
    "wav_bytes",
]

SAMPLE_RATE = 16000
CLIP_SAMPLES = SAMPLE_RATE            # 1 s
WINDOW_SAMPLES = 480                  # 30 ms
HOP_SAMPLES = 320                     # 20 ms
FFT_LENGTH = 512                      # next power of two >= window, as tf.signal.stft picks
NUM_MEL_BINS = 40
LOWER_EDGE_HZ = 20.0
UPPER_EDGE_HZ = 4000.0
LOG_OFFSET = 1e-6
NUM_MFCC = 10
NUM_FRAMES = 1 + (CLIP_SAMPLES - WINDOW_SAMPLES) // HOP_SAMPLES   # 49
FEATURE_SHAPE = (NUM_FRAMES, NUM_MFCC, 1)

# Everything that changes the features; hashed into dataset cache keys.
FEATURE_PARAMS = {
    "sample_rate": SAMPLE_RATE, "clip_samples": CLIP_SAMPLES, "window": WINDOW_SAMPLES,
    "hop": HOP_SAMPLES, "fft": FFT_LENGTH, "mel_bins": NUM_MEL_BINS, "lower_hz": LOWER_EDGE_HZ,
    "upper_hz": UPPER_EDGE_HZ, "log_offset": LOG_OFFSET, "mfcc": NUM_MFCC, "peak_normalise": True,
    "resampler": "kaiser-sinc-16zc-beta8", "fit": "pad-centre/crop-loudest", "version": 1,
}

_PEAK_FLOOR = 1e-5          # below one 16-bit LSB: treat as digital silence, do not amplify
_RESAMPLE_ZERO_CROSSINGS = 16
_RESAMPLE_BETA = 8.0
_RESAMPLE_BLOCK = 8192

_FORMAT_PCM, _FORMAT_FLOAT, _FORMAT_EXTENSIBLE = 1, 3, 0xFFFE
_CONVERT_FIX = "Convert it with: sox IN.wav -b 16 -c 1 -r 16000 OUT.wav"


# ----------------------------------------------------------------------------- WAV I/O

def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """Read a PCM (8/16/24/32-bit) or float WAV; return (mono float32 in [-1, 1], rate).

    Multi-channel files are averaged to mono. A small RIFF reader rather than
    `wave`, because Python 3.11's `wave` rejects float and WAVE_FORMAT_EXTENSIBLE
    files (what Audacity and many recorders write).
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError("Cannot read the WAV file", where=str(path), received=exc.strerror or str(exc),
                        fix="Check the path and its permissions") from None
    return decode_wav(data, where=str(path))


def decode_wav(data: bytes, *, where: str = "<bytes>") -> tuple[np.ndarray, int]:
    """Decode WAV bytes (a file, or espeak-ng's --stdout whose sizes are placeholders)."""
    def bad(received: str) -> DataError:
        return DataError("Not a readable WAV file", where=where,
                         expected="RIFF/WAVE with PCM 8/16/24/32-bit or 32/64-bit float samples",
                         received=received, fix=_CONVERT_FIX)

    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise bad(f"header {data[:12]!r}")
    fmt = None
    samples = None
    pos = 12
    while pos + 8 <= len(data):
        chunk_id, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = data[pos + 8:pos + 8 + size]        # a placeholder size is clamped to what is there
        if chunk_id == b"fmt ":
            if len(body) < 16:
                raise bad("a truncated fmt chunk")
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", body[:16])
            if tag == _FORMAT_EXTENSIBLE and len(body) >= 26:
                tag = struct.unpack("<H", body[24:26])[0]    # first two bytes of the sub-format GUID
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            samples = body
            break
        pos += 8 + size + (size & 1)
    if fmt is None or samples is None:
        raise bad("no fmt or data chunk")
    tag, channels, rate, bits = fmt
    if channels < 1 or rate < 1:
        raise bad(f"{channels} channels at {rate} Hz")
    width = bits // 8
    frame = width * channels
    samples = samples[:len(samples) - len(samples) % frame] if frame else b""
    if tag == _FORMAT_PCM and bits == 8:
        x = (np.frombuffer(samples, np.uint8).astype(np.float64) - 128.0) / 128.0
    elif tag == _FORMAT_PCM and bits == 16:
        x = np.frombuffer(samples, "<i2").astype(np.float64) / 32768.0
    elif tag == _FORMAT_PCM and bits == 24:
        b = np.frombuffer(samples, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = np.where(v >= 1 << 23, v - (1 << 24), v).astype(np.float64) / float(1 << 23)
    elif tag == _FORMAT_PCM and bits == 32:
        x = np.frombuffer(samples, "<i4").astype(np.float64) / 2147483648.0
    elif tag == _FORMAT_FLOAT and bits in (32, 64):
        x = np.frombuffer(samples, "<f4" if bits == 32 else "<f8").astype(np.float64)
    else:
        raise bad(f"format tag {tag} with {bits} bits per sample")
    x = x.reshape(-1, channels).mean(axis=1)
    return np.clip(x, -1.0, 1.0).astype(np.float32), int(rate)


def wav_bytes(samples: np.ndarray, rate: int = SAMPLE_RATE) -> bytes:
    """16-bit mono PCM WAV bytes of float samples in [-1, 1] (for exports and tests)."""
    import io

    pcm = np.clip(np.round(np.asarray(samples, np.float64) * 32767.0), -32768, 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(int(rate))
        out.writeframes(pcm.tobytes())
    return buffer.getvalue()


# ----------------------------------------------------------------------------- 1 s at 16 kHz

def resample(samples: np.ndarray, rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling (Kaiser-windowed sinc, 16 zero crossings), float64 out.

    Low-passes at the lower Nyquist frequency, so 44.1/48 kHz recordings do not
    alias into the 20-4000 Hz band the MFCC reads.
    """
    x = np.asarray(samples, np.float64).ravel()
    if rate == target_rate or x.size == 0:
        return x.copy()
    if rate <= 0 or target_rate <= 0:
        raise DataError("Bad sample rate", expected="a positive rate in Hz", received=rate)
    up, down, taps = _resampling_kernel(int(rate), int(target_rate))
    half = taps.shape[1] // 2
    n_out = (x.size * up) // down
    padded = np.concatenate([np.zeros(half), x, np.zeros(half + 1)])
    offsets = np.arange(-half + 1, half + 1)
    out = np.empty(n_out)
    for start in range(0, n_out, _RESAMPLE_BLOCK):
        n = np.arange(start, min(n_out, start + _RESAMPLE_BLOCK))
        base = (n * down) // up                        # input sample at or before each output
        idx = base[:, None] + offsets[None, :] + half
        out[start:start + n.size] = np.einsum("ij,ij->i", taps[n % up], padded[idx])
    return out


@functools.lru_cache(maxsize=8)
def _resampling_kernel(rate: int, target_rate: int) -> tuple[int, int, np.ndarray]:
    """(up, down, taps[up, 2*half]): the filter for each of the `up` output phases.

    The rates are integers, so output n sits at input position n*down/up and
    its fractional part repeats every `up` outputs: the (slow) Kaiser-sinc
    weights are computed once per phase.
    """
    g = math.gcd(rate, target_rate)
    up, down = target_rate // g, rate // g
    cutoff = min(1.0, target_rate / rate)            # fraction of the input Nyquist frequency
    half = int(np.ceil(_RESAMPLE_ZERO_CROSSINGS / cutoff))
    phase = (np.arange(up) * down % up) / up         # fractional input position of each phase
    d = phase[:, None] - np.arange(-half + 1, half + 1)[None, :]
    taper = np.i0(_RESAMPLE_BETA * np.sqrt(np.clip(1.0 - (d / half) ** 2, 0.0, None))) / np.i0(_RESAMPLE_BETA)
    taps = cutoff * np.sinc(cutoff * d) * taper
    taps.setflags(write=False)
    return up, down, taps


def fit_length(samples: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
    """Any clip -> exactly 1 s at 16 kHz (float32): resample, then pad or crop.

    Shorter clips are zero-padded equally on both sides (the word stays near the
    centre, where the training clips have it on average); longer ones keep the
    1 s window with the most energy, so a long recording keeps its word.
    """
    x = resample(samples, rate, SAMPLE_RATE)
    n = x.size
    if n < CLIP_SAMPLES:
        left = (CLIP_SAMPLES - n) // 2
        x = np.pad(x, (left, CLIP_SAMPLES - n - left))
    elif n > CLIP_SAMPLES:
        energy = np.concatenate([[0.0], np.cumsum(x * x)])
        window = energy[CLIP_SAMPLES:] - energy[:-CLIP_SAMPLES]
        start = int(np.argmax(window[::HOP_SAMPLES // 2])) * (HOP_SAMPLES // 2)
        x = x[start:start + CLIP_SAMPLES]
    return x.astype(np.float32)


def normalise_peak(samples: np.ndarray) -> np.ndarray:
    """Scale to peak 1 (as the MLPerf reference does); digital silence is left alone."""
    x = np.asarray(samples, np.float64)
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    return x / peak if peak > _PEAK_FLOOR else x


# ----------------------------------------------------------------------------- MFCC

def _hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    return 1127.0 * np.log1p(np.asarray(hz, np.float64) / 700.0)


def mel_matrix() -> np.ndarray:
    """(257, 40) triangular HTK-mel weights, built as tf.signal.linear_to_mel_weight_matrix.

    Bin 0 (DC) gets no weight; triangles are in mel space between evenly spaced
    edges from 20 Hz to 4 kHz; weights apply to the magnitude spectrum.
    """
    bins = FFT_LENGTH // 2 + 1
    freqs = np.linspace(0.0, SAMPLE_RATE / 2.0, bins)[1:]
    spec_mel = _hz_to_mel(freqs)[:, None]
    edges = np.linspace(_hz_to_mel(LOWER_EDGE_HZ), _hz_to_mel(UPPER_EDGE_HZ), NUM_MEL_BINS + 2)
    lower, centre, upper = edges[:-2][None, :], edges[1:-1][None, :], edges[2:][None, :]
    rising = (spec_mel - lower) / (centre - lower)
    falling = (upper - spec_mel) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return np.vstack([np.zeros((1, NUM_MEL_BINS)), weights])


def dct_matrix() -> np.ndarray:
    """(40, 10) DCT-II with tf.signal.mfccs_from_log_mel_spectrograms' scaling.

    sqrt(2/N) * sum_n x_n cos(pi k (2n+1) / 2N) for every k: orthonormal except
    that coefficient 0 is sqrt(2) larger (TF's, hence MLPerf's, convention).
    """
    n = np.arange(NUM_MEL_BINS)[:, None]
    k = np.arange(NUM_MFCC)[None, :]
    return np.sqrt(2.0 / NUM_MEL_BINS) * np.cos(np.pi * k * (2 * n + 1) / (2 * NUM_MEL_BINS))


def hann_window() -> np.ndarray:
    """Periodic Hann window of 480 samples (tf.signal.hann_window's default)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(WINDOW_SAMPLES) / WINDOW_SAMPLES)


_WINDOW = hann_window()
_MEL = mel_matrix()
_DCT = dct_matrix()


def _check_clip(samples: np.ndarray) -> np.ndarray:
    x = np.asarray(samples)
    if x.ndim != 1 or x.size != CLIP_SAMPLES:
        raise DataError("An MFCC needs exactly 1 s of 16 kHz audio", expected=f"{CLIP_SAMPLES} mono samples",
                        received=f"shape {x.shape}", fix="Pass the clip through audio.fit_length(samples, rate) first")
    if not np.all(np.isfinite(x)):
        raise DataError("The audio contains NaN or infinite samples", received="non-finite values")
    return x.astype(np.float64)


def log_mel(samples: np.ndarray) -> np.ndarray:
    """(49, 40) log-mel magnitudes of one 1 s clip (float64)."""
    x = _check_clip(samples)
    frames = np.lib.stride_tricks.sliding_window_view(x, WINDOW_SAMPLES)[::HOP_SAMPLES]
    magnitude = np.abs(np.fft.rfft(frames * _WINDOW, n=FFT_LENGTH, axis=1))
    return np.log(magnitude @ _MEL + LOG_OFFSET)


def mfcc(samples: np.ndarray) -> np.ndarray:
    """(49, 10) float32 MFCCs of exactly 16000 samples at 16 kHz (no normalisation)."""
    return (log_mel(samples) @ _DCT).astype(np.float32)


def features_for_model(samples: np.ndarray, rate: int = SAMPLE_RATE) -> np.ndarray:
    """The model input (49, 10, 1) float32: fit to 1 s, peak-normalise, MFCC.

    The one function both training and the on-device app call, so the two can
    not drift apart.
    """
    clip = fit_length(samples, rate)
    return mfcc(normalise_peak(clip))[..., None]

"""Keyword-spotting demo: synthetic speech from espeak-ng and a DS-CNN (MLPerf Tiny KWS).

The speech demo needs a data set that can be made on any machine without a
download, so it synthesises one: every word in many espeak-ng voices, speeds
and pitches, shifted in time, coloured, reverberated and mixed with generated
noise, then turned into MLPerf Tiny MFCCs by `audio.features_for_model` (the
function the on-device app also calls). The same classes and features come
from real recordings laid out like Speech Commands (`load_folder`, owned by
edgesparse.data.speech_folders and re-exported here under the name docs/kws.md uses).

`cache`: a directory, None/True = demos.cache.cache_dir(), False = neither read nor write.
Progress events: "demo_data_begin" {name, clips, source}, "demo_data_progress" {name, done,
clips}, "demo_data_end" {name, clips, seconds, path}, then the training events of
demos.training and demos.cache. Raises DataError (espeak-ng missing or failing) and
MissingDependency (TensorFlow).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse._types import Progress, no_progress
from edgesparse.data import audio
from edgesparse.data.dataset import Dataset, Splits, save_npz
from edgesparse.data.speech_folders import (
    KEYWORDS,
    LABELS,
    NOISE_KINDS,
    SILENCE,
    UNKNOWN,
    labels_for,
    load_speech_folder,
    noise,
)
from edgesparse.errors import DataError
from edgesparse.fsutil import atomic_write_bytes
from edgesparse.pipeline.demos.cache import CacheArg, cache_root, cached_or_trained
from edgesparse.pipeline.demos.training import fit_with_progress, shuffled_batches
from edgesparse.pipeline.tf_env import import_tf

__all__ = [
    "ACCENTS",
    "BATCH_SIZE",
    "DEMO_NAME",
    "EPOCHS",
    "FILTERS",
    "KEYWORDS",
    "LABELS",
    "LEARNING_RATE",
    "MODEL_VERSION",
    "NOISE_KINDS",
    "SILENCE",
    "UNKNOWN",
    "UNKNOWN_WORDS",
    "VARIANTS",
    "Clip",
    "GenerationOptions",
    "Splits",
    "build_ds_cnn",
    "demo_model",
    "espeak_version",
    "load_folder",
    "model_path",
    "noise",
    "plan_clips",
    "render_clip",
    "save_npz",
    "synthesize",
    "synthetic_path",
    "synthetic_splits",
    "test_split",
    "train_model",
    "voices_by_split",
]

# The name docs/kws.md and build's messages use for the Speech Commands folder reader.
load_folder = load_speech_folder

DEMO_NAME = "kws"
# Speech Commands' auxiliary words plus a few more: the "unknown" class.
UNKNOWN_WORDS = (
    "backward", "bed", "bird", "cat", "dog", "eight", "five", "follow", "forward", "four", "happy",
    "house", "learn", "marvin", "nine", "one", "seven", "sheila", "six", "three", "tree", "two",
    "visual", "wow", "zero", "hello", "light", "music", "water", "window", "paper", "orange",
)

# espeak-ng's own (non-MBROLA) English voices and a broad set of its voice variants.
ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd", "en-029")
VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "klatt", "klatt2", "klatt3", "klatt4", "klatt6", "Alex", "Andy", "Annie", "Denis", "Gene", "Hugo",
    "Jacky", "Lee", "Michael", "Mike", "adam", "anika", "announcer", "aunty", "belinda", "benjamin",
    "boris", "caleb", "david", "ed", "edward", "grandma", "grandpa", "iven", "john", "linda", "max",
    "michel", "norbert", "paul", "quincy", "rob", "robert", "shelby", "steph", "travis", "victor",
    "whisper", "whisperf", "zac",
)

FILTERS = 128         # twice MLPerf Tiny's 64: room for 80% sparsity (docs/kws.md)
EPOCHS = 25
BATCH_SIZE = 64
LEARNING_RATE = 3e-3
MODEL_VERSION = 1     # bump when the model or its training changes
_GENERATOR_VERSION = 1
_INSTALL_FIX = ("Install it: apt-get install espeak-ng (Debian, Ubuntu, Raspberry Pi OS), "
                "brew install espeak-ng (macOS); or train on recordings with kws.load_folder(...)")


@dataclass(frozen=True)
class GenerationOptions:
    """Everything that shapes the synthetic set. Any change gives a new cache file."""

    seed: int = 0
    clips_per_class: int = 600                 # train + validation + test
    val_fraction: float = 0.15                 # of the voices (accent+variant); splits share no voice
    test_fraction: float = 0.15
    keywords: tuple[str, ...] = KEYWORDS
    unknown_words: tuple[str, ...] = UNKNOWN_WORDS
    accents: tuple[str, ...] = ACCENTS
    variants: tuple[str, ...] = VARIANTS
    speed_wpm: tuple[int, int] = (110, 230)
    pitch: tuple[int, int] = (15, 85)
    amplitude: tuple[int, int] = (60, 160)
    gain_db: tuple[float, float] = (-24.0, 0.0)
    noise_probability: float = 0.85
    snr_db: tuple[float, float] = (3.0, 35.0)
    reverb_probability: float = 0.3
    colour_probability: float = 0.5
    feature_params: dict = field(default_factory=lambda: dict(audio.FEATURE_PARAMS))

    def key(self) -> str:
        """Hash of the options (and generator version): the cache file name."""
        text = json.dumps({"generator": _GENERATOR_VERSION, **asdict(self)}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------- espeak-ng

def _espeak() -> str:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise DataError("espeak-ng is needed to generate the synthetic keyword-spotting data set",
                        where="PATH", expected="the espeak-ng program on PATH", received="not found",
                        fix=_INSTALL_FIX)
    return exe


def espeak_version() -> str:
    """espeak-ng's version line: recorded with every generated set."""
    out = subprocess.run([_espeak(), "--version"], capture_output=True, text=True)
    return " ".join(out.stdout.split()[:4]) or "unknown"


def synthesize(word: str, voice: str, *, speed: int = 175, pitch: int = 50, amplitude: int = 100) -> np.ndarray:
    """One word spoken by espeak-ng, as float32 at 16 kHz (resampled from its 22.05 kHz)."""
    cmd = [_espeak(), "-v", voice, "-s", str(speed), "-p", str(pitch), "-a", str(amplitude), "-z", "--stdout", word]
    done = subprocess.run(cmd, capture_output=True)
    if done.returncode != 0 or len(done.stdout) <= 44:
        raise DataError("espeak-ng failed to synthesise a word", where=" ".join(cmd),
                        expected="a WAV on stdout",
                        received=f"exit code {done.returncode}: {done.stderr.decode(errors='replace')[-300:].strip()}",
                        fix="Check the voice exists (espeak-ng --voices=en) and the espeak-ng install")
    samples, rate = audio.decode_wav(done.stdout, where=f"espeak-ng -v {voice} {word!r}")
    return audio.resample(samples, rate).astype(np.float32)


# ----------------------------------------------------------------------------- noise and effects

def _colour(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random microphone/channel response: high-pass, low-pass and a tilt, in the FFT domain."""
    n = len(x)
    f = np.fft.rfftfreq(n, 1.0 / audio.SAMPLE_RATE) + 1.0
    high_pass = 1.0 / np.sqrt(1.0 + (rng.uniform(40, 300) / f) ** 4)
    low_pass = 1.0 / np.sqrt(1.0 + (f / rng.uniform(2500, 7500)) ** 4)
    tilt = (f / 1000.0) ** rng.uniform(-0.3, 0.3)
    return np.fft.irfft(np.fft.rfft(x) * high_pass * low_pass * tilt, n)


def _reverb(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A small room: exponentially decaying noise impulse response (RT60 0.1-0.6 s)."""
    rt60 = rng.uniform(0.1, 0.6)
    length = int(rt60 * audio.SAMPLE_RATE)
    ir = rng.standard_normal(length) * np.exp(-6.9 * np.arange(length) / length)
    ir *= rng.uniform(0.1, 0.5) / np.sqrt(np.sum(ir * ir))
    ir[0] = 1.0
    size = 1 << int(np.ceil(np.log2(len(x) + length)))
    return np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(ir, size), size)[:len(x)]


def _trim(x: np.ndarray, threshold: float = 0.02) -> np.ndarray:
    """Drop espeak-ng's leading and trailing near-silence."""
    loud = np.flatnonzero(np.abs(x) > threshold * (np.max(np.abs(x)) + 1e-12))
    return x[loud[0]:loud[-1] + 1] if loud.size else x


# ----------------------------------------------------------------------------- the synthetic set

@dataclass(frozen=True)
class Clip:
    label: int
    word: str | None          # None: silence (noise only)
    voice: str
    speed: int
    pitch: int
    amplitude: int
    seed: tuple[int, ...]


def voices_by_split(options: GenerationOptions) -> list[list[str]]:
    """Voices (accent+variant) shuffled with the seed and cut into train/val/test."""
    voices = [f"{a}+{v}" for a in options.accents for v in options.variants]
    order = np.random.default_rng([options.seed, 7]).permutation(len(voices))
    voices = [voices[i] for i in order]
    n_val = max(1, round(len(voices) * options.val_fraction))
    n_test = max(1, round(len(voices) * options.test_fraction))
    return [voices[n_val + n_test:], voices[:n_val], voices[n_val:n_val + n_test]]


def _split_counts(options: GenerationOptions) -> list[int]:
    n_val = max(1, round(options.clips_per_class * options.val_fraction))
    n_test = max(1, round(options.clips_per_class * options.test_fraction))
    return [options.clips_per_class - n_val - n_test, n_val, n_test]


def plan_clips(options: GenerationOptions) -> list[list[Clip]]:
    """Every clip of every split, decided up front from the seed (order-independent)."""
    labels = labels_for(options.keywords)
    splits: list[list[Clip]] = []
    for split, (voices, count) in enumerate(zip(voices_by_split(options), _split_counts(options))):
        clips = []
        for label, name in enumerate(labels):
            for i in range(count):
                seed = (options.seed, split, label, i)
                rng = np.random.default_rng(seed)
                if name == SILENCE:
                    word = None
                elif name == UNKNOWN:
                    word = options.unknown_words[(i + split) % len(options.unknown_words)]
                else:
                    word = name
                clips.append(Clip(
                    label=label, word=word, voice=voices[int(rng.integers(len(voices)))],
                    speed=int(rng.integers(options.speed_wpm[0], options.speed_wpm[1] + 1)),
                    pitch=int(rng.integers(options.pitch[0], options.pitch[1] + 1)),
                    amplitude=int(rng.integers(options.amplitude[0], options.amplitude[1] + 1)),
                    seed=(*seed, 1)))
        splits.append(clips)
    return splits


def render_clip(clip: Clip, options: GenerationOptions) -> np.ndarray:
    """The 1 s, 16 kHz waveform of one planned clip (speech + effects + noise, 16-bit)."""
    rng = np.random.default_rng(clip.seed)
    n = audio.CLIP_SAMPLES
    if clip.word is None:
        kinds = rng.choice(NOISE_KINDS, size=int(rng.integers(1, 3)), replace=False)
        x = sum(rng.uniform(0.2, 1.0) * noise(str(k), rng) for k in kinds)
        level = 10 ** (rng.uniform(-70, -10) / 20)            # from a near-silent room to loud noise
        x = level * x / (np.sqrt(np.mean(x * x)) + 1e-12)
    else:
        speech = _trim(synthesize(clip.word, clip.voice, speed=clip.speed, pitch=clip.pitch,
                                  amplitude=clip.amplitude).astype(np.float64))[:n]
        x = np.zeros(n)
        start = int(rng.integers(0, n - len(speech) + 1))
        x[start:start + len(speech)] = speech
        if rng.uniform() < options.colour_probability:
            x = _colour(x, rng)
        if rng.uniform() < options.reverb_probability:
            x = _reverb(x, rng)
        x *= 10 ** (rng.uniform(*options.gain_db) / 20) / (np.max(np.abs(x)) + 1e-12)
        if rng.uniform() < options.noise_probability:
            active = np.sqrt(np.mean(speech * speech)) * np.max(np.abs(x)) / (np.max(np.abs(speech)) + 1e-12)
            kind = str(rng.choice(NOISE_KINDS))
            x = x + active * 10 ** (-rng.uniform(*options.snr_db) / 20) * noise(kind, rng)
    return (np.round(np.clip(x, -1.0, 1.0) * 32767.0) / 32767.0).astype(np.float32)


def _features(clip: Clip, options: GenerationOptions) -> np.ndarray:
    return audio.features_for_model(render_clip(clip, options))


def synthetic_path(options: GenerationOptions | None = None, cache: CacheArg = None) -> Path:
    """Where the generated set for these options lives (or will live)."""
    options = options or GenerationOptions()
    return cache_root(cache) / f"{DEMO_NAME}-synthetic-{options.key()}.npz"


def synthetic_splits(options: GenerationOptions | None = None, *, cache: CacheArg = None,
                     progress: Progress | None = None, workers: int | None = None) -> Splits:
    """The synthetic set: loaded from the cache, else generated (parallel espeak-ng) and cached.

    `cache` is the cache directory (None: cache_dir(); False: generate and
    keep nothing). Raises DataError when espeak-ng is missing and nothing is cached.
    """
    options = options or GenerationOptions()
    progress = progress or no_progress
    path = None if cache is False else synthetic_path(options, cache)
    if path is not None and path.is_file():
        try:
            return _read_cache(path)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass                            # unreadable cache: generate it again
    exe_version = espeak_version()          # fails early, with the install command, when it is missing
    plan = plan_clips(options)
    total = sum(len(s) for s in plan)
    progress("demo_data_begin", {"name": DEMO_NAME, "clips": total, "source": "espeak-ng"})
    started = time.perf_counter()
    arrays, done = [], 0
    with ThreadPoolExecutor(max_workers=workers or max(2, os.cpu_count() or 1)) as pool:
        for clips in plan:
            rows = []
            for row in pool.map(lambda c: _features(c, options), clips):
                rows.append(row)
                done += 1
                if done % 200 == 0:
                    progress("demo_data_progress", {"name": DEMO_NAME, "done": done, "clips": total})
            arrays += [np.stack(rows), np.array([c.label for c in clips], np.int64)]
    seconds = time.perf_counter() - started
    meta = {"options": asdict(options), "generator": _GENERATOR_VERSION, "espeak_ng": exe_version,
            "seconds": round(seconds, 2), "clips": total,
            "source": f"synthetic speech (espeak-ng), {total} clips, options {options.key()}"}
    buffer = io.BytesIO()
    names = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
    np.savez(buffer, **dict(zip(names, arrays)), labels=np.array(labels_for(options.keywords)),
             meta=np.array(json.dumps(meta)))
    progress("demo_data_end", {"name": DEMO_NAME, "clips": total, "seconds": round(seconds, 2),
                               "path": str(path) if path else None})
    if path is None:
        return _read_cache(io.BytesIO(buffer.getvalue()))
    atomic_write_bytes(path, buffer.getvalue())
    return _read_cache(path)


def _read_cache(path: Path | io.BytesIO) -> Splits:
    """The generated set as written by synthetic_splits (with its meta record)."""
    with np.load(path, allow_pickle=False) as f:
        labels = [str(s) for s in f["labels"]]
        meta = json.loads(str(f["meta"])) if "meta" in f else {}
        dataset = Dataset(x_train=f["x_train"], y_train=f["y_train"], x_val=f["x_val"], y_val=f["y_val"],
                          num_classes=len(labels), source=meta.get("source", str(path)), labels=labels)
        return Splits(dataset, f["x_test"], f["y_test"])


# ----------------------------------------------------------------------------- model and demo

def build_ds_cnn(num_classes: int = len(LABELS), filters: int = FILTERS,
                 input_shape: tuple[int, ...] = audio.FEATURE_SHAPE) -> Any:
    """DS-CNN as in MLPerf Tiny KWS / Hello Edge, with explicit layer names (uncompiled).

    Conv 10x4 stride 2 -> 4 x (depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU)
    -> average pool -> dense softmax. Bias-free convolutions: BN supplies the shift
    and folds into the kernels at conversion.
    """
    _, keras = import_tf()
    layers = keras.layers
    l2 = keras.regularizers.l2(1e-4)
    inputs = keras.Input(shape=input_shape, name="mfcc")
    x = layers.Conv2D(filters, (10, 4), strides=(2, 2), padding="same", use_bias=False,
                      kernel_regularizer=l2, name="conv_1")(inputs)
    x = layers.BatchNormalization(momentum=0.9, name="conv_1_bn")(x)
    x = layers.ReLU(name="conv_1_relu")(x)
    x = layers.Dropout(0.2, name="conv_1_dropout")(x)
    for i in range(1, 5):
        x = layers.DepthwiseConv2D((3, 3), padding="same", use_bias=False, depthwise_regularizer=l2,
                                   name=f"dw_{i}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"dw_{i}_bn")(x)
        x = layers.ReLU(name=f"dw_{i}_relu")(x)
        x = layers.Conv2D(filters, (1, 1), padding="same", use_bias=False, kernel_regularizer=l2,
                          name=f"pw_{i}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"pw_{i}_bn")(x)
        x = layers.ReLU(name=f"pw_{i}_relu")(x)
    x = layers.Dropout(0.4, name="dropout")(x)
    x = layers.AveragePooling2D(pool_size=tuple(int(d) for d in x.shape[1:3]), name="avg_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="ds_cnn")


def train_model(dataset: Dataset, *, epochs: int = EPOCHS, seed: int = 0, filters: int = FILTERS,
                progress: Progress | None = None) -> Any:
    """Train a DS-CNN on `dataset`: seeded, numpy-ordered batches, Adam with cosine decay.

    Returns the dense float model, uncompiled (no optimizer state is kept).
    """
    _, keras = import_tf()
    keras.utils.set_random_seed(seed)
    model = build_ds_cnn(dataset.num_classes, filters, tuple(dataset.x_train.shape[1:]))
    batches = shuffled_batches(dataset.x_train, dataset.y_train, BATCH_SIZE, seed, keras)
    schedule = keras.optimizers.schedules.CosineDecay(LEARNING_RATE, decay_steps=epochs * len(batches), alpha=0.02)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    fit_with_progress(model, batches, dataset, epochs=epochs, progress=progress or no_progress, tfk=keras)
    trained = build_ds_cnn(dataset.num_classes, filters, tuple(dataset.x_train.shape[1:]))
    trained.set_weights(model.get_weights())
    return trained


def model_path(cache: CacheArg = None, options: GenerationOptions | None = None, *, epochs: int = EPOCHS,
               filters: int = FILTERS) -> Path:
    """The cached demo model's file: versioned by the model, its training and the data set."""
    options = options or GenerationOptions()
    key = hashlib.sha256(json.dumps([MODEL_VERSION, filters, epochs, BATCH_SIZE, LEARNING_RATE,
                                     options.key()]).encode()).hexdigest()[:16]
    return cache_root(cache) / f"{DEMO_NAME}-dscnn{filters}-{key}.keras"


def demo_model(cache: CacheArg = None, progress: Progress | None = None, *, seed: int = 0,
               options: GenerationOptions | None = None, epochs: int = EPOCHS,
               filters: int = FILTERS) -> tuple[Any, Dataset]:
    """The dense float DS-CNN and its synthetic data set; trains once, then loads the cache.

    `cache` is the cache directory (None: cache_dir(); False: neither read
    nor write a cache). A cache file that does not load is replaced by retraining.
    `options`/`epochs`/`filters` exist for tests and experiments; each value has its own cache file.
    """
    progress = progress or no_progress
    options = options or GenerationOptions(seed=seed)
    dataset = synthetic_splits(options, cache=cache, progress=progress).dataset
    path = None if cache is False else model_path(cache, options, epochs=epochs, filters=filters)
    model = cached_or_trained(
        path, expected=lambda: build_ds_cnn(dataset.num_classes, filters),
        train=lambda: train_model(dataset, epochs=epochs, seed=options.seed, filters=filters, progress=progress),
        validation=(dataset.x_val, dataset.y_val), progress=progress)
    return model, dataset


def test_split(cache: CacheArg = None, progress: Progress | None = None, *, seed: int = 0,
               options: GenerationOptions | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The held-out synthetic test set: voices never heard in training or validation."""
    splits = synthetic_splits(options or GenerationOptions(seed=seed), cache=cache, progress=progress)
    return splits.x_test, splits.y_test


test_split.__test__ = False     # type: ignore[attr-defined]  # not a pytest test, despite its name

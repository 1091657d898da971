"""Keyword-spotting demo: synthetic speech from espeak-ng, Speech Commands folders, DS-CNN.

The speech demo needs a data set that can be made on any machine without a
download, so it synthesises one: every word in many espeak-ng voices, speeds
and pitches, shifted in time, coloured, reverberated and mixed with generated
noise, then turned into MLPerf Tiny MFCCs by `audio.features_for_model` (the
function the on-device app also calls). The same classes and features come
from real recordings laid out like Speech Commands (`load_folder`).

CONTRACT:
    DEMO_NAME = "kws"
    KEYWORDS, UNKNOWN_WORDS, LABELS             # LABELS in MLPerf Tiny order (10 words, silence, unknown)
    Splits(dataset: data.Dataset, x_test, y_test)
    GenerationOptions(...)                      # everything that shapes the synthetic set; .key() names its cache file
    synthetic_splits(options=None, *, cache=None, progress=None, workers=None) -> Splits  # generated once, cached
    load_folder(root, *, keywords=KEYWORDS, seed=0, val_percent=10, test_percent=10, workers=None) -> Splits
    save_npz(path, splits) -> None              # x_train, y_train, x_val, y_val, x_test, y_test, labels
    build_ds_cnn(num_classes=12, filters=FILTERS, input_shape=(49, 10, 1)) -> tf_keras.Model (uncompiled)
    train_model(dataset, *, epochs=EPOCHS, seed=0, filters=FILTERS, progress=None) -> tf_keras.Model
    demo_model(cache=None, progress=None, *, seed=0, options=None, epochs=EPOCHS, filters=FILTERS)
        -> (tf_keras.Model, data.Dataset)      # trained once, deterministically, and cached
    test_split(cache=None, progress=None, *, seed=0, options=None) -> (x_test, y_test)   # held-out voices
    `cache`: a directory, None/True = demo.cache_dir(), False = neither read nor write.
    progress(event, fields): "demo_data_begin" {name, clips, source}, "demo_data_progress" {name, done,
        clips}, "demo_data_end" {name, clips, seconds, path}, then the digits demo's events:
        "demo_train_begin" {epochs, steps_per_epoch, samples}, "demo_epoch_end" {epoch (0-based),
        loss, accuracy, val_accuracy}, "demo_train_end" {val_accuracy, seconds, path}, "demo_cache_hit" {path}.
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
from typing import Callable

import numpy as np

from edgesparse.data import audio
from edgesparse.data.dataset import Dataset
from edgesparse.errors import DataError
from edgesparse.fsutil import atomic_write_bytes

Progress = Callable[[str, dict], None]

DEMO_NAME = "kws"
KEYWORDS = ("down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes")
# Speech Commands' auxiliary words plus a few more: the "unknown" class.
UNKNOWN_WORDS = (
    "backward", "bed", "bird", "cat", "dog", "eight", "five", "follow", "forward", "four", "happy",
    "house", "learn", "marvin", "nine", "one", "seven", "sheila", "six", "three", "tree", "two",
    "visual", "wow", "zero", "hello", "light", "music", "water", "window", "paper", "orange",
)
SILENCE, UNKNOWN = "silence", "unknown"
LABELS = KEYWORDS + (SILENCE, UNKNOWN)      # == MLPerf Tiny KWS label ids 0..11

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


@dataclass
class Splits:
    """Train/validation as the pipeline's Dataset, plus the held-out test set."""

    dataset: Dataset
    x_test: np.ndarray
    y_test: np.ndarray


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

def noise(kind: str, rng: np.random.Generator, n: int = audio.CLIP_SAMPLES) -> np.ndarray:
    """Unit-RMS generated noise: white, pink, brown, hum (50/60 Hz + harmonics) or band (fan-like)."""
    if kind == "hum":
        t = np.arange(n) / audio.SAMPLE_RATE
        base = rng.choice([50.0, 60.0])
        x = sum(rng.uniform(0.1, 1.0) / k * np.sin(2 * np.pi * base * k * t + rng.uniform(0, 2 * np.pi))
                for k in range(1, 9))
        x = x + 0.05 * rng.standard_normal(n)
    else:
        spectrum = np.fft.rfft(rng.standard_normal(n))
        f = np.fft.rfftfreq(n, 1.0 / audio.SAMPLE_RATE)
        f[0] = f[1]
        if kind == "pink":
            spectrum /= np.sqrt(f)
        elif kind == "brown":
            spectrum /= f
        elif kind == "band":
            low = rng.uniform(50, 1500)
            spectrum *= np.exp(-0.5 * (np.log(f / low) / rng.uniform(0.3, 1.2)) ** 2)
        elif kind != "white":
            raise ValueError(f"unknown noise kind {kind!r}")
        x = np.fft.irfft(spectrum, n)
    return x / (np.sqrt(np.mean(x * x)) + 1e-12)


NOISE_KINDS = ("white", "pink", "brown", "hum", "band")


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
class _Clip:
    label: int
    word: str | None          # None: silence (noise only)
    voice: str
    speed: int
    pitch: int
    amplitude: int
    seed: tuple[int, ...]


def _voices_by_split(options: GenerationOptions) -> list[list[str]]:
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


def _plan(options: GenerationOptions) -> list[list[_Clip]]:
    """Every clip of every split, decided up front from the seed (order-independent)."""
    labels = _labels_for(options.keywords)
    splits: list[list[_Clip]] = []
    for split, (voices, count) in enumerate(zip(_voices_by_split(options), _split_counts(options))):
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
                clips.append(_Clip(
                    label=label, word=word, voice=voices[int(rng.integers(len(voices)))],
                    speed=int(rng.integers(options.speed_wpm[0], options.speed_wpm[1] + 1)),
                    pitch=int(rng.integers(options.pitch[0], options.pitch[1] + 1)),
                    amplitude=int(rng.integers(options.amplitude[0], options.amplitude[1] + 1)),
                    seed=seed + (1,)))
        splits.append(clips)
    return splits


def render_clip(clip: _Clip, options: GenerationOptions) -> np.ndarray:
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


def _features(clip: _Clip, options: GenerationOptions) -> np.ndarray:
    return audio.features_for_model(render_clip(clip, options))


def _labels_for(keywords) -> tuple[str, ...]:
    return tuple(sorted(keywords)) + (SILENCE, UNKNOWN)


def _cache_root(cache) -> Path:
    if cache not in (None, True, False):
        return Path(cache)
    from edgesparse.pipeline.demos.digits import cache_dir

    return cache_dir()


def synthetic_path(options: GenerationOptions | None = None, cache=None) -> Path:
    """Where the generated set for these options lives (or will live)."""
    options = options or GenerationOptions()
    return _cache_root(cache) / f"{DEMO_NAME}-synthetic-{options.key()}.npz"


def synthetic_splits(options: GenerationOptions | None = None, *, cache=None,
                     progress: Progress | None = None, workers: int | None = None) -> Splits:
    """The synthetic set: loaded from the cache, else generated (parallel espeak-ng) and cached.

    `cache` is the cache directory (None: demo.cache_dir(); False: generate and
    keep nothing). Raises DataError when espeak-ng is missing and nothing is cached.
    """
    options = options or GenerationOptions()
    progress = progress or _noop
    path = None if cache is False else synthetic_path(options, cache)
    if path is not None and path.is_file():
        try:
            return _load_npz(path)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass                            # unreadable cache: generate it again
    exe_version = espeak_version()          # fails early, with the install command, when it is missing
    plan = _plan(options)
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
    np.savez(buffer, **dict(zip(names, arrays)), labels=np.array(_labels_for(options.keywords)),
             meta=np.array(json.dumps(meta)))
    progress("demo_data_end", {"name": DEMO_NAME, "clips": total, "seconds": round(seconds, 2),
                               "path": str(path) if path else None})
    if path is None:
        return _load_npz(io.BytesIO(buffer.getvalue()))
    atomic_write_bytes(path, buffer.getvalue())
    return _load_npz(path)


def _load_npz(path) -> Splits:
    with np.load(path, allow_pickle=False) as f:
        labels = [str(s) for s in f["labels"]]
        meta = json.loads(str(f["meta"])) if "meta" in f else {}
        dataset = Dataset(x_train=f["x_train"], y_train=f["y_train"], x_val=f["x_val"], y_val=f["y_val"],
                          num_classes=len(labels), source=meta.get("source", str(path)), labels=labels)
        return Splits(dataset, f["x_test"], f["y_test"])


def save_npz(path: str | Path, splits: Splits) -> None:
    """Write the splits as an .npz that `edgesparse build --data` reads (atomically)."""
    d = splits.dataset
    buffer = io.BytesIO()
    np.savez(buffer, x_train=d.x_train, y_train=d.y_train, x_val=d.x_val, y_val=d.y_val,
             x_test=splits.x_test, y_test=splits.y_test, labels=np.array(list(d.labels)))
    atomic_write_bytes(path, buffer.getvalue())


def _noop(event: str, fields: dict) -> None:
    return None


# ----------------------------------------------------------------------------- real recordings

def _stable_percent(key: str) -> float:
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") / 2 ** 64 * 100.0


def _read_list(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    return {line.strip().replace("\\", "/") for line in path.read_text().splitlines() if line.strip()}


def load_folder(root: str | Path, *, keywords=KEYWORDS, seed: int = 0, val_percent: float = 10.0,
                test_percent: float = 10.0, workers: int | None = None) -> Splits:
    """Read recordings laid out like Speech Commands: `<root>/<label>/*.wav`.

    Folders named like a keyword are that keyword; `silence`/`_silence_` and
    1 s pieces of `_background_noise_/*.wav` are silence (generated noise when
    there is none); every other folder is unknown; other `_`/`.` folders are
    skipped. validation_list.txt / testing_list.txt (paths relative to root) fix
    the split when present; otherwise a seeded hash of the speaker id (the name
    before `_nohash_`, else the file stem) does, so a speaker never spans splits.
    Every file goes through `audio.read_wav` and `audio.features_for_model`.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError("The recordings folder does not exist", where=str(root),
                        expected="a folder of <label>/*.wav", received="no such folder",
                        fix="Pass the folder that holds one sub-folder per word (Speech Commands layout)")
    labels = _labels_for(keywords)
    index = {name: i for i, name in enumerate(labels)}
    val_list, test_list = _read_list(root / "validation_list.txt"), _read_list(root / "testing_list.txt")
    listed = bool(val_list or test_list)

    def split_of(rel: str, group: str) -> int:
        if listed:
            return 1 if rel in val_list else 2 if rel in test_list else 0
        p = _stable_percent(f"{seed}:{group}")
        return 1 if p < val_percent else 2 if p < val_percent + test_percent else 0

    jobs: list[tuple[int, int, Path]] = []          # (split, label, file)
    background: list[Path] = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        name = folder.name.lower()
        if name == "_background_noise_":
            background = sorted(folder.glob("*.wav"))
            continue
        if name in ("silence", "_silence_"):
            label = index[SILENCE]
        elif name.startswith(("_", ".")):
            continue
        else:
            label = index.get(name, index[UNKNOWN])
        for wav in sorted(folder.glob("*.wav")):
            rel = f"{folder.name}/{wav.name}"
            jobs.append((split_of(rel, wav.stem.split("_nohash_")[0]), label, wav))
    if not jobs:
        raise DataError("No recordings found", where=str(root), expected="<root>/<label>/*.wav files",
                        received="no .wav files in any sub-folder",
                        fix="Lay the recordings out as <root>/yes/*.wav, <root>/no/*.wav, ...")

    def features(path: Path) -> np.ndarray:
        samples, rate = audio.read_wav(path)
        return audio.features_for_model(samples, rate)

    with ThreadPoolExecutor(max_workers=workers or max(2, os.cpu_count() or 1)) as pool:
        feats = list(pool.map(features, [job[2] for job in jobs]))
    parts = [([], []) for _ in range(3)]
    for (split, label, _), x in zip(jobs, feats):
        parts[split][0].append(x)
        parts[split][1].append(label)
    _add_silence(parts, background, index[SILENCE], seed, val_percent, test_percent)

    def arrays(split: int):
        xs, ys = parts[split]
        return (np.stack(xs) if xs else np.zeros((0,) + audio.FEATURE_SHAPE, np.float32)), np.array(ys, np.int64)

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = arrays(0), arrays(1), arrays(2)
    for name, y in (("training", y_train), ("validation", y_val)):
        if len(y) == 0:
            raise DataError(f"The {name} split is empty", where=str(root),
                            expected="recordings in the training and validation splits",
                            received=f"{len(y_train)} training, {len(y_val)} validation, {len(y_test)} test clips",
                            fix="Add recordings (more speakers), raise val_percent, or list files in validation_list.txt")
    dataset = Dataset(x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, num_classes=len(labels),
                      source=f"folder:{root}", labels=list(labels))
    return Splits(dataset, x_test, y_test)


def _add_silence(parts, background: list[Path], label: int, seed: int, val_percent: float,
                 test_percent: float) -> None:
    """Silence examples: 1 s pieces of the background-noise files, or generated noise."""
    if any(label in ys for _, ys in parts):
        return
    pieces: list[tuple[str, np.ndarray]] = []
    for path in background:
        samples, rate = audio.read_wav(path)
        x = audio.resample(samples, rate)
        for i in range(len(x) // audio.CLIP_SAMPLES):
            pieces.append((f"{path.name}:{i}", x[i * audio.CLIP_SAMPLES:(i + 1) * audio.CLIP_SAMPLES]))
    if not pieces:          # none recorded: as many generated noise clips as an average keyword has
        count = max(1, int(np.median(np.bincount(np.concatenate([np.asarray(ys, int) for _, ys in parts])))))
        for i in range(count):
            rng = np.random.default_rng([seed, 11, i])
            level = 10 ** (rng.uniform(-70, -10) / 20)
            pieces.append((f"generated:{i}", level * noise(str(rng.choice(NOISE_KINDS)), rng)))
    for key, x in pieces:
        p = _stable_percent(f"{seed}:{key}")
        split = 1 if p < val_percent else 2 if p < val_percent + test_percent else 0
        parts[split][0].append(audio.features_for_model(x))
        parts[split][1].append(label)


# ----------------------------------------------------------------------------- model and demo

def build_ds_cnn(num_classes: int = len(LABELS), filters: int = FILTERS,
                 input_shape: tuple[int, ...] = audio.FEATURE_SHAPE):
    """DS-CNN as in MLPerf Tiny KWS / Hello Edge, with explicit layer names (uncompiled).

    Conv 10x4 stride 2 -> 4 x (depthwise 3x3 + BN + ReLU, pointwise 1x1 + BN + ReLU)
    -> average pool -> dense softmax. Bias-free convolutions: BN supplies the shift
    and folds into the kernels at conversion.
    """
    from edgesparse.pipeline.tf_env import import_tf

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


def train_model(dataset, *, epochs: int = EPOCHS, seed: int = 0, filters: int = FILTERS,
                progress: Progress | None = None):
    """Train a DS-CNN on `dataset`: seeded, numpy-ordered batches, Adam with cosine decay.

    Returns the dense float model, uncompiled (no optimizer state is kept).
    """
    from edgesparse.pipeline.demos.digits import shuffled_batches
    from edgesparse.pipeline.tf_env import import_tf

    _, keras = import_tf()
    progress = progress or _noop
    keras.utils.set_random_seed(seed)
    model = build_ds_cnn(dataset.num_classes, filters, tuple(dataset.x_train.shape[1:]))
    batches = shuffled_batches(dataset.x_train, dataset.y_train, BATCH_SIZE, seed, keras)
    schedule = keras.optimizers.schedules.CosineDecay(LEARNING_RATE, decay_steps=epochs * len(batches), alpha=0.02)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])

    class _Report(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            progress("demo_epoch_end", {"epoch": epoch, "loss": logs.get("loss"), "accuracy": logs.get("accuracy"),
                                        "val_accuracy": logs.get("val_accuracy")})

    progress("demo_train_begin", {"epochs": epochs, "steps_per_epoch": len(batches), "samples": len(dataset.x_train)})
    model.fit(batches, epochs=epochs, validation_data=(dataset.x_val, dataset.y_val), callbacks=[_Report()],
              verbose=0, shuffle=False)
    trained = build_ds_cnn(dataset.num_classes, filters, tuple(dataset.x_train.shape[1:]))
    trained.set_weights(model.get_weights())
    return trained


def model_path(cache=None, options: GenerationOptions | None = None, *, epochs: int = EPOCHS,
               filters: int = FILTERS) -> Path:
    """The cached demo model's file: versioned by the model, its training and the data set."""
    options = options or GenerationOptions()
    key = hashlib.sha256(json.dumps([MODEL_VERSION, filters, epochs, BATCH_SIZE, LEARNING_RATE,
                                     options.key()]).encode()).hexdigest()[:16]
    return _cache_root(cache) / f"{DEMO_NAME}-dscnn{filters}-{key}.keras"


def demo_model(cache=None, progress: Progress | None = None, *, seed: int = 0,
               options: GenerationOptions | None = None, epochs: int = EPOCHS, filters: int = FILTERS):
    """The dense float DS-CNN and its synthetic data set; trains once, then loads the cache.

    `cache` is the cache directory (None: demo.cache_dir(); False: neither read
    nor write a cache). A cache file that does not load is replaced by retraining.
    `options`/`epochs`/`filters` exist for tests and experiments; each value has its own cache file.
    """
    from edgesparse.pipeline.demos.digits import save_model_atomically

    progress = progress or _noop
    options = options or GenerationOptions(seed=seed)
    splits = synthetic_splits(options, cache=cache, progress=progress)
    path = None if cache is False else model_path(cache, options, epochs=epochs, filters=filters)
    if path is not None and path.is_file():
        model = _load_cached(path, splits.dataset.num_classes, filters)
        if model is not None:
            progress("demo_cache_hit", {"path": str(path)})
            return model, splits.dataset
    started = time.monotonic()
    model = train_model(splits.dataset, epochs=epochs, seed=options.seed, filters=filters, progress=progress)
    if path is not None:
        save_model_atomically(model, path)
    val = float(np.mean(np.argmax(model.predict(splits.dataset.x_val, verbose=0), axis=1) == splits.dataset.y_val))
    progress("demo_train_end", {"val_accuracy": val, "seconds": time.monotonic() - started,
                                "path": str(path) if path else None})
    return model, splits.dataset


def _load_cached(path: Path, num_classes: int, filters: int):
    """The cached model, or None when the file is corrupt or not this DS-CNN."""
    from edgesparse.pipeline.tf_env import import_tf

    _, keras = import_tf()
    try:
        model = keras.models.load_model(str(path), compile=False, safe_mode=True)
    except Exception:  # noqa: BLE001 - any unreadable cache is simply rebuilt
        return None
    expected = build_ds_cnn(num_classes, filters)
    same = (isinstance(model, keras.Model)
            and [layer.name for layer in model.layers] == [layer.name for layer in expected.layers]
            and [tuple(w.shape) for w in model.weights] == [tuple(w.shape) for w in expected.weights])
    return model if same else None


def test_split(cache=None, progress: Progress | None = None, *, seed: int = 0,
               options: GenerationOptions | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The held-out synthetic test set: voices never heard in training or validation."""
    splits = synthetic_splits(options or GenerationOptions(seed=seed), cache=cache, progress=progress)
    return splits.x_test, splits.y_test


test_split.__test__ = False     # not a pytest test, despite its name

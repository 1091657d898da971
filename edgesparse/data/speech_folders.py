"""Recordings laid out like Speech Commands (`<root>/<label>/*.wav`) as MLPerf Tiny KWS features.

Why in data: `build --data FOLDER` reads such folders for any keyword-spotting
model, so the reader must not depend on the speech demo. The class list
(10 keywords, silence, unknown, in MLPerf Tiny order), the generated noise used
for silence, and the split rules live here; the demo imports them. Every file
goes through `audio.read_wav` and `audio.features_for_model`, the functions the
device app calls too.

Raises DataError (no recordings, an empty split, unreadable .wav files).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from edgesparse.data import audio
from edgesparse.data.dataset import Dataset, Splits
from edgesparse.errors import DataError

__all__ = [
    "KEYWORDS",
    "LABELS",
    "NOISE_KINDS",
    "SILENCE",
    "UNKNOWN",
    "labels_for",
    "load_speech_folder",
    "noise",
]

KEYWORDS = ("down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes")
SILENCE, UNKNOWN = "silence", "unknown"
LABELS = (*KEYWORDS, SILENCE, UNKNOWN)      # == MLPerf Tiny KWS label ids 0..11
NOISE_KINDS = ("white", "pink", "brown", "hum", "band")

_Parts = list[tuple[list[np.ndarray], list[int]]]      # per split (train, val, test): features, labels


def labels_for(keywords: Iterable[str]) -> tuple[str, ...]:
    """The class names for these keywords: sorted keywords, then silence and unknown."""
    return (*sorted(keywords), SILENCE, UNKNOWN)


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
    return np.asarray(x / (np.sqrt(np.mean(x * x)) + 1e-12))


def _stable_percent(key: str) -> float:
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") / 2 ** 64 * 100.0


def _read_list(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    return {line.strip().replace("\\", "/") for line in path.read_text().splitlines() if line.strip()}


def load_speech_folder(root: str | Path, *, keywords: Iterable[str] = KEYWORDS, seed: int = 0,
                       val_percent: float = 10.0, test_percent: float = 10.0, workers: int | None = None) -> Splits:
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
    labels = labels_for(keywords)
    jobs, background = _plan_recordings(root, labels, seed, val_percent, test_percent)

    def features(path: Path) -> np.ndarray:
        samples, rate = audio.read_wav(path)
        return audio.features_for_model(samples, rate)

    with ThreadPoolExecutor(max_workers=workers or max(2, os.cpu_count() or 1)) as pool:
        feats = list(pool.map(features, [job[2] for job in jobs]))
    parts: _Parts = [([], []) for _ in range(3)]
    for (split, label, _), x in zip(jobs, feats):
        parts[split][0].append(x)
        parts[split][1].append(label)
    _add_silence(parts, background, labels.index(SILENCE), seed, val_percent, test_percent)

    def arrays(split: int) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = parts[split]
        return (np.stack(xs) if xs else np.zeros((0, *audio.FEATURE_SHAPE), np.float32)), np.array(ys, np.int64)

    (x_train, y_train), (x_val, y_val), (x_test, y_test) = arrays(0), arrays(1), arrays(2)
    for name, y in (("training", y_train), ("validation", y_val)):
        if len(y) == 0:
            raise DataError(f"The {name} split is empty", where=str(root),
                            expected="recordings in the training and validation splits",
                            received=f"{len(y_train)} training, {len(y_val)} validation, {len(y_test)} test clips",
                            fix="Add recordings (more speakers), raise val_percent, "
                                "or list files in validation_list.txt")
    dataset = Dataset(x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, num_classes=len(labels),
                      source=f"folder:{root}", labels=list(labels))
    return Splits(dataset, x_test, y_test)


def _plan_recordings(root: Path, labels: tuple[str, ...], seed: int, val_percent: float,
                     test_percent: float) -> tuple[list[tuple[int, int, Path]], list[Path]]:
    """([(split, label, file)], background-noise files): which recording goes where, before any is decoded."""
    index = {name: i for i, name in enumerate(labels)}
    val_list, test_list = _read_list(root / "validation_list.txt"), _read_list(root / "testing_list.txt")
    listed = bool(val_list or test_list)

    def split_of(rel: str, group: str) -> int:
        if listed:
            return 1 if rel in val_list else 2 if rel in test_list else 0
        p = _stable_percent(f"{seed}:{group}")
        return 1 if p < val_percent else 2 if p < val_percent + test_percent else 0

    jobs: list[tuple[int, int, Path]] = []
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
    return jobs, background


def _add_silence(parts: _Parts, background: list[Path], label: int, seed: int, val_percent: float,
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

"""The built-in demo: a small CNN on scikit-learn's handwritten digits (8x8, 10 classes).

CONTRACT:
    DEMO_NAME = "digits"
    cache_dir() -> Path                        # $EDGESPARSE_CACHE or ~/.cache/edgesparse
    load_digits_dataset(seed=0) -> data.Dataset
    build_digits_model(seed=0) -> tf_keras.Model  # dense float, uncompiled
    demo_model(cache=None, progress=None) -> tuple[tf_keras.Model, data.Dataset]
        trains once, deterministically, and caches the dense model; later calls load it.
    progress(event, fields) events: "demo_train_begin" {epochs, steps_per_epoch, samples},
        "demo_epoch_end" {epoch (0-based), loss, accuracy, val_accuracy},
        "demo_train_end" {val_accuracy, seconds, path, cache_error}, "demo_cache_hit" {path}

Why digits: scikit-learn ships them (no download, so `edgesparse build` works
offline), and they train to ~98% in seconds on two cores. The model's weights
sit mostly in one Dense layer (65.7k of 71.8k parameters), so 80% pruning with
1x4 blocks visibly shrinks the int8 flatbuffer: the demo shows what sparsity buys.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edgesparse.data.dataset import Dataset
from edgesparse.errors import MissingDependency
from edgesparse.fsutil import atomic_write_bytes
from edgesparse.pipeline.tf_env import import_tf

DEMO_NAME = "digits"
CACHE_VERSION = 1  # bump when the model, its training or the split changes
EPOCHS = 15
BATCH_SIZE = 32
LEARNING_RATE = 2e-3
INPUT_SHAPE = (8, 8, 1)
NUM_CLASSES = 10

Progress = Callable[[str, dict], None]


def cache_dir() -> Path:
    """Where the trained demo model lives: $EDGESPARSE_CACHE, else ~/.cache/edgesparse."""
    env = os.environ.get("EDGESPARSE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgesparse"


def cache_path(directory: Path | str | None = None, seed: int = 0) -> Path:
    """The versioned cache file name, so a changed demo never loads a stale model."""
    return Path(directory or cache_dir()) / f"{DEMO_NAME}-cnn-v{CACHE_VERSION}-seed{seed}.keras"


def load_digits_dataset(seed: int = 0) -> Dataset:
    """scikit-learn's 1797 digits as 8x8x1 float32 in [0, 1], a fixed stratified 80/20 split."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise MissingDependency(
            "scikit-learn is needed for the built-in demo data and is not installed",
            received=str(exc), fix="Install the build half: pip install 'edgesparse[build]'",
        ) from None
    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[..., None]
    y = digits.target.astype(np.int64)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.2, stratify=y, random_state=seed)
    return Dataset(
        x_train=np.ascontiguousarray(x_train), y_train=y_train,
        x_val=np.ascontiguousarray(x_val), y_val=y_val, num_classes=NUM_CLASSES,
        source=f"scikit-learn digits (8x8 grayscale, stratified 80/20 split, seed {seed})",
        labels=[str(d) for d in range(NUM_CLASSES)],
    )


def build_digits_model(seed: int = 0) -> Any:
    """Conv(16)-Conv(32)-MaxPool-Flatten(512)-Dense(128)-Dense(10): weights dominated by 'fc1'."""
    _, tfk = import_tf()
    layers = tfk.layers

    def init(offset: int) -> Any:
        return tfk.initializers.GlorotUniform(seed=seed * 100 + offset)

    return tfk.Sequential(
        [
            tfk.Input(shape=INPUT_SHAPE, name="image"),
            layers.Conv2D(16, 3, padding="same", activation="relu", kernel_initializer=init(1), name="conv1"),
            layers.Conv2D(32, 3, padding="same", activation="relu", kernel_initializer=init(2), name="conv2"),
            layers.MaxPooling2D(2, name="pool"),
            layers.Flatten(name="flatten"),
            layers.Dense(128, activation="relu", kernel_initializer=init(3), name="fc1"),
            layers.Dense(NUM_CLASSES, activation="softmax", kernel_initializer=init(4), name="classifier"),
        ],
        name=f"{DEMO_NAME}_cnn",
    )


def demo_model(
    cache: Path | str | None | bool = None, progress: Progress | None = None, *, seed: int = 0
) -> tuple[Any, Dataset]:
    """The trained dense demo model and its data set; trains once, then loads the cache.

    `cache` is the cache directory (None: cache_dir(); False: neither read nor
    write a cache). A cache file that does not load is replaced by retraining.
    """
    progress = progress or (lambda event, fields: None)
    dataset = load_digits_dataset(seed)
    path = None if cache is False else cache_path(None if cache in (None, True) else cache, seed)
    if path is not None and path.is_file():
        model = _load_cached(path)
        if model is not None:
            progress("demo_cache_hit", {"path": str(path)})
            return model, dataset
    model = _train(dataset, seed, progress, path)
    return model, dataset


def _load_cached(path: Path) -> Any | None:
    """The cached model, or None when the file is corrupt or not the demo architecture."""
    _, tfk = import_tf()
    try:
        model = tfk.models.load_model(str(path), compile=False, safe_mode=True)
    except Exception:  # noqa: BLE001 - any unreadable cache is simply rebuilt
        return None
    expected = build_digits_model()
    same = (
        isinstance(model, tfk.Model)
        and [layer.name for layer in model.layers] == [layer.name for layer in expected.layers]
        and [tuple(w.shape) for w in model.weights] == [tuple(w.shape) for w in expected.weights]
    )
    return model if same else None


def _train(dataset: Dataset, seed: int, progress: Progress, path: Path | None) -> Any:
    """Deterministic training: seeded initializers, numpy-shuffled batches, no dropout."""
    tf, tfk = import_tf()
    model = build_digits_model(seed)
    model.compile(optimizer=tfk.optimizers.Adam(LEARNING_RATE),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    batches = shuffled_batches(dataset.x_train, dataset.y_train, BATCH_SIZE, seed, tfk)
    progress("demo_train_begin", {"epochs": EPOCHS, "steps_per_epoch": len(batches), "samples": dataset.n_train})
    started = time.monotonic()

    class _Report(tfk.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            progress("demo_epoch_end", {"epoch": epoch, "loss": logs.get("loss"),
                                        "accuracy": logs.get("accuracy"), "val_accuracy": logs.get("val_accuracy")})

    history = model.fit(batches, epochs=EPOCHS, validation_data=(dataset.x_val, dataset.y_val),
                        callbacks=[_Report()], verbose=0, shuffle=False)
    trained = build_digits_model(seed)  # uncompiled, like a cache hit; no optimizer state in the file
    trained.set_weights(model.get_weights())
    cache_error = None
    if path is not None:
        try:
            save_model_atomically(trained, path)
        except OSError as exc:  # an unwritable cache costs a retrain next time, not this build
            cache_error, path = f"{type(exc).__name__}: {exc}", None
    progress("demo_train_end", {"val_accuracy": history.history["val_accuracy"][-1],
                                "seconds": time.monotonic() - started, "path": str(path) if path else None,
                                "cache_error": cache_error})
    return trained


def save_model_atomically(model: Any, path: Path) -> None:
    """Save to a private temp dir, then publish the bytes with an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".digits-", dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        model.save(str(staged))
        atomic_write_bytes(path, staged.read_bytes())


def shuffled_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, tfk: Any) -> Any:
    """A keras Sequence whose per-epoch order comes from numpy's seeded generator, not TF's."""

    class Batches(tfk.utils.Sequence):
        def __init__(self) -> None:
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(x))

        def __len__(self) -> int:
            return -(-len(x) // batch_size)

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            take = self.order[i * batch_size : (i + 1) * batch_size]
            return x[take], y[take]

        def on_epoch_end(self) -> None:
            self.order = self.rng.permutation(len(x))

    return Batches()

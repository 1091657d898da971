"""The built-in demo: a small CNN on scikit-learn's handwritten digits (8x8, 10 classes).

Why digits: scikit-learn ships them (no download, so `edgesparse build` works
offline), and they train to ~98% in seconds on two cores. The model's weights
sit mostly in one Dense layer (65.7k of 71.8k parameters), so 80% pruning with
1x4 blocks visibly shrinks the int8 flatbuffer: the demo shows what sparsity buys.

The dense model is trained once, deterministically, and cached (demos.cache).
Raises MissingDependency (scikit-learn or TensorFlow not installed).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from edgesparse._types import Progress, no_progress
from edgesparse.data import Dataset
from edgesparse.errors import MissingDependency
from edgesparse.pipeline.demos.cache import CacheArg, cache_root, cached_or_trained
from edgesparse.pipeline.demos.training import fit_with_progress, shuffled_batches
from edgesparse.pipeline.tf_env import import_tf

__all__ = [
    "BATCH_SIZE",
    "CACHE_VERSION",
    "DEMO_NAME",
    "EPOCHS",
    "INPUT_SHAPE",
    "LEARNING_RATE",
    "NUM_CLASSES",
    "build_digits_model",
    "cache_path",
    "demo_model",
    "load_digits_dataset",
    "train_model",
]

DEMO_NAME = "digits"
CACHE_VERSION = 1  # bump when the model, its training or the split changes
EPOCHS = 15
BATCH_SIZE = 32
LEARNING_RATE = 2e-3
INPUT_SHAPE = (8, 8, 1)
NUM_CLASSES = 10


def cache_path(directory: Path | str | None = None, seed: int = 0) -> Path:
    """The versioned cache file name, so a changed demo never loads a stale model."""
    return cache_root(directory) / f"{DEMO_NAME}-cnn-v{CACHE_VERSION}-seed{seed}.keras"


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


def demo_model(cache: CacheArg = None, progress: Progress | None = None, *, seed: int = 0) -> tuple[Any, Dataset]:
    """The trained dense demo model and its data set; trains once, then loads the cache.

    `cache` is the cache directory (None: cache_dir(); False: neither read nor
    write a cache). A cache file that does not load is replaced by retraining.
    """
    progress = progress or no_progress
    dataset = load_digits_dataset(seed)
    path = None if cache is False else cache_path(None if cache is True else cache, seed)
    model = cached_or_trained(path, expected=build_digits_model, validation=(dataset.x_val, dataset.y_val),
                              train=lambda: train_model(dataset, seed=seed, progress=progress), progress=progress)
    return model, dataset


def train_model(dataset: Dataset, *, seed: int = 0, progress: Progress = no_progress) -> Any:
    """Deterministic training: seeded initializers, numpy-shuffled batches, no dropout. Returns it uncompiled."""
    _, tfk = import_tf()
    model = build_digits_model(seed)
    model.compile(optimizer=tfk.optimizers.Adam(LEARNING_RATE),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    batches = shuffled_batches(dataset.x_train, dataset.y_train, BATCH_SIZE, seed, tfk)
    fit_with_progress(model, batches, dataset, epochs=EPOCHS, progress=progress, tfk=tfk)
    trained = build_digits_model(seed)  # uncompiled, like a cache hit; no optimizer state in the file
    trained.set_weights(model.get_weights())
    return trained

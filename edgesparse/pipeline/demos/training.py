"""Deterministic training pieces both built-in demos use: seeded batches and per-epoch progress.

Why numpy-ordered batches: TensorFlow's own shuffling is not reproducible across
runs on two threads, and the demo models are cached by their training recipe.
Progress events: "demo_train_begin" {epochs, steps_per_epoch, samples},
"demo_epoch_end" {epoch (0-based), loss, accuracy, val_accuracy}.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgesparse._types import Progress
from edgesparse.data import Dataset

__all__ = ["epoch_progress", "fit_with_progress", "shuffled_batches"]


def shuffled_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int, tfk: Any) -> Any:
    """A keras Sequence whose per-epoch order comes from numpy's seeded generator, not TF's."""

    class Batches(tfk.utils.Sequence):
        def __init__(self) -> None:
            super().__init__()
            self.rng = np.random.default_rng(seed)
            self.order = self.rng.permutation(len(x))

        def __len__(self) -> int:
            return (len(x) + batch_size - 1) // batch_size

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            take = self.order[i * batch_size : (i + 1) * batch_size]
            return x[take], y[take]

        def on_epoch_end(self) -> None:
            self.order = self.rng.permutation(len(x))

    return Batches()


def epoch_progress(progress: Progress, tfk: Any) -> Any:
    """A keras callback that reports each finished epoch as "demo_epoch_end"."""

    class _Report(tfk.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            progress("demo_epoch_end", {"epoch": epoch, "loss": logs.get("loss"), "accuracy": logs.get("accuracy"),
                                        "val_accuracy": logs.get("val_accuracy")})

    return _Report()


def fit_with_progress(model: Any, batches: Any, dataset: Dataset, *, epochs: int, progress: Progress,
                      tfk: Any) -> None:
    """model.fit over `batches` in their own order, validating on the dataset; reports the demo_* events."""
    progress("demo_train_begin", {"epochs": epochs, "steps_per_epoch": len(batches), "samples": dataset.n_train})
    model.fit(batches, epochs=epochs, validation_data=(dataset.x_val, dataset.y_val),
              callbacks=[epoch_progress(progress, tfk)], verbose=0, shuffle=False)

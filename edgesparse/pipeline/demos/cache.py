"""The built-in demos' model cache: where it lives, and the load-or-train step both demos share.

A demo trains its dense model once, deterministically; later builds load it. A
cache file that does not load, or is not the demo's architecture, is retrained
and replaced; an unwritable cache costs a retrain next time, not this build.

Progress events: "demo_cache_hit" {path}, "demo_train_end" {val_accuracy,
seconds, path, cache_error}. Raises MissingDependency (TensorFlow not installed).
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse._types import Progress
from edgesparse.fsutil import atomic_write_bytes
from edgesparse.pipeline.tf_env import import_tf

__all__ = ["CacheArg", "cache_dir", "cache_root", "cached_or_trained", "load_cached", "save_model_atomically"]

# A demo's `cache` argument: a directory, None/True for cache_dir(), False for no cache at all.
CacheArg = Path | str | bool | None


def cache_dir() -> Path:
    """Where trained demo models and generated data live: $EDGESPARSE_CACHE, else ~/.cache/edgesparse."""
    env = os.environ.get("EDGESPARSE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "edgesparse"


def cache_root(cache: CacheArg) -> Path:
    """The directory a `cache` argument names (None or True: cache_dir()); callers handle False themselves."""
    return cache_dir() if cache is None or isinstance(cache, bool) else Path(cache)


def load_cached(path: Path, expected: Any) -> Any | None:
    """The model saved at `path`, or None when it does not load or differs from `expected` (layers, weight shapes)."""
    _, keras = import_tf()
    try:
        model = keras.models.load_model(str(path), compile=False, safe_mode=True)
    except Exception:
        return None
    same = (isinstance(model, keras.Model)
            and [layer.name for layer in model.layers] == [layer.name for layer in expected.layers]
            and [tuple(w.shape) for w in model.weights] == [tuple(w.shape) for w in expected.weights])
    return model if same else None


def save_model_atomically(model: Any, path: Path) -> None:
    """Save to a private temp dir, then publish the bytes with an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".demo-", dir=path.parent) as tmp:
        staged = Path(tmp) / path.name
        model.save(str(staged))
        atomic_write_bytes(path, staged.read_bytes())


def cached_or_trained(path: Path | None, *, expected: Callable[[], Any], train: Callable[[], Any],
                      validation: tuple[np.ndarray, np.ndarray], progress: Progress) -> Any:
    """The model cached at `path` when it is valid, else `train()`'s, saved to `path` (None: no cache).

    `expected()` builds an untrained model of the demo's architecture to compare
    a cache file against; `validation` (x, y) gives the accuracy reported after training.
    """
    if path is not None and path.is_file():
        model = load_cached(path, expected())
        if model is not None:
            progress("demo_cache_hit", {"path": str(path)})
            return model
    started = time.monotonic()
    model = train()
    cache_error = None
    if path is not None:
        try:
            save_model_atomically(model, path)
        except OSError as exc:  # an unwritable cache costs a retrain next time, not this build
            cache_error, path = f"{type(exc).__name__}: {exc}", None
    x_val, y_val = validation
    accuracy = float(np.mean(np.argmax(model.predict(x_val, verbose=0), axis=1) == y_val))
    progress("demo_train_end", {"val_accuracy": accuracy, "seconds": time.monotonic() - started,
                                "path": str(path) if path else None, "cache_error": cache_error})
    return model

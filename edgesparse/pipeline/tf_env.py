"""Import TensorFlow for the build half, the one way that works with TFMOT.

TFMOT 0.8.1 supports only Keras 2, so `TF_USE_LEGACY_KERAS=1` must be set
before TensorFlow is first imported; then `tf.keras` is `tf_keras`. Every
TensorFlow import of the pipeline goes through here, inside functions, so
importing edgesparse (and `edgesparse --help`) never loads TensorFlow; the
analysis half (tflite, profiles, estimate, runtime) never calls this.

Raises MissingDependency (TensorFlow, tf_keras or TFMOT not installed).
"""

from __future__ import annotations

import os
import sys
from types import ModuleType

from edgesparse.errors import MissingDependency
from edgesparse.runtime.capture import captured_stderr

__all__ = ["import_tf", "import_tfmot", "keras_layer_classes", "prepare_process"]

_INSTALL_HINT = "Install the build half: pip install 'edgesparse[build]'"


def import_tf() -> tuple[ModuleType, ModuleType]:
    """Return (tensorflow, tf_keras), configured for TFMOT. Raises MissingDependency."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # C++ INFO/WARNING/ERROR lines are noise here
    try:
        # TensorFlow's C++ side writes absl INFO lines (oneDNN, CUDA probing) to fd 2
        # at import, before TF_CPP_MIN_LOG_LEVEL applies; they are noise to a user.
        with captured_stderr():
            import tensorflow as tf
            import tf_keras
    except ImportError as exc:
        raise MissingDependency(
            "TensorFlow is needed for this step and is not installed",
            received=str(exc), fix=_INSTALL_HINT,
        ) from None
    tf.get_logger().setLevel("ERROR")
    return tf, tf_keras


def keras_layer_classes(names: tuple[str, ...]) -> tuple[type, ...]:
    """The tf_keras layer classes named (those this tf_keras version has): for isinstance checks by name, so
    tables of layer kinds stay plain strings the docs and reports can show."""
    _, keras = import_tf()
    return tuple(c for c in (getattr(keras.layers, n, None) for n in names) if c is not None)


def import_tfmot() -> ModuleType:
    """Return tensorflow_model_optimization, after import_tf(). Raises MissingDependency."""
    import_tf()
    try:
        import tensorflow_model_optimization as tfmot
    except ImportError as exc:
        raise MissingDependency(
            "tensorflow-model-optimization is needed for pruning and is not installed",
            received=str(exc), fix=_INSTALL_HINT,
        ) from None
    return tfmot


def prepare_process(threads: int) -> int:
    """Set TensorFlow's environment for a worker process before it first imports TensorFlow.

    Why: TFMOT refuses models unless TF_USE_LEGACY_KERAS=1 was set before the import, and a
    one-core worker otherwise spawns threads for every core of the machine (measured: about 1.9
    cores used by a one-core worker). TensorFlow reads both thread counts once, when its runtime
    starts, so they are set here and not later. Returns the intra-op thread count in effect
    (the earlier one when TensorFlow was already imported in this process).
    """
    if "tensorflow" in sys.modules:
        return int(os.environ.get("TF_NUM_INTRAOP_THREADS", "0") or 0)
    threads = max(1, int(threads))
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = str(threads)
    return threads

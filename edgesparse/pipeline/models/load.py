"""load_model: a Keras model file (.keras, .h5, SavedModel) as a tf_keras model TFMOT can prune.

The steps, each owned by its module: detect the format and read the stored
config (models.stored), refuse code-carrying files unless trusted
(models.vetting), then load with tf_keras, or rebuild a Keras 3 model in
tf_keras and check it computes the same (models.keras3). The pipeline handles
one input and one output tensor.

Raises ModelError.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgesparse.errors import ModelError
from edgesparse.pipeline.models.keras3 import rebuild_keras3
from edgesparse.pipeline.models.stored import detect_format, keras_failure, read_stored
from edgesparse.pipeline.models.vetting import check_graph, refuse_unsafe
from edgesparse.pipeline.tf_env import import_tf

__all__ = ["LoadedModel", "load_model", "safe_name"]


@dataclass
class LoadedModel:
    """A tf_keras model ready for TFMOT, and where it came from."""

    model: Any  # tf_keras.Model
    path: Path
    format: str  # "keras" | "h5" | "savedmodel"
    name: str  # safe file stem, used for the build directory
    rebuilt_from_keras3: bool = False
    rebuild_max_abs_error: float | None = None
    saved_by: str = "unknown"  # e.g. "keras 3.15.1", "keras 2.4.0" (the writer's version)
    input_shape: tuple = ()  # per sample, without the batch dimension
    output_shape: tuple = ()  # per sample, without the batch dimension
    trusted: bool = False  # loaded with trust_model=True
    notes: tuple[str, ...] = field(default_factory=tuple)  # what the Keras 3 translation dropped


def load_model(
    path: Path | str, *, trust_model: bool = False, custom_objects: dict[str, Any] | None = None
) -> LoadedModel:
    """Load a Keras model as tf_keras, refusing code-carrying files unless trusted.

    `custom_objects` are classes the *caller* supplies (so they are not code from the
    file): a layer whose class is among them is allowed without `trust_model`.
    """
    path = Path(path).expanduser()
    fmt = detect_format(path)
    stored = read_stored(path, fmt)
    import_tf()
    if not trust_model:
        refuse_unsafe(stored, path, set(custom_objects or ()))
    notes: list[str] = []
    max_err = None
    if not stored.keras3:  # a Keras 3 config is checked after translation
        for config in stored.configs:
            check_graph(config, path)
    if stored.keras3:
        model, max_err = rebuild_keras3(path, stored, trust_model, custom_objects, notes)
    else:
        model = _load_tf_keras(path, fmt, trust_model, custom_objects)
    in_shape, out_shape = _check_single_io(model, path)
    return LoadedModel(
        model=model, path=path, format=fmt, name=safe_name(path),
        rebuilt_from_keras3=stored.keras3, rebuild_max_abs_error=max_err,
        saved_by=stored.saved_by, input_shape=in_shape, output_shape=out_shape,
        trusted=trust_model, notes=tuple(notes),
    )


def safe_name(path: Path | str) -> str:
    """A short name for build directories: the file stem with unsafe characters replaced."""
    path = Path(path)
    stem = path.name if path.is_dir() or not path.suffix else path.stem
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", stem).strip("._-")[:64]
    return name or "model"


def _load_tf_keras(path: Path, fmt: str, trust: bool, custom_objects: dict | None) -> Any:
    _, tfk = import_tf()
    from tf_keras.src.saving.serialization_lib import SafeModeScope

    kwargs: dict[str, Any] = {"compile": False, "custom_objects": custom_objects}
    if fmt == "keras":
        kwargs["safe_mode"] = not trust
    try:
        with SafeModeScope(not trust):
            return tfk.models.load_model(str(path), **kwargs)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:
        raise keras_failure(path, exc) from exc


def _check_single_io(model: Any, path: Path) -> tuple[tuple, tuple]:
    """The pipeline handles one input and one output tensor; say so clearly otherwise."""
    _, tfk = import_tf()
    if not isinstance(model, tfk.Model):
        raise ModelError(
            "The file does not hold a Keras model", where=str(path), expected="a tf_keras Model",
            received=type(model).__name__, fix="Save the Keras model itself: model.save('model.keras')",
        )
    inputs = getattr(model, "inputs", None)
    outputs = getattr(model, "outputs", None)
    if not inputs or not outputs:
        raise ModelError(
            "The model has no defined input shape", where=str(path),
            expected="a built Functional or Sequential model", received=f"an unbuilt {type(model).__name__}",
            fix="Give the model an Input (keras.Input(shape=...)) or call it once before saving",
        )
    if len(inputs) != 1 or len(outputs) != 1:
        def describe(tensors: list) -> str:
            return ", ".join(f"{getattr(t, 'name', '?')} {tuple(t.shape)}" for t in tensors)
        raise ModelError(
            "edgesparse handles models with exactly one input and one output for now", where=str(path),
            expected="1 input tensor and 1 output tensor",
            received=f"{len(inputs)} input(s) [{describe(inputs)}] and {len(outputs)} output(s) [{describe(outputs)}]",
            fix="Export a single-input, single-output model (e.g. keras.Model(model.inputs[0], model.outputs[0]))",
        )
    return tuple(inputs[0].shape[1:]), tuple(outputs[0].shape[1:])

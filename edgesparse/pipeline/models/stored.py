"""Model files: which format a path holds, and its stored config, read without deserializing anything.

Why apart from loading: Keras deserialization can run code (an .h5 Lambda
stores marshalled bytecode that tf_keras executes without asking; a "module"
field is imported), so the config is first read with json, h5py or protobuf
and vetted (models.vetting) before any Keras loader sees the file.

Raises ModelError (a missing path, a file that is not a Keras model).
"""

from __future__ import annotations

import json
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesparse.errors import ModelError
from edgesparse.pipeline.tf_env import import_tf

__all__ = [
    "FORMATS",
    "SUPPORTED",
    "StoredModel",
    "detect_format",
    "is_node_ref",
    "keras_failure",
    "not_a_model",
    "read_stored",
    "walk",
]

FORMATS = ("keras", "h5", "savedmodel")
SUPPORTED = "a .keras file, an .h5/.hdf5 file, or a SavedModel directory (holding saved_model.pb)"
_MAX_CONFIG_BYTES = 64 << 20  # a config.json larger than this is not a model config
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


@dataclass
class StoredModel:
    """The model's config as stored, read without deserializing anything."""

    format: str
    configs: list[dict]  # one config (.keras/.h5), or one per Keras object (SavedModel)
    keras_version: str | None  # from metadata.json / the h5 keras_version attribute
    graph_ops: frozenset[str] = frozenset()
    writer: str | None = None  # who wrote it, when keras_version is unknown

    @property
    def saved_by(self) -> str:
        return f"keras {self.keras_version}" if self.keras_version else (self.writer or "unknown")

    @property
    def keras3(self) -> bool:
        if self.keras_version:
            return self.keras_version.split(".")[0] == "3"
        return self.format != "savedmodel" and any(_looks_keras3(c) for c in self.configs)


def detect_format(path: Path) -> str:
    """Which loader the path needs, from what the bytes are (a misnamed file still loads)."""
    if not path.exists():
        raise ModelError(
            "The model file does not exist", where=str(path), expected=SUPPORTED,
            received="no such file or directory", fix="Check the path passed to --model",
        )
    if path.is_dir():
        if (path / "saved_model.pb").is_file() or (path / "saved_model.pbtxt").is_file():
            return "savedmodel"
        inside = sorted(p.name for p in path.iterdir())[:8]
        raise ModelError(
            "The directory is not a SavedModel", where=str(path), expected=SUPPORTED,
            received=f"a directory without saved_model.pb (it holds: {', '.join(inside) or 'nothing'})",
            fix="Pass the SavedModel directory itself, or a .keras/.h5 file",
        )
    suffix = path.suffix.lower()
    if suffix == ".tflite":
        raise ModelError(
            "A .tflite file cannot be pruned", where=str(path), expected=SUPPORTED,
            received="a TFLite flatbuffer",
            fix="Pass the Keras model it was converted from; `edgesparse check` analyses a .tflite as is",
        )
    if suffix == ".pb":
        raise ModelError(
            "A .pb file alone is not loadable", where=str(path), expected=SUPPORTED,
            received="a saved_model.pb file", fix=f"Pass its directory instead: {path.parent}",
        )
    if suffix not in (".keras", ".h5", ".hdf5"):
        raise ModelError(
            "Unsupported model file extension", where=str(path), expected=SUPPORTED,
            received=f"'{path.suffix or '(none)'}'",
            fix="Save the model with model.save('model.keras') in tf_keras or Keras 3",
        )
    with path.open("rb") as handle:
        head = handle.read(8)
    if zipfile.is_zipfile(path):
        return "keras"
    if head == _HDF5_MAGIC or _is_hdf5(path):
        return "h5"
    kind = "an empty file" if not head else (
        "a text file" if _looks_text(path) else f"unrecognised bytes (starts {head[:8]!r})"
    )
    raise ModelError(
        "The file is not a Keras model", where=str(path),
        expected=".keras (a zip archive) or .h5 (an HDF5 file)", received=kind,
        fix="Re-save the model with model.save('model.keras')",
    )


def _is_hdf5(path: Path) -> bool:
    import h5py

    try:
        return bool(h5py.is_hdf5(str(path)))
    except OSError:
        return False


def _looks_text(path: Path) -> bool:
    with path.open("rb") as handle:
        chunk = handle.read(512)
    try:
        chunk.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\x00" not in chunk


def read_stored(path: Path, fmt: str) -> StoredModel:
    return {"keras": _read_keras_zip, "h5": _read_h5, "savedmodel": _read_savedmodel}[fmt](path)


def not_a_model(path: Path, received: str, expected: str) -> ModelError:
    return ModelError(
        "The file is not a Keras model", where=str(path), expected=expected,
        received=received, fix="Re-save the model with model.save('model.keras')",
    )


def _parse_json(raw: bytes | str, path: Path, what: str) -> dict:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise not_a_model(path, f"{what} is not valid JSON ({exc})", f"{what} holding a model config") from None
    if not isinstance(value, dict) or "class_name" not in value:
        raise not_a_model(path, f"{what} without a 'class_name'", f"{what} holding a model config")
    return value


def _read_keras_zip(path: Path) -> StoredModel:
    expected = "a .keras archive with config.json, metadata.json and model.weights.h5"
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "config.json" not in names:
                raise not_a_model(path, f"a zip archive without config.json ({len(names)} entries)", expected)
            if archive.getinfo("config.json").file_size > _MAX_CONFIG_BYTES:
                raise not_a_model(path, "a config.json larger than 64 MB", expected)
            config = _parse_json(archive.read("config.json"), path, "config.json")
            version = None
            if "metadata.json" in names:
                try:
                    version = json.loads(archive.read("metadata.json")).get("keras_version")
                except (ValueError, AttributeError):
                    version = None
    except zipfile.BadZipFile as exc:
        raise not_a_model(path, f"a damaged zip archive ({exc})", expected) from None
    return StoredModel("keras", [config], version and str(version))


def _read_h5(path: Path) -> StoredModel:
    import h5py

    expected = "an HDF5 file written by model.save() (with a model_config attribute)"
    try:
        with h5py.File(path, "r") as handle:
            raw = handle.attrs.get("model_config")
            version = handle.attrs.get("keras_version")
            # save_weights: legacy files carry layer_names; .weights.h5 files hold layers/ and vars/
            weights_only = "layer_names" in handle.attrs or {"layers", "vars"} <= set(handle.keys())
    except OSError as exc:
        raise not_a_model(path, f"an unreadable HDF5 file ({exc})", expected) from None
    if raw is None:
        received = ("weights only (written by save_weights)" if weights_only
                    else "an HDF5 file without a model_config attribute")
        raise not_a_model(path, received, expected)
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if isinstance(version, bytes):
        version = version.decode("utf-8", "replace")
    return StoredModel("h5", [_parse_json(raw, path, "model_config")], version and str(version))


def _read_savedmodel(path: Path) -> StoredModel:
    """Keras metadata from keras_metadata.pb, or (older files) the object graph in saved_model.pb."""
    import_tf()
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    expected = "a SavedModel written by a Keras model.save() (with Keras metadata)"
    pb = path / "saved_model.pb"
    if not pb.is_file():
        raise not_a_model(path, "a text-format saved_model.pbtxt (not supported)", expected)
    saved = saved_model_pb2.SavedModel()
    try:
        saved.ParseFromString(pb.read_bytes())
    except DecodeError as exc:
        raise not_a_model(path, f"an unparsable saved_model.pb ({exc})", expected) from None
    if not saved.meta_graphs:
        raise not_a_model(path, "a saved_model.pb without a MetaGraph", expected)
    graph = saved.meta_graphs[0]
    ops = {node.op for node in graph.graph_def.node}
    ops.update(node.op for fn in graph.graph_def.library.function for node in fn.node_def)
    raw: list[str] = []
    metadata_pb = path / "keras_metadata.pb"
    if metadata_pb.is_file():
        from tf_keras.protobuf import saved_metadata_pb2

        metadata = saved_metadata_pb2.SavedMetadata()
        try:
            metadata.ParseFromString(metadata_pb.read_bytes())
        except DecodeError as exc:
            raise not_a_model(path, f"an unparsable keras_metadata.pb ({exc})", expected) from None
        raw = [node.metadata for node in metadata.nodes if node.metadata]
    else:
        raw = [node.user_object.metadata for node in graph.object_graph_def.nodes
               if node.WhichOneof("kind") == "user_object" and node.user_object.metadata]
    configs = []
    for text in raw:
        try:
            item = json.loads(text)
        except ValueError:
            continue
        if isinstance(item, dict) and "class_name" in item:
            configs.append(item)
    if not configs:
        raise ModelError(
            "The SavedModel has no Keras metadata", where=str(path), expected=expected,
            received="a SavedModel of traced TF functions only (tf.saved_model.save or Keras 3 model.export)",
            fix="Save the Keras model itself: model.save('model.keras')",
        )
    version = graph.meta_info_def.tensorflow_version
    return StoredModel("savedmodel", configs, None, frozenset(ops), f"TensorFlow {version}" if version else None)


def _looks_keras3(config: Any) -> bool:
    """Keras 3 marks: dtype policy dicts, InputLayer batch_shape, dict-form inbound nodes."""
    for obj in walk(config):
        if obj.get("class_name") in ("DTypePolicy", "FloatDTypePolicy", "__keras_tensor__"):
            return True
        if obj.get("class_name") == "InputLayer" and "batch_shape" in obj.get("config", {}):
            return True
    return False


def walk(value: Any, kind: type = dict) -> Iterator[Any]:
    """Every dict (or, with kind=list, every list) nested anywhere in a JSON value."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, kind):
            yield item
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def keras_failure(path: Path, exc: Exception, what: str = "Keras could not load the model") -> ModelError:
    """The error for a file a Keras loader rejected, with the loader's own message (shortened)."""
    text = " ".join(str(exc).split())
    return ModelError(
        what, where=str(path), expected=SUPPORTED,
        received=f"{type(exc).__name__}: {text[:400]}{'...' if len(text) > 400 else ''}",
        fix="Check that the file loads in Keras (keras.models.load_model) and re-save it with "
            "model.save('model.keras')",
    )


def is_node_ref(value: Any) -> bool:
    """[layer_name, node_index, tensor_index] or the same with a kwargs dict."""
    return (isinstance(value, list) and len(value) in (3, 4) and isinstance(value[0], str)
            and isinstance(value[1], int) and isinstance(value[2], int)
            and (len(value) == 3 or isinstance(value[3], dict)))

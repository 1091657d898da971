"""Load Keras models (.keras, .h5, SavedModel) as tf_keras models TFMOT can prune.

CONTRACT (owned by the models/data work; pipeline.py relies on it):
    load_model(path, *, trust_model=False, custom_objects=None) -> LoadedModel
    LoadedModel: model (tf_keras.Model), path (Path), format ("keras"|"h5"|"savedmodel"),
                 name (str, used for the build directory), rebuilt_from_keras3 (bool),
                 rebuild_max_abs_error (float | None), saved_by (str), input_shape,
                 output_shape (per-sample tuples), trusted (bool), notes (tuple[str, ...])
    Raises ModelError for: missing path, a file that is not a model, Lambda layers or
    custom objects without trust_model=True (checked on the stored config BEFORE
    anything is deserialized), a Keras 3 model that cannot be rebuilt faithfully.

Why the care: TFMOT only wraps tf_keras layers, so a model written by Keras 3 is
rebuilt in tf_keras from its translated config and checked numerically against
the original. And Keras deserialization can run code (an .h5 Lambda stores
marshalled bytecode that tf_keras executes without asking; a "module" field is
imported), so the stored config is read with json/h5py/protobuf and vetted first.
"""

from __future__ import annotations

import functools
import inspect
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from edgesparse.errors import ModelError
from edgesparse.pipeline.tf_env import import_tf

FORMATS = ("keras", "h5", "savedmodel")
SUPPORTED = "a .keras file, an .h5/.hdf5 file, or a SavedModel directory (holding saved_model.pb)"
TRUST_FIX = "Pass --trust-model if you trust this file (loading it then runs the code it carries)"
KERAS3_RTOL = 1e-4  # max |rebuilt - original| allowed, relative to max(1, max |original|)
_MAX_CONFIG_BYTES = 64 << 20  # a config.json larger than this is not a model config
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"

# TF ops whose presence in a SavedModel graph means "runs Python" or "touches files".
_UNSAFE_GRAPH_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc", "WriteFile"})

# tf_keras records `tf.*` calls in a functional model as TFOpLambda layers naming the
# function, which from_config looks up and CALLS; only pure tensor maths is allowed.
_SAFE_TF_OP_NAMESPACES = frozenset({"__operators__", "math", "nn", "linalg", "signal", "image", "bitwise"})
_SAFE_TF_OPS = frozenset(
    "reshape transpose concat stack unstack split squeeze expand_dims cast identity pad gather "
    "gather_nd tile where clip_by_value add multiply subtract divide matmul einsum shape size rank "
    "slice strided_slice broadcast_to ones_like zeros_like fill range one_hot argmax argmin abs "
    "sqrt exp maximum minimum reduce_sum reduce_mean reduce_max reduce_min reduce_prod "
    "sigmoid tanh square pow".split()
)
_TF_OP_LAYERS = frozenset({"TFOpLambda", "SlicingOpLambda"})
_TENSOR_METHOD_LAYERS = frozenset({"ClassMethod", "InstanceMethod", "InstanceProperty"})
_LAMBDA_CLASSES = frozenset({"Lambda", "__lambda__"})
# Built-in Keras 3 layers that wrap code from elsewhere: a SavedModel graph named by a path
# (TFSMLayer), a pickled torch module (TorchModuleWrapper), JAX/Flax functions.
_WRAPS_FOREIGN_CODE = frozenset({"TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer"})
# Serialization markers (not classes) both Keras generations write.
_SERIALIZATION_MARKERS = frozenset(
    "__tuple__ __keras_tensor__ __tensor__ __numpy__ __bytes__ __typespec__ __ellipsis__ "
    "__slice__ __list__ TensorShape function Functional Sequential Model".split()
)
# Layer kwargs tf_keras's base Layer accepts besides the subclass's own parameters.
_BASE_LAYER_KWARGS = frozenset(
    "name trainable dtype dynamic input_dim input_shape batch_input_shape batch_size weights "
    "activity_regularizer autocast implementation".split()
)
# Keras 3 options that choose an implementation, not the maths: dropped whatever their value.
_K3_IMPLEMENTATION_KEYS = frozenset({"use_cudnn"})
# Keras 3 option names that tf_keras spells differently.
_K3_RENAMES = {"LeakyReLU": {"negative_slope": "alpha"}}
# Options tf_keras layers take through **kwargs (so no signature shows them), by base class.
_POPPED_KWARGS = {"RNN": frozenset({"zero_output_for_mask"}),
                  "MultiHeadAttention": frozenset({"query_shape", "key_shape", "value_shape"})}
# Keys tf_keras's from_config requires that Keras 3 does not write; None means "build on first call".
_FROM_CONFIG_DEFAULTS = {"MultiHeadAttention": {"query_shape": None, "key_shape": None, "value_shape": None}}


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


@dataclass
class _Stored:
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


def load_model(
    path: Path | str, *, trust_model: bool = False, custom_objects: dict[str, Any] | None = None
) -> LoadedModel:
    """Load a Keras model as tf_keras, refusing code-carrying files unless trusted.

    `custom_objects` are classes the *caller* supplies (so they are not code from the
    file): a layer whose class is among them is allowed without `trust_model`.
    """
    path = Path(path).expanduser()
    fmt = _detect_format(path)
    stored = _read_stored(path, fmt)
    tf, tfk = import_tf()
    if not trust_model:
        _refuse_unsafe(stored, path, set(custom_objects or ()))
    notes: list[str] = []
    max_err = None
    if not stored.keras3:  # a Keras 3 config is checked after translation
        for config in stored.configs:
            _check_graph(config, path)
    if stored.keras3:
        model, max_err = _rebuild_keras3(path, stored, trust_model, custom_objects, notes)
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


# ---------------------------------------------------------------- format and stored config


def _detect_format(path: Path) -> str:
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


def _read_stored(path: Path, fmt: str) -> _Stored:
    return {"keras": _read_keras_zip, "h5": _read_h5, "savedmodel": _read_savedmodel}[fmt](path)


def _not_a_model(path: Path, received: str, expected: str) -> ModelError:
    return ModelError(
        "The file is not a Keras model", where=str(path), expected=expected,
        received=received, fix="Re-save the model with model.save('model.keras')",
    )


def _parse_json(raw: bytes | str, path: Path, what: str) -> dict:
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _not_a_model(path, f"{what} is not valid JSON ({exc})", f"{what} holding a model config") from None
    if not isinstance(value, dict) or "class_name" not in value:
        raise _not_a_model(path, f"{what} without a 'class_name'", f"{what} holding a model config")
    return value


def _read_keras_zip(path: Path) -> _Stored:
    expected = "a .keras archive with config.json, metadata.json and model.weights.h5"
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "config.json" not in names:
                raise _not_a_model(path, f"a zip archive without config.json ({len(names)} entries)", expected)
            if archive.getinfo("config.json").file_size > _MAX_CONFIG_BYTES:
                raise _not_a_model(path, "a config.json larger than 64 MB", expected)
            config = _parse_json(archive.read("config.json"), path, "config.json")
            version = None
            if "metadata.json" in names:
                try:
                    version = json.loads(archive.read("metadata.json")).get("keras_version")
                except (ValueError, AttributeError):
                    version = None
    except zipfile.BadZipFile as exc:
        raise _not_a_model(path, f"a damaged zip archive ({exc})", expected) from None
    return _Stored("keras", [config], version and str(version))


def _read_h5(path: Path) -> _Stored:
    import h5py

    expected = "an HDF5 file written by model.save() (with a model_config attribute)"
    try:
        with h5py.File(path, "r") as handle:
            raw = handle.attrs.get("model_config")
            version = handle.attrs.get("keras_version")
            # save_weights: legacy files carry layer_names; .weights.h5 files hold layers/ and vars/
            weights_only = "layer_names" in handle.attrs or {"layers", "vars"} <= set(handle.keys())
    except OSError as exc:
        raise _not_a_model(path, f"an unreadable HDF5 file ({exc})", expected) from None
    if raw is None:
        received = ("weights only (written by save_weights)" if weights_only
                    else "an HDF5 file without a model_config attribute")
        raise _not_a_model(path, received, expected)
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if isinstance(version, bytes):
        version = version.decode("utf-8", "replace")
    return _Stored("h5", [_parse_json(raw, path, "model_config")], version and str(version))


def _read_savedmodel(path: Path) -> _Stored:
    """Keras metadata from keras_metadata.pb, or (older files) the object graph in saved_model.pb."""
    import_tf()
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import saved_model_pb2

    expected = "a SavedModel written by a Keras model.save() (with Keras metadata)"
    pb = path / "saved_model.pb"
    if not pb.is_file():
        raise _not_a_model(path, "a text-format saved_model.pbtxt (not supported)", expected)
    saved = saved_model_pb2.SavedModel()
    try:
        saved.ParseFromString(pb.read_bytes())
    except DecodeError as exc:
        raise _not_a_model(path, f"an unparsable saved_model.pb ({exc})", expected) from None
    if not saved.meta_graphs:
        raise _not_a_model(path, "a saved_model.pb without a MetaGraph", expected)
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
            raise _not_a_model(path, f"an unparsable keras_metadata.pb ({exc})", expected) from None
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
    return _Stored("savedmodel", configs, None, frozenset(ops), f"TensorFlow {version}" if version else None)


def _looks_keras3(config: Any) -> bool:
    """Keras 3 marks: dtype policy dicts, InputLayer batch_shape, dict-form inbound nodes."""
    for obj in _walk(config):
        if obj.get("class_name") in ("DTypePolicy", "FloatDTypePolicy", "__keras_tensor__"):
            return True
        if obj.get("class_name") == "InputLayer" and "batch_shape" in obj.get("config", {}):
            return True
    return False


def _walk(value: Any, kind: type = dict) -> Iterator[Any]:
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


# ---------------------------------------------------------------- security vetting


@functools.lru_cache(maxsize=2)
def _builtin_class_names(keras3: bool) -> frozenset[str]:
    """Class names of built-in Keras layers, initializers, regularizers, constraints, policies."""
    _, tfk = import_tf()
    modules = [tfk.layers, tfk.layers.experimental, tfk.initializers, tfk.regularizers, tfk.constraints,
               tfk.models, tfk.mixed_precision, tfk.metrics, tfk.losses, tfk.optimizers.schedules]
    if keras3:
        import keras

        modules += [keras.layers, keras.initializers, keras.regularizers, keras.constraints,
                    keras.models, keras.dtype_policies, keras.metrics, keras.losses]
    names = set(_SERIALIZATION_MARKERS) | _TF_OP_LAYERS
    for module in modules:
        names.update(n for n in dir(module) if isinstance(getattr(module, n, None), type))
    names.update(("Policy", "InputLayer"))
    return frozenset(names - _LAMBDA_CLASSES - _WRAPS_FOREIGN_CODE)


def _safe_module(module: Any, class_name: str) -> bool:
    if module is None:
        return True
    if not isinstance(module, str):
        return False
    top = module.split(".")[0]
    return top in ("keras", "tf_keras") or (module == "builtins" and class_name == "function")


def _safe_tf_op(function: Any) -> bool:
    if not isinstance(function, str):
        return False
    parts = function.split(".")
    if parts[0] == "compat":  # compat.v1.nn.relu etc.
        parts = parts[2:]
    return bool(parts) and (
        (len(parts) > 1 and parts[0] in _SAFE_TF_OP_NAMESPACES) or (len(parts) == 1 and parts[0] in _SAFE_TF_OPS)
    )


def _unsafe_findings(config: dict, builtins: frozenset[str], allowed: set[str]) -> list[str]:
    """Describe every object in `config` whose loading would run code from the file."""
    findings: list[str] = []

    def visit(value: Any, layer: str | None) -> None:
        if isinstance(value, list):
            for item in value:
                visit(item, layer)
            return
        if not isinstance(value, dict):
            return
        cls = value.get("class_name")
        inner = value.get("config")
        here = layer
        if isinstance(cls, str) and ("config" in value or "module" in value or cls in builtins):
            name = inner.get("name") if isinstance(inner, dict) else None
            is_layer = isinstance(name, str) and ("trainable" in inner or "dtype" in inner or "layers" in inner)
            here = name if is_layer else layer
            where = f"layer '{here}'" if here else "the model"
            label = f"'{cls}'" + ("" if is_layer else f" in {where}")
            registered = value.get("registered_name")
            if cls in allowed or (isinstance(registered, str) and registered in allowed):
                pass
            elif cls in _LAMBDA_CLASSES:
                if cls == "Lambda":
                    findings.append(f"Lambda layer '{here}' (stores Python code)")
                    return  # its function is part of the same finding
                findings.append(f"a Python lambda in {where}")
            elif cls in _TF_OP_LAYERS and isinstance(inner, dict) and not _safe_tf_op(inner.get("function")):
                findings.append(f"layer '{here}' calls tf.{inner.get('function')} (not a pure tensor op)")
            elif cls in _WRAPS_FOREIGN_CODE:
                findings.append(f"layer '{here}' ({cls}) wraps code from outside Keras")
            elif cls in _TENSOR_METHOD_LAYERS:
                findings.append(f"layer '{here}' ({cls}) calls a tensor method by name")
            elif not _safe_module(value.get("module"), cls):
                findings.append(f"custom class {label} from module '{value.get('module')}'")
            elif (isinstance(registered, str) and ">" in registered) or cls not in builtins:
                findings.append(f"custom class {label}" if is_layer or not here else f"custom object {label}")
        for key, item in value.items():
            if key not in ("module", "registered_name", "class_name"):
                visit(item, here)

    visit(config, None)
    return findings


def _refuse_unsafe(stored: _Stored, path: Path, allowed: set[str]) -> None:
    """Raise ModelError naming each Lambda/custom layer before anything is deserialized."""
    builtins = _builtin_class_names(stored.keras3)
    findings: list[str] = []
    for config in stored.configs:
        top = {k: v for k, v in config.items() if k not in ("compile_config", "training_config")}
        for item in _unsafe_findings(top, builtins, allowed):
            if item not in findings:
                findings.append(item)
    findings += [f"graph op {op} (runs Python or writes files)" for op in sorted(stored.graph_ops & _UNSAFE_GRAPH_OPS)]
    if findings:
        shown = "; ".join(findings[:10]) + (f"; and {len(findings) - 10} more" if len(findings) > 10 else "")
        raise ModelError(
            "The model contains code that would run when it is loaded, so it was not loaded",
            where=str(path), expected="only built-in Keras layers", received=shown, fix=TRUST_FIX,
        )


# ---------------------------------------------------------------- tf_keras loading


def _keras_failure(path: Path, exc: Exception, what: str = "Keras could not load the model") -> ModelError:
    text = " ".join(str(exc).split())
    return ModelError(
        what, where=str(path), expected=SUPPORTED,
        received=f"{type(exc).__name__}: {text[:400]}{'...' if len(text) > 400 else ''}",
        fix="Check that the file loads in Keras (keras.models.load_model) and re-save it with model.save('model.keras')",
    )


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
    except Exception as exc:  # noqa: BLE001 - any loader failure is a bad model file
        raise _keras_failure(path, exc) from exc


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


# ---------------------------------------------------------------- Keras 3 -> tf_keras


def _rebuild_keras3(
    path: Path, stored: _Stored, trust: bool, custom_objects: dict | None, notes: list[str]
) -> tuple[Any, float]:
    """Load with Keras 3, rebuild in tf_keras from the translated config, copy weights, compare."""
    import numpy as np

    tf, tfk = import_tf()
    try:
        import keras
    except ImportError as exc:
        raise ModelError(
            "The model was saved by Keras 3, which is needed to read it", where=str(path),
            expected="the keras (3.x) package installed", received=str(exc),
            fix="pip install 'keras>=3', or re-save the model with tf_keras",
        ) from None
    translator = _Keras3Translator(path, notes)
    translated = translator.model(stored.configs[0])  # fails fast, before Keras 3 loads anything
    translator.finish_notes()
    _check_graph(translated, path)
    try:
        original = keras.saving.load_model(str(path), compile=False, safe_mode=not trust,
                                           custom_objects=custom_objects)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001
        raise _keras_failure(path, exc, "Keras 3 could not load the model") from exc
    try:
        rebuilt = tfk.models.model_from_config(translated, custom_objects=custom_objects)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ModelError(
            "The Keras 3 model could not be rebuilt in tf_keras", where=str(path),
            expected="layers tf_keras (Keras 2) also has", received=f"{type(exc).__name__}: {str(exc)[:400]}",
            fix="Rebuild the model with tf_keras (import tf_keras as keras) and save it from there",
        ) from exc
    _copy_weights(original, rebuilt, path)
    rng = np.random.default_rng(0)
    inputs = [_random_input(t, rng) for t in original.inputs]
    feed = inputs[0] if len(inputs) == 1 else inputs
    want = [np.asarray(a) for a in tf.nest.flatten(original(feed, training=False))]
    got = [np.asarray(a) for a in tf.nest.flatten(rebuilt(feed, training=False))]
    if [a.shape for a in want] != [a.shape for a in got]:
        raise ModelError(
            "The tf_keras rebuild of the Keras 3 model gives outputs of another shape", where=str(path),
            expected=str([a.shape for a in want]), received=str([a.shape for a in got]),
            fix="Re-save the model with tf_keras (import tf_keras as keras)",
        )
    max_err = max((float(np.max(np.abs(w - g))) if w.size else 0.0) for w, g in zip(want, got))
    scale = max([1.0] + [float(np.max(np.abs(w))) for w in want if w.size])
    if not max_err <= KERAS3_RTOL * scale:
        raise ModelError(
            "The tf_keras rebuild of the Keras 3 model does not compute the same outputs", where=str(path),
            expected=f"max |difference| <= {KERAS3_RTOL * scale:.3g} on random inputs",
            received=f"max |difference| {max_err:.3g}",
            fix="Re-save the model with tf_keras (import tf_keras as keras), or report the layer types used",
        )
    return rebuilt, max_err


def _random_input(tensor: Any, rng: Any) -> Any:
    """A batch of 4 random samples for a symbolic input (None dims become 16)."""
    import numpy as np

    shape = [4] + [d if d is not None else 16 for d in tuple(tensor.shape)[1:]]
    dtype = np.dtype(getattr(tensor.dtype, "name", None) or str(tensor.dtype))
    if dtype.kind in "iu":
        return rng.integers(0, 2, size=shape).astype(dtype)  # valid ids for any Embedding
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    return rng.standard_normal(shape).astype(dtype)


def _copy_weights(original: Any, rebuilt: Any, path: Path) -> None:
    """Copy weights layer by layer, matched by name (nested models recursively)."""
    source = {layer.name: layer for layer in original.layers}
    for layer in rebuilt.layers:
        if not layer.weights:
            continue
        src = source.get(layer.name)
        if src is None:
            raise ModelError(
                "A rebuilt layer has no counterpart in the Keras 3 model", where=str(path),
                expected=f"a layer named '{layer.name}'", received=f"layers {sorted(source)[:10]}",
                fix="Re-save the model with tf_keras (import tf_keras as keras)",
            )
        if hasattr(layer, "layers") and hasattr(src, "layers"):
            _copy_weights(src, layer, path)
            continue
        values = src.get_weights()
        shapes = [tuple(w.shape) for w in layer.weights]
        if shapes != [tuple(v.shape) for v in values]:
            raise ModelError(
                f"The weights of layer '{layer.name}' do not fit its tf_keras rebuild", where=str(path),
                expected=f"shapes {shapes}", received=f"shapes {[tuple(v.shape) for v in values]}",
                fix="Re-save the model with tf_keras (import tf_keras as keras)",
            )
        if values:
            layer.set_weights(values)


class _Keras3Translator:
    """Translate a Keras 3 model config into the legacy form tf_keras.from_config reads."""

    def __init__(self, path: Path, notes: list[str]) -> None:
        _, self.tfk = import_tf()
        self.path = path
        self.notes = notes
        self.dropped: dict[str, list[str]] = {}

    def fail(self, what: str, received: str) -> ModelError:
        return ModelError(
            what, where=str(self.path), expected="a model made of layers and options tf_keras also has",
            received=received, fix="Rebuild the model with tf_keras (import tf_keras as keras) and save it from there",
        )

    # -- models
    def model(self, obj: dict) -> dict:
        cls = obj.get("class_name")
        config = obj.get("config", {})
        if cls == "Sequential":
            layers = [self.layer(layer) for layer in config.get("layers", [])]
            out = {"name": config.get("name"), "layers": layers}
            if config.get("build_input_shape") is not None and not any(
                layer["class_name"] == "InputLayer" for layer in layers
            ):
                out["build_input_shape"] = self.value(config["build_input_shape"])
        elif cls in ("Functional", "Model") and "layers" in config:
            cls = "Functional"
            out = {
                "name": config.get("name"),
                "layers": [self.layer(layer) for layer in config["layers"]],
                "input_layers": self.endpoints(config.get("input_layers")),
                "output_layers": self.endpoints(config.get("output_layers")),
            }
            _shift_nested_model_nodes(out)
        else:
            raise self.fail("The Keras 3 model is not Sequential or Functional", f"class '{cls}'")
        if "trainable" in config:
            out["trainable"] = config["trainable"]
        return {"class_name": cls, "config": out}

    @staticmethod
    def endpoints(value: Any) -> list:
        if isinstance(value, list) and len(value) == 3 and isinstance(value[0], str):
            return [value]
        if isinstance(value, dict):  # named inputs: keep their order
            return [v for v in value.values()]
        return value or []

    # -- layers
    def layer(self, obj: dict) -> dict:
        cls = obj.get("class_name")
        config = obj.get("config", {})
        name = config.get("name", obj.get("name"))
        if cls in ("Sequential", "Functional", "Model"):
            out = self.model(obj)
            target = self.tfk.Model
        else:
            target = getattr(self.tfk.layers, cls, None) if isinstance(cls, str) else None
            if not isinstance(target, type):
                raise self.fail(f"Keras 3 layer '{name}' has no tf_keras equivalent", f"class '{cls}'")
            out = {"class_name": cls, "config": self.layer_config(target, config, f"layer '{name}' ({cls})")}
        if "name" in obj:
            out["name"] = obj["name"]
        if "inbound_nodes" in obj:
            out["inbound_nodes"] = [self.node(n, name, target) for n in obj["inbound_nodes"]]
        return out

    def layer_config(self, target: type, config: dict, where: str) -> dict:
        """A layer's config in tf_keras terms: renamed, filtered, with from_config-only keys."""
        cls = target.__name__
        body = {k: self.value(v, key=k) for k, v in (config or {}).items()}
        for old, new in _K3_RENAMES.get(cls, {}).items():
            if old in body:
                body[new] = body.pop(old)
        if cls == "InputLayer":
            if "batch_shape" in body:
                body["batch_input_shape"] = body.pop("batch_shape")
            if "shape" in body:
                body["batch_input_shape"] = [body.pop("batch_size", None)] + list(body.pop("shape"))
        if cls == "Lambda":
            body.pop("function", None)
        kept = self.filter_kwargs(target, body, where)
        for key, default in _FROM_CONFIG_DEFAULTS.get(cls, {}).items():
            kept.setdefault(key, default)
        if cls == "Lambda":  # from_config-only keys, so added after filtering
            kept.update(self.lambda_function(config, config.get("name", "?")))
        return kept

    def lambda_function(self, config: dict, name: str) -> dict:
        """A Keras 3 `__lambda__` (marshalled code) in the legacy [code, defaults, closure] form."""
        fn = config.get("function")
        if isinstance(fn, dict) and fn.get("class_name") == "__lambda__":
            inner = fn.get("config", {})
            return {"function": [inner.get("code"), inner.get("defaults"), inner.get("closure")],
                    "function_type": "lambda", "module": None,
                    "output_shape": config.get("output_shape"), "output_shape_type": "raw",
                    "output_shape_module": None}
        raise self.fail(f"Lambda layer '{name}' cannot be rebuilt in tf_keras",
                        "a Lambda wrapping a named function (only inline lambdas can be translated)")

    def node(self, node: Any, layer_name: str, target: type | None) -> list:
        """{"args": [...], "kwargs": {...}} -> [[inbound_layer, node_index, tensor_index, kwargs], ...]."""
        if isinstance(node, list):  # already in legacy form
            return node
        args = list(node.get("args", []))
        kwargs = {k: v for k, v in node.get("kwargs", {}).items() if v is not None and k != "training"}
        if not args:
            raise self.fail(f"Layer '{layer_name}' is called without a positional input", json.dumps(node)[:200])
        first, extra = args[0], args[1:]
        if extra:
            names = self._call_params(target)
            if len(extra) > len(names):
                raise self.fail(f"Layer '{layer_name}' is called with more inputs than tf_keras accepts",
                                f"{len(args)} positional arguments")
            kwargs.update(zip(names, extra))
        kwargs = self.refs(kwargs)
        tensors = first if isinstance(first, list) else [first]
        entries = []
        for tensor in tensors:
            history = self._history(tensor, layer_name)
            entries.append([history[0], history[1], history[2], kwargs])
        return entries

    @staticmethod
    def _call_params(target: type | None) -> list[str]:
        """Names of tf_keras call() arguments after the input, to pass extra Keras 3 args by name."""
        try:
            params = list(inspect.signature(target.call).parameters.values())[2:] if target else []
        except (TypeError, ValueError):
            return []
        return [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]

    def _history(self, tensor: Any, layer_name: str) -> list:
        if isinstance(tensor, dict) and tensor.get("class_name") == "__keras_tensor__":
            return list(tensor["config"]["keras_history"])
        raise self.fail(f"Layer '{layer_name}' is called on something that is not a Keras tensor",
                        json.dumps(tensor)[:200])

    def refs(self, value: Any) -> Any:
        if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
            return list(value["config"]["keras_history"])
        if isinstance(value, dict):
            return {k: self.refs(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.refs(v) for v in value]
        return self.value(value)

    # -- nested objects (dtype policies, initializers, regularizers, constraints, tuples)
    def value(self, value: Any, key: str | None = None) -> Any:
        if isinstance(value, list):
            return [self.value(v) for v in value]
        if not isinstance(value, dict):
            return value
        cls = value.get("class_name")
        inner = value.get("config")
        if cls is None:
            return {k: self.value(v) for k, v in value.items()}
        if cls in ("__tuple__", "__list__"):
            items = inner.get("value", []) if isinstance(inner, dict) else value.get("items", [])
            return [self.value(v) for v in items]
        if cls in ("__numpy__", "__tensor__"):
            return inner.get("value") if isinstance(inner, dict) else inner
        if cls in ("DTypePolicy", "FloatDTypePolicy", "Policy"):
            return inner["name"]
        if cls.endswith("DTypePolicy") or cls == "DTypePolicyMap":
            raise self.fail("A quantized Keras 3 layer cannot be rebuilt in tf_keras", f"dtype policy '{cls}'")
        if cls == "function":
            return inner
        if cls == "__lambda__":
            return value  # handled by lambda_function()
        target = None
        for module in (self.tfk.initializers, self.tfk.regularizers, self.tfk.constraints, self.tfk.layers):
            target = getattr(module, cls, None)
            if isinstance(target, type):
                break
        if not isinstance(target, type):
            raise self.fail("A Keras 3 object has no tf_keras equivalent", f"'{cls}' in '{key}'")
        if issubclass(target, self.tfk.layers.Layer):  # wrapped layers (Bidirectional, TimeDistributed)
            return {"class_name": cls, "config": self.layer_config(target, inner, f"{cls} in '{key}'")}
        body = {k: self.value(v) for k, v in (inner or {}).items()}
        return {"class_name": cls, "config": self.filter_kwargs(target, body, f"{cls} in '{key}'", strict=False)}

    def finish_notes(self) -> None:
        for cls, options in self.dropped.items():
            self.notes.append(f"{cls}: dropped unset Keras 3 option(s) {', '.join(options)} (no tf_keras equivalent)")

    def filter_kwargs(self, target: type, body: dict, where: str, *, strict: bool = True) -> dict:
        """Drop Keras 3 options tf_keras lacks when they are unset; fail when they matter."""
        accepted = _init_params(target)
        if issubclass(target, self.tfk.layers.Layer):
            accepted |= _BASE_LAYER_KWARGS
        for klass in target.__mro__:
            accepted |= _POPPED_KWARGS.get(klass.__name__, frozenset())
        kept, dropped, lost = {}, [], []
        for key, val in body.items():
            if key in accepted:
                kept[key] = val
            elif val in (None, False, 0, "", [], {}) or key in _K3_IMPLEMENTATION_KEYS or not strict:
                dropped.append(f"{key}={val!r}")
            else:
                lost.append(f"{key}={val!r}")
        if lost:
            raise self.fail(f"Keras 3 options of {where} have no tf_keras equivalent", ", ".join(lost))
        seen = self.dropped.setdefault(target.__name__, [])
        seen.extend(d for d in dropped if d not in seen)
        if not seen:
            del self.dropped[target.__name__]
        return kept


def _init_params(cls: type) -> set[str]:
    """Keyword names cls(...) accepts, following **kwargs up the class hierarchy."""
    names: set[str] = set()
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            break
        names.update(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
        if not any(p.kind == p.VAR_KEYWORD for p in params):
            break
    names.discard("self")
    return names


def _shift_nested_model_nodes(config: dict) -> None:
    """Renumber calls of nested models: tf_keras counts their internal Input node as node 0."""
    nested = {
        layer["name"] for layer in config["layers"]
        if layer["class_name"] == "Functional"
        or (layer["class_name"] == "Sequential" and layer["config"]["layers"][:1]
            and layer["config"]["layers"][0]["class_name"] == "InputLayer")
    }
    if not nested:
        return

    def shift(value: Any) -> Any:
        if _is_node_ref(value) and value[0] in nested:
            return [value[0], value[1] + 1, *value[2:]]
        if isinstance(value, list):
            return [shift(v) for v in value]
        if isinstance(value, dict):
            return {k: shift(v) for k, v in value.items()}
        return value

    for layer in config["layers"]:
        layer["inbound_nodes"] = shift(layer.get("inbound_nodes", []))
    config["output_layers"] = shift(config["output_layers"])


def _is_node_ref(value: Any) -> bool:
    """[layer_name, node_index, tensor_index] or the same with a kwargs dict."""
    return (isinstance(value, list) and len(value) in (3, 4) and isinstance(value[0], str)
            and isinstance(value[1], int) and isinstance(value[2], int)
            and (len(value) == 3 or isinstance(value[3], dict)))


def _check_graph(config: dict, path: Path) -> None:
    """Refuse a Functional config tf_keras would loop on forever (dangling or cyclic node refs).

    tf_keras re-queues a node whose inputs do not exist yet, with no limit, so a
    malformed or hostile file would hang the build instead of failing.
    """
    for model in _walk(config):
        inner = model.get("config")
        if model.get("class_name") not in ("Functional", "Model") or not isinstance(inner, dict):
            continue
        layers = inner.get("layers")
        if not isinstance(layers, list):
            continue
        valid: dict[str, range] = {}
        for layer in layers:
            if not isinstance(layer, dict) or not isinstance(layer.get("name"), str):
                continue
            sub = layer.get("config") if isinstance(layer.get("config"), dict) else {}
            first = sub.get("layers") if isinstance(sub.get("layers"), list) else []
            skip = layer.get("class_name") in ("Functional", "Model") or (
                layer.get("class_name") == "Sequential" and first[:1]
                and isinstance(first[0], dict) and first[0].get("class_name") == "InputLayer")
            count = len(layer.get("inbound_nodes") or []) or (1 if layer.get("class_name") == "InputLayer" else 0)
            valid[layer["name"]] = range(int(bool(skip)), int(bool(skip)) + count)
        deps: dict[tuple[str, int], list[tuple[str, int]]] = {}
        for layer in layers:
            if not isinstance(layer, dict) or layer.get("name") not in valid:
                continue
            for k, node in enumerate(layer.get("inbound_nodes") or []):
                key = (layer["name"], valid[layer["name"]].start + k)
                refs = [v for v in _walk(node, list) if _is_node_ref(v) and v[0] != "_CONSTANT_VALUE"]
                for ref in refs:
                    if ref[0] not in valid or ref[1] not in valid[ref[0]]:
                        raise _not_a_model(path, f"layer '{layer['name']}' takes an input from node "
                                           f"{ref[1]} of '{ref[0]}', which does not exist",
                                           "a model config whose layers are connected")
                deps[key] = [(r[0], r[1]) for r in refs]
        state: dict[tuple[str, int], int] = {}
        for start in deps:
            if state.get(start):
                continue
            stack = [(start, iter(deps[start]))]
            state[start] = 1
            while stack:
                node, children = stack[-1]
                child = next(children, None)
                if child is None:
                    state[node] = 2
                    stack.pop()
                elif state.get(child) == 1:
                    raise _not_a_model(path, f"a cycle through layer '{child[0]}'",
                                       "a model config whose layers form a graph without cycles")
                elif not state.get(child):
                    state[child] = 1
                    stack.append((child, iter(deps.get(child, ()))))

"""Keras 3 -> tf_keras: rebuild a Keras 3 model in tf_keras so TFMOT can prune it, and prove it is the same.

Why: TFMOT 0.8 wraps only tf_keras (Keras 2) layers. The stored config is
translated (renamed options, dropped implementation-only ones, legacy node
format), rebuilt with tf_keras, given the original weights layer by layer, and
compared on random inputs: a rebuild that computes anything else is refused.

Raises ModelError.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse.errors import ModelError
from edgesparse.pipeline.models.stored import StoredModel, is_node_ref, keras_failure
from edgesparse.pipeline.models.vetting import check_graph
from edgesparse.pipeline.tf_env import import_tf

__all__ = ["KERAS3_RTOL", "rebuild_keras3"]

KERAS3_RTOL = 1e-4  # max |rebuilt - original| allowed, relative to max(1, max |original|)
# Layer kwargs tf_keras's base Layer accepts besides the subclass's own parameters.
_BASE_LAYER_KWARGS = frozenset([
    "name", "trainable", "dtype", "dynamic", "input_dim", "input_shape", "batch_input_shape", "batch_size",
    "weights", "activity_regularizer", "autocast", "implementation",
])
# Keras 3 options that choose an implementation, not the maths: dropped whatever their value.
_K3_IMPLEMENTATION_KEYS = frozenset({"use_cudnn"})
# Keras 3 option names that tf_keras spells differently.
_K3_RENAMES = {"LeakyReLU": {"negative_slope": "alpha"}}
# Options tf_keras layers take through **kwargs (so no signature shows them), by base class.
_POPPED_KWARGS = {"RNN": frozenset({"zero_output_for_mask"}),
                  "MultiHeadAttention": frozenset({"query_shape", "key_shape", "value_shape"})}
# Keys tf_keras's from_config requires that Keras 3 does not write; None means "build on first call".
_FROM_CONFIG_DEFAULTS = {"MultiHeadAttention": {"query_shape": None, "key_shape": None, "value_shape": None}}


def rebuild_keras3(
    path: Path, stored: StoredModel, trust: bool, custom_objects: dict | None, notes: list[str]
) -> tuple[Any, float]:
    """Load with Keras 3, rebuild in tf_keras from the translated config, copy weights, compare."""
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
    check_graph(translated, path)
    try:
        original = keras.saving.load_model(str(path), compile=False, safe_mode=not trust,
                                           custom_objects=custom_objects)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as exc:
        raise keras_failure(path, exc, "Keras 3 could not load the model") from exc
    try:
        rebuilt = tfk.models.model_from_config(translated, custom_objects=custom_objects)
    except ModelError:
        raise
    except Exception as exc:
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
    """A batch of 4 random samples for a symbolic input (None dims become 16).

    A fixed batch size (a stateful RNN's Input(batch_size=...)) is kept: such a model refuses any other.
    """
    dims = tuple(tensor.shape)
    shape = [dims[0] or 4] + [d if d is not None else 16 for d in dims[1:]]
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
                body["batch_input_shape"] = [body.pop("batch_size", None), *body.pop("shape")]
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
        if is_node_ref(value) and value[0] in nested:
            return [value[0], value[1] + 1, *value[2:]]
        if isinstance(value, list):
            return [shift(v) for v in value]
        if isinstance(value, dict):
            return {k: shift(v) for k, v in value.items()}
        return value

    for layer in config["layers"]:
        layer["inbound_nodes"] = shift(layer.get("inbound_nodes", []))
    config["output_layers"] = shift(config["output_layers"])

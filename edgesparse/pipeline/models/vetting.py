"""Security vetting of a stored model config: refuse code-carrying files before anything is deserialized.

Why: a Lambda layer, a custom class from an importable module, a TFOpLambda
calling a non-maths tf function, a layer wrapping foreign code, or a SavedModel
graph op that runs Python would all execute code when Keras loads the file.
Each is named in one error unless the user passes --trust-model. Configs whose
node references dangle or form a cycle are refused too: tf_keras would loop on
them forever.

Raises ModelError.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from edgesparse.errors import ModelError
from edgesparse.pipeline.models.stored import StoredModel, is_node_ref, not_a_model, walk
from edgesparse.pipeline.tf_env import import_tf

__all__ = ["TRUST_FIX", "check_graph", "refuse_unsafe"]

TRUST_FIX = "Pass --trust-model if you trust this file (loading it then runs the code it carries)"

# TF ops whose presence in a SavedModel graph means "runs Python" or "touches files".
_UNSAFE_GRAPH_OPS = frozenset({"PyFunc", "PyFuncStateless", "EagerPyFunc", "WriteFile"})

# tf_keras records `tf.*` calls in a functional model as TFOpLambda layers naming the
# function, which from_config looks up and CALLS; only pure tensor maths is allowed.
_SAFE_TF_OP_NAMESPACES = frozenset({"__operators__", "math", "nn", "linalg", "signal", "image", "bitwise"})
_SAFE_TF_OPS = frozenset([
    "reshape", "transpose", "concat", "stack", "unstack", "split", "squeeze", "expand_dims", "cast", "identity",
    "pad", "gather", "gather_nd", "tile", "where", "clip_by_value", "add", "multiply", "subtract", "divide",
    "matmul", "einsum", "shape", "size", "rank", "slice", "strided_slice", "broadcast_to", "ones_like",
    "zeros_like", "fill", "range", "one_hot", "argmax", "argmin", "abs", "sqrt", "exp", "maximum", "minimum",
    "reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod", "sigmoid", "tanh", "square", "pow",
])
_TF_OP_LAYERS = frozenset({"TFOpLambda", "SlicingOpLambda"})
_TENSOR_METHOD_LAYERS = frozenset({"ClassMethod", "InstanceMethod", "InstanceProperty"})
_LAMBDA_CLASSES = frozenset({"Lambda", "__lambda__"})
# Built-in Keras 3 layers that wrap code from elsewhere: a SavedModel graph named by a path
# (TFSMLayer), a pickled torch module (TorchModuleWrapper), JAX/Flax functions.
_WRAPS_FOREIGN_CODE = frozenset({"TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer"})
# Serialization markers (not classes) both Keras generations write.
_SERIALIZATION_MARKERS = frozenset([
    "__tuple__", "__keras_tensor__", "__tensor__", "__numpy__", "__bytes__", "__typespec__", "__ellipsis__",
    "__slice__", "__list__", "TensorShape", "function", "Functional", "Sequential", "Model",
])


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


def refuse_unsafe(stored: StoredModel, path: Path, allowed: set[str]) -> None:
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


def check_graph(config: dict, path: Path) -> None:
    """Refuse a Functional config tf_keras would loop on forever (dangling or cyclic node refs).

    tf_keras re-queues a node whose inputs do not exist yet, with no limit, so a
    malformed or hostile file would hang the build instead of failing.
    """
    for model in walk(config):
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
                refs = [v for v in walk(node, list) if is_node_ref(v) and v[0] != "_CONSTANT_VALUE"]
                for ref in refs:
                    if ref[0] not in valid or ref[1] not in valid[ref[0]]:
                        raise not_a_model(path, f"layer '{layer['name']}' takes an input from node "
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
                    raise not_a_model(path, f"a cycle through layer '{child[0]}'",
                                       "a model config whose layers form a graph without cycles")
                elif not state.get(child):
                    state[child] = 1
                    stack.append((child, iter(deps.get(child, ()))))

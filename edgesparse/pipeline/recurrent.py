"""Recurrent layers (GRU, LSTM, SimpleRNN): what converts, and the converter that does it.

Why its own module: `TFLiteConverter.from_keras_model` traces a model with a
dynamic batch, so the TensorList ops of a recurrent while-loop get a
non-static element shape ("'tf.TensorListReserve' op requires element_shape
to be static") in every quantize mode. Tracing a batch-1 concrete function of
an inference copy converts (measured with TF / tf_keras 2.21):

- an LSTM with the cuDNN-compatible settings (tanh/sigmoid, use_bias, not
  time-major) is fused into the builtin UNIDIRECTIONAL_SEQUENCE_LSTM (int8 too),
  which LiteRT and TFLM run;
- GRU / SimpleRNN / any other LSTM would stay a WHILE loop: int8 calibration of
  a WHILE loop segfaults (tensorflow#62281) and TFLM hangs on some, so they are
  rebuilt with unroll=True (plain FULLY_CONNECTED/ADD/MUL/LOGISTIC/TANH ops);
- dropout / recurrent_dropout act only in training: the copy sets them to 0
  (same outputs), which is what lets an LSTM trained with recurrent_dropout fuse.

`check_recurrent` runs before any training and raises ModelError for what
still cannot convert (stateful, masks, return_state, an undefined time axis...).
"""

from __future__ import annotations

import copy
from typing import Any

from edgesparse.errors import ModelError
from edgesparse.pipeline.tf_env import import_tf

__all__ = ["check_recurrent", "has_recurrent", "inference_copy", "recurrent_converter", "recurrent_problems"]

_RNN = ("GRU", "LSTM", "SimpleRNN", "RNN")
_CELLS = ("GRUCell", "LSTMCell", "SimpleRNNCell")


def _input_shape(layer: Any) -> Any:
    try:
        shape = layer.input_shape
    except (AttributeError, RuntimeError):
        return None
    return shape[0] if isinstance(shape, list) else shape


def _rnn_layers(model: Any) -> list[tuple[str, Any, Any]]:
    """(path, layer, input shape) of every recurrent layer, also inside Bidirectional and nested models."""
    _, tfk = import_tf()
    out: list[tuple[str, Any, Any]] = []

    def visit(layer: Any, path: str, shape: Any) -> None:
        if isinstance(layer, tfk.Model):
            for sub in layer.layers:
                visit(sub, f"{path}/{sub.name}", _input_shape(sub))
        elif isinstance(layer, tfk.layers.Bidirectional):
            out.append((path, layer, shape))
            visit(layer.forward_layer, f"{path}/forward", shape)
            visit(layer.backward_layer, f"{path}/backward", shape)
        elif isinstance(layer, tfk.layers.Wrapper):
            visit(layer.layer, f"{path}/{layer.layer.name}", None)
        elif isinstance(layer, tfk.layers.RNN):
            out.append((path, layer, shape))

    for layer in model.layers:
        visit(layer, layer.name, _input_shape(layer))
    return out


def has_recurrent(model: Any) -> bool:
    """Does the model hold a recurrent layer (then it converts through `recurrent_converter`)?"""
    return bool(_rnn_layers(model))


def _fusable_cfg(cfg: dict) -> bool:
    """Will the converter fuse an LSTM with this config into UNIDIRECTIONAL_SEQUENCE_LSTM?"""
    return (cfg.get("activation") == "tanh" and cfg.get("recurrent_activation") == "sigmoid"
            and bool(cfg.get("use_bias", True)) and not cfg.get("time_major", False))


def _mask_reaches(layer: Any) -> bool:
    """Does a Keras mask (Masking, Embedding(mask_zero=True), ...) arrive at this layer's input?"""
    tf, _ = import_tf()
    try:
        mask = layer.input_mask
    except (AttributeError, RuntimeError):  # not called in the graph, or several inbound nodes
        return False
    return mask is not None and any(m is not None for m in tf.nest.flatten(mask))


def _layer_problems(path: str, layer: Any, shape: Any) -> list[str]:
    cfg = layer.get_config()
    name = type(layer).__name__
    problems = []
    if cfg.get("stateful"):
        problems.append(f"{path}: {name}(stateful=True) keeps state between calls (resource variables in the "
                        "artifact, and a stateful LSTM is not fused, so its int8 build crashes): "
                        "rebuild the layer with stateful=False")
    if cfg.get("return_state"):
        problems.append(f"{path}: {name}(return_state=True) adds outputs: use return_state=False")
    if cfg.get("time_major"):
        problems.append(f"{path}: {name}(time_major=True) is not supported: use time_major=False")
    cell = layer.cell
    cells = getattr(cell, "cells", None) or [cell]
    odd = sorted({type(c).__name__ for c in cells} - set(_CELLS))
    if odd:
        problems.append(f"{path}: {name} with cell(s) {odd}: only GRU, LSTM and SimpleRNN cells convert")
    if shape is not None and len(shape) == 3 and shape[1] is None:
        problems.append(f"{path}: the time axis is undefined (input {tuple(shape)}): the artifact needs a fixed "
                        "number of steps; give the model's Input a fixed length, e.g. shape=(49, 10)")
    return problems


def recurrent_problems(model: Any) -> list[str]:
    """Why a recurrent model would not convert or would build a wrong artifact, in words; [] = fine.

    Reads only the model's structure, so it runs before training. The same
    problems hold for every quantize mode (none included).
    """
    problems: list[str] = []
    rnns = _rnn_layers(model)
    for path, layer, shape in rnns:
        if _mask_reaches(layer):
            problems.append(f"{path}: receives a Keras mask (Masking / Embedding(mask_zero=True)): int8 gives "
                            "wrong classes, TFLM has no REDUCE_ANY kernel and a masked LSTM is not fused; "
                            "remove the masking (pad with zeros and train without a mask)")
        if not isinstance(layer, _bidirectional()):
            problems += _layer_problems(path, layer, shape)
    if rnns and (len(model.inputs) != 1 or len(model.outputs) != 1):
        problems.append(f"the model has {len(model.inputs)} inputs and {len(model.outputs)} outputs: a recurrent "
                        "model converts with one of each")
    return problems


def _bidirectional() -> type:
    _, tfk = import_tf()
    return tfk.layers.Bidirectional


def check_recurrent(model: Any) -> None:
    """Raise ModelError, before any training, if a recurrent layer cannot be converted in any mode."""
    problems = recurrent_problems(model)
    if problems:
        raise ModelError("The model's recurrent layers cannot be converted to TFLite", where=f"model {model.name}",
                         expected="GRU / LSTM / SimpleRNN layers with stateful=False, return_state=False, "
                                  "no mask and a fixed number of time steps",
                         received="; ".join(problems),
                         fix="Change the layers named above and save the model again (no --quantize mode "
                             "converts them as they are)")


def _edit(class_name: str, cfg: dict) -> None:
    """Inference-only edits: same outputs, a graph every mode and both interpreters take."""
    for key in ("dropout", "recurrent_dropout"):
        if key in cfg:
            cfg[key] = 0.0
    if class_name in ("GRU", "GRUCell") and not cfg.get("reset_after", True):
        # implementation=2 splits a 2*units tensor as [units, units, -1]: the empty third part is a
        # zero-size tensor TFLM rejects as dynamic.
        cfg["implementation"] = 1
    if class_name in _RNN:
        cfg["unroll"] = not (class_name == "LSTM" and _fusable_cfg(cfg))


def inference_copy(model: Any) -> Any:
    """Same layers and weights; dropout 0; GRU/SimpleRNN/RNN/non-fusable LSTM unrolled.

    Walks the whole config, so layers inside Bidirectional, RNN(cell) and nested models are edited too.
    """
    cfg = copy.deepcopy(model.get_config())

    def walk(obj: Any) -> None:
        if isinstance(obj, dict):
            cls, body = obj.get("class_name"), obj.get("config")
            if isinstance(body, dict) and (cls in _RNN or cls in _CELLS):
                _edit(cls, body)
            for value in obj.values():
                walk(value)
        elif isinstance(obj, list):
            for value in obj:
                walk(value)

    walk(cfg)
    new = model.__class__.from_config(cfg)
    new.set_weights(model.get_weights())
    return new


def recurrent_converter(model: Any) -> Any:
    """A TFLiteConverter of the inference copy traced at batch 1 (builtin ops only); None if not recurrent."""
    if not has_recurrent(model):
        return None
    tf, _ = import_tf()
    copy_ = inference_copy(model)
    shape = (1, *copy_.inputs[0].shape[1:])
    fn = tf.function(lambda x: copy_(x, training=False),
                     input_signature=[tf.TensorSpec(shape, tf.float32, name="input")])
    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], copy_)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]  # never Flex
    return converter

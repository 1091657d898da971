"""The per-layer pruning policy: which layers to prune, in which pattern, and why in words.

Why per layer and per profile: the pattern that pays depends on what the
target runtime's kernels read (LiteRT's sparse FULLY_CONNECTED reads 1x4 float
or 1x16 int8 blocks; TFLite Micro has no sparse kernels), and small, frozen or
output layers cost more accuracy than they save. Each LayerPolicy carries the
reason the report shows.

Orientation: a profile's `block_sparsity` (and `ScheduleOptions.block_size`) is in TFLite's
FULLY_CONNECTED weight layout [out, in]: "1x4" = 4 consecutive inputs of one output. A Keras
Dense kernel is [in, out], so the TFMOT `block_size` passed to `prune_low_magnitude` is the
transpose, (4, 1). The TFLite converter only keeps block-sparse weights without a DENSIFY op
for 1x4 float and 1x16 int8 FULLY_CONNECTED weights (checked on this machine); see docs/pruning.md.

Arm Ethos-U profiles (`profile.npu`): Vela encodes, losslessly, the weights of every op it runs on the NPU's
MAC engine: CONV_2D, DEPTHWISE_CONV_2D, TRANSPOSE_CONV and FULLY_CONNECTED (Vela 5.2
`tflite_supported_operators.mac_main_ops` with a weight tensor; `weight_compressor.encode_weight_and_scale_tensor`),
so the layers that become those ops (Dense, Conv1D/2D, Conv2DTranspose, DepthwiseConv1D/2D, SeparableConv1D/2D)
are pruned element-wise: Vela's encoder shrinks with every zero and with few distinct values (`--cluster N`), in
any pattern, so no block shape is needed; the zeros save flash and the weight traffic of every inference.
Layers whose ops Vela leaves to the CPU with plain int8 weights (Embedding's GATHER, Conv3D, int8 LSTM/GRU, ...)
stay dense: no DECODE runs on an Ethos-U build, so their zeros would cost accuracy and save nothing.
Depthwise kernels are pruned too: TFMOT's prune registry lists no weights for them, so they are pruned through
edgesparse's PrunableLayer stand-in (`prune.depthwise`). The output layer, `--min-params` and the MIN_SHARE
rule apply as on every profile, for the same reasons: the output layer's weights produce the output directly (the
most accuracy per weight), and a layer's encoded saving is at most its int8 bytes (one byte a weight, while Vela's
scale and bias stream of 10 B per output channel does not shrink with zeros), so a layer under --min-params
weights, or under 1 % of the model's, saves under that many bytes of flash and weight traffic.
`--prune-output-layer` prunes the output layer, and a lower `--min-params` lowers the absolute threshold.

Depthwise kernels (DepthwiseConv1D/2D) are few weights, one small filter per channel, so each zero costs more
accuracy than in a pointwise or Dense kernel; they are pruned only where their zeros pay: on Ethos-U profiles (Vela
encodes DEPTHWISE_CONV_2D weights, above), and there to DEPTHWISE_SHARE of the model's target while the other pruned
layers carry the rest (`allocate_targets`: the pruned weights still hold the target's zeros, which is what the
encoded size follows). Measured on the KWS demo for alif_e7_he at 0.8 (8 epochs, TFLite Micro accuracy, validation /
test): depthwise kernels dense, 2.74x smaller encoded weights at 93.52 / 92.41 %; all at 0.8, 3.18x at 92.78 / 91.30
%; depthwise at 0.4 and the rest at 0.826, 3.22x at 93.70 / 93.24 %. On plain TFLite Micro profiles DECODE could
compress them too (`tflite.decode_compress.DECODE_INPUTS`), but measured on the KWS demo at 0.8 that saved 2,560 B
of 43,376 at 0.7-1.1 accuracy points and 832 B more arena, so they stay dense there. On LiteRT the converter stores
a sparse depthwise kernel with a DENSIFY op (no sparse depthwise kernel exists), so they stay dense unless the
estimator predicts the layer faster (it prices DENSIFY at every MAC, so in practice only `--optimize size` prunes
them, for file size); without a profile they stay dense. The --min-params and MIN_SHARE rules apply to them as to
any layer.

Raises PruningError (a model TFMOT cannot prune, unknown skip_layers) and MissingDependency.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from edgesparse.errors import PruningError
from edgesparse.estimate.speed import layer_speed
from edgesparse.pipeline.prune.depthwise import DEPTHWISE_LAYERS, is_plain_depthwise
from edgesparse.pipeline.prune.schedule import ScheduleOptions
from edgesparse.pipeline.tf_env import import_tf, import_tfmot, keras_layer_classes

__all__ = [
    "DEPTHWISE_SHARE",
    "INT8_WEIGHT_MODES",
    "MAX_ALLOCATED",
    "MIN_PARAMS",
    "MIN_SHARE",
    "OPTIMIZE_MODES",
    "VELA_ENCODED_LAYERS",
    "LayerPolicy",
    "allocate_targets",
    "check_prunable_model",
    "check_skip_layers",
    "output_activation",
    "plan_policy",
]

#: Layers with fewer prunable weights than this stay dense by default.
MIN_PARAMS = 1000
#: Layers holding less than this share of the model's prunable weights stay dense by default.
MIN_SHARE = 0.01
#: A pruned depthwise kernel's target as a share of the model's: one small filter per channel, so each of its zeros
#: costs more accuracy than one in a pointwise or Dense kernel (the other pruned layers carry the rest: see
#: `allocate_targets`). Measured on the KWS demo for alif_e7_he at 0.8: the module docstring gives the figures.
DEPTHWISE_SHARE = 0.5
#: A layer target `allocate_targets` will not raise a layer to (TFMOT needs a fraction under 1; past this the
#: remaining weights of a layer hold too little to recover).
MAX_ALLOCATED = 0.95
#: Quantize modes whose weights are int8 (the converter's quantized block size, 1x16).
INT8_WEIGHT_MODES = ("int8", "dynamic")
#: What the per-layer policy optimizes on LiteRT profiles: "size" prunes every eligible layer (the smallest
#: file, even where the sparse kernel is predicted slower than dense), "speed" prunes only where the estimator
#: predicts the layer faster than dense, "balanced" (default) wherever it is not predicted slower.
OPTIMIZE_MODES = ("size", "speed", "balanced")
#: Keras layers the converter turns into ops whose weights Vela encodes on an Ethos-U NPU (CONV_2D,
#: DEPTHWISE_CONV_2D, TRANSPOSE_CONV, FULLY_CONNECTED); the module docstring says how that was checked.
VELA_ENCODED_LAYERS = ("Dense", "Conv1D", "Conv2D", "Conv2DTranspose", "DepthwiseConv1D", "DepthwiseConv2D",
                       "SeparableConv1D", "SeparableConv2D")


@dataclass(frozen=True)
class LayerPolicy:
    """How one layer is pruned, and why, in words the report can show."""

    name: str
    layer_type: str
    params: int                       # prunable weights (kernels) in this layer
    prune: bool
    target_sparsity: float
    block_size: tuple[int, int]       # TFMOT block_size (Keras kernel layout); (1, 1) = none
    pattern: str                      # "block 1x4" | "element-wise" | "2:4" | "dense"
    reason: str
    m_by_n: tuple[int, int] | None = None
    weights: tuple[str, ...] = ()     # names of the pruned (or measured) weights
    weight_indices: tuple[int, ...] = field(default=(), repr=False)  # into layer.weights
    output_layer: bool = False


def check_prunable_model(model: Any) -> Any:
    """The tf_keras module, after checking `model` is a tf_keras Sequential/Functional model."""
    _, keras = import_tf()
    if not isinstance(model, keras.Model):
        raise PruningError("TFMOT can only prune a tf_keras model", where="prune",
                           expected="a tf_keras.Model (Keras 2; load it with edgesparse.pipeline.models)",
                           received=type(model).__module__ + "." + type(model).__name__,
                           fix="Load the model with edgesparse.pipeline.models.load_model, which converts "
                               "Keras 3 models to tf_keras")
    if not (isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False)):
        raise PruningError("Subclassed models cannot be pruned (TFMOT clones the layer graph)",
                           where=model.name, expected="a Sequential or Functional model",
                           received=type(model).__name__,
                           fix="Rebuild the model with the Functional API")
    if not model.built:
        raise PruningError("Model is not built, so its weights are unknown", where=model.name,
                           expected="a model with an input shape", received="an unbuilt model",
                           fix="Give the first layer an input_shape or call model.build(shape)")
    return keras


def _kernel_weights(layer) -> list:
    """Weights of rank >= 2 (kernels, embeddings): what pruning is about."""
    return [w for w in layer.weights if len(w.shape) >= 2]


def _resolve_attr(obj, dotted: str):
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def _prunable_weights(layer, keras) -> tuple[list | None, str]:
    """(weights TFMOT would prune, "") or (None, why it cannot prune this layer)."""
    from tensorflow_model_optimization.python.core.sparsity.keras import prunable_layer
    from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import PruneRegistry

    cls = type(layer).__name__
    if isinstance(layer, keras.Model):
        return None, ("nested model: edgesparse prunes top-level layers only; flatten the model "
                      "or list it in skip_layers")
    if isinstance(layer, prunable_layer.PrunableLayer) or hasattr(layer, "get_prunable_weights"):
        return list(layer.get_prunable_weights()), ""
    if is_plain_depthwise(layer):  # TFMOT lists none; pruned through prune.depthwise's PrunableLayer stand-in
        return [layer.depthwise_kernel], ""
    if not PruneRegistry.supports(layer):
        return None, (f"TFMOT cannot prune {cls} (not in its prune registry and no "
                      "get_prunable_weights())")
    # The registry's private tables name the weights; make_prunable() would mutate the layer.
    if layer.__class__ in PruneRegistry._RNN_LAYERS:
        weights = []
        for cell in PruneRegistry._get_rnn_cells(layer):
            names = PruneRegistry._RNN_CELLS_WEIGHTS_MAP.get(cell.__class__)
            weights += ([getattr(cell, n) for n in names] if names is not None
                        else list(cell.get_prunable_weights()))
        return weights, ""
    names = PruneRegistry._LAYERS_WEIGHTS_MAP.get(layer.__class__, [])
    if not names:
        return None, f"TFMOT's prune registry lists no prunable weights for {cls}"
    return [_resolve_attr(layer, n) for n in names], ""


def _inbound_layers(layer) -> list:
    out = []
    for node in getattr(layer, "_inbound_nodes", []):
        inbound = node.inbound_layers
        out += inbound if isinstance(inbound, (list, tuple)) else [inbound]
    return out


def _output_layers(model, keras) -> list:
    """Layers whose weights produce a model output, walking back over weightless layers."""
    found = []
    heads = [t._keras_history.layer for t in (model.outputs or [])] or model.layers[-1:]
    for layer in heads:
        seen = 0
        while not layer.weights and seen < 50:
            inbound = [x for x in _inbound_layers(layer) if not isinstance(x, keras.layers.InputLayer)]
            if len(inbound) != 1:
                break
            layer, seen = inbound[0], seen + 1
        if layer.weights:
            found.append(layer)
    return found


def output_activation(model: Any, keras: Any) -> str:
    """'softmax', 'sigmoid' or 'linear'/other: the last activation before the output."""
    heads = [t._keras_history.layer for t in (model.outputs or [])] or model.layers[-1:]
    layer = heads[0]
    for _ in range(50):
        if isinstance(layer, keras.layers.Softmax):
            return "softmax"
        act = getattr(layer, "activation", None)
        if act is not None:
            name = getattr(act, "__name__", str(act))
            if name != "linear" or layer.weights:
                return name
        inbound = [x for x in _inbound_layers(layer) if not isinstance(x, keras.layers.InputLayer)]
        if layer.weights or len(inbound) != 1:
            break
        layer = inbound[0]
    return "linear"


def _vela_encodes(layer) -> bool:
    """True when the layer becomes an op whose weights Vela encodes (VELA_ENCODED_LAYERS, subclasses included)."""
    return isinstance(layer, keras_layer_classes(VELA_ENCODED_LAYERS))


def _npu_reason(profile, layer, keras, why_not: str | None) -> str | None:
    """The Ethos-U policy's reason to keep a layer dense, or None when Vela encodes it and TFMOT can prune it."""
    npu = profile.npu
    if not _vela_encodes(layer):
        return (f"dense: Vela does not encode {type(layer).__name__}'s weights (its op runs on {profile.name}'s CPU "
                f"with plain int8 weights, and Ethos-U builds have no DECODE), so zeros there would cost accuracy "
                f"and save no byte")
    if why_not is not None:
        return (f"{why_not}; Vela encodes it on the {npu.product} too, where zeros would shrink its encoded "
                f"weights, but it stays dense")
    return None


def _depthwise_dense_reason(profile) -> str | None:
    """Why a depthwise kernel stays dense on `profile` before any estimate, or None where its zeros pay (or, on
    LiteRT, where `_optimized` asks the estimator)."""
    if profile is None:
        return ("dense: a depthwise kernel (one small filter per channel, so each zero costs more accuracy) is "
                "pruned only for a device whose runtime turns its zeros into bytes (Vela on Ethos-U, DECODE on "
                "TFLite Micro); no device profile was given")
    if profile.runtime == "tflm" and getattr(profile, "npu", None) is None:
        return ("dense: on TFLite Micro a depthwise kernel's zeros pay little through DECODE and cost accuracy "
                "(measured on the KWS demo at 0.8: 43,376 -> 40,816 B, 832 B more arena, 0.7-1.1 points lower); "
                "Ethos-U profiles prune it, Vela encoding it in full")
    return None


_LITERT_DEPTHWISE = ("depthwise kernels (one small filter per channel: each zero costs more accuracy) are pruned "
                     "on LiteRT only where the estimator predicts a speed-up, and LiteRT has no sparse depthwise "
                     "kernel (DENSIFY restores it dense)")


def _element_wise_reason(profile, layer, keras, int8: bool = False) -> str:
    name = getattr(profile, "name", None)
    if profile is None:
        return "element-wise (no device profile: generic magnitude pruning)"
    if getattr(profile, "npu", None) is not None:
        return (f"element-wise; {name}'s {profile.npu.product} runs this kernel from Vela's lossless weight "
                f"encoding, which shrinks with every zero in any pattern (and with few distinct values, "
                f"--cluster N): smaller encoded weights in flash and less weight traffic per inference")
    if profile.runtime == "tflm" and is_plain_depthwise(layer):
        return (f"element-wise; {name} runs TFLite Micro, which has no sparse kernels: DECODE compression "
                "(--mcu-compression) replaces DEPTHWISE_CONV_2D weights as it does CONV_2D ones, so the zeros "
                "shrink flash where the compressed tensor is worth its DECODE (decoded into RAM on every invoke)")
    if profile.runtime == "tflm":
        return (f"element-wise; {name} runs TFLite Micro, which has no sparse kernels: the zeros shrink flash "
                "through DECODE compression (--mcu-compression), which decodes the tensor into RAM on every "
                "invoke, so they cost RAM and time rather than save them")
    if not profile.sparse_weights:
        return (f"element-wise; {name}'s runtime does not exploit sparse weights: the zeros help "
                "compressed size only")
    if isinstance(layer, keras.layers.Dense):
        which = "int8 block sparsity (block_sparsity_int8)" if int8 else "block sparsity"
        return (f"element-wise; {name} lists no {which}, so LiteRT stores this kernel "
                "unstructured with a DENSIFY op (smaller file, no speed-up)")
    if isinstance(layer, (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D,
                          keras.layers.SeparableConv2D)):
        return ("element-wise; TFMOT block_size needs a 2-D (Dense) kernel, and LiteRT densifies "
                "sparse conv weights at load (smaller file; XNNPACK's sparse inference covers only "
                "float 1x1 convs in specific graphs)")
    return ("element-wise; LiteRT reads block-sparse weights only in FULLY_CONNECTED, so this "
            "kernel is stored with a DENSIFY op (smaller file, no speed-up)")


def plan_policy(model, profile, schedule: ScheduleOptions, *,
                skip_layers: Iterable[str] = frozenset(), min_params: int = MIN_PARAMS,
                min_share: float = MIN_SHARE, prune_output_layer: bool = False,
                quantize: str | None = None, optimize: str = "balanced") -> list[LayerPolicy]:
    """Per-layer pruning pattern for what the profile's runtime exploits; one entry per kernel layer.

    `quantize` is the convert stage's mode: "int8"/"dynamic" store int8 weights, whose sparse
    FULLY_CONNECTED kernel takes 1x16 blocks (profile.block_sparsity_int8), while float32/float16
    weights take profile.block_sparsity (1x4). `optimize` (OPTIMIZE_MODES) applies to LiteRT profiles
    only: each pruned layer's encoding is priced against its dense kernel by the estimator
    (`estimate.speed.layer_speed`), and its reason says what was predicted; TFLM profiles (no sparse
    kernels: every encoding is size only) are planned the same for every mode. Ethos-U profiles
    (profile.npu) prune element-wise every kernel Vela encodes (the module docstring says which and why).
    Depthwise kernels are pruned on Ethos-U and TFLM profiles, on LiteRT only as the estimator allows, and
    never without a profile (the module docstring says why).
    """
    if optimize not in OPTIMIZE_MODES:
        raise PruningError("Unknown optimization goal", where="plan_policy (--optimize)",
                           expected=" | ".join(OPTIMIZE_MODES), received=repr(optimize))
    keras = check_prunable_model(model)
    import_tfmot()
    if not isinstance(schedule, ScheduleOptions):
        raise PruningError("schedule must be a ScheduleOptions", where="plan_policy",
                           received=type(schedule).__name__)
    skip = set(skip_layers)
    candidates = [layer for layer in model.layers if _kernel_weights(layer)]
    check_skip_layers(model, skip, candidates)
    prunable = {layer.name: _prunable_weights(layer, keras) for layer in candidates}
    total = sum(int(w.shape.num_elements()) for ws, _ in prunable.values() if ws for w in ws)
    outputs = {layer.name for layer in _output_layers(model, keras)}

    int8 = quantize in INT8_WEIGHT_MODES
    tflite_block = schedule.block_size
    if tflite_block is None and profile is not None and profile.runtime == "litert" \
            and profile.sparse_weights:
        tflite_block = getattr(profile, "block_sparsity_int8", None) if int8 else profile.block_sparsity
    if tflite_block == (1, 1):
        tflite_block = None
    m_by_n = schedule.structured
    target = schedule.structured[0] / schedule.structured[1] if m_by_n else schedule.final_sparsity

    policies = []
    for layer in candidates:
        weights, why_not = prunable[layer.name]
        shown = weights if weights else _kernel_weights(layer)
        params = sum(int(w.shape.num_elements()) for w in shown)
        index = tuple(i for w in shown for i, v in enumerate(layer.weights) if v is w)
        base = dict(name=layer.name, layer_type=type(layer).__name__, params=params,
                    weights=tuple(w.name for w in shown), weight_indices=index,
                    output_layer=layer.name in outputs)

        def dense(reason: str, base: dict[str, Any] = base) -> LayerPolicy:
            return LayerPolicy(prune=False, target_sparsity=0.0, block_size=(1, 1),
                               pattern="dense", reason=reason, **base)

        npu_dense = (_npu_reason(profile, layer, keras, why_not if weights is None else None)
                     if getattr(profile, "npu", None) is not None else None)
        depthwise_dense = _depthwise_dense_reason(profile) if is_plain_depthwise(layer) else None
        if layer.name in skip:
            policies.append(dense("skipped by request (--skip-layers / skip_layers)"))
        elif npu_dense is not None:
            policies.append(dense(npu_dense))
        elif depthwise_dense is not None:
            policies.append(dense(depthwise_dense))
        elif weights is None:
            policies.append(dense(why_not))
        elif not weights:
            policies.append(dense("no prunable weights"))
        elif not layer.trainable:
            policies.append(dense("frozen (trainable=False): fine-tuning could not recover the "
                                  "accuracy pruning costs; unfreeze it to prune it"))
        elif layer.name in outputs and not prune_output_layer:
            policies.append(dense("output layer: its weights produce the model's output directly, "
                                  "so each pruned weight costs the most accuracy; pass "
                                  "--prune-output-layer (prune_output_layer=True) to prune it"))
        elif params < min_params:
            policies.append(dense(f"too small to matter: {params} weights < --min-params "
                                  f"({min_params})"))
        elif params < min_share * total:
            policies.append(dense(f"too small to matter: {params} weights, under {min_share:.0%} "
                                  f"of the model's {total} prunable weights"))
        elif m_by_n:
            policies.append(_m_by_n_policy(layer, weights, m_by_n, profile, base, dense))
        else:
            policies.append(_unstructured_policy(layer, weights, tflite_block, target, profile,
                                                 schedule, base, keras, int8))
    if profile is not None and profile.runtime == "litert":
        policies = [_optimized(policy, layer, profile, optimize, int8, keras)
                    if policy.prune and (optimize != "size" or is_plain_depthwise(layer)) else policy
                    for layer, policy in zip(candidates, policies)]
    return policies if m_by_n else allocate_targets(policies, target)


def allocate_targets(policies: list[LayerPolicy], target: float) -> list[LayerPolicy]:
    """Per-layer targets whose weighted mean over the pruned kernels is `target`: depthwise kernels get
    DEPTHWISE_SHARE of it, the other pruned layers the rest (all of them at `target` when only one kind is pruned).

    Why the model's zeros stay at `target`: the size a runtime encodes (Vela, DECODE, LiteRT's file) follows the
    zeros of the whole model, and `--final-sparsity` is the fraction of the pruned weights zeroed, as the report
    measures it. Moving a depthwise kernel's zeros into the much larger pointwise and Dense kernels costs less
    accuracy for the same bytes.
    """
    pruned = [p for p in policies if p.prune]
    depthwise = sum(p.params for p in pruned if p.layer_type in DEPTHWISE_LAYERS)
    rest = sum(p.params for p in pruned if p.layer_type not in DEPTHWISE_LAYERS)
    if not depthwise or not rest:
        return policies
    lowered = target * DEPTHWISE_SHARE
    raised = (target * (depthwise + rest) - lowered * depthwise) / rest
    if raised >= MAX_ALLOCATED:  # the rest cannot carry it: every layer at the model's target instead
        return policies
    share = f"{DEPTHWISE_SHARE:g}"

    def allocated(p: LayerPolicy) -> LayerPolicy:
        if not p.prune:
            return p
        if p.layer_type in DEPTHWISE_LAYERS:
            why = (f"; target {lowered:.3g}, {share} of the model's {target:g}: a depthwise kernel is one small filter "
                   "per channel, so each zero costs more accuracy")
            return LayerPolicy(**{**p.__dict__, "target_sparsity": lowered, "reason": p.reason + why})
        why = (f"; target {raised:.3g}, so the model's pruned weights are {target:g} zeros with the depthwise kernels "
               f"at {lowered:.3g}")
        return LayerPolicy(**{**p.__dict__, "target_sparsity": raised, "reason": p.reason + why})

    return [allocated(p) for p in policies]


def _dense_for_speed(policy: LayerPolicy, why: str) -> LayerPolicy:
    return LayerPolicy(**{**policy.__dict__, "prune": False, "target_sparsity": 0.0, "block_size": (1, 1),
                          "pattern": "dense", "m_by_n": None, "reason": why})


def _layer_macs(layer: Any) -> int:
    """Kernel weights x output positions: the MACs of a Dense or convolution layer at batch 1."""
    shape = getattr(layer, "output_shape", None)
    shape = shape[0] if isinstance(shape, list) else shape
    positions = 1
    for d in tuple(shape or ())[1:-1]:
        positions *= int(d or 1)
    weights = sum(int(w.shape.num_elements()) for w in _kernel_weights(layer))
    return weights * positions


def _optimized(policy: LayerPolicy, layer: Any, profile: Any, optimize: str, int8: bool, keras: Any) -> LayerPolicy:
    """The layer's policy after asking the estimator whether its encoding is slower than dense on `profile`.

    A block pattern feeds LiteRT's sparse FULLY_CONNECTED (stored blocks only); every other pattern is
    stored with DENSIFY, so the dense kernel runs every MAC (and XNNPACK declines an int8 FULLY_CONNECTED
    fed by it). "speed" keeps only encodings predicted faster; "balanced" keeps those not predicted slower,
    falling back from a slower block pattern to element-wise when that is not predicted slower.
    """
    kind = "fc" if isinstance(layer, keras.layers.Dense) else "conv"
    dtype = "int8" if int8 else "float32"
    macs = _layer_macs(layer)

    def ask(encoding: str) -> dict[str, Any]:
        return layer_speed(profile, kind=kind, macs=macs, sparsity=policy.target_sparsity, dtype=dtype,
                           encoding=encoding)

    def said(pattern: str, s: dict[str, Any]) -> str:
        ratio = "unknown" if s["ratio"] is None else f"x{s['ratio']:.2f}"
        verdict = "as fast as" if s["verdict"] == "same" else f"{s['verdict']} than"
        return (f"{pattern} predicted {verdict} dense on {profile.name} ({ratio} of the dense "
                f"layer's time, {s['basis']}: {s['note']})")

    block = policy.pattern.startswith("block")
    first = ask("block" if block else "densify")
    if is_plain_depthwise(layer):
        return _optimized_depthwise(policy, optimize, first, said(policy.pattern, first))
    if optimize == "speed":
        if first["verdict"] == "faster":
            return _with_reason(policy, f"{policy.reason}; --optimize speed: {said(policy.pattern, first)}")
        return _dense_for_speed(policy, f"dense: --optimize speed prunes only where the estimator predicts a "
                                    f"speed-up, and {said(policy.pattern, first)}; pass --optimize size or "
                                    "balanced to prune it for file size")
    if first["verdict"] != "slower":
        return _with_reason(policy, f"{policy.reason}; --optimize balanced: {said(policy.pattern, first)}")
    if block:
        fallback = ask("densify")
        if fallback["verdict"] != "slower":
            return LayerPolicy(**{**policy.__dict__, "block_size": (1, 1), "pattern": "element-wise",
                                  "reason": f"element-wise (stored with DENSIFY: smaller file, dense kernel) "
                                            f"instead of {policy.pattern}: --optimize balanced, "
                                            f"{said(policy.pattern, first)}; element-wise "
                                            f"{said('', fallback).strip()}; --optimize size keeps the blocks"})
    return _dense_for_speed(policy, f"dense: --optimize balanced does not prune where the encoding is predicted "
                                f"slower, and {said(policy.pattern, first)}; pass --optimize size for the "
                                "smallest file")


def _optimized_depthwise(policy: LayerPolicy, optimize: str, predicted: dict[str, Any], said: str) -> LayerPolicy:
    """A LiteRT depthwise kernel: pruned under --optimize size (file size), else only where predicted faster."""
    if optimize == "size":
        return _with_reason(policy, f"{policy.reason}; --optimize size prunes it for file size, though "
                                    f"{_LITERT_DEPTHWISE}: {said}")
    if predicted["verdict"] == "faster":
        return _with_reason(policy, f"{policy.reason}; --optimize {optimize}: {said}")
    return _dense_for_speed(policy, f"dense: {_LITERT_DEPTHWISE}, and {said}; pass --optimize size to prune it "
                                    "for file size")


def _with_reason(policy: LayerPolicy, reason: str) -> LayerPolicy:
    return LayerPolicy(**{**policy.__dict__, "reason": reason})


def check_skip_layers(model: Any, skip: set[str], candidates: list) -> None:
    """skip_layers must name layers of this model; suggest the closest name for each that does not."""
    all_names = [layer.name for layer in model.layers]
    unknown = sorted(skip - set(all_names))
    if unknown:
        hints = [f"'{u}' -> '{c[0]}'" for u in unknown
                 if (c := difflib.get_close_matches(u, all_names, n=1))]
        raise PruningError("--skip-layers names layers the model does not have", where=model.name,
                           expected="names from: " + ", ".join(layer.name for layer in candidates),
                           received=", ".join(repr(u) for u in unknown),
                           fix=("Did you mean " + ", ".join(hints) + "? " if hints else "")
                           + "Use the layer names shown by model.summary()")


def _m_by_n_policy(layer, weights, m_by_n, profile, base, dense) -> LayerPolicy:
    m, n = m_by_n
    for w in weights:
        shape = tuple(w.shape)
        if len(shape) not in (2, 4):
            return dense(f"{m}:{n} needs a rank-2 or rank-4 kernel (TFMOT m_by_n); "
                         f"{w.name} has shape {shape}")
        channels = shape[0] if len(shape) == 2 else shape[2]
        if channels % n:
            return dense(f"{m}:{n} groups run along the input channels, and {channels} is not a "
                         f"multiple of {n}")
    where = f"{profile.name}'s runtime" if profile is not None else "LiteRT/TFLM"
    runtime = (f"; {where} has no {m}:{n} kernel (TFLite encodes only 1x4/1x16 blocks or CSR), "
               "so the gain there is compressed size; the structure is for m:n hardware")
    return LayerPolicy(prune=True, target_sparsity=m / n, block_size=(1, 1), pattern=f"{m}:{n}",
                       reason=f"{m}:{n} structured: {m} zeros in every {n} consecutive input "
                              f"channels (TFMOT sparsity_m_by_n){runtime}", m_by_n=m_by_n, **base)


def _unstructured_policy(layer, weights, tflite_block, target, profile, schedule, base,
                         keras, int8) -> LayerPolicy:
    element = LayerPolicy(prune=True, target_sparsity=target, block_size=(1, 1),
                          pattern="element-wise",
                          reason=_element_wise_reason(profile, layer, keras, int8), **base)
    if tflite_block is None or not isinstance(layer, keras.layers.Dense):
        return element
    kernel = weights[0]
    if len(weights) != 1 or len(kernel.shape) != 2:
        return element
    d_in, d_out = (int(d) for d in kernel.shape)
    b_out, b_in = tflite_block
    label = f"{b_out}x{b_in}"
    if d_out % b_out or d_in % b_in:
        return LayerPolicy(**{**element.__dict__, "reason": (
            f"element-wise; the kernel [out={d_out}, in={d_in}] does not divide into {label} "
            "blocks")})
    if d_out == b_out or d_in == b_in:  # TFMOT squeezes a single row of blocks to rank 1 and fails mid-training
        return LayerPolicy(**{**element.__dict__, "reason": (
            f"element-wise; the kernel [out={d_out}, in={d_in}] is a single row of {label} blocks, "
            "which TFMOT's block pruning cannot handle")})
    source = "ScheduleOptions.block_size" if schedule.block_size else f"{profile.name}'s profile"
    runtime = ""
    if profile is not None and (profile.runtime == "tflm" or not profile.sparse_weights):
        runtime = f"; {profile.name}'s runtime cannot exploit it (requested explicitly)"
    dtype = "int8" if int8 else "float"
    return LayerPolicy(**{**element.__dict__, "block_size": (b_in, b_out), "pattern": f"block {label}",
                          "reason": (f"block {label} from {source}: LiteRT's {dtype} sparse "
                                     f"FULLY_CONNECTED kernel reads {label} blocks without DENSIFY "
                                     f"(TFLite [out, in] layout; TFMOT block_size=({b_in}, {b_out}))"
                                     f"{runtime}")})



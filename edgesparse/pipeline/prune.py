"""TFMOT pruning: schedule, per-layer policy, fine-tuning, strip_pruning.

CONTRACT (names other modules rely on; extended, never renamed):
    ScheduleOptions(kind="polynomial"|"constant", initial_sparsity=0.0, final_sparsity=0.8,
                    begin_step=0, end_step=None, power=3, frequency=100,
                    structured=None | (2, 4),
                    # added:
                    auto_frequency=True, block_size=None, settle_fraction=0.25)
    resolve_schedule(schedule, *, num_train, batch_size, epochs) -> ResolvedSchedule
    LayerPolicy(name, layer_type, params, prune, target_sparsity, block_size, pattern, reason,
                # added:
                m_by_n, weights, weight_indices, output_layer)
    plan_policy(model, profile, schedule, *, skip_layers=frozenset(), min_params=1000,
                min_share=0.01, prune_output_layer=False) -> list[LayerPolicy]
    prune_and_finetune(model, dataset, policies, schedule, *, epochs, batch_size,
                       learning_rate=None, tensorboard_dir=None, progress=None, seed=0)
                       -> PruneResult
    PruneResult: model (stripped tf_keras.Model), layers (list[LayerSparsity]),
                 overall_sparsity (float, over pruned weights), end_step (int), history (dict),
                 # added: schedule (ResolvedSchedule), policies (list[LayerPolicy])
    LayerSparsity: name, pattern, target, achieved, params, reason, # added: pruned, zeros
    progress(event: str, fields: dict) events: "train_begin" {epochs, steps_per_epoch,
        total_steps, end_step, frequency, pruned_layers}, "batch_end" {epoch, step, loss,
        accuracy, sparsity}, "epoch_end" {epoch, loss, accuracy, val_loss, val_accuracy,
        sparsity}. epoch and step count from 1; sparsity is the zero fraction of the live
        pruning masks over all pruned weights.

Orientation: a profile's `block_sparsity` (and `ScheduleOptions.block_size`) is in TFLite's
FULLY_CONNECTED weight layout [out, in]: "1x4" = 4 consecutive inputs of one output. A Keras
Dense kernel is [in, out], so the TFMOT `block_size` passed to `prune_low_magnitude` is the
transpose, (4, 1). The TFLite converter only keeps block-sparse weights without a DENSIFY op
for 1x4 float and 1x16 int8 FULLY_CONNECTED weights (checked on this machine); see docs/pruning.md.

This module never prints or exits; it imports TensorFlow lazily (edgesparse.pipeline.tf_env).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

from edgesparse.errors import DataError, MissingDependency, PruningError

DEFAULT_FINAL_SPARSITY = 0.8
DEFAULT_FREQUENCY = 100
#: Fraction of the training steps after begin_step left at the final sparsity so masks settle.
SETTLE_FRACTION = 0.25
#: With auto_frequency, the ramp gets at least this many mask updates (frequency is lowered).
MIN_MASK_UPDATES = 10
#: Layers with fewer prunable weights than this stay dense by default.
MIN_PARAMS = 1000
#: Layers holding less than this share of the model's prunable weights stay dense by default.
MIN_SHARE = 0.01
#: Achieved sparsity may fall short of the target by at most this (plus one pruning unit).
TOLERANCE = 0.01
#: How far below final_sparsity the last mask update of an explicit end_step may land.
_ALIGN_SLACK = 0.005

ProgressFn = Callable[[str, dict], None]

_KINDS = ("polynomial", "constant")
#: convert.QUANTIZE_MODES whose weights are int8 (the converter's quantized block size, 1x16).
_INT8_WEIGHT_MODES = ("int8", "dynamic")


# --------------------------------------------------------------------------- schedule


@dataclass(frozen=True)
class ScheduleOptions:
    """What the user asked for; checked on construction, resolved against the data later."""

    kind: str = "polynomial"
    initial_sparsity: float = 0.0
    final_sparsity: float = DEFAULT_FINAL_SPARSITY
    begin_step: int = 0
    end_step: int | None = None
    power: float = 3
    frequency: int = DEFAULT_FREQUENCY
    structured: tuple[int, int] | None = None
    auto_frequency: bool = True
    block_size: tuple[int, int] | None = None
    settle_fraction: float = SETTLE_FRACTION

    def __post_init__(self) -> None:
        for name in ("structured", "block_size"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _int_pair(value, name))
        _validate_options(self)


def _int_pair(value: Any, name: str) -> tuple[int, int]:
    try:
        a, b = value
        pair = (int(a), int(b))
        ok = pair == (a, b) and pair[0] >= 1 and pair[1] >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise PruningError(f"Invalid {name}", where=f"ScheduleOptions.{name}",
                           expected="two positive integers, e.g. (2, 4)" if name == "structured"
                           else "two positive integers in TFLite [out, in] layout, e.g. (1, 4)",
                           received=repr(value))
    return pair


def _bad(what: str, key: str, expected: str, received: object, fix: str | None = None) -> PruningError:
    return PruningError(what, where=f"ScheduleOptions.{key}", expected=expected,
                        received=received, fix=fix)


def _validate_options(o: ScheduleOptions) -> None:
    if o.kind not in _KINDS:
        close = difflib.get_close_matches(str(o.kind), _KINDS, n=1)
        raise _bad("Unknown pruning schedule kind", "kind", "'polynomial' (PolynomialDecay) or "
                   "'constant' (ConstantSparsity)", repr(o.kind),
                   f"Did you mean '{close[0]}'?" if close else None)
    for key in ("initial_sparsity", "final_sparsity"):
        value = getattr(o, key)
        if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise _bad("Sparsity out of range", key, "a fraction in [0, 1), e.g. 0.8 for 80% zeros",
                       repr(value), "TFMOT cannot prune every weight; percentages are fractions")
    if o.final_sparsity == 0.0:
        raise _bad("final_sparsity is 0: nothing would be pruned", "final_sparsity",
                   "a fraction in (0, 1)", 0.0, "Skip the prune stage instead")
    if o.kind == "constant" and o.initial_sparsity:
        raise _bad("initial_sparsity only applies to PolynomialDecay", "initial_sparsity",
                   "0 with kind='constant' (ConstantSparsity prunes to final_sparsity at once)",
                   o.initial_sparsity, "Use kind='polynomial' to ramp up from initial_sparsity")
    if o.kind == "polynomial" and o.initial_sparsity > o.final_sparsity:
        raise _bad("PolynomialDecay would lower the sparsity", "initial_sparsity",
                   f"initial_sparsity <= final_sparsity ({o.final_sparsity})", o.initial_sparsity)
    if not isinstance(o.begin_step, int) or o.begin_step < 0:
        raise _bad("begin_step must be a step number", "begin_step", "an integer >= 0",
                   repr(o.begin_step))
    if o.end_step is not None:
        if not isinstance(o.end_step, int):
            raise _bad("end_step must be a step number", "end_step", "an integer or None",
                       repr(o.end_step))
        if o.end_step <= o.begin_step:
            raise _bad("begin_step must come before end_step", "end_step",
                       f"end_step > begin_step ({o.begin_step})", o.end_step,
                       "Leave end_step unset to derive it from the training length")
    if not isinstance(o.frequency, int) or o.frequency < 1:
        raise _bad("frequency must be a positive step count", "frequency",
                   "an integer >= 1 (steps between mask updates)", repr(o.frequency))
    if not isinstance(o.power, (int, float)) or o.power <= 0:
        raise _bad("power must be positive", "power", "a number > 0 (3 = TFMOT's default)",
                   repr(o.power))
    if not isinstance(o.settle_fraction, (int, float)) or not 0.0 <= o.settle_fraction < 1.0:
        raise _bad("settle_fraction out of range", "settle_fraction", "a fraction in [0, 1)",
                   repr(o.settle_fraction))
    if o.structured is not None:
        m, n = o.structured
        if m >= n:
            raise _bad("Structured sparsity needs fewer zeros than the group size", "structured",
                       "(m, n) with m < n, e.g. (2, 4)", o.structured)
        if abs(o.final_sparsity - m / n) > 1e-9:
            raise _bad(f"{m}:{n} structured pruning always zeroes exactly {m} of every {n} "
                       f"weights, so its sparsity is {m / n:g}", "final_sparsity",
                       f"final_sparsity={m / n:g} with structured={o.structured}",
                       o.final_sparsity, f"Pass final_sparsity={m / n:g}")
        if o.block_size is not None and o.block_size != (1, 1):
            raise _bad(f"{m}:{n} structured sparsity cannot be combined with block sparsity",
                       "block_size", "block_size=None with structured pruning", o.block_size,
                       "Choose either structured=(2, 4) or a block size")
        if o.begin_step != 0 or o.end_step is not None:
            raise _bad("TFMOT sets m_by_n masks once, at step 1, whatever the schedule says",
                       "begin_step" if o.begin_step else "end_step",
                       "begin_step=0 and end_step=None with structured pruning",
                       f"begin_step={o.begin_step}, end_step={o.end_step}",
                       "Drop begin_step/end_step, or use unstructured pruning")


@dataclass(frozen=True)
class ResolvedSchedule:
    """The schedule TFMOT will run, in concrete steps (what the report shows)."""

    kind: str
    initial_sparsity: float
    final_sparsity: float
    begin_step: int
    end_step: int
    power: float
    frequency: int
    structured: tuple[int, int] | None
    steps_per_epoch: int
    epochs: int
    total_steps: int
    mask_updates: int
    notes: tuple[str, ...] = ()

    @property
    def target(self) -> float:
        """Sparsity every pruned layer must reach."""
        if self.structured:
            return self.structured[0] / self.structured[1]
        return self.final_sparsity

    def is_update_step(self, step: int) -> bool:
        """Mirror of TFMOT's `_should_prune_in_step` (pruning_step counts batches from 1)."""
        if self.structured:
            return step == 1
        return (self.begin_step <= step <= self.end_step
                and (step - self.begin_step) % self.frequency == 0)

    def sparsity_at(self, step: int) -> float:
        """The schedule's sparsity at `step` (PolynomialDecay / ConstantSparsity formula)."""
        if self.structured or self.kind == "constant":
            return self.target
        p = min(1.0, max(0.0, (step - self.begin_step) / (self.end_step - self.begin_step)))
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1 - p) ** self.power

    def to_tfmot(self):
        """The tfmot.sparsity.keras PruningSchedule object."""
        tfmot = _tfmot()
        sparsity = tfmot.sparsity.keras
        if self.structured:
            # Ignored by TFMOT for m_by_n (mask set at step 1), but the wrapper needs one.
            return sparsity.ConstantSparsity(self.target, begin_step=0, end_step=1, frequency=1)
        if self.kind == "constant":
            return sparsity.ConstantSparsity(self.final_sparsity, begin_step=self.begin_step,
                                             end_step=self.end_step, frequency=self.frequency)
        return sparsity.PolynomialDecay(
            initial_sparsity=self.initial_sparsity, final_sparsity=self.final_sparsity,
            begin_step=self.begin_step, end_step=self.end_step, power=self.power,
            frequency=self.frequency)

    def as_dict(self) -> dict:
        """JSON-ready, for the build report."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def steps_per_epoch(num_train: int, batch_size: int) -> int:
    """Batches per epoch of `model.fit(x, y, batch_size)` (the last one may be short)."""
    return math.ceil(num_train / batch_size)


def derive_end_step(total_steps: int, begin_step: int, frequency: int,
                    settle_fraction: float = SETTLE_FRACTION) -> int:
    """Last mask update at ~(1 - settle_fraction) of training, on a frequency boundary."""
    span = int((1.0 - settle_fraction) * (total_steps - begin_step))
    return begin_step + (span // frequency) * frequency


def _capped_frequency(frequency: int, ramp: int) -> int:
    return min(frequency, max(1, ramp // MIN_MASK_UPDATES))


def _derive(s: ScheduleOptions, total: int, training: str) -> tuple[int, int, list[str]]:
    """(end_step, frequency, notes) when the user left end_step unset."""
    span = int((1.0 - s.settle_fraction) * (total - s.begin_step))
    if span < 1:
        raise PruningError("Too few training steps to ramp the sparsity up", where="prune",
                           expected="at least 2 steps after begin_step", received=training,
                           fix="Train for more epochs or use a smaller batch")
    frequency, notes = s.frequency, []
    if s.auto_frequency and _capped_frequency(frequency, span) < frequency:
        frequency = _capped_frequency(frequency, span)
        notes.append(f"frequency lowered from {s.frequency} to {frequency} so the ramp gets "
                     f"~{MIN_MASK_UPDATES} mask updates")
    end = derive_end_step(total, s.begin_step, frequency, s.settle_fraction)
    if end <= s.begin_step:
        raise PruningError("frequency is longer than the pruning ramp: no mask would be updated",
                           where="ScheduleOptions.frequency",
                           expected=f"frequency <= {span} steps ({training})", received=frequency,
                           fix="Lower frequency or keep auto_frequency=True")
    notes.append(f"end_step derived: {end} of {total} steps; the last {total - end} steps "
                 "train at the final sparsity so masks settle")
    return end, frequency, notes


def resolve_schedule(schedule: ScheduleOptions, *, num_train: int, batch_size: int,
                     epochs: int) -> ResolvedSchedule:
    """Turn options into concrete steps for this data size; PruningError when unreachable."""
    if not isinstance(schedule, ScheduleOptions):
        raise PruningError("schedule must be a ScheduleOptions", where="prune",
                           received=type(schedule).__name__)
    for key, value, minimum in (("epochs", epochs, 1), ("batch_size", batch_size, 1),
                                ("number of training examples", num_train, 1)):
        if not isinstance(value, int) or value < minimum:
            raise PruningError(f"Invalid {key} for fine-tuning", where="prune",
                               expected=f"an integer >= {minimum}", received=repr(value))
    spe = steps_per_epoch(num_train, batch_size)
    total = spe * epochs
    s = schedule
    notes: list[str] = []
    training = f"{epochs} epoch(s) x {spe} steps ({num_train} examples, batch {batch_size})"

    if s.structured:
        m, n = s.structured
        notes.append(f"{m}:{n} masks are computed once at step 1 (TFMOT ignores the schedule "
                     "for sparsity_m_by_n); the rest of training recovers accuracy")
        return ResolvedSchedule(s.kind, s.initial_sparsity, m / n, 0, 1, s.power, 1, s.structured,
                                spe, epochs, total, 1, tuple(notes))

    if s.begin_step >= total:
        raise PruningError("Pruning would begin after training ends", where="ScheduleOptions.begin_step",
                           expected=f"begin_step < {total} total training steps ({training})",
                           received=s.begin_step, fix="Lower begin_step or train for more epochs")
    if s.end_step is None:
        end, frequency, derived_notes = _derive(s, total, training)
        notes += derived_notes
    else:
        end, frequency = s.end_step, s.frequency
        if end > total:
            try:
                suggestion = f"derived: {_derive(s, total, training)[0]}"
            except PruningError:
                suggestion = "no end_step fits this training length"
            raise PruningError("end_step is beyond the end of training: the final sparsity would "
                               "never be reached", where="ScheduleOptions.end_step",
                               expected=f"end_step <= {total} total training steps ({training})",
                               received=end, fix=f"Leave end_step unset ({suggestion}) "
                                                 "or train for more epochs")
        if s.auto_frequency and _capped_frequency(frequency, end - s.begin_step) < frequency:
            frequency = _capped_frequency(frequency, end - s.begin_step)
            notes.append(f"frequency lowered from {s.frequency} to {frequency} so the ramp gets "
                         f"~{MIN_MASK_UPDATES} mask updates")
    last = s.begin_step + ((end - s.begin_step) // frequency) * frequency
    if last < 1:
        raise PruningError("No mask update would happen between begin_step and end_step",
                           where="ScheduleOptions.frequency",
                           expected=f"frequency <= end_step - begin_step ({end - s.begin_step})",
                           received=frequency, fix="Lower frequency or keep auto_frequency=True")
    resolved = ResolvedSchedule(s.kind, s.initial_sparsity, s.final_sparsity, s.begin_step, end,
                                s.power, frequency, None, spe, epochs, total,
                                (end - s.begin_step) // frequency + (1 if s.begin_step >= 1 else 0),
                                tuple(notes))
    reached = resolved.sparsity_at(last)
    if reached < s.final_sparsity - _ALIGN_SLACK:
        aligned = s.begin_step + max(1, (end - s.begin_step) // frequency) * frequency
        raise PruningError(
            "The last mask update falls before end_step, so the final sparsity is never applied",
            where="ScheduleOptions.end_step",
            expected=f"end_step - begin_step a multiple of frequency ({frequency})",
            received=f"end_step={end}: last update at step {last} sets {reached:.1%}, "
                     f"not {s.final_sparsity:.1%}",
            fix=f"Use end_step={aligned}, or leave end_step unset")
    return resolved


# --------------------------------------------------------------------------- policy


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


def _tf():
    from edgesparse.pipeline.tf_env import import_tf

    return import_tf()


def _tfmot():
    from edgesparse.pipeline.tf_env import import_tfmot

    return import_tfmot()


def _check_model(model: Any):
    """The tf_keras module, after checking `model` is a tf_keras Sequential/Functional model."""
    _, keras = _tf()
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
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            n = sum(int(w.shape.num_elements()) for w in _kernel_weights(layer))
            return None, (f"TFMOT does not prune depthwise kernels (empty in its prune registry); "
                          f"they are tiny anyway ({n} weights)")
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


def _output_activation(model, keras) -> str:
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


def _element_wise_reason(profile, layer, keras, int8: bool = False) -> str:
    name = getattr(profile, "name", None)
    if profile is None:
        return "element-wise (no device profile: generic magnitude pruning)"
    if profile.runtime == "tflm":
        return (f"element-wise; {name} runs TFLite Micro, which has no sparse kernels (no DENSIFY), "
                "so it cannot exploit the zeros: they shrink the compressed (gzip/OTA) size and "
                "prepare for clustering/LUT compression, not flash or latency")
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
                quantize: str | None = None) -> list[LayerPolicy]:
    """Per-layer pruning pattern for what the profile's runtime exploits; one entry per kernel layer.

    `quantize` is the convert stage's mode: "int8"/"dynamic" store int8 weights, whose sparse
    FULLY_CONNECTED kernel takes 1x16 blocks (profile.block_sparsity_int8), while float32/float16
    weights take profile.block_sparsity (1x4).
    """
    keras = _check_model(model)
    _tfmot()
    if not isinstance(schedule, ScheduleOptions):
        raise PruningError("schedule must be a ScheduleOptions", where="plan_policy",
                           received=type(schedule).__name__)
    skip = set(skip_layers)
    candidates = [layer for layer in model.layers if _kernel_weights(layer)]
    all_names = [layer.name for layer in model.layers]
    unknown = sorted(skip - set(all_names))
    if unknown:
        hints = [f"'{u}' -> '{c[0]}'" for u in unknown
                 if (c := difflib.get_close_matches(u, all_names, n=1))]
        raise PruningError("skip_layers names layers the model does not have", where=model.name,
                           expected="names from: " + ", ".join(layer.name for layer in candidates),
                           received=", ".join(repr(u) for u in unknown),
                           fix=("Did you mean " + ", ".join(hints) + "? " if hints else "")
                           + "Use the layer names shown by model.summary()")

    prunable = {layer.name: _prunable_weights(layer, keras) for layer in candidates}
    total = sum(int(w.shape.num_elements()) for ws, _ in prunable.values() if ws for w in ws)
    outputs = {layer.name for layer in _output_layers(model, keras)}

    int8 = quantize in _INT8_WEIGHT_MODES
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

        def dense(reason: str) -> LayerPolicy:
            return LayerPolicy(prune=False, target_sparsity=0.0, block_size=(1, 1),
                               pattern="dense", reason=reason, **base)

        if layer.name in skip:
            policies.append(dense("skipped by request (skip_layers)"))
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
                                  "prune_output_layer=True to prune it"))
        elif params < min_params:
            policies.append(dense(f"too small to matter: {params} weights < min_params "
                                  f"({min_params})"))
        elif params < min_share * total:
            policies.append(dense(f"too small to matter: {params} weights, under {min_share:.0%} "
                                  f"of the model's {total} prunable weights"))
        elif m_by_n:
            policies.append(_m_by_n_policy(layer, weights, m_by_n, profile, base, dense))
        else:
            policies.append(_unstructured_policy(layer, weights, tflite_block, target, profile,
                                                 schedule, base, keras, int8))
    return policies


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


# --------------------------------------------------------------------------- fine-tune


@dataclass(frozen=True)
class LayerSparsity:
    """Measured on the stripped model: exact zeros in the layer's pruned kernels."""

    name: str
    pattern: str
    target: float
    achieved: float
    params: int
    reason: str
    pruned: bool = True
    zeros: int = 0


@dataclass
class PruneResult:
    model: Any                      # stripped tf_keras.Model with sparse weights
    layers: list[LayerSparsity]
    overall_sparsity: float         # zeros / weights over the pruned kernels
    end_step: int
    history: dict
    schedule: ResolvedSchedule | None = None
    policies: list[LayerPolicy] = field(default_factory=list)


def _check_dataset(dataset, model, num_classes: int) -> tuple:
    import numpy as np

    arrays = []
    for key in ("x_train", "y_train", "x_val", "y_val"):
        value = getattr(dataset, key, None)
        if value is None and key.endswith("val"):
            arrays.append(None)
            continue
        if value is None:
            raise DataError("Dataset has no training array", where=key,
                            expected="a numpy array", received="None")
        arrays.append(np.asarray(value))
    x, y, xv, yv = arrays
    if len(x) != len(y) or len(x) == 0:
        raise DataError("Training examples and labels do not match", where="x_train/y_train",
                        expected="the same non-zero number of rows",
                        received=f"{len(x)} examples, {len(y)} labels")
    want = tuple(model.input_shape[1:]) if not isinstance(model.input_shape, list) else None
    if want is not None and (len(want) != x.ndim - 1 or any(
            w is not None and w != g for w, g in zip(want, x.shape[1:]))):
        raise DataError("Training examples do not fit the model input", where="x_train",
                        expected=f"(N, {', '.join('?' if w is None else str(w) for w in want)})",
                        received=str(x.shape), fix="Pass data shaped like the model's input")
    if xv is not None and (yv is None or len(xv) == 0):
        xv = yv = None
    for key, labels in (("y_train", y), ("y_val", yv)):
        if labels is None:
            continue
        flat = labels.reshape(len(labels), -1)
        if flat.shape[1] != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise DataError("Labels must be integer class indices", where=key,
                            expected="shape (N,) of ints (sparse categorical labels)",
                            received=f"shape {labels.shape}, dtype {labels.dtype}",
                            fix="Convert one-hot labels with argmax(axis=1)")
        if num_classes and len(flat) and (flat.min() < 0 or flat.max() >= num_classes):
            raise DataError("Label outside the data set's classes", where=key,
                            expected=f"0 <= label < num_classes ({num_classes})",
                            received=f"labels from {flat.min()} to {flat.max()}")
    return x, y, xv, yv


def _loss_and_metric(model, num_classes: int, keras):
    if len(model.outputs or [None]) != 1:
        raise PruningError("Fine-tuning supports single-output models only", where=model.name,
                           expected="one output", received=f"{len(model.outputs)} outputs")
    units = model.output_shape[-1]
    activation = _output_activation(model, keras)
    if units == num_classes:
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=activation != "softmax")
        return loss, keras.metrics.SparseCategoricalAccuracy(name="accuracy")
    if units == 1 and num_classes == 2:
        logits = activation != "sigmoid"
        return (keras.losses.BinaryCrossentropy(from_logits=logits),
                keras.metrics.BinaryAccuracy(name="accuracy", threshold=0.0 if logits else 0.5))
    raise PruningError("The model's output does not match the data set's classes", where=model.name,
                       expected=f"{num_classes} output units (integer labels, sparse categorical "
                                "crossentropy)", received=f"output shape {model.output_shape}",
                       fix="Fine-tuning needs a classifier whose output size is num_classes")


def _clone_with_pruning(model, policies: Sequence[LayerPolicy], tf_schedule, keras, tfmot):
    """A fresh copy of `model` (the caller's stays untouched) with pruned layers wrapped."""
    by_name = {p.name: p for p in policies}
    fresh: dict[str, Any] = {}

    def clone_fn(layer):
        new = layer.__class__.from_config(layer.get_config())
        fresh[layer.name] = new
        policy = by_name.get(layer.name)
        if policy is None or not policy.prune:
            return new
        return tfmot.sparsity.keras.prune_low_magnitude(
            new, pruning_schedule=tf_schedule, block_size=policy.block_size,
            sparsity_m_by_n=policy.m_by_n)

    try:
        pruned = keras.models.clone_model(model, clone_function=clone_fn)
    except ValueError as exc:  # TFMOT rejects a block size or layer it cannot handle
        raise PruningError("TFMOT could not wrap the model for pruning", where=model.name,
                           received=str(exc).splitlines()[0],
                           fix="Leave the offending layer dense with skip_layers") from None
    for name, new in fresh.items():
        new.set_weights(model.get_layer(name).get_weights())
    return pruned


def _mask_sparsity(masks) -> float:
    import numpy as np

    if not masks:
        return 0.0
    _, keras = _tf()
    values = keras.backend.batch_get_value(masks)
    size = sum(v.size for v in values)
    return float(sum(v.size - np.count_nonzero(v) for v in values) / size)


def _progress_callback(progress: ProgressFn, resolved: ResolvedSchedule, masks, keras,
                       state: dict):
    class _Progress(keras.callbacks.Callback):
        """Forward fit events to `progress`; reads the masks only when TFMOT updated them."""

        def on_train_begin(self, logs=None):
            state.update(step=0, epoch=0, sparsity=_mask_sparsity(masks))
            progress("train_begin", {"epochs": resolved.epochs,
                                     "steps_per_epoch": resolved.steps_per_epoch,
                                     "total_steps": resolved.total_steps,
                                     "end_step": resolved.end_step,
                                     "frequency": resolved.frequency,
                                     "pruned_layers": state["pruned_layers"]})

        def on_epoch_begin(self, epoch, logs=None):
            state["epoch"] = epoch + 1

        def on_train_batch_end(self, batch, logs=None):
            state["step"] += 1
            if resolved.is_update_step(state["step"]):
                state["sparsity"] = _mask_sparsity(masks)
            logs = logs or {}
            progress("batch_end", {"epoch": state["epoch"], "step": state["step"],
                                   "loss": _num(logs.get("loss")),
                                   "accuracy": _num(logs.get("accuracy")),
                                   "sparsity": state["sparsity"]})

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            state["sparsity"] = _mask_sparsity(masks)
            state["epoch_sparsity"].append(state["sparsity"])
            progress("epoch_end", {"epoch": epoch + 1, "loss": _num(logs.get("loss")),
                                   "accuracy": _num(logs.get("accuracy")),
                                   "val_loss": _num(logs.get("val_loss")),
                                   "val_accuracy": _num(logs.get("val_accuracy")),
                                   "sparsity": state["sparsity"]})

    return _Progress()


def _no_progress(event: str, fields: dict) -> None:
    """Default progress sink: the callback still records per-epoch sparsity."""


def _num(value) -> float | None:
    return None if value is None else float(value)


def _units(policy: LayerPolicy) -> int:
    """How many independently pruned units the layer has (blocks or weights)."""
    return max(1, policy.params // (policy.block_size[0] * policy.block_size[1]))


def _measure(stripped, policies: Sequence[LayerPolicy], resolved: ResolvedSchedule) -> tuple:
    import numpy as np

    layers, failures, zeros_total, size_total = [], [], 0, 0
    for policy in policies:
        layer = stripped.get_layer(policy.name)
        values = [layer.weights[i].numpy() for i in policy.weight_indices]
        size = sum(v.size for v in values)
        zeros = int(sum(v.size - np.count_nonzero(v) for v in values))
        achieved = zeros / size if size else 0.0
        layers.append(LayerSparsity(policy.name, policy.pattern, policy.target_sparsity, achieved,
                                    policy.params, policy.reason, policy.prune, zeros))
        if not policy.prune:
            continue
        zeros_total += zeros
        size_total += size
        if achieved < policy.target_sparsity - TOLERANCE - 1.0 / _units(policy):
            failures.append(f"{policy.name}: {achieved:.1%} of target {policy.target_sparsity:.1%}")
    if failures:
        last = resolved.begin_step + ((resolved.end_step - resolved.begin_step)
                                      // resolved.frequency) * resolved.frequency
        raise PruningError(
            "Pruning fell short of the target sparsity", where="; ".join(failures),
            expected=f"every pruned layer within {TOLERANCE:.0%} of its target",
            received=f"schedule {resolved.kind}, last mask update at step {last} of "
                     f"{resolved.total_steps} (end_step {resolved.end_step}, frequency "
                     f"{resolved.frequency})",
            fix="Make sure end_step is reached well before training ends (leave it unset to "
                "derive it), or train for more epochs")
    overall = zeros_total / size_total if size_total else 0.0
    return layers, overall


def prune_and_finetune(model, dataset, policies: Sequence[LayerPolicy], schedule: ScheduleOptions,
                       *, epochs: int, batch_size: int, learning_rate: float | None = None,
                       tensorboard_dir=None, progress: ProgressFn | None = None,
                       seed: int = 0) -> PruneResult:
    """Wrap, fine-tune with UpdatePruningStep, strip_pruning, then measure every kernel's zeros.

    The caller's model is not modified. Deterministic for a given seed on one machine.
    KeyboardInterrupt propagates untouched; nothing is written except TensorBoard logs.
    """
    keras = _check_model(model)
    tfmot = _tfmot()
    num_classes = int(getattr(dataset, "num_classes", 0) or 0)
    x, y, xv, yv = _check_dataset(dataset, model, num_classes)
    resolved = resolve_schedule(schedule, num_train=len(x), batch_size=batch_size, epochs=epochs)
    _check_policies(model, policies, resolved)
    loss, metric = _loss_and_metric(model, num_classes, keras)
    if tensorboard_dir is not None:
        try:
            import tensorboard  # noqa: F401  (tf.summary.scalar lives there)
        except ImportError:
            raise MissingDependency("TensorBoard logging needs the tensorboard package",
                                    where=str(tensorboard_dir), received="not installed",
                                    fix="pip install tensorboard, or drop the TensorBoard "
                                        "directory option") from None

    keras.utils.set_random_seed(seed)
    pruned = _clone_with_pruning(model, policies, resolved.to_tfmot(), keras, tfmot)
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate or 1e-3)
    pruned.compile(optimizer=optimizer, loss=loss, metrics=[metric])

    sparsity_api = tfmot.sparsity.keras
    callbacks = [sparsity_api.UpdatePruningStep()]
    if tensorboard_dir is not None:
        callbacks.append(sparsity_api.PruningSummaries(log_dir=str(tensorboard_dir),
                                                       profile_batch=0, write_graph=False))
    from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

    masks = [mask for layer in pruning_wrapper.collect_prunable_layers(pruned)
             for _, mask, _ in layer.pruning_vars]
    state = {"pruned_layers": [p.name for p in policies if p.prune], "epoch_sparsity": []}
    callbacks.append(_progress_callback(progress or _no_progress, resolved, masks, keras, state))
    fit = pruned.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=True,
                     validation_data=(xv, yv) if xv is not None else None, callbacks=callbacks)

    stripped = sparsity_api.strip_pruning(pruned)
    layers, overall = _measure(stripped, policies, resolved)
    history = {k: [float(v) for v in vs] for k, vs in fit.history.items()}
    if state["epoch_sparsity"]:
        history["sparsity"] = list(state["epoch_sparsity"])
    return PruneResult(model=stripped, layers=layers, overall_sparsity=overall,
                       end_step=resolved.end_step, history=history, schedule=resolved,
                       policies=list(policies))


def _check_policies(model, policies: Sequence[LayerPolicy], resolved: ResolvedSchedule) -> None:
    names = {layer.name for layer in model.layers}
    stray = [p.name for p in policies if p.name not in names]
    if stray:
        raise PruningError("The pruning plan names layers this model does not have",
                           where=", ".join(stray), expected="a plan from plan_policy(model, ...)",
                           received=f"{len(stray)} unknown layer(s)",
                           fix="Call plan_policy on the same model")
    pruned = [p for p in policies if p.prune]
    if not pruned:
        reasons = "; ".join(f"{p.name}: {p.reason}" for p in policies) or "no layer has weights"
        raise PruningError("No layer would be pruned", where=model.name,
                           expected="at least one layer to prune", received=reasons,
                           fix="Lower min_params, pass prune_output_layer=True, or shorten "
                               "skip_layers")
    wrong = [p.name for p in pruned
             if p.m_by_n != resolved.structured or abs(p.target_sparsity - resolved.target) > 1e-9]
    if wrong:
        raise PruningError("The pruning plan was made with a different schedule",
                           where=", ".join(wrong),
                           expected=f"target {resolved.target:g}, structured={resolved.structured}",
                           received="other targets or patterns",
                           fix="Call plan_policy with the same ScheduleOptions")

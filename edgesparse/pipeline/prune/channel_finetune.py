"""Channel pruning on the pruning schedule: mask whole channels while fine-tuning, then rebuild a smaller model.

Why masks first and surgery after: removing channels at once costs accuracy that
a few epochs cannot recover, while TFMOT's way (a schedule that raises the
pruned share gradually, masks re-computed every `frequency` steps) lets the
network re-route through the surviving channels while it trains. So the same
`ScheduleOptions` and `resolve_schedule` drive it, and `final_sparsity` means
the fraction of *prunable channels removed*. At each mask-update step
(`ResolvedSchedule.is_update_step`) every prunable group is re-scored
(`channels.channel_scores`: the producers' filter norms) and its
lowest-scoring channels are masked to the schedule's current fraction
(`ResolvedSchedule.sparsity_at`; `channels.select_channels`: rounded to the
nearest channel, at least one kept per group); the masks are re-applied after every batch
(`channels.channel_masker`, one tf.function) so the optimizer cannot revive a
masked channel. Adam's rate is held at FINETUNE_PEAK_LEARNING_RATE while the masks
grow and cosine-annealed to 0 after the last update, so the small model settles (the constant's comment
has the measurements). A masked channel's filters are zero, so it
scores zero and stays masked. After training the masked model is shrunk
(`channels.shrink_model`) and proven to compute the same outputs
(`channels.check_equivalent`), before anything is converted.

Progress events (the pruning fine-tuning's names, so the CLI's bars draw it):
"train_begin" {granularity: "channel", epochs, steps_per_epoch, total_steps,
end_step, frequency, pruned_layers}, "batch_end" {epoch, step, loss, accuracy,
sparsity}, "epoch_end" {epoch, loss, accuracy, val_loss, val_accuracy,
sparsity}; `sparsity` is the fraction of prunable channels masked.

The caller's model is never modified; nothing is written. Raises DataError
(data that does not fit, a diverging loss), PruningError (no prunable group,
a schedule this pruning cannot follow, a fraction short of the target) and
VerificationError (the surgery changed the outputs: a bug, exit 3).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgesparse._types import Progress, no_progress
from edgesparse.errors import PruningError
from edgesparse.pipeline.prune.channels import (
    ChannelGroup,
    ChannelMember,
    apply_channel_masks,
    channel_masker,
    check_equivalent,
    find_channel_groups,
    select_channels,
    shrink_model,
)
from edgesparse.pipeline.prune.finetune import classifier_loss_and_metric, raise_if_diverged, training_arrays
from edgesparse.pipeline.prune.policy import check_prunable_model
from edgesparse.pipeline.prune.schedule import ResolvedSchedule, ScheduleOptions, resolve_schedule
from edgesparse.runtime import verify

__all__ = [
    "CRITERION",
    "DEFAULT_CHANNEL_FRACTION",
    "EQUIVALENCE_SAMPLES",
    "FINETUNE_PEAK_LEARNING_RATE",
    "ChannelPruneResult",
    "GroupOutcome",
    "MaskUpdate",
    "channel_prune_and_finetune",
    "keras_macs",
]

#: What ranks channels (channels.channel_scores); shown in the report.
CRITERION = ("L2 norm of each channel's filter in every producer (Conv/Dense kernel), divided by that producer's "
             "mean filter norm, summed over the group's producers (channels.channel_scores); the lowest go first")
#: --final-sparsity's default for channel pruning: half the prunable channels (the issue's study measured 0.42x
#: int8 latency at 50 % removed; 0.8, element-wise pruning's default, would leave too little to recover from).
DEFAULT_CHANNEL_FRACTION = 0.5
#: How many validation inputs the surgery's equivalence check runs (masked large model vs small model).
EQUIVALENCE_SAMPLES = 64
#: Adam's rate while the masks grow; after the last mask update (the schedule's end_step) it is cosine-annealed
#: to 0 over the remaining steps (_annealed_rate). Why: masking needs a rate high enough to re-route through the
#: surviving channels, and the small model needs a decaying one to settle. Measured on the KWS demo (seed 0,
#: --epochs 12, rpi4, test split of 1080, drop in points vs dense int8 94.81 %; 50 % / 25 % of channels removed):
#: constant 1e-4: 2.78 / -; constant 1e-3 (the former default): 1.20 / 1.76; 1e-3 annealed: 1.11 / 0.65;
#: 3e-3 annealed (this; also the demo's own training peak): -0.56 / -0.93. (/work/scratch/h15, issue 11.)
FINETUNE_PEAK_LEARNING_RATE = 3e-3
#: Layer classes keras_macs counts (by class-name prefix): the ones channel pruning shrinks.
_MAC_LAYERS = ("Conv", "DepthwiseConv", "SeparableConv", "Dense")
#: The removed fraction may fall short of the target by at most this, plus half a channel per group (rounding).
_TOLERANCE = 0.01


@dataclass(frozen=True)
class GroupOutcome:
    """One dependency group: its channels before and after, who shares them, and why it was (not) pruned."""

    id: int
    channels_before: int
    channels_after: int
    prunable: bool
    reason: str
    members: tuple[ChannelMember, ...]
    producers: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "channels_before": self.channels_before, "channels_after": self.channels_after,
                "prunable": self.prunable, "reason": self.reason, "producers": list(self.producers),
                "members": [{"layer": m.layer, "role": m.role, "offset": m.offset} for m in self.members]}


@dataclass(frozen=True)
class MaskUpdate:
    """One mask update during fine-tuning: the schedule's fraction then, and the channels masked from then on."""

    step: int
    target_fraction: float            # ResolvedSchedule.sparsity_at(step)
    masked_fraction: float            # over all prunable channels (per-group rounding)
    masked: dict[int, tuple[int, ...]]  # group id -> masked channel indices


@dataclass
class ChannelPruneResult:
    """The small dense model and what it took: groups, MACs and parameters before/after, accuracies, the proof."""

    model: Any                        # the smaller dense tf_keras model (same layer names, input and output)
    groups: list[GroupOutcome]
    target_fraction: float            # --final-sparsity: the fraction of prunable channels to remove
    removed_fraction: float           # what was removed, over the prunable groups' channels
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    accuracy_masked: float            # the masked large model after fine-tuning
    accuracy_small: float             # the small model (the same, within float tolerance)
    accuracy_split: str               # "validation", or "training" when the data set has no validation split
    max_abs_difference: float         # check_equivalent: masked large vs small on validation inputs
    equivalence_samples: int
    schedule: ResolvedSchedule
    history: dict = field(default_factory=dict)
    mask_updates: list[MaskUpdate] = field(default_factory=list)
    masked_model: Any = field(default=None, repr=False)
    keep: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def unprunable(self) -> list[GroupOutcome]:
        return [g for g in self.groups if not g.prunable]

    def as_dict(self) -> dict[str, Any]:
        """report.json's "channels" section: what --final-sparsity meant, every group, the figures."""
        prunable = [g for g in self.groups if g.prunable]
        return {
            "final_sparsity_means": "the fraction of prunable channels removed (whole filters), per group",
            "criterion": CRITERION,
            "target_fraction": self.target_fraction, "removed_fraction": round(self.removed_fraction, 6),
            "prunable_channels_before": sum(g.channels_before for g in prunable),
            "prunable_channels_after": sum(g.channels_after for g in prunable),
            "macs_before": self.macs_before, "macs_after": self.macs_after,
            "params_before": self.params_before, "params_after": self.params_after,
            "accuracy_masked": self.accuracy_masked, "accuracy_small": self.accuracy_small,
            "accuracy_split": self.accuracy_split,
            "equivalence": {"max_abs_difference": self.max_abs_difference, "samples": self.equivalence_samples,
                            "compared": "the masked large model vs the small model, before conversion"},
            "schedule": self.schedule.as_dict(),
            "mask_updates": [{"step": u.step, "target_fraction": round(u.target_fraction, 6),
                              "masked_fraction": round(u.masked_fraction, 6)} for u in self.mask_updates],
            "groups": [g.as_dict() for g in self.groups],
            "unprunable": [{"id": g.id, "layers": [m.layer for m in g.members], "reason": g.reason}
                           for g in self.unprunable],
        }


def keras_macs(model: Any) -> int:
    """Multiply-accumulates of one inference in the Keras model's Conv, Depthwise, Separable and Dense layers.

    Counted from the layers' kernels and output shapes, the way the TFLite graph counts them: a Conv/Depthwise
    kernel's size times the output positions, a Dense kernel's size times its leading output dimensions.
    """
    total = 0
    for layer in model.layers:
        kernels = [w for w in layer.weights if len(w.shape) >= 2]
        if not kernels or not type(layer).__name__.startswith(_MAC_LAYERS):
            continue
        try:
            out_shape = layer.output_shape
        except (AttributeError, RuntimeError):
            continue
        if isinstance(out_shape, list):
            continue
        positions = int(np.prod([d for d in out_shape[1:-1] if d is not None] or [1]))
        if type(layer).__name__.endswith("Transpose"):
            in_shape = layer.input_shape
            positions = int(np.prod([d for d in in_shape[1:-1] if d is not None] or [1]))
        total += positions * sum(int(np.prod(w.shape)) for w in kernels)
    return int(total)


def _clone(model: Any, keras: Any) -> Any:
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def _masked_fraction(groups: list[ChannelGroup], keep: Mapping[int, np.ndarray]) -> float:
    total = sum(g.channels for g in groups)
    return float(sum(int((~keep[g.id]).sum()) for g in groups) / total) if total else 0.0


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def _masking_callback(model: Any, groups: list[ChannelGroup], keep: dict[int, np.ndarray],
                      resolved: ResolvedSchedule, progress: Progress, keras: Any, state: dict) -> Any:
    class _ChannelMasking(keras.callbacks.Callback):
        """Re-score and re-mask at the schedule's update steps; zero the masked channels after every batch."""

        def on_train_begin(self, logs=None):
            state.update(step=0, epoch=0)
            progress("train_begin", {"granularity": "channel", "epochs": resolved.epochs,
                                     "steps_per_epoch": resolved.steps_per_epoch,
                                     "total_steps": resolved.total_steps, "end_step": resolved.end_step,
                                     "frequency": resolved.frequency, "pruned_layers": state["pruned_layers"]})

        def on_epoch_begin(self, epoch, logs=None):
            state["epoch"] = epoch + 1

        def on_train_batch_end(self, batch, logs=None):
            state["step"] += 1
            if resolved.is_update_step(state["step"]):
                state["masker"]()  # this batch's optimizer step moved the masked filters: zero before scoring
                fraction = resolved.sparsity_at(state["step"])
                keep.update(select_channels(model, groups, fraction))
                state["masker"] = channel_masker(model, groups, keep)
                state["updates"].append(MaskUpdate(
                    state["step"], fraction, _masked_fraction(groups, keep),
                    {g.id: tuple(int(i) for i in np.flatnonzero(~keep[g.id])) for g in groups}))
            state["masker"]()
            logs = logs or {}
            progress("batch_end", {"epoch": state["epoch"], "step": state["step"], "loss": _num(logs.get("loss")),
                                   "accuracy": _num(logs.get("accuracy")),
                                   "sparsity": _masked_fraction(groups, keep)})

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            state["epoch_sparsity"].append(_masked_fraction(groups, keep))
            progress("epoch_end", {"epoch": epoch + 1, "loss": _num(logs.get("loss")),
                                   "accuracy": _num(logs.get("accuracy")), "val_loss": _num(logs.get("val_loss")),
                                   "val_accuracy": _num(logs.get("val_accuracy")),
                                   "sparsity": state["epoch_sparsity"][-1]})

    return _ChannelMasking()


def _annealed_rate(keras: Any, peak: float, resolved: ResolvedSchedule) -> Any:
    """`peak` until the last mask update (end_step), then a cosine from `peak` to 0 at the last step."""
    import tensorflow as tf

    hold, decay = resolved.end_step, max(resolved.total_steps - resolved.end_step, 1)

    class _HoldThenCosine(keras.optimizers.schedules.LearningRateSchedule):
        def __call__(self, step):
            done = tf.clip_by_value((tf.cast(step, tf.float32) - hold) / decay, 0.0, 1.0)
            return peak * 0.5 * (1.0 + tf.cos(math.pi * done))

        def get_config(self):
            return {"peak": peak, "hold_steps": hold, "decay_steps": decay}

    return _HoldThenCosine()


def _check_schedule(schedule: ScheduleOptions) -> None:
    """Options that shape weights inside a filter have no meaning when whole filters go."""
    if schedule.structured is not None or schedule.block_size not in (None, (1, 1)):
        flag = "--structured / ScheduleOptions.structured" if schedule.structured is not None \
            else "ScheduleOptions.block_size"
        raise PruningError("Channel pruning removes whole filters: M:N structure and block shapes do not apply",
                           where=flag, expected="structured=None and block_size=None with channel pruning",
                           received=str(schedule.structured or schedule.block_size),
                           fix="Drop --structured (or use --granularity 2:4 instead of channel)")


def _check_reached(groups: list[ChannelGroup], keep: Mapping[int, np.ndarray], resolved: ResolvedSchedule,
                   updates: list) -> float:
    """The removed fraction, or PruningError when it is short of the target (a schedule that never got there)."""
    removed = _masked_fraction(groups, keep)
    total = sum(g.channels for g in groups)
    slack = _TOLERANCE + 0.5 * len(groups) / max(total, 1) + max(1.0 / g.channels for g in groups)
    if removed < resolved.final_sparsity - slack:
        last = updates[-1].step if updates else None
        raise PruningError("Channel pruning fell short of the target fraction of channels",
                           where=f"{removed:.1%} of {total} prunable channels removed",
                           expected=f"{resolved.final_sparsity:.1%} (--final-sparsity)",
                           received=f"last mask update at step {last} of {resolved.total_steps} "
                                    f"(end_step {resolved.end_step}, frequency {resolved.frequency})",
                           fix="Leave --end-step unset to derive it, or train for more --epochs")
    return removed


def _accuracy(model: Any, x: np.ndarray, y: np.ndarray, batch_size: int) -> float:
    predictions = model.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(verify.top1(predictions) == np.asarray(y).reshape(-1)))


def _no_prunable_group(model: Any, groups: list[ChannelGroup]) -> PruningError:
    reasons = "; ".join(f"{'+'.join(m.layer for m in g.members)}: {g.reason}" for g in groups[:6]) \
        or "the model has no layer with output channels"
    return PruningError("No channel group can be pruned", where=model.name,
                        expected="at least one group of channels that is not the output layer's, "
                                 "skipped or unsupported by the surgery",
                        received=reasons, fix="Shorten --skip-layers, or use --granularity element")


def channel_prune_and_finetune(model: Any, dataset: Any, schedule: ScheduleOptions, *,
                               skip_layers: Iterable[str] = frozenset(), epochs: int, batch_size: int,
                               learning_rate: float | None = None, progress: Progress | None = None,
                               seed: int = 0) -> ChannelPruneResult:
    """Fine-tune with channel masks that follow the schedule, then shrink the model and prove it unchanged.

    `learning_rate` is Adam's peak (FINETUNE_PEAK_LEARNING_RATE when None), held while the masks grow and
    cosine-annealed to 0 after the last mask update. The caller's model is not modified. Deterministic for a
    given seed on one machine. KeyboardInterrupt propagates untouched.
    """
    keras = check_prunable_model(model)
    _check_schedule(schedule)
    progress = progress or no_progress
    num_classes = int(getattr(dataset, "num_classes", 0) or 0)
    x, y, xv, yv = training_arrays(dataset, model, num_classes)
    resolved = resolve_schedule(schedule, num_train=len(x), batch_size=batch_size, epochs=epochs)
    all_groups = find_channel_groups(model, skip_layers=frozenset(skip_layers))
    groups = [g for g in all_groups if g.prunable]
    if not groups:
        raise _no_prunable_group(model, all_groups)
    loss, metric = classifier_loss_and_metric(model, num_classes, keras)

    keras.utils.set_random_seed(seed)
    work = _clone(model, keras)
    rate = _annealed_rate(keras, learning_rate or FINETUNE_PEAK_LEARNING_RATE, resolved)
    work.compile(optimizer=keras.optimizers.Adam(learning_rate=rate), loss=loss, metrics=[metric])
    keep = {g.id: np.ones(g.channels, bool) for g in groups}
    state: dict[str, Any] = {"pruned_layers": sorted({name for g in groups for name in g.producers}),
                             "epoch_sparsity": [], "updates": [], "masker": lambda: None}
    callbacks = [keras.callbacks.TerminateOnNaN(),
                 _masking_callback(work, groups, keep, resolved, progress, keras, state)]
    fit = work.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=True,
                   validation_data=(xv, yv) if xv is not None else None, callbacks=callbacks)
    raise_if_diverged(fit.history, work, dataset)
    removed = _check_reached(groups, keep, resolved, state["updates"])

    apply_channel_masks(work, groups, keep)
    small = shrink_model(work, groups, keep)
    x_eval, y_eval, split = (xv, yv, "validation") if xv is not None else (x, y, "training")
    samples = np.asarray(x_eval[:EQUIVALENCE_SAMPLES])
    difference = float(check_equivalent(work, small, samples))
    outcomes = [GroupOutcome(g.id, g.channels, int(keep[g.id].sum()) if g.id in keep else g.channels,
                             g.prunable, g.reason, tuple(g.members), tuple(g.producers)) for g in all_groups]
    history = {k: [float(v) for v in vs] for k, vs in fit.history.items()}
    history["sparsity"] = list(state["epoch_sparsity"])
    return ChannelPruneResult(
        model=small, groups=outcomes, target_fraction=float(schedule.final_sparsity), removed_fraction=removed,
        macs_before=keras_macs(model), macs_after=keras_macs(small), params_before=int(model.count_params()),
        params_after=int(small.count_params()), accuracy_masked=_accuracy(work, x_eval, y_eval, batch_size),
        accuracy_small=_accuracy(small, x_eval, y_eval, batch_size), accuracy_split=split,
        max_abs_difference=difference, equivalence_samples=len(samples), schedule=resolved, history=history,
        mask_updates=list(state["updates"]), masked_model=work, keep=dict(keep))

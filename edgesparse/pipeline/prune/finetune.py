"""Fine-tuning with TFMOT: wrap the planned layers, train with UpdatePruningStep, strip, measure.

Why the measurement: TFMOT reports the sparsity it scheduled, not what the
stripped weights hold; every pruned kernel's zeros are counted afterwards and
a layer short of its target is an error, not a footnote. The caller's model is
never modified; nothing is written except TensorBoard logs.

Progress events: "train_begin" {epochs, steps_per_epoch, total_steps, end_step,
frequency, pruned_layers}, "batch_end" {epoch, step, loss, accuracy, sparsity},
"epoch_end" {epoch, loss, accuracy, val_loss, val_accuracy, sparsity}. epoch and
step count from 1; sparsity is the zero fraction of the live pruning masks over
all pruned weights.

Depthwise kernels, which TFMOT's prune registry leaves out, are pruned through
`prune.depthwise`'s PrunableLayer stand-in; the returned model holds the plain
tf_keras layers again.

Raises DataError (data that does not fit the model, via data.check_compatible,
and a loss that became NaN or infinite: diverging on the user's data is the
data's scale far more often than the schedule's), PruningError and
MissingDependency; KeyboardInterrupt propagates untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgesparse._types import Progress, no_progress
from edgesparse.data import check_compatible, input_range
from edgesparse.errors import DataError, MissingDependency, PruningError
from edgesparse.pipeline import distribute as tf_distribute
from edgesparse.pipeline.prune.depthwise import depthwise_stand_in, is_plain_depthwise, restore_plain_layers
from edgesparse.pipeline.prune.policy import LayerPolicy, check_prunable_model, output_activation
from edgesparse.pipeline.prune.schedule import ResolvedSchedule, ScheduleOptions, resolve_schedule
from edgesparse.pipeline.tf_env import import_tf, import_tfmot

__all__ = [
    "TOLERANCE",
    "LayerSparsity",
    "PruneResult",
    "classifier_loss_and_metric",
    "measure_sparsity",
    "prune_and_finetune",
    "raise_if_diverged",
    "training_arrays",
]

#: Achieved sparsity may fall short of the target by at most this (plus one pruning unit).
TOLERANCE = 0.01


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
    replicas: int = 1               # replicas whose masks were checked identical (--distribute); 1 on one device


def training_arrays(dataset: Any, model: Any, num_classes: int) -> tuple:
    """(x, y, x_val, y_val) after data.check_compatible; the validation pair is None when the data set has none.

    Every fine-tuning (pruning, clustering) checks the data against the model the same way before training, so
    a mismatch is the same DataError whichever stage meets it first.
    """
    input_shape = (dataset.x_train.shape[1:] if isinstance(model.input_shape, list)
                   else tuple(model.input_shape[1:]))
    check_compatible(dataset, input_shape, num_classes or None, source=getattr(dataset, "source", None) or "dataset",
                     require_validation=False)
    x_val, y_val = getattr(dataset, "x_val", None), getattr(dataset, "y_val", None)
    if x_val is None or y_val is None or len(x_val) == 0:
        x_val = y_val = None
    return dataset.x_train, dataset.y_train, x_val, y_val


def classifier_loss_and_metric(model: Any, num_classes: int, keras: Any) -> tuple:
    """(loss, accuracy metric) for a single-output classifier, from its output units and activation.

    Integer labels throughout: sparse categorical crossentropy for `num_classes` outputs, binary crossentropy
    for one output on two classes; logits unless the output layer ends in softmax/sigmoid. The metric is named
    "accuracy" so progress events and histories read the same for every fine-tuning. PruningError otherwise.
    """
    if len(model.outputs or [None]) != 1:
        raise PruningError("Fine-tuning supports single-output models only", where=model.name,
                           expected="one output", received=f"{len(model.outputs)} outputs")
    units = model.output_shape[-1]
    activation = output_activation(model, keras)
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


def _clone_with_pruning(model, policies: Sequence[LayerPolicy], resolved: ResolvedSchedule, keras, tfmot):
    """A fresh copy of `model` (the caller's stays untouched) with pruned layers wrapped, each on the schedule's
    steps towards its own target (`policy.allocate_targets`)."""
    by_name = {p.name: p for p in policies}
    fresh: dict[str, Any] = {}

    def clone_fn(layer):
        policy = by_name.get(layer.name)
        wrap = policy is not None and policy.prune
        # A depthwise kernel TFMOT's registry lists no weights for: prune its PrunableLayer stand-in instead.
        new = (depthwise_stand_in(layer) if wrap and is_plain_depthwise(layer)
               else layer.__class__.from_config(layer.get_config()))
        fresh[layer.name] = new
        if not wrap:
            return new
        return tfmot.sparsity.keras.prune_low_magnitude(
            new, pruning_schedule=resolved.to_tfmot(policy.target_sparsity), block_size=policy.block_size,
            sparsity_m_by_n=policy.m_by_n)

    try:
        pruned = keras.models.clone_model(model, clone_function=clone_fn)
    except ValueError as exc:  # TFMOT rejects a block size or layer it cannot handle
        raise PruningError("TFMOT could not wrap the model for pruning", where=model.name,
                           received=str(exc).splitlines()[0],
                           fix="Leave the offending layer dense with --skip-layers") from None
    for name, new in fresh.items():
        new.set_weights(model.get_layer(name).get_weights())
    return pruned


def _mask_sparsity(masks: list) -> float:
    if not masks:
        return 0.0
    _, keras = import_tf()
    values = keras.backend.batch_get_value(masks)
    size = sum(v.size for v in values)
    return float(sum(v.size - np.count_nonzero(v) for v in values) / size)


def _progress_callback(progress: Progress, resolved: ResolvedSchedule, masks, keras,
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


def _num(value) -> float | None:
    return None if value is None else float(value)


def _units(policy: LayerPolicy) -> int:
    """How many independently pruned units the layer has (blocks or weights)."""
    return max(1, policy.params // (policy.block_size[0] * policy.block_size[1]))


def measure_sparsity(stripped: Any, policies: Sequence[LayerPolicy],
                     resolved: ResolvedSchedule) -> tuple[list[LayerSparsity], float]:
    """Per-layer zeros of the stripped model, and the overall sparsity of the pruned kernels.

    The safety net after strip_pruning: a pruned layer short of its target by more
    than TOLERANCE (plus one pruning unit) raises PruningError naming it and the schedule.
    """
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
            fix="Make sure --end-step is reached well before training ends (leave it unset to "
                "derive it), or train for more --epochs")
    overall = zeros_total / size_total if size_total else 0.0
    return layers, overall


def prune_and_finetune(model, dataset, policies: Sequence[LayerPolicy], schedule: ScheduleOptions,
                       *, epochs: int, batch_size: int, learning_rate: float | None = None,
                       tensorboard_dir: Any = None, progress: Progress | None = None,
                       seed: int = 0, distribute: str | None = None) -> PruneResult:
    """Wrap, fine-tune with UpdatePruningStep, strip_pruning, then measure every kernel's zeros.

    The caller's model is not modified. Deterministic for a given seed on one machine.
    KeyboardInterrupt propagates untouched; nothing is written except TensorBoard logs (on a
    multi-worker cluster, by the chief only).

    `distribute` ("mirrored" | "multi-worker", edgesparse.pipeline.distribute) fine-tunes under that
    strategy, started with distribute.start before any model was loaded; `batch_size` is then the
    global batch over all replicas. The masks are checked identical on every replica afterwards
    (ReplicaMismatchError otherwise) and the returned model is a plain single-device copy.
    """
    keras = check_prunable_model(model)
    tfmot = import_tfmot()
    num_classes = int(getattr(dataset, "num_classes", 0) or 0)
    x, y, xv, yv = training_arrays(dataset, model, num_classes)
    resolved = resolve_schedule(schedule, num_train=len(x), batch_size=batch_size, epochs=epochs)
    _check_policies(model, policies, resolved)
    classifier_loss_and_metric(model, num_classes, keras)  # a model it cannot fine-tune fails before any strategy
    if tensorboard_dir is not None:
        try:
            import tensorboard  # noqa: F401  (tf.summary.scalar lives there)
        except ImportError:
            raise MissingDependency("TensorBoard logging needs the tensorboard package",
                                    where=str(tensorboard_dir), received="not installed",
                                    fix="pip install tensorboard, or drop the TensorBoard "
                                        "directory option") from None

    strategy = tf_distribute.active(distribute)
    keras.utils.set_random_seed(seed)
    # TFMOT's wrappers, masks and the optimizer's slots live in the strategy's scope; creating them broadcasts
    # their initial values, so a lost peer can surface here as well as in fit.
    with tf_distribute.cluster_failures(strategy), tf_distribute.scope(strategy):
        pruned = _clone_with_pruning(model, policies, resolved, keras, tfmot)
        loss, metric = classifier_loss_and_metric(model, num_classes, keras)
        optimizer = keras.optimizers.Adam(learning_rate=learning_rate or 1e-3)
        pruned.compile(optimizer=optimizer, loss=loss, metrics=[metric])

    sparsity_api = tfmot.sparsity.keras
    callbacks = [sparsity_api.UpdatePruningStep(), keras.callbacks.TerminateOnNaN()]
    if tensorboard_dir is not None and tf_distribute.is_chief(distribute):
        callbacks.append(sparsity_api.PruningSummaries(log_dir=str(tensorboard_dir),
                                                       profile_batch=0, write_graph=False))
    from tensorflow_model_optimization.python.core.sparsity.keras import pruning_wrapper

    masks = [mask for layer in pruning_wrapper.collect_prunable_layers(pruned)
             for _, mask, _ in layer.pruning_vars]
    state = {"pruned_layers": [p.name for p in policies if p.prune], "epoch_sparsity": []}
    callbacks.append(_progress_callback(progress or no_progress, resolved, masks, keras, state))
    with tf_distribute.cluster_failures(strategy):
        fit = pruned.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=True,
                         validation_data=(xv, yv) if xv is not None else None, callbacks=callbacks)
        replicas = tf_distribute.check_replicas_agree(strategy, masks)

    stripped = sparsity_api.strip_pruning(pruned)
    if strategy is not None:
        stripped = tf_distribute.local_copy(stripped)
    stripped = restore_plain_layers(stripped)  # plain DepthwiseConv2D again: loads and converts like the original
    raise_if_diverged(fit.history, stripped, dataset)
    layers, overall = measure_sparsity(stripped, policies, resolved)
    history = {k: [float(v) for v in vs] for k, vs in fit.history.items()}
    if state["epoch_sparsity"]:
        history["sparsity"] = list(state["epoch_sparsity"])
    return PruneResult(model=stripped, layers=layers, overall_sparsity=overall,
                       end_step=resolved.end_step, history=history, schedule=resolved,
                       policies=list(policies), replicas=replicas)


def raise_if_diverged(history: dict, stripped: Any, dataset: Any) -> None:
    """DataError when a fine-tuning's loss (Keras `fit` history) or the stripped weights became NaN or infinite.

    Named as what it almost always is, inputs on the wrong scale, rather than left to fail later as a
    conversion or accuracy error.
    """
    losses = [float(v) for v in history.get("loss", [])]
    bad_loss = next((i for i, v in enumerate(losses) if not np.isfinite(v)), None)
    bad_weights = not all(np.isfinite(w).all() for w in stripped.get_weights())
    if bad_loss is None and not bad_weights:
        return
    when = f"loss {losses[bad_loss]} in epoch {bad_loss + 1}" if bad_loss is not None else "NaN or infinite weights"
    raise DataError("Fine-tuning diverged: the loss became NaN or infinite", where=getattr(dataset, "source", None),
                    expected="inputs on the scale the model was trained on (e.g. 0..1, -1..1 or 0..255)",
                    received=f"{when}; {input_range(dataset)}",
                    fix="Scale --data as in the model's training (docs/data.md); the pruning schedule is not the "
                        "cause")


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
                           fix="Lower --min-params, pass --prune-output-layer, or shorten --skip-layers "
                               "(min_params, prune_output_layer, skip_layers in Python)")
    # Layers may have their own targets (policy.allocate_targets); the pruned weights' mean must be the schedule's.
    params = sum(p.params for p in pruned) or 1
    mean = sum(p.target_sparsity * p.params for p in pruned) / params
    wrong = [p.name for p in pruned if p.m_by_n != resolved.structured or not 0.0 < p.target_sparsity < 1.0
             or (resolved.structured and abs(p.target_sparsity - resolved.target) > 1e-9)]
    if wrong or abs(mean - resolved.target) > 1e-6:
        raise PruningError("The pruning plan was made with a different schedule",
                           where=", ".join(wrong) or model.name,
                           expected=f"target {resolved.target:g} over the pruned weights, "
                                    f"structured={resolved.structured}",
                           received=f"other patterns, or targets whose weighted mean is {mean:.4g}",
                           fix="Call plan_policy with the same ScheduleOptions")

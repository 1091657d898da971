"""Channel masks and model surgery: zero whole channels in place, then rebuild the smaller dense model.

Why two steps: masking keeps the model's shapes, so fine-tuning can run with the channels held
at zero (re-apply the masks after each step); the surgery then removes channels that are exactly
zero everywhere, so the small model computes what the masked large one does, which
`check_equivalent` proves on real inputs before anything else is built on it.

The groups come from `prune.channels.find_channel_groups`; this module only reads their
`id`, `channels`, `prunable`, `reason` and members (`layer`, `role`, `offset`, `axis_size`,
`positions`).

Raises PruningError (masks that do not fit the groups), VerificationError (the small model
differs from the masked one: a bug) and MissingDependency.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgesparse.errors import PruningError, VerificationError
from edgesparse.pipeline.tf_env import import_tf

__all__ = [
    "CONSUME",
    "EQUIVALENCE_ATOL",
    "PRODUCE",
    "PRODUCER_TYPES",
    "WeightAxes",
    "apply_channel_masks",
    "channel_masker",
    "check_equivalent",
    "check_keep",
    "shrink_model",
    "weight_axes",
]

PRODUCE = "produce"
CONSUME = "consume"
#: Layers that create a new channel space (their filters/units) and read their input's channels.
PRODUCER_TYPES = ("Dense", "Conv1D", "Conv2D", "Conv3D", "SeparableConv1D", "SeparableConv2D")
#: check_equivalent's default: max |masked - small| allowed, relative to max(1, max |masked|).
EQUIVALENCE_ATOL = 1e-4


@dataclass(frozen=True)
class WeightAxes:
    """Where one weight holds channels: `produce_axis` the layer's output channels, `consume_axis`
    its input channels (each repeated `repeat` times: a SeparableConv's pointwise rows are
    in_channel * depth_multiplier + m), `zero_when_masked`: zeroing it silences the output channel."""

    produce_axis: int | None
    consume_axis: int | None = None
    repeat: int = 1
    zero_when_masked: bool = True


def weight_axes(layer: Any) -> list[WeightAxes] | None:
    """The channel axes of each of layer.weights (in order), or None when the surgery does not know one."""
    cls = type(layer).__name__
    attrs: dict[str, WeightAxes]
    if cls in ("Dense", "Conv1D", "Conv2D", "Conv3D"):
        attrs = {"kernel": WeightAxes(-1, -2), "bias": WeightAxes(0)}
    elif cls in ("SeparableConv1D", "SeparableConv2D"):
        attrs = {"depthwise_kernel": WeightAxes(None, -2, zero_when_masked=False),
                 "pointwise_kernel": WeightAxes(-1, -2, repeat=int(layer.depth_multiplier)),
                 "bias": WeightAxes(0)}
    elif cls in ("DepthwiseConv1D", "DepthwiseConv2D"):
        attrs = {"depthwise_kernel": WeightAxes(-2), "bias": WeightAxes(0)}
    elif cls == "BatchNormalization":
        # gamma = beta = 0 makes the output 0 whatever the input; without gamma, the input is
        # already 0 on a masked channel, so moving_mean = 0 (and beta = 0) keeps it there.
        attrs = {"gamma": WeightAxes(0), "beta": WeightAxes(0),
                 "moving_mean": WeightAxes(0, zero_when_masked=not layer.scale),
                 "moving_variance": WeightAxes(0, zero_when_masked=False)}
    else:
        return None if layer.weights else []
    found = []
    for weight in layer.weights:
        match = [axes for name, axes in attrs.items() if getattr(layer, name, None) is weight]
        if not match:
            return None
        found.append(match[0])
    return found




def check_keep(groups: Iterable[Any], keep: Mapping[int, Any]) -> dict[int, np.ndarray]:
    """keep as bool arrays, after checking it fits the groups: it never removes an unprunable channel."""
    by_id = {g.id: g for g in groups}
    checked = {}
    for gid, mask in keep.items():
        group = by_id.get(gid)
        if group is None:
            raise PruningError("A channel mask names a group the model does not have", where="channel masks",
                               expected=f"group ids {sorted(by_id)}", received=gid)
        arr = np.asarray(mask)
        if arr.shape != (group.channels,) or arr.dtype != bool:
            raise PruningError("A channel mask must be one bool per channel of its group",
                               where=f"group {gid}", expected=f"bool array of shape ({group.channels},)",
                               received=f"{arr.dtype} array of shape {arr.shape}")
        if not arr.all() and not group.prunable:
            raise PruningError("A channel mask removes channels of a group that cannot be pruned",
                               where=f"group {gid}", expected="all True", received=f"{int((~arr).sum())} removed",
                               fix=f"Keep its channels: {group.reason}")
        if not arr.any():
            raise PruningError("A channel mask removes every channel of a group", where=f"group {gid}",
                               expected="at least one channel kept", received="none kept")
        checked[gid] = arr
    return checked


def _axis_masks(groups: Iterable[Any], keep: Mapping[int, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """layer name -> {role: bool mask over the layer's output channel axis / input rows}."""
    masks: dict[str, dict[str, np.ndarray]] = {}
    for group in groups:
        kept = keep.get(group.id)
        if kept is None:
            continue
        for m in group.members:
            mask = masks.setdefault(m.layer, {}).setdefault(m.role, np.ones(m.axis_size * m.positions, bool))
            mask.reshape(m.positions, m.axis_size)[:, m.offset:m.offset + group.channels] &= kept
    return masks


def _along(mask: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis] = -1
    return mask.reshape(shape)


def _mask_targets(model: Any, groups: Iterable[Any], keep: Mapping[int, Any]) -> list[tuple[Any, np.ndarray]]:
    """(variable, bool mask broadcast to its shape) for every weight a removed channel must be zeroed in."""
    groups = list(groups)
    masks = _axis_masks(groups, check_keep(groups, keep))
    targets = []
    for name, roles in masks.items():
        mask = roles.get(PRODUCE)
        if mask is None or mask.all():
            continue
        layer = model.get_layer(name)
        for weight, axes in zip(layer.weights, weight_axes(layer) or []):
            if axes.produce_axis is not None and axes.zero_when_masked:
                ndim = len(weight.shape)
                targets.append((weight, np.broadcast_to(_along(mask, axes.produce_axis, ndim), tuple(weight.shape))))
    return targets


def apply_channel_masks(model: Any, groups: Iterable[Any], keep: Mapping[int, Any]) -> None:
    """Zero, in place, every weight that makes a removed channel non-zero downstream.

    keep[group.id] is one bool per channel (groups not named keep everything). Zeroed: the
    producers' output filters and biases, BatchNormalization gamma and beta (its output is then
    0 whatever its input), depthwise kernels and biases. Inputs rows of the layers that read the
    channels are left alone: they multiply zeros, and the surgery drops them. To re-apply the
    masks after every training step, use `channel_masker` (prepared once, ~100x cheaper).
    """
    for weight, mask in _mask_targets(model, groups, keep):
        value = np.asarray(weight.numpy())
        weight.assign(np.where(mask, value, 0).astype(value.dtype))


def channel_masker(model: Any, groups: Iterable[Any], keep: Mapping[int, Any]) -> Callable[[], None]:
    """apply_channel_masks prepared once: a function (a tf.function) that re-zeroes the removed channels.

    Why: fine-tuning moves the zeroed weights again (BN beta gets gradients even on a silent
    channel), so a callback re-applies the masks after each step; resolving the layers and
    weights every time would cost more than the step on a small model.
    """
    tf, _ = import_tf()
    targets = [(weight, tf.constant(mask)) for weight, mask in _mask_targets(model, groups, keep)]

    @tf.function
    def reapply() -> None:
        for weight, mask in targets:
            weight.assign(tf.where(mask, weight, tf.zeros_like(weight)))

    def run() -> None:
        if targets:
            reapply()

    return run


def shrink_model(model: Any, groups: Iterable[Any], keep: Mapping[int, Any]) -> Any:
    """A new, smaller dense tf_keras model without the removed channels; `model` is not changed.

    Same layer names, inputs and outputs; producers get fewer filters/units, and every weight is
    sliced on its channel axes (producers on the output axis, readers on the input axis, a
    Dense after Flatten on its interleaved rows, BN's four vectors, depthwise on its channels).
    Built with keras.models.clone_model and a clone_function that edits each layer's config:
    clone_model keeps the graph wiring (Sequential or Functional) and instantiates each layer
    from its own class, so custom layers need no custom_objects; then set_weights() fails loudly
    on any shape the surgery got wrong.
    """
    _, keras = import_tf()
    groups = list(groups)
    masks = _axis_masks(groups, check_keep(groups, keep))

    def clone(layer: Any) -> Any:
        config = layer.get_config()
        produced = masks.get(layer.name, {}).get(PRODUCE)
        if produced is not None and type(layer).__name__ in PRODUCER_TYPES:
            config["units" if "units" in config else "filters"] = int(produced.sum())
        if type(layer).__name__ == "Reshape" and -1 not in layer.target_shape:
            config["target_shape"] = (*tuple(layer.target_shape)[:-1], -1)  # the kept channels, whatever they are
        try:
            return layer.__class__.from_config(config)
        except Exception as exc:  # a Lambda from an untrusted file, say: weightless and unchanged, so share it
            if config == layer.get_config() and not layer.weights:
                return layer
            raise PruningError("A layer could not be rebuilt for the smaller model", where=layer.name,
                               expected="a layer that from_config(get_config()) rebuilds",
                               received=f"{type(exc).__name__}: {str(exc)[:300]}") from exc

    small = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        if not layer.weights:
            continue
        roles = masks.get(layer.name, {})
        axes_found = weight_axes(layer)
        known: list[WeightAxes | None] = list(axes_found) if axes_found is not None else [None] * len(layer.weights)
        values = [_slice(np.asarray(w.numpy()), axes, roles) for w, axes in zip(layer.weights, known)]
        try:
            small.get_layer(layer.name).set_weights(values)
        except ValueError as exc:
            raise VerificationError("The channel surgery made weights of the wrong shape", where=layer.name,
                                    expected=str([tuple(w.shape) for w in small.get_layer(layer.name).weights]),
                                    received=str([v.shape for v in values]),
                                    fix="This is a bug in edgesparse; please report it with the model") from exc
    return small


def _slice(value: np.ndarray, axes: WeightAxes | None, roles: dict[str, np.ndarray]) -> np.ndarray:
    if axes is None:
        return value
    produced, consumed = roles.get(PRODUCE), roles.get(CONSUME)
    # all kept: nothing to cut (and a layer in a blocked group, a grouped conv say, is never cut)
    if produced is not None and axes.produce_axis is not None and not produced.all():
        value = np.compress(produced, value, axis=axes.produce_axis)
    if consumed is not None and axes.consume_axis is not None and not consumed.all():
        value = np.compress(np.repeat(consumed, axes.repeat), value, axis=axes.consume_axis)
    return value


def check_equivalent(masked_model: Any, small_model: Any, x: np.ndarray, *,
                     atol: float = EQUIVALENCE_ATOL) -> float:
    """max |masked - small| on `x` (inference mode); VerificationError when above atol * max(1, max |masked|).

    The tolerance is absolute for outputs up to 1 (probabilities) and relative beyond (logits):
    float32 sums in another order differ by a few ulps of the largest value.
    """
    x = np.asarray(x)
    diffs, scale = [], 1.0
    for start in range(0, max(len(x), 1), 256):
        batch = x[start:start + 256]
        a = np.asarray(masked_model(batch, training=False), np.float64)
        b = np.asarray(small_model(batch, training=False), np.float64)
        if a.shape != b.shape:
            raise VerificationError("The smaller model's output has another shape than the masked model's",
                                    where=small_model.name, expected=str(a.shape), received=str(b.shape))
        diffs.append(float(np.max(np.abs(a - b))) if a.size else 0.0)
        scale = max(scale, float(np.max(np.abs(a))) if a.size else 0.0)
    worst = max(diffs)
    if not np.isfinite(worst) or worst > atol * scale:
        raise VerificationError("The model after channel surgery does not compute what the masked model does",
                                where=small_model.name, expected=f"max |difference| <= {atol * scale:.3g}",
                                received=f"{worst:.3g}", fix="This is a bug in edgesparse; please report it "
                                "with the model (or skip channel pruning with --granularity element)")
    return worst

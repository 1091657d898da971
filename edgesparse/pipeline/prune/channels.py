"""Channel pruning's core: which channels must go together, which matter least, and the graph walk.

Why groups: output channel c of a Conv can only be removed if everything that follows it drops
channel c too (its BatchNormalization, a DepthwiseConv that follows its input, the next layer's
input rows) and if every tensor it is added to loses the same channel (a residual Add ties the
channels of all its branches into one group; a Concatenate places them at an offset). The walk
below follows the tf_keras functional graph tensor by tensor and unites channel spaces the way
Torch-Pruning's dependency graph does. A layer it does not understand never gets guessed at:
every group it touches becomes unprunable, with the reason in words for the report.

The masks and the surgery that use these groups live in `prune.surgery` and are re-exported here.

Raises PruningError (not a Functional/Sequential tf_keras model, unknown skip_layers) and
MissingDependency.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgesparse.errors import PruningError
from edgesparse.pipeline.prune.policy import check_prunable_model, check_skip_layers
from edgesparse.pipeline.prune.surgery import (
    CONSUME,
    EQUIVALENCE_ATOL,
    PRODUCE,
    PRODUCER_TYPES,
    apply_channel_masks,
    channel_masker,
    check_equivalent,
    check_keep,
    shrink_model,
    weight_axes,
)
from edgesparse.pipeline.tf_env import import_tf

__all__ = [
    "CONSUME",
    "EQUIVALENCE_ATOL",
    "PRODUCE",
    "ChannelGroup",
    "ChannelMember",
    "apply_channel_masks",
    "channel_masker",
    "channel_scores",
    "check_equivalent",
    "check_keep",
    "find_channel_groups",
    "select_channels",
    "shrink_model",
]

#: Layers whose output channel c depends on input channel c only, through per-channel weights.
_FOLLOWER_TYPES = ("BatchNormalization", "DepthwiseConv1D", "DepthwiseConv2D")
#: Element-wise merges: the branches' channels are the same channels.
_MERGE_TYPES = ("Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum")
#: Weightless layers that keep channel c in channel c and a zero channel at zero (in inference).
_NOISE_TYPES = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianDropout",
                "GaussianNoise", "AlphaDropout", "ActivityRegularization")
_PASS_TYPES = (
    *_NOISE_TYPES, "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
    "AveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D", "Cropping3D",
    "UpSampling1D", "UpSampling2D", "UpSampling3D",
)
_ACTIVATION_LAYER_TYPES = ("ReLU", "LeakyReLU", "ELU", "ThresholdedReLU", "Activation")
#: Activation functions that act on each element alone; whether f(0) == 0 is then checked numerically.
_ELEMENTWISE_ACTIVATIONS = frozenset({
    "linear", "relu", "relu6", "leaky_relu", "tanh", "elu", "selu", "swish", "silu", "gelu", "mish",
    "softsign", "hard_swish", "hard_silu", "sigmoid", "hard_sigmoid", "softplus", "exponential",
})


@dataclass(frozen=True)
class ChannelMember:
    """One layer's place in a group.

    role "produce": the layer's output channels ARE the group's channels (Conv/Dense filters, and
    layers that follow their input channel-wise: BatchNormalization, DepthwiseConv with
    depth_multiplier 1); "consume": the layer reads them on its kernel's input axis.
    The group's channel c sits at index `p * axis_size + offset + c` of that axis, for each of
    `positions` positions p: axis_size is the full length of the layer's channel axis (larger than
    the group after a Concatenate), positions > 1 only for a Dense after Flatten, whose input rows
    interleave the channels with the flattened spatial positions.
    """

    layer: str
    role: str
    offset: int = 0
    axis_size: int = 0
    positions: int = 1


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that can only be removed together; `reason` says why not, or what the group is."""

    id: int
    channels: int
    members: tuple[ChannelMember, ...]
    prunable: bool
    reason: str
    producers: tuple[str, ...] = field(default=())  # layers whose filters create the channels


# ----------------------------------------------------------------------------- the graph walk

@dataclass(frozen=True)
class _Layout:
    """A tensor's last axis as (space, offset) segments; positions > 1: flattened with space."""

    segments: tuple[tuple[int, int], ...]
    channels: int
    positions: int = 1


class _Spaces:
    """Union-find over channel spaces, each with its members, the reasons it is blocked, its joins."""

    def __init__(self) -> None:
        self.parent: list[int] = []
        self.size: list[int] = []
        self.members: list[list[ChannelMember]] = []
        self.reasons: list[list[str]] = []
        self.joins: list[list[str]] = []
        self.producers: list[list[str]] = []

    def new(self, size: int, reason: str | None = None) -> int:
        self.parent.append(len(self.parent))
        self.size.append(size)
        for table in (self.members, self.reasons, self.joins, self.producers):
            table.append([])
        if reason:
            self.reasons[-1].append(reason)
        return len(self.parent) - 1

    def find(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        self.parent[b] = a
        self.members[a] += self.members[b]
        self.members[b] = []
        for table in (self.reasons, self.joins, self.producers):
            table[a] += table[b]
            table[b] = []

    def block(self, s: int, reason: str) -> None:
        reasons = self.reasons[self.find(s)]
        if reason not in reasons:
            reasons.append(reason)

    def seg_size(self, s: int) -> int:
        return self.size[self.find(s)]


def _tensor_key(tensor: Any) -> tuple[int, int, int]:
    layer, node_index, tensor_index = tensor._keras_history
    return id(layer), node_index, tensor_index


def _channels_of(tensor: Any) -> int:
    last = tensor.shape[-1] if tensor.shape.rank else None
    return int(last) if last is not None else 0


class _Walk:
    """One pass over the model's nodes, inputs first, building _Spaces and each tensor's _Layout."""

    def __init__(self, model: Any, tf: Any, keras: Any) -> None:
        self.model, self.tf, self.keras = model, tf, keras
        self.spaces = _Spaces()
        self.layouts: dict[tuple[int, int, int], _Layout] = {}
        nodes = [n for depth in sorted(model._nodes_by_depth, reverse=True) for n in model._nodes_by_depth[depth]]
        self.nodes = nodes
        self.calls = Counter(id(n.layer) for n in nodes)

    def run(self) -> _Spaces:
        for node in self.nodes:
            layer = node.layer
            ins = [self.layouts[_tensor_key(t)] for t in node.keras_inputs]
            outs = self.tf.nest.flatten(node.outputs)
            for tensor, layout in zip(outs, self._visit(layer, ins, outs)):
                self.layouts[_tensor_key(tensor)] = layout
        for tensor in self.model.outputs:
            for s, _ in self.layouts[_tensor_key(tensor)].segments:
                root = self.spaces.find(s)
                names = self.spaces.producers[root]
                # the output layer's own activation (a softmax, say) is no reason to mention: it is the output
                reasons = [r for r in self.spaces.reasons[root] if not r.startswith(tuple(f"{n}'s " for n in names))]
                self.spaces.reasons[root] = [f"output layer {', '.join(names)}: its channels are the model's outputs"
                                             if names else "its channels reach the model's output", *reasons]
        return self.spaces

    def _visit(self, layer: Any, ins: list[_Layout], outs: list) -> list[_Layout]:
        kind, why = self._classify(layer, ins, outs)
        cls, sp = type(layer).__name__, self.spaces
        if kind == "input":
            return [self._fresh(t, "the model's input: its channels are the data's") for t in outs]
        if kind == "unsupported":
            for layout in ins:
                for s, off in layout.segments:
                    sp.block(s, f"read by {layer.name} ({cls}), which the surgery cannot handle: {why}")
                    if layer.weights:  # listed so the report names it; a blocked group is never sliced
                        sp.members[sp.find(s)].append(
                            ChannelMember(layer.name, CONSUME, off, layout.channels, layout.positions))
            made = [self._fresh(t, f"made by {layer.name} ({cls}), which the surgery cannot handle: {why}")
                    for t in outs]
            if layer.weights:
                for layout in made:
                    sp.members[layout.segments[0][0]].append(ChannelMember(layer.name, PRODUCE, 0, layout.channels))
            return made
        src = ins[0] if ins else None
        if kind == "producer":
            assert src is not None
            for s, off in src.segments:
                sp.members[sp.find(s)].append(ChannelMember(layer.name, CONSUME, off, src.channels, src.positions))
            out = sp.new(_channels_of(outs[0]), why or None)
            sp.members[out].append(ChannelMember(layer.name, PRODUCE, 0, _channels_of(outs[0])))
            sp.producers[out].append(layer.name)
            return [_Layout(((out, 0),), _channels_of(outs[0]))]
        assert src is not None
        if kind == "follower":
            for s, off in src.segments:
                sp.members[sp.find(s)].append(ChannelMember(layer.name, PRODUCE, off, src.channels))
            return [src]
        if kind == "pass":
            if why:  # an activation that does not keep zero
                for s, _ in src.segments:
                    sp.block(s, f"{layer.name} ({cls}) {why}")
            return [src]
        if kind == "flatten":
            return [_Layout(src.segments, src.channels, math.prod(int(d) for d in layer.input_shape[1:-1]))]
        if kind == "concat":
            segments, start = [], 0
            for layout in ins:
                segments += [(s, start + off) for s, off in layout.segments]
                for s, off in layout.segments:
                    sp.joins[sp.find(s)].append(f"{layer.name} (at channel {start + off})")
                start += layout.channels
            return [_Layout(tuple(segments), start)]
        return [self._merge(layer, ins, outs)]

    def _merge(self, layer: Any, ins: list[_Layout], outs: list) -> _Layout:
        sp = self.spaces
        shapes = {(lay.positions, tuple((off, sp.seg_size(s)) for s, off in lay.segments)) for lay in ins}
        if len(shapes) > 1:
            why = ("its inputs split the channels differently (a concatenation joined with another tensor, "
                   "or a broadcast over channels)")
            for layout in ins:
                for s, _ in layout.segments:
                    sp.block(s, f"joined by {layer.name} ({type(layer).__name__}): {why}")
            return self._fresh(outs[0], f"made by {layer.name} ({type(layer).__name__}): {why}")
        for layout in ins[1:]:
            for (a, _), (b, _) in zip(ins[0].segments, layout.segments):
                sp.union(a, b)
        for s, _ in ins[0].segments:
            sp.joins[sp.find(s)].append(layer.name)
        return ins[0]

    def _fresh(self, tensor: Any, reason: str) -> _Layout:
        c = _channels_of(tensor)
        return _Layout(((self.spaces.new(c, reason), 0),), c)

    def _classify(self, layer: Any, ins: list[_Layout], outs: list) -> tuple[str, str]:
        """(kind, why): kind in input/producer/follower/pass/flatten/concat/merge/unsupported."""
        cls = type(layer).__name__
        known = getattr(self.keras.layers, cls, None) is type(layer)
        if isinstance(layer, self.keras.layers.InputLayer):
            return "input", ""
        if not known:
            if isinstance(layer, self.keras.Model):
                return "unsupported", "a nested model (flatten it into the outer model)"
            return "unsupported", (f"{cls} is not a Keras layer the channel surgery knows"
                                   + (" (a Lambda's function cannot be inspected)" if "Lambda" in cls else ""))
        if len(outs) != 1 or (cls not in ("Concatenate", *_MERGE_TYPES) and len(ins) != 1):
            return "unsupported", f"{len(ins)} inputs and {len(outs)} outputs"
        if getattr(layer, "data_format", "channels_last") != "channels_last":
            return "unsupported", "channels_first data format"
        if self.calls[id(layer)] > 1 and layer.weights:
            return "unsupported", f"a shared layer (called {self.calls[id(layer)]} times)"
        if any(lay.positions > 1 for lay in ins) and cls not in ("Dense", *_NOISE_TYPES, *_ACTIVATION_LAYER_TYPES):
            return "unsupported", "it reads a Flatten's output, where channels interleave with positions"
        if weight_axes(layer) is None:
            return "unsupported", "it holds weights the surgery does not know how to slice"
        return self._classify_known(layer, cls, ins)

    def _classify_known(self, layer: Any, cls: str, ins: list[_Layout]) -> tuple[str, str]:
        if cls in PRODUCER_TYPES:
            if int(getattr(layer, "groups", 1)) != 1:
                return "unsupported", f"grouped convolution (groups={layer.groups})"
            problem = _activation_problem(getattr(layer, "activation", None), self.tf)
            return "producer", (f"{layer.name}'s activation {problem}" if problem else "")
        if cls == "BatchNormalization":
            rank = len(layer.input_shape)
            axes = layer.axis if isinstance(layer.axis, (list, tuple)) else [layer.axis]
            if [a % rank for a in axes] != [rank - 1]:
                return "unsupported", f"it normalizes axis {layer.axis}, not the channel (last) axis"
            return "follower", ""
        if cls.startswith("DepthwiseConv"):
            if int(layer.depth_multiplier) != 1:
                return "unsupported", (f"depth_multiplier {layer.depth_multiplier}: each input channel "
                                       "makes several output channels")
            problem = _activation_problem(getattr(layer, "activation", None), self.tf)
            return ("unsupported", f"its activation {problem}") if problem else ("follower", "")
        if cls in _PASS_TYPES:
            return "pass", ""
        if cls in _ACTIVATION_LAYER_TYPES:
            problem = _activation_layer_problem(layer, self.tf)
            return "pass", problem
        if cls == "Flatten":
            if len(layer.input_shape) > 2 and any(d is None for d in layer.input_shape[1:]):
                return "unsupported", "a Flatten of a tensor with unknown dimensions"
            return ("flatten", "") if len(layer.input_shape) > 2 else ("pass", "")
        if cls == "Reshape":
            target = tuple(layer.target_shape)
            if -1 in target or ins[0].positions != 1 or target[-1] != ins[0].channels:
                return "unsupported", f"Reshape to {target} does not keep the channel (last) axis"
            return "pass", ""
        if cls in _MERGE_TYPES:
            return "merge", ""
        if cls == "Concatenate":
            rank = len(layer.output_shape)
            if layer.axis % rank == rank - 1:
                if any(lay.positions != 1 for lay in ins):
                    return "unsupported", "it concatenates flattened tensors"
                return "concat", ""
            return "merge", ""  # along another axis, channel c of every input is channel c of the output
        if cls == "Softmax":
            return "unsupported", "softmax mixes all channels"
        return "unsupported", f"{cls} is not a layer the channel surgery knows"


def _activation_problem(fn: Any, tf: Any) -> str:
    """'' when fn acts element-wise and f(0) == 0 (a removed channel stays 0), else why not."""
    if fn is None:
        return ""
    name = getattr(fn, "__name__", type(fn).__name__)
    if name not in _ELEMENTWISE_ACTIVATIONS:
        return f"{name} is not known to act on each channel alone"
    value = float(np.asarray(fn(tf.zeros((1, 2)))).ravel()[0])
    if value != 0.0:
        return (f"{name}(0) = {value:g}, not 0: a removed channel would still send a constant "
                "to the layers after it")
    return ""


def _activation_layer_problem(layer: Any, tf: Any) -> str:
    if type(layer).__name__ == "Activation":
        return _activation_problem(layer.activation, tf)
    value = float(np.asarray(layer(tf.zeros((1, 2)))).ravel()[0])
    return "" if value == 0.0 else f"maps 0 to {value:g}: a removed channel would still send a constant"


# ----------------------------------------------------------------------------- groups

def find_channel_groups(model: Any, *, skip_layers: Iterable[str] = frozenset()) -> list[ChannelGroup]:
    """The model's channel groups, in model order; every group says whether it can be pruned and why.

    A layer named in `skip_layers` keeps all its weights: every group it produces or reads is
    unprunable. The output layer keeps its output channels (they are the model's outputs).
    """
    tf, _ = import_tf()
    keras = check_prunable_model(model)
    if not hasattr(model, "_nodes_by_depth"):
        raise PruningError("The model has no layer graph to follow", where=model.name,
                           expected="a Functional model, or a Sequential with an Input",
                           received=type(model).__name__, fix="Start the Sequential with keras.Input(shape)")
    skip = set(skip_layers)
    check_skip_layers(model, skip, list(model.layers))
    spaces = _Walk(model, tf, keras).run()
    order = {layer.name: i for i, layer in enumerate(model.layers)}
    roots: dict[int, list[ChannelMember]] = {}
    for s in range(len(spaces.parent)):
        root = spaces.find(s)
        if spaces.members[root]:
            roots[root] = sorted(set(spaces.members[root]),
                                 key=lambda m: (order.get(m.layer, -1), m.role != PRODUCE, m.offset))
    for root, members in roots.items():
        for name in sorted({m.layer for m in members} & skip, key=order.__getitem__):
            spaces.block(root, f"{name} is in skip_layers: it keeps all its weights (input and output channels)")
    groups = []
    for i, root in enumerate(sorted(roots, key=lambda r: order.get(roots[r][0].layer, -1))):
        reasons = spaces.reasons[root]
        groups.append(ChannelGroup(
            id=i, channels=spaces.size[root], members=tuple(roots[root]),
            prunable=not reasons and spaces.size[root] > 1,
            reason="; ".join(reasons) if reasons else _describe(spaces, root, roots[root]),
            producers=tuple(dict.fromkeys(spaces.producers[root]))))
    return groups


def _describe(spaces: _Spaces, root: int, members: list[ChannelMember]) -> str:
    if spaces.size[root] <= 1:
        return "a single channel: removing it would remove the layer"
    producers = list(dict.fromkeys(spaces.producers[root]))
    followers = list(dict.fromkeys(m.layer for m in members if m.role == PRODUCE and m.layer not in producers))
    readers = list(dict.fromkeys(m.layer for m in members if m.role == CONSUME))
    parts = [f"{spaces.size[root]} channels made by {', '.join(producers)}"]
    if followers:
        parts.append(f"followed by {', '.join(followers)}")
    if spaces.joins[root]:
        parts.append(f"joined by {', '.join(dict.fromkeys(spaces.joins[root]))}")
    parts.append(f"read by {', '.join(readers)}" if readers else "read by no weighted layer")
    return "; ".join(parts)


# ----------------------------------------------------------------------------- importance

def channel_scores(model: Any, group: ChannelGroup) -> np.ndarray:
    """Importance of each channel of `group`: the L2 norm of its filter in every producer, summed.

    Why the filter norm: it needs no data, is what Li et al. ("Pruning Filters for Efficient
    ConvNets", 2017) and Torch-Pruning's MagnitudeImportance rank by, and a filter near zero
    sends little downstream. Why summed over producers: in a residual group, every branch adds
    into the same channel, so a channel is cheap only if it is small in all of them. Each
    producer's norms are divided by their mean first, so a layer whose weights are on a larger
    scale (a smaller fan-in) does not outvote the others. A group with no producer (it cannot
    be pruned anyway) is scored by its followers: |BN gamma| or the depthwise filter norm.
    """
    total = np.zeros(group.channels, np.float64)
    for member in group.members:
        if member.role != PRODUCE or member.layer not in group.producers:
            continue
        layer = model.get_layer(member.layer)
        kernel = np.asarray(layer.pointwise_kernel if hasattr(layer, "pointwise_kernel") else layer.kernel)
        norms = np.sqrt(np.sum(np.square(kernel.reshape(-1, kernel.shape[-1]), dtype=np.float64), axis=0))
        total += _normalized(norms[member.offset:member.offset + group.channels])
    if group.producers:
        return total
    for member in group.members:
        layer = model.get_layer(member.layer)
        sl = slice(member.offset, member.offset + group.channels)
        if getattr(layer, "gamma", None) is not None:
            total += _normalized(np.abs(np.asarray(layer.gamma, np.float64))[sl])
        elif getattr(layer, "depthwise_kernel", None) is not None and member.role == PRODUCE:
            kernel = np.asarray(layer.depthwise_kernel, np.float64)
            total += _normalized(np.sqrt(np.sum(np.square(np.moveaxis(kernel, -2, 0).reshape(kernel.shape[-2], -1)),
                                                axis=1))[sl])
    return total


def _normalized(values: np.ndarray) -> np.ndarray:
    mean = float(np.mean(values)) if values.size else 0.0
    return values / mean if mean > 0 else values


def select_channels(model: Any, groups: Iterable[ChannelGroup], fraction: float, *,
                    min_keep: int = 1) -> dict[int, np.ndarray]:
    """keep[group.id]: True for the channels to keep when `fraction` of each prunable group goes.

    The lowest `channel_scores` go first (ties: the later channel); at least `min_keep` stay.
    Unprunable groups keep everything.
    """
    if not 0.0 <= fraction < 1.0:
        raise PruningError("The fraction of channels to remove must be in [0, 1)", where="select_channels",
                           received=fraction)
    keep = {}
    for group in groups:
        mask = np.ones(group.channels, bool)
        if group.prunable:
            drop = min(round(fraction * group.channels), group.channels - max(1, min_keep))
            if drop > 0:
                order = np.argsort(channel_scores(model, group), kind="stable")
                mask[order[:drop]] = False
        keep[group.id] = mask
    return keep

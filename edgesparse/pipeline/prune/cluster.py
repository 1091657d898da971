"""Sparsity-preserving weight clustering of the pruned layers, so TFLite Micro's LUT decoder applies.

Why: a pruned int8 kernel compresses with DECODE's PRUNING format to a
1-bit-per-weight bitmap plus its kept values at 8 bits each. After TFMOT's
clustering (`cluster_weights(..., preserve_sparsity=True)`) a kernel holds at
most `clusters` distinct float values, zero among them; the int8 converter's
per-channel scale maps them to at most `clusters` int8 values per channel, so
the LUT decoder stores each weight as a ceil(log2(clusters))-bit index plus a
small table per channel (`tflite.decode_compress.choose_compression` picks
whichever is smaller, per tensor).

Only the layers the pruning plan pruned are clustered (the same kernels,
`LayerPolicy.weight_indices`); every other layer fine-tunes normally. The
pruned zeros are checked to be still zero afterwards; weights the zero
centroid absorbs become zero too, so sparsity may only rise.

Progress events (distinct from pruning's, so a renderer can label them):
"cluster_begin" {clusters, epochs, steps_per_epoch, total_steps,
clustered_layers}, "cluster_batch_end" {epoch, step, loss, accuracy},
"cluster_epoch_end" {epoch, loss, accuracy, val_loss, val_accuracy}; epoch
and step count from 1.

Raises PruningError (a number of clusters outside MIN_CLUSTERS..MAX_CLUSTERS,
named as --cluster, before any training; no clusterable pruned layer; a
pruned zero that did not stay zero), DataError and MissingDependency;
KeyboardInterrupt propagates untouched.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgesparse._types import Progress, no_progress
from edgesparse.errors import PruningError
from edgesparse.pipeline.prune.depthwise import depthwise_stand_in, is_plain_depthwise, restore_plain_layers
from edgesparse.pipeline.prune.finetune import classifier_loss_and_metric, raise_if_diverged, training_arrays
from edgesparse.pipeline.prune.policy import LayerPolicy, check_prunable_model
from edgesparse.pipeline.tf_env import import_tfmot
from edgesparse.runtime.verify import top1
from edgesparse.tflite.decode import LUT_MAX_BITS

__all__ = [
    "CENTROID_INITS",
    "DEFAULT_LEARNING_RATE",
    "MAX_CLUSTERS",
    "MIN_CLUSTERS",
    "ClusterResult",
    "ClusteredLayer",
    "check_clusters",
    "cluster_and_finetune",
    "distinct_values",
]

#: TFMOT refuses preserve_sparsity with 2 clusters or fewer: the zero centroid plus at least two others.
MIN_CLUSTERS = 3
#: TFLM's LUT decoder indexes with at most 7 bits, so more clusters than this cannot be decoded by LUT.
MAX_CLUSTERS = 2 ** LUT_MAX_BITS
#: Centroids move far less than weights; TFMOT's clustering guides fine-tune with a small rate.
DEFAULT_LEARNING_RATE = 1e-4
#: TFMOT's centroid initializations, by the name edgesparse accepts.
CENTROID_INITS = ("kmeans++", "density", "linear", "random")
_TFMOT_INIT = {"kmeans++": "KMEANS_PLUS_PLUS", "density": "DENSITY_BASED", "linear": "LINEAR", "random": "RANDOM"}


@dataclass(frozen=True)
class ClusteredLayer:
    """One pruned layer after clustering, measured on the stripped model."""

    name: str
    clustered: bool
    reason: str
    params: int
    zeros_before: int              # exact zeros in its pruned kernels before clustering
    zeros_after: int               # after strip_clustering: never fewer, the same positions included
    distinct_values: int           # most distinct values in one of its kernels (zero included)

    @property
    def sparsity_after(self) -> float:
        return self.zeros_after / self.params if self.params else 0.0


@dataclass
class ClusterResult:
    model: Any                     # stripped tf_keras model: at most `clusters` values per clustered kernel
    clusters: int
    accuracy_before: float         # top-1 of the pruned model given, on `accuracy_split`
    accuracy_after: float          # top-1 of the clustered, stripped model, on the same split
    accuracy_split: str            # "validation", or "train" for a data set without a validation split
    layers: list[ClusteredLayer]
    history: dict = field(default_factory=dict)

    @property
    def clustered_layers(self) -> list[str]:
        return [layer.name for layer in self.layers if layer.clustered]


def check_clusters(clusters: Any) -> int:
    """The number of clusters as an int, or PruningError naming --cluster (called before any training)."""
    if isinstance(clusters, bool) or not isinstance(clusters, (int, np.integer)):
        raise PruningError("--cluster takes a whole number of clusters", where="--cluster",
                           expected=f"an integer from {MIN_CLUSTERS} to {MAX_CLUSTERS}", received=repr(clusters))
    n = int(clusters)
    if n < MIN_CLUSTERS:
        raise PruningError("Too few clusters for sparsity-preserving clustering", where="--cluster",
                           expected=f"at least {MIN_CLUSTERS} (one centroid is held at zero for the pruned "
                                    "weights; TFMOT needs two more)", received=n,
                           fix=f"Use --cluster {MIN_CLUSTERS} or more (4 gives 2-bit LUT indices), or leave it off")
    if n > MAX_CLUSTERS:
        raise PruningError("Too many clusters for TFLite Micro's LUT decoder", where="--cluster",
                           expected=f"at most {MAX_CLUSTERS} ({LUT_MAX_BITS}-bit indices, the decoder's limit)",
                           received=n, fix="Use --cluster 16 or fewer: above that the LUT rarely beats PRUNING")
    return n


def distinct_values(values: np.ndarray, axis: int | None = None) -> int:
    """The most distinct values in `values` (bit patterns), over the whole array or per slice along `axis`."""
    a = np.asarray(values)
    slices = [a] if axis is None else list(np.moveaxis(a, axis, 0))
    return max(len(np.unique(np.ascontiguousarray(s).view(f"u{s.dtype.itemsize}"))) for s in slices)


def _kernels(model: Any, policy: LayerPolicy) -> list[np.ndarray]:
    layer = model.get_layer(policy.name)
    return [layer.weights[i].numpy() for i in policy.weight_indices]


def _wrap_pruned(model: Any, targets: set[str], clusters: int, init: str, keras: Any, tfmot: Any) -> tuple:
    """A clustered copy of `model` (the caller's stays untouched) and the names TFMOT would not cluster."""
    work = keras.models.clone_model(model)
    work.set_weights(model.get_weights())  # the wrappers' centroids and zero masks come from these weights
    api = tfmot.clustering.keras
    skipped: dict[str, str] = {}

    def wrap(layer: Any) -> Any:
        if layer.name not in targets:
            return layer
        if is_plain_depthwise(layer):  # TFMOT's clustering registry lists no depthwise weights: cluster its stand-in
            layer = depthwise_stand_in(layer)
        try:
            wrapped = api.cluster_weights(layer, number_of_clusters=clusters, preserve_sparsity=True,
                                          cluster_centroids_init=getattr(api.CentroidInitialization,
                                                                         _TFMOT_INIT[init]))
        except ValueError as exc:  # a layer type TFMOT's clustering registry does not support
            skipped[layer.name] = f"TFMOT cannot cluster it: {str(exc).splitlines()[0]}"
            return layer
        if wrapped is layer:
            skipped[layer.name] = f"TFMOT skips it: {clusters} clusters or more than its weights"
        return wrapped

    return keras.models.clone_model(work, clone_function=wrap), skipped


def _progress_callback(progress: Progress, fields: dict, keras: Any) -> Any:
    state = {"epoch": 0, "step": 0}

    class _Progress(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            progress("cluster_begin", dict(fields))

        def on_epoch_begin(self, epoch, logs=None):
            state["epoch"] = epoch + 1

        def on_train_batch_end(self, batch, logs=None):
            state["step"] += 1
            logs = logs or {}
            progress("cluster_batch_end", {"epoch": state["epoch"], "step": state["step"],
                                           "loss": _num(logs.get("loss")), "accuracy": _num(logs.get("accuracy"))})

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            progress("cluster_epoch_end", {"epoch": epoch + 1, **{k: _num(logs.get(k)) for k in (
                "loss", "accuracy", "val_loss", "val_accuracy")}})

    return _Progress()


def _num(value: Any) -> float | None:
    return None if value is None else float(value)


def _accuracy(model: Any, x: np.ndarray, y: np.ndarray, batch_size: int) -> float:
    return float(np.mean(top1(model.predict(x, batch_size=batch_size, verbose=0)) == np.asarray(y)))


def _measure(before: Any, after: Any, policies: Sequence[LayerPolicy], clusters: int,
             skipped: dict[str, str]) -> list[ClusteredLayer]:
    """Per pruned layer: zeros before and after, distinct values; PruningError if a pruned zero moved."""
    layers, moved = [], []
    for policy in policies:
        old, new = _kernels(before, policy), _kernels(after, policy)
        revived = sum(int(np.count_nonzero(n[o == 0])) for o, n in zip(old, new, strict=True))
        if revived:
            moved.append(f"{policy.name}: {revived} pruned weight(s) no longer zero")
        clustered = policy.name not in skipped
        distinct = max((distinct_values(k) for k in new), default=0)
        if clustered and distinct > clusters:
            moved.append(f"{policy.name}: {distinct} distinct values for {clusters} clusters")
        layers.append(ClusteredLayer(
            name=policy.name, clustered=clustered, params=policy.params,
            reason=skipped.get(policy.name, f"clustered to {clusters} values (zero kept as one of them)"),
            zeros_before=sum(int(k.size - np.count_nonzero(k)) for k in old),
            zeros_after=sum(int(k.size - np.count_nonzero(k)) for k in new), distinct_values=distinct))
    if moved:
        raise PruningError("Sparsity-preserving clustering did not keep the pruned weights", where="; ".join(moved),
                           expected="every pruned zero still zero, at most --cluster values per kernel",
                           received="changed weights after strip_clustering",
                           fix="Build without --cluster and report this")
    return layers


def cluster_and_finetune(model: Any, dataset: Any, clusters: int, *, policies: Sequence[LayerPolicy], epochs: int,
                         batch_size: int, learning_rate: float | None = None, centroid_init: str = "kmeans++",
                         progress: Progress | None = None, seed: int = 0) -> ClusterResult:
    """Cluster the pruned layers' kernels to `clusters` values (zero kept), fine-tune, strip_clustering, measure.

    `model` is the stripped pruned model (PruneResult.model) and `policies`
    the plan it was pruned with; the caller's model is not modified. Both
    accuracies are top-1 on the validation split (the training split when
    the data set has none), measured here.
    """
    n = check_clusters(clusters)
    if centroid_init not in CENTROID_INITS:
        raise PruningError("Unknown centroid initialization", where="cluster_and_finetune",
                           expected=" | ".join(CENTROID_INITS), received=repr(centroid_init))
    keras = check_prunable_model(model)
    tfmot = import_tfmot()
    num_classes = int(getattr(dataset, "num_classes", 0) or 0)
    x, y, xv, yv = training_arrays(dataset, model, num_classes)
    loss, metric = classifier_loss_and_metric(model, num_classes, keras)
    pruned = [p for p in policies if p.prune]
    stray = [p.name for p in pruned if p.name not in {layer.name for layer in model.layers}]
    if not pruned or stray:
        raise PruningError("Clustering needs the pruning plan of this model", where=", ".join(stray) or model.name,
                           expected="the policies from plan_policy with at least one pruned layer",
                           received=f"unknown layer(s) {', '.join(stray)}" if stray else "no pruned layer")
    split, (xa, ya) = ("validation", (xv, yv)) if xv is not None else ("train", (x, y))
    before = _accuracy(model, xa, ya, batch_size)

    keras.utils.set_random_seed(seed)
    clustered, skipped = _wrap_pruned(model, {p.name for p in pruned}, n, centroid_init, keras, tfmot)
    if len(skipped) == len(pruned):
        raise PruningError("No pruned layer can be clustered", where="; ".join(f"{k}: {v}" for k, v in skipped.items()),
                           expected="a pruned Dense or Conv layer", received=f"{len(pruned)} pruned layer(s)",
                           fix="Build without --cluster")
    clustered.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate or DEFAULT_LEARNING_RATE),
                      loss=loss, metrics=[metric])
    steps = math.ceil(len(x) / batch_size)
    fields = {"clusters": n, "epochs": epochs, "steps_per_epoch": steps, "total_steps": steps * epochs,
              "clustered_layers": [p.name for p in pruned if p.name not in skipped]}
    callbacks = [keras.callbacks.TerminateOnNaN(), _progress_callback(progress or no_progress, fields, keras)]
    fit = clustered.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0, shuffle=True,
                        validation_data=(xv, yv) if xv is not None else None, callbacks=callbacks)
    stripped = restore_plain_layers(tfmot.clustering.keras.strip_clustering(clustered))  # plain depthwise layers
    raise_if_diverged(fit.history, stripped, dataset)
    layers = _measure(model, stripped, pruned, n, skipped)
    return ClusterResult(model=stripped, clusters=n, accuracy_before=before,
                         accuracy_after=_accuracy(stripped, xa, ya, batch_size), accuracy_split=split,
                         layers=layers, history={k: [float(v) for v in vs] for k, vs in fit.history.items()})

"""Depthwise kernels for TFMOT: a prunable (and clusterable) stand-in while fine-tuning, plain layers afterwards.

Why: TFMOT 0.8.1's prune and clustering registries list no weights for DepthwiseConv2D
(`layers.DepthwiseConv2D: []`) and do not know DepthwiseConv1D, so `prune_low_magnitude` would wrap such a layer
and leave its kernel dense. Where the zeros pay (Vela's weight encoding on Ethos-U, DECODE on TFLite Micro: see
`prune.policy`) that leaves a dense share of every small mobile network. TFMOT's documented extension points are
a layer implementing `tfmot.sparsity.keras.PrunableLayer.get_prunable_weights()` (and, for `cluster_weights`,
`tfmot.clustering.keras.ClusterableLayer.get_clusterable_weights()`); the stand-in here is exactly that: the
Keras class plus both methods naming the depthwise kernel, made from the original layer's config and weights,
and wrapped by `prune_low_magnitude` (or `cluster_weights`) like every other layer.

After `strip_pruning` (or `strip_clustering`), `restore_plain_layers` turns every stand-in back into the plain
tf_keras class with the same config and weights, so the model saves to `.keras`, loads without custom objects
and converts to the same DEPTHWISE_CONV_2D ops as the dense one (zeros stay zero through per-channel int8
quantization: q = round(w / scale), zero point 0).

Everything imports TensorFlow lazily; the stand-in classes are made once per process.
"""

from __future__ import annotations

from typing import Any

from edgesparse.pipeline.tf_env import import_tf, import_tfmot, keras_layer_classes

__all__ = [
    "DEPTHWISE_LAYERS",
    "is_plain_depthwise",
    "depthwise_stand_in",
    "restore_plain_layers",
]

#: tf_keras depthwise layers whose kernel edgesparse prunes through its PrunableLayer stand-in.
DEPTHWISE_LAYERS = ("DepthwiseConv1D", "DepthwiseConv2D")

_STAND_INS: dict[type, type] = {}   # plain class -> its prunable stand-in


def is_plain_depthwise(layer: Any) -> bool:
    """True for a layer of exactly a tf_keras depthwise class (a user's subclass keeps its own rules)."""
    return type(layer) in keras_layer_classes(DEPTHWISE_LAYERS)


def _stand_in(plain: type) -> type:
    """The PrunableLayer + ClusterableLayer subclass of `plain` (made once: Keras and TFMOT see one class)."""
    if plain not in _STAND_INS:
        tfmot = import_tfmot()

        def get_prunable_weights(self: Any) -> list:
            """The depthwise kernel only: the bias is per channel and stays dense, as on every layer."""
            return [self.depthwise_kernel]

        def get_clusterable_weights(self: Any) -> list:
            return [("depthwise_kernel", self.depthwise_kernel)]

        bases = (plain, tfmot.sparsity.keras.PrunableLayer, tfmot.clustering.keras.ClusterableLayer)
        _STAND_INS[plain] = type(f"Prunable{plain.__name__}", bases,
                                 {"get_prunable_weights": get_prunable_weights,
                                  "get_clusterable_weights": get_clusterable_weights,
                                  "__doc__": f"{plain.__name__} whose depthwise kernel TFMOT prunes and clusters."})
    return _STAND_INS[plain]


def depthwise_stand_in(layer: Any) -> Any:
    """A stand-in with `layer`'s config (and name) and, when `layer` is built, its weights, for TFMOT to wrap.

    ValueError for anything but a plain tf_keras depthwise layer (`is_plain_depthwise`). Its weights have the
    same names, shapes and order as the plain layer's; the weights matter to `cluster_weights`, whose centroids
    come from the kernel it wraps.
    """
    if not is_plain_depthwise(layer):
        raise ValueError(f"not a plain tf_keras depthwise layer: {type(layer).__name__}")
    new = _stand_in(type(layer)).from_config(layer.get_config())
    if layer.built:
        new.build(layer.input_shape)
        new.set_weights(layer.get_weights())
    return new


def restore_plain_layers(model: Any) -> Any:
    """`model` with every stand-in replaced by its plain tf_keras class (same config and weights); `model` itself
    when it holds none. Run after `strip_pruning`, outside any distribution strategy's scope."""
    _, keras = import_tf()
    plain_of = {stand_in: plain for plain, stand_in in _STAND_INS.items()}
    if not any(type(layer) in plain_of for layer in model.layers):
        return model

    def plain(layer: Any) -> Any:
        cls = plain_of.get(type(layer), layer.__class__)
        return cls.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=plain)
    copy.set_weights(model.get_weights())
    return copy

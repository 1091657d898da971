"""Depthwise kernels pruned through TFMOT's PrunableLayer extension point (prune.depthwise): real fine-tuning of a
tiny model, the stripped model holds plain DepthwiseConv2D layers, saves, loads without custom objects and
converts to int8 DEPTHWISE_CONV_2D ops whose weights keep every pruned zero."""

from __future__ import annotations

import numpy as np
import pytest
from support.models import projection_data
from support.npu import npu_profile

from edgesparse.pipeline.convert import convert_keras
from edgesparse.pipeline.prune import (
    ScheduleOptions,
    depthwise_stand_in,
    plan_policy,
    prune_and_finetune,
    restore_plain_layers,
)
from edgesparse.pipeline.prune.policy import DEPTHWISE_SHARE
from edgesparse.tflite.graph import load_graph


def keras():
    from edgesparse.pipeline.tf_env import import_tf

    return import_tf()[1]


def dw_cnn():
    """conv (8 -> 16 channels) -> dw (3x3 depthwise, 144 weights) + batch norm -> pool -> classifier."""
    k = keras()
    k.utils.set_random_seed(2)
    inp = k.Input((8, 8, 4))
    x = k.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv")(inp)
    x = k.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name="dw")(x)
    x = k.layers.BatchNormalization(name="bn")(x)
    x = k.layers.ReLU()(x)
    x = k.layers.GlobalAveragePooling2D()(x)
    return k.Model(inp, k.layers.Dense(4, activation="softmax", name="classifier")(x), name="dw_cnn")


@pytest.fixture(scope="module")
def pruned():
    """(original model, data, PruneResult) for the Ethos-U test profile, every kernel but the output layer pruned."""
    model, data = dw_cnn(), projection_data(128, (8, 8, 4), 4, 32, 0)
    policies = plan_policy(model, npu_profile(), ScheduleOptions(), quantize="int8", min_params=0, min_share=0)
    return model, data, prune_and_finetune(model, data, policies, ScheduleOptions(), epochs=2, batch_size=16)


def test_the_depthwise_kernel_reaches_its_own_target_and_the_model_its_target(pruned):
    """dw at DEPTHWISE_SHARE of 0.8 on its own schedule, conv raised (policy.allocate_targets): each layer measured at
    its target, and the pruned weights 0.8 zeros overall."""
    model, _, result = pruned
    layers = {layer.name: layer for layer in result.layers}
    assert layers["dw"].pruned and layers["dw"].params == 3 * 3 * 16
    assert layers["dw"].target == pytest.approx(0.8 * DEPTHWISE_SHARE)
    assert layers["conv"].target == pytest.approx((0.8 * 720 - 0.8 * DEPTHWISE_SHARE * 144) / 576)
    for name in ("dw", "conv"):
        assert layers[name].achieved == pytest.approx(layers[name].target, abs=0.01)
    kernel = result.model.get_layer("dw").depthwise_kernel.numpy()
    assert np.mean(kernel == 0) == pytest.approx(0.8 * DEPTHWISE_SHARE, abs=0.01)
    assert result.overall_sparsity == pytest.approx(0.8, abs=0.01)
    assert np.count_nonzero(model.get_layer("dw").depthwise_kernel.numpy() == 0) == 0  # the caller's model untouched


def test_the_stripped_model_holds_plain_layers_and_saves_without_custom_objects(pruned, tmp_path):
    model, _, result = pruned
    k = keras()
    dw = result.model.get_layer("dw")
    assert type(dw) is k.layers.DepthwiseConv2D
    assert dw.get_config() == model.get_layer("dw").get_config()
    assert [type(x) for x in result.model.layers] == [type(x) for x in model.layers]
    path = tmp_path / "pruned.keras"
    result.model.save(path)
    loaded = k.models.load_model(path)  # no custom_objects
    assert type(loaded.get_layer("dw")) is k.layers.DepthwiseConv2D
    for a, b in zip(loaded.get_weights(), result.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_int8_conversion_keeps_every_pruned_zero(pruned):
    """Per-channel int8 (q = round(w * bn_scale / s), zero point 0): a zero stays zero, batch norm folded in."""
    _, data, result = pruned
    graph = load_graph(convert_keras(result.model, quantize="int8", representative=data.x_train))
    [op] = [op for op in graph.ops if op.opcode == "DEPTHWISE_CONV_2D"]
    weights = graph.tensors[op.inputs[1]]
    assert weights.dtype == "int8" and weights.quantization.per_channel
    assert set(weights.quantization.zero_points) == {0}
    values = graph.tensor_values(weights)                       # [1, 3, 3, 16]
    kernel = result.model.get_layer("dw").depthwise_kernel.numpy()  # [3, 3, 16, 1]
    float_zeros = kernel[..., 0] == 0
    assert np.all(values[0][float_zeros] == 0)
    assert np.mean(values == 0) >= np.mean(float_zeros)


def test_the_stand_in_clusters_with_tfmot_and_restores_plain(pruned):
    """cluster_weights on the stand-in (TFMOT's ClusterableLayer extension point; its registry lists no depthwise
    weights): at most 16 values with the zeros kept, and a plain DepthwiseConv2D after strip_clustering."""
    from edgesparse.pipeline.tf_env import import_tfmot

    _, data, result = pruned
    k, api = keras(), import_tfmot().clustering.keras
    before = result.model.get_layer("dw").depthwise_kernel.numpy()

    def wrap(layer):
        if layer.name != "dw":
            return layer.__class__.from_config(layer.get_config())
        return api.cluster_weights(depthwise_stand_in(layer), number_of_clusters=16, preserve_sparsity=True)

    clustered = k.models.clone_model(result.model, clone_function=wrap)
    for layer in clustered.layers:
        if layer.name != "cluster_dw" and layer.weights:
            layer.set_weights(result.model.get_layer(layer.name).get_weights())
    clustered.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    clustered.fit(data.x_train, data.y_train, epochs=1, batch_size=32, verbose=0)
    plain = restore_plain_layers(api.strip_clustering(clustered))
    after = plain.get_layer("dw").depthwise_kernel.numpy()
    assert type(plain.get_layer("dw")) is k.layers.DepthwiseConv2D
    assert np.all(after[before == 0] == 0)
    assert len(np.unique(after)) <= 16


def test_a_stand_in_is_only_made_for_plain_depthwise_layers():
    k = keras()
    with pytest.raises(ValueError, match="plain tf_keras depthwise"):
        depthwise_stand_in(k.layers.Conv2D(4, 3))

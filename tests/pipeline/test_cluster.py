"""Sparsity-preserving clustering (real TFMOT fine-tuning of a tiny pruned model): the pruned zeros stay zero,
the int8 file holds at most N values per channel, TFLM's LUT decoder then wins and decodes bitwise the same."""

from __future__ import annotations

import types

import numpy as np
import pytest
from support.models import projection_data

from edgesparse.errors import PruningError
from edgesparse.pipeline.prune import ScheduleOptions, check_clusters, cluster_and_finetune, plan_policy
from edgesparse.profiles.profile import load_profile
from edgesparse.runtime.verify import top1
from edgesparse.tflite.graph import load_graph

pytestmark = pytest.mark.tensorflow

CLUSTERS = 4
SPARSITY = 0.8


def keras():
    from edgesparse.pipeline.tf_env import import_tf

    return import_tf()[1]


def make_data(n=512, n_val=128, shape=(8, 8, 1), num_classes=4, seed=0):
    return projection_data(n, shape, num_classes, n_val, seed)


def magnitude_pruned_model(data, policies_for):
    """conv_small (dense: small), conv (1152 w), fc (256x64), classifier (output, dense); pruned kernels 80 % zero."""
    k = keras()
    k.utils.set_random_seed(3)
    model = k.Sequential([
        k.Input((8, 8, 1)),
        k.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_small"),
        k.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="conv"),
        k.layers.Flatten(name="flatten"),
        k.layers.Dense(64, activation="relu", name="fc"),
        k.layers.Dense(4, activation="softmax", name="classifier"),
    ], name="tiny")
    model.compile(k.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(data.x_train, data.y_train, epochs=10, batch_size=32, verbose=0)
    policies = policies_for(model)
    for policy in policies:
        if policy.prune:
            layer = model.get_layer(policy.name)
            kernel, bias = layer.get_weights()
            cut = np.quantile(np.abs(kernel), SPARSITY)
            layer.set_weights([np.where(np.abs(kernel) <= cut, 0.0, kernel).astype(kernel.dtype), bias])
    return model, policies


@pytest.fixture(scope="module")
def clustered():
    data = make_data()
    profile = load_profile("nrf52840")
    model, policies = magnitude_pruned_model(
        data, lambda m: plan_policy(m, profile, ScheduleOptions(final_sparsity=SPARSITY), quantize="int8"))
    original = [w.copy() for w in model.get_weights()]
    events = []
    result = cluster_and_finetune(model, data, CLUSTERS, policies=policies, epochs=2, batch_size=32,
                                  progress=lambda e, f: events.append((e, f)))
    return types.SimpleNamespace(data=data, profile=profile, model=model, policies=policies, original=original,
                                 result=result, events=events)


def pruned_names(policies):
    return [p.name for p in policies if p.prune]


def test_clusters_exactly_the_pruned_layers_and_keeps_their_zeros(clustered):
    r, model = clustered.result, clustered.model
    assert pruned_names(clustered.policies) == ["conv", "fc"]
    assert r.clustered_layers == ["conv", "fc"]
    for name in ("conv", "fc"):
        before, after = model.get_layer(name).get_weights()[0], r.model.get_layer(name).get_weights()[0]
        assert np.all(after[before == 0] == 0), name                  # every pruned zero is still zero
        assert len(np.unique(after)) <= CLUSTERS, name
        layer = {lay.name: lay for lay in r.layers}[name]
        assert layer.zeros_before == int(np.sum(before == 0)) >= int(SPARSITY * before.size) - 1
        assert layer.zeros_after == int(np.sum(after == 0)) >= layer.zeros_before
        assert layer.distinct_values == len(np.unique(after))
    for name in ("conv_small", "classifier"):                          # not pruned: not clustered
        assert len(np.unique(r.model.get_layer(name).get_weights()[0])) > 4 * CLUSTERS
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), clustered.original, strict=True))


def test_accuracies_are_measured_on_the_validation_split(clustered):
    r, data = clustered.result, clustered.data
    before = np.mean(top1(clustered.model.predict(data.x_val, verbose=0)) == data.y_val)
    after = np.mean(top1(r.model.predict(data.x_val, verbose=0)) == data.y_val)
    assert (r.accuracy_split, r.accuracy_before, r.accuracy_after) == ("validation", float(before), float(after))
    assert min(r.accuracy_before, r.accuracy_after) > 0.45             # trained, not chance (0.25)
    assert len(r.history["loss"]) == 2 and len(r.history["val_accuracy"]) == 2


def test_progress_events(clustered):
    kinds = [e for e, _ in clustered.events]
    begin = clustered.events[0][1]
    assert kinds[0] == "cluster_begin" and begin["clusters"] == CLUSTERS
    assert begin["steps_per_epoch"] == 16 and begin["clustered_layers"] == ["conv", "fc"]
    assert kinds.count("cluster_batch_end") == 32 and kinds.count("cluster_epoch_end") == 2
    last = [f for e, f in clustered.events if e == "cluster_epoch_end"][-1]
    assert last["epoch"] == 2 and last["val_accuracy"] is not None


def per_channel_distinct(model_bytes, min_elements=64):
    """{tensor name: most distinct int8 values in one output channel} for the int8 kernels of the file."""
    graph = load_graph(model_bytes)
    out = {}
    for t in graph.subgraphs[0].tensors:
        if not t.is_constant or t.dtype != "int8" or t.num_elements < min_elements:
            continue
        values = np.frombuffer(graph.data, np.int8, t.num_elements, t.buffer_offset).reshape(t.shape)
        axis = t.quantization.quantized_dimension if t.quantization and len(t.quantization.scales) > 1 else None
        slices = [values] if axis is None else list(np.moveaxis(values, axis, 0))
        out[t.name] = max(len(np.unique(s)) for s in slices)
    return out


@pytest.mark.slow
def test_int8_file_takes_lut_and_is_bitwise_the_same_in_tflm(clustered):
    pytest.importorskip("tflite_micro")
    from edgesparse.pipeline.convert import build_artifact
    from edgesparse.runtime.tflm_decode import random_inputs, verify_compressed
    from edgesparse.tflite.decode_compress import choose_compression

    r = clustered.result
    artifact = build_artifact(r.model, clustered.data, quantize="int8", profile=clustered.profile).artifact
    distinct = per_channel_distinct(artifact)
    kernels = {name: n for name, n in distinct.items() if "/conv/" in name or "/fc/" in name}
    assert len(kernels) == 2 and all(n <= CLUSTERS for n in kernels.values()), distinct
    assert any(n > CLUSTERS for name, n in distinct.items() if name not in kernels), distinct  # others are not

    plan = choose_compression(artifact, "auto")
    fc = [t for t in plan.tensors if t.shape == (64, 256)]
    assert [(t.method, t.lut_bits) for t in fc] == [("LUT", 2)], plan.tensors
    assert fc[0].lut_bytes < fc[0].pruning_bytes
    pruning_only = choose_compression(artifact, "prune")
    assert plan.file_bytes < pruning_only.file_bytes < len(artifact)
    proof = verify_compressed(artifact, plan.model, random_inputs(artifact, 4, seed=2), random_samples=8)
    assert proof.decoded_tensors == len(plan.compressed) >= 1


@pytest.mark.parametrize("bad", [0, 1, 2, 129, 256, 1000, -4, 4.0, "4", True, None])
def test_bad_cluster_counts_are_refused_before_anything_runs(bad):
    events = []
    with pytest.raises(PruningError, match="--cluster") as info:
        cluster_and_finetune(None, None, bad, policies=[], epochs=1, batch_size=8,
                             progress=lambda e, f: events.append(e))
    assert info.value.exit_code == 2 and events == []
    assert "Traceback" not in str(info.value)


def test_good_cluster_counts_pass():
    assert [check_clusters(n) for n in (3, 4, 16, 128, np.int64(8))] == [3, 4, 16, 128, 8]

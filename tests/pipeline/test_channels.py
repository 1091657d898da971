"""Channel groups and model surgery (prune.channels): real tf_keras and Keras 3 models, tiny and fast.

Every surgery test masks random channels of the prunable groups, shrinks, and checks the small
model computes what the masked large one does (within 1e-4) with fewer parameters.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgesparse.errors import PruningError, VerificationError
from edgesparse.pipeline.demos.digits import build_digits_model
from edgesparse.pipeline.demos.kws import build_ds_cnn
from edgesparse.pipeline.models import load_model
from edgesparse.pipeline.prune.channels import (
    CONSUME,
    PRODUCE,
    ChannelMember,
    apply_channel_masks,
    channel_masker,
    channel_scores,
    check_equivalent,
    find_channel_groups,
    select_channels,
    shrink_model,
)
from edgesparse.pipeline.tf_env import import_tf

pytestmark = pytest.mark.tensorflow

tf, tfk = import_tf()
L = tfk.layers


def _randomize(model, seed: int = 1) -> None:
    """Non-trivial weights everywhere (BN variance positive, beta and mean non-zero)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = layer.get_weights()
        if values:
            layer.set_weights([np.abs(rng.normal(1.0, 0.3, v.shape)).astype(v.dtype) if "variance" in w.name
                               else rng.normal(0, 0.4, v.shape).astype(v.dtype)
                               for w, v in zip(layer.weights, values)])


def _random_keep(groups, seed: int = 0) -> dict[int, np.ndarray]:
    rng = np.random.default_rng(seed)
    keep = {}
    for g in groups:
        mask = np.ones(g.channels, bool)
        if g.prunable:
            mask = rng.random(g.channels) < 0.5
            mask[rng.integers(g.channels)] = True
        keep[g.id] = mask
    return keep


def _copy(model):
    clone = tfk.models.clone_model(model)
    clone.set_weights(model.get_weights())
    return clone


def _surgery(model, groups, keep, n: int = 6):
    """Mask a copy, shrink it, prove equivalence and fewer parameters; returns (masked, small, max diff)."""
    masked = _copy(model)
    apply_channel_masks(masked, groups, keep)
    small = shrink_model(masked, groups, keep)
    x = np.random.default_rng(3).normal(size=(n, *model.input_shape[1:])).astype(np.float32)
    diff = check_equivalent(masked, small, x, atol=1e-4)
    assert diff <= 1e-4
    removed = sum(int((~k).sum()) for k in keep.values())
    if removed:
        assert small.count_params() < model.count_params()
        assert not np.allclose(model(x, training=False), masked(x, training=False), atol=1e-6)
    assert [layer.name for layer in small.layers] == [layer.name for layer in model.layers]
    for g in groups:
        for m in g.members:
            if m.role == PRODUCE and m.layer in g.producers:
                assert small.get_layer(m.layer).output_shape[-1] == int(keep[g.id].sum())
    return masked, small, diff


def _group_of(groups, layer: str, role: str = PRODUCE):
    found = [g for g in groups if any(m.layer == layer and m.role == role for m in g.members)]
    assert len(found) == 1, (layer, role, found)
    return found[0]


# ----------------------------------------------------------------------------- models

def _residual_model():
    i = tfk.Input((8, 8, 3), name="img")
    x = L.Conv2D(8, 3, padding="same", name="stem")(i)
    x = L.BatchNormalization(name="stem_bn")(x)
    x = L.ReLU(name="stem_relu")(x)
    y = L.Conv2D(6, 3, padding="same", activation="relu", name="b1_a")(x)
    y = L.Conv2D(8, 3, padding="same", name="b1_b")(y)
    y = L.BatchNormalization(name="b1_bn")(y)
    x = L.Add(name="b1_add")([x, y])
    x = L.Activation("relu", name="b1_relu")(x)
    y = L.Conv2D(10, 3, strides=2, padding="same", activation="relu", name="b2_a")(x)
    y = L.Conv2D(12, 3, padding="same", name="b2_b")(y)
    s = L.Conv2D(12, 1, strides=2, name="b2_proj")(x)
    x = L.Add(name="b2_add")([s, y])
    x = L.LeakyReLU(name="b2_relu")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return tfk.Model(i, L.Dense(4, activation="softmax", name="out")(x), name="residual")


def _concat_model():
    i = tfk.Input((8, 8, 3), name="img")
    a = L.Conv2D(4, 3, padding="same", activation="relu", name="a")(i)
    b = L.Conv2D(6, 1, activation="relu6", name="b")(i)
    c = L.Concatenate(name="cat")([a, b])
    c = L.DepthwiseConv2D(3, padding="same", name="dw")(c)
    c = L.BatchNormalization(name="dw_bn")(c)
    c = L.Activation("swish", name="dw_act")(c)
    x = L.Conv2D(5, 1, activation="elu", name="c")(c)
    x = L.MaxPooling2D(name="pool")(x)
    x = L.Concatenate(name="cat2")([x, L.MaxPooling2D(name="pool_b")(b)])
    x = L.GlobalMaxPooling2D(name="gmp")(x)
    return tfk.Model(i, L.Dense(3, name="out")(x), name="concat")


def _separable_model():
    i = tfk.Input((12, 6, 2), name="mfcc")
    x = L.Conv2D(8, (4, 2), strides=2, padding="same", use_bias=False, name="conv")(i)
    x = L.BatchNormalization(name="conv_bn")(x)
    x = L.ReLU(name="conv_relu")(x)
    for k in (1, 2):
        x = L.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"dw{k}")(x)
        x = L.BatchNormalization(name=f"dw{k}_bn")(x)
        x = L.ReLU(max_value=6.0, name=f"dw{k}_relu")(x)
        x = L.Conv2D(8, 1, use_bias=False, name=f"pw{k}")(x)
        x = L.BatchNormalization(name=f"pw{k}_bn", center=k == 1, scale=k == 2)(x)
        x = L.ReLU(name=f"pw{k}_relu")(x)
    x = L.SeparableConv2D(6, 3, depth_multiplier=2, padding="same", activation="tanh", name="sep")(x)
    x = L.Dropout(0.3, name="drop")(x)
    x = L.AveragePooling2D((3, 2), name="avg")(x)
    x = L.Flatten(name="flat")(x)
    return tfk.Model(i, L.Dense(4, name="out")(x), name="dscnn")


def _flatten_model():
    return tfk.Sequential([
        tfk.Input((6, 6, 2), name="img"),
        L.Conv2D(5, 3, padding="same", activation="relu", name="conv"),
        L.ZeroPadding2D(1, name="pad"),
        L.MaxPooling2D(2, name="pool"),
        L.Flatten(name="flat"),
        L.Dropout(0.1, name="drop"),
        L.Dense(7, activation="relu", name="fc"),
        L.Dense(3, activation="softmax", name="out"),
    ], name="flat")


# ----------------------------------------------------------------------------- groups

def test_residual_adds_tie_their_branches_into_one_group():
    model = _residual_model()
    _randomize(model)
    groups = find_channel_groups(model)
    res1 = _group_of(groups, "stem")
    assert res1 is _group_of(groups, "b1_b") and res1.prunable and res1.channels == 8
    assert {m.layer for m in res1.members if m.role == CONSUME} == {"b1_a", "b2_a", "b2_proj"}
    assert {"stem_bn", "b1_bn"} <= {m.layer for m in res1.members if m.role == PRODUCE}
    assert res1.producers == ("stem", "b1_b") and "b1_add" in res1.reason
    res2 = _group_of(groups, "b2_proj")
    assert res2 is _group_of(groups, "b2_b") and res2.prunable and _group_of(groups, "out", CONSUME) is res2
    assert _group_of(groups, "b1_a").channels == 6 and _group_of(groups, "b1_a").prunable
    _surgery(model, groups, _random_keep(groups))


def test_concatenate_offsets_channels_and_depthwise_follows_both_parts():
    model = _concat_model()
    _randomize(model)
    groups = find_channel_groups(model)
    ga, gb = _group_of(groups, "a"), _group_of(groups, "b")
    assert ga is not gb and ga.prunable and gb.prunable
    assert ChannelMember("dw", PRODUCE, 0, 10) in ga.members and ChannelMember("dw", PRODUCE, 4, 10) in gb.members
    assert ChannelMember("c", CONSUME, 4, 10) in gb.members and ChannelMember("dw_bn", PRODUCE, 4, 10) in gb.members
    # b is concatenated twice: after 'a' (offset 4 of 10) and after the pooled 'c' (offset 5 of 11)
    assert ChannelMember("out", CONSUME, 5, 11) in gb.members
    assert ChannelMember("out", CONSUME, 0, 11) in _group_of(groups, "c").members
    for seed in range(3):
        _surgery(model, groups, _random_keep(groups, seed))


def test_depthwise_separable_blocks_with_batchnorm_and_flatten():
    model = _separable_model()
    _randomize(model)
    groups = find_channel_groups(model)
    g = _group_of(groups, "conv")
    assert [m.layer for m in g.members if m.role == PRODUCE] == ["conv", "conv_bn", "dw1", "dw1_bn"]
    assert [m.layer for m in g.members if m.role == CONSUME] == ["pw1"] and g.prunable
    assert _group_of(groups, "pw2").members[-1] == ChannelMember("sep", CONSUME, 0, 8)
    sep = _group_of(groups, "sep")
    assert sep.prunable and ChannelMember("out", CONSUME, 0, 6, 2) in sep.members  # 6x3 pooled 3x2: 2 positions
    _surgery(model, groups, _random_keep(groups))
    _surgery(model, groups, _random_keep(groups, seed=5))


def test_flatten_ties_channels_to_the_dense_rows_interleaved_with_positions():
    model = _flatten_model()
    _randomize(model)
    groups = find_channel_groups(model)
    g = _group_of(groups, "conv")
    assert g.prunable and ChannelMember("fc", CONSUME, 0, 5, 16) in g.members  # (6+2)/2 = 4x4 positions
    keep = {gr.id: np.ones(gr.channels, bool) for gr in groups}
    keep[g.id] = np.array([True, False, True, False, True])
    _, small, _ = _surgery(model, groups, keep)
    rows = np.arange(16 * 5).reshape(16, 5)[:, [0, 2, 4]].ravel()
    np.testing.assert_array_equal(small.get_layer("fc").get_weights()[0], model.get_layer("fc").get_weights()[0][rows])


def test_keras3_model_translated_to_tf_keras(tmp_path):
    keras = pytest.importorskip("keras")
    i = keras.Input((10, 10, 3), name="img")
    x = keras.layers.Conv2D(8, 3, padding="same", name="c1")(i)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="r1")(x)
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = keras.layers.BatchNormalization(name="dw_bn")(y)
    x = keras.layers.Add(name="add")([x, y])
    z = keras.layers.Conv2D(4, 1, activation="relu", name="c2")(x)
    x = keras.layers.Concatenate(name="cat")([x, z])
    x = keras.layers.MaxPooling2D(name="mp")(x)
    x = keras.layers.SeparableConv2D(6, 3, activation="relu", name="sep")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = keras.layers.Dropout(0.2, name="do")(x)
    out = keras.layers.Dense(5, activation="softmax", name="out")(x)
    original = keras.Model(i, out, name="k3")
    path = tmp_path / "k3.keras"
    original.save(path)
    model = load_model(path).model
    _randomize(model)
    groups = find_channel_groups(model)
    g = _group_of(groups, "c1")
    assert g is _group_of(groups, "dw") and "add" in g.reason and g.prunable
    assert ChannelMember("sep", CONSUME, 0, 12) in g.members
    assert ChannelMember("sep", CONSUME, 8, 12) in _group_of(groups, "c2").members
    _surgery(model, groups, _random_keep(groups))


# ----------------------------------------------------------------------------- what cannot be pruned

def _awkward_model():
    i = tfk.Input((6, 6, 3), name="img")
    a = L.Conv2D(4, 3, padding="same", activation="relu", name="a")(i)
    lam = L.Lambda(lambda t: t * 2.0, name="lam")(a)
    b = L.Conv2D(6, 3, padding="same", activation="sigmoid", name="gate")(lam)
    c = L.Conv2D(6, 3, padding="same", groups=2, name="grouped")(b)
    d = L.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw2")(c)
    e = L.Conv2D(5, 1, activation="relu", name="e")(d)
    f = L.Conv2D(5, 1, name="f")(e)
    x = L.GlobalAveragePooling2D(name="gap")(f)
    return tfk.Model(i, L.Dense(2, name="out")(x), name="awkward")


def test_groups_the_surgery_cannot_handle_are_reported_with_their_reason():
    model = _awkward_model()
    _randomize(model)
    groups = find_channel_groups(model)
    assert not _group_of(groups, "a").prunable and "Lambda" in _group_of(groups, "a").reason
    assert "lam (Lambda)" in _group_of(groups, "gate", CONSUME).reason
    gate = _group_of(groups, "gate")
    assert not gate.prunable and "sigmoid(0) = 0.5" in gate.reason and "grouped convolution" in gate.reason
    assert "depth_multiplier 2" in _group_of(groups, "grouped").reason
    assert not _group_of(groups, "e", CONSUME).prunable
    assert _group_of(groups, "e").prunable and _group_of(groups, "f").prunable
    out = _group_of(groups, "out")
    assert not out.prunable and out.reason.startswith("output layer out")

    blocked = _group_of(groups, "a")
    keep = {blocked.id: np.array([True, False, True, True])}
    before = [w.copy() for w in model.get_weights()]
    with pytest.raises(PruningError, match="cannot be pruned") as info:
        apply_channel_masks(model, groups, keep)
    assert "Lambda" in info.value.fix
    with pytest.raises(PruningError, match="cannot be pruned"):
        shrink_model(model, groups, keep)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))  # not mangled
    _surgery(model, groups, _random_keep(groups))  # the prunable groups still shrink; the rest is kept


def test_skip_layers_and_the_output_layer_keep_their_channels():
    model = _residual_model()
    groups = find_channel_groups(model, skip_layers={"b1_a"})
    ga = _group_of(groups, "b1_a")
    assert not ga.prunable and "b1_a is in skip_layers" in ga.reason
    assert not _group_of(groups, "stem").prunable  # b1_a reads it: it keeps its input channels too
    assert _group_of(groups, "b2_a").prunable
    out = _group_of(groups, "out")
    assert not out.prunable and "output layer out" in out.reason and "softmax" not in out.reason
    keep = select_channels(model, groups, 0.5)
    assert keep[ga.id].all() and keep[out.id].all() and not keep[_group_of(groups, "b2_a").id].all()
    with pytest.raises(PruningError, match="skip-layers") as info:
        find_channel_groups(model, skip_layers={"b1_aa"})
    assert "b1_a" in info.value.fix


def test_bad_masks_are_refused():
    model = _flatten_model()
    groups = find_channel_groups(model)
    g = _group_of(groups, "conv")
    for bad, match in [({99: np.ones(3, bool)}, "does not have"), ({g.id: np.ones(4, bool)}, "one bool per channel"),
                       ({g.id: np.zeros(5, bool)}, "every channel")]:
        with pytest.raises(PruningError, match=match):
            shrink_model(model, groups, bad)


# ----------------------------------------------------------------------------- scores and the check

def test_scores_rank_a_silenced_filter_last_and_select_channels_removes_it_first():
    model = _residual_model()
    _randomize(model)
    groups = find_channel_groups(model)
    g = _group_of(groups, "b2_a")
    layer = model.get_layer("b2_a")
    kernel, bias = layer.get_weights()
    kernel[..., 7] *= 1e-3
    layer.set_weights([kernel, bias])
    scores = channel_scores(model, g)
    assert scores.shape == (10,) and int(np.argmin(scores)) == 7
    keep = select_channels(model, groups, 0.25)
    assert not keep[g.id][7] and int((~keep[g.id]).sum()) == round(0.25 * 10)


def test_check_equivalent_fails_when_the_small_model_computes_something_else():
    model = _flatten_model()
    _randomize(model)
    groups = find_channel_groups(model)
    keep = _random_keep(groups)
    small = shrink_model(model, groups, keep)  # not masked first: the removed channels were not zero
    x = np.random.default_rng(0).normal(size=(4, 6, 6, 2)).astype(np.float32)
    with pytest.raises(VerificationError, match="does not compute what the masked model does"):
        check_equivalent(model, small, x)


def test_channel_masker_rezeroes_what_a_training_step_revived():
    model = _residual_model()
    _randomize(model)
    groups = find_channel_groups(model)
    keep = _random_keep(groups, seed=2)
    masker = channel_masker(model, groups, keep)
    masker()
    model.compile(optimizer=tfk.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(4).normal(size=(16, 8, 8, 3)).astype(np.float32)
    model.fit(x, np.arange(16) % 4, epochs=1, batch_size=16, verbose=0)
    res2 = _group_of(groups, "b2_b")  # then LeakyReLU: the gradient reaches the silenced channels
    bias = model.get_layer("b2_b").get_weights()[1]
    assert np.any(bias[~keep[res2.id]] != 0)  # the step moved them
    masker()
    assert np.all(model.get_layer("b2_b").get_weights()[1][~keep[res2.id]] == 0)
    small = shrink_model(model, groups, keep)
    assert check_equivalent(model, small, x) <= 1e-4


# ----------------------------------------------------------------------------- the real models

def _print_groups(name, groups):
    print(f"\n{name}:")
    for g in groups:
        print(f"  group {g.id} [{g.channels}] {'prunable' if g.prunable else 'KEPT'}: {g.reason}")


@pytest.mark.parametrize("fraction", [0.25, 0.5])
@pytest.mark.parametrize("build", [build_digits_model, build_ds_cnn], ids=["digits", "kws"])
def test_demo_models_shrink_equivalently(build, fraction):
    model = build()
    _randomize(model)
    groups = find_channel_groups(model)
    _print_groups(model.name, groups)
    assert not groups[0].prunable and not groups[-1].prunable  # the data's channels, the output layer's
    assert all(g.prunable for g in groups[1:-1])
    keep = select_channels(model, groups, fraction)
    _, small, _ = _surgery(model, groups, keep)
    assert small.count_params() < model.count_params() * (1 - fraction / 2)


@pytest.mark.parametrize("fraction", [0.25, 0.5])
def test_mlperf_resnet8_shrinks_equivalently(mlperf_dir, fraction):
    model = load_model(mlperf_dir / "image_classification" / "pretrainedResnet.h5").model
    groups = find_channel_groups(model)
    _print_groups("resnet8", groups)
    assert [(g.channels, g.prunable) for g in groups] == [
        (3, False), (16, True), (16, True), (32, True), (32, True), (64, True), (64, True), (10, False)]
    assert _group_of(groups, "conv2d") is _group_of(groups, "conv2d_2")      # first residual block
    assert _group_of(groups, "conv2d_4") is _group_of(groups, "conv2d_5")    # projection shortcut
    keep = select_channels(model, groups, fraction)
    _, small, _ = _surgery(model, groups, keep, n=8)
    assert small.count_params() < model.count_params() * (1 - fraction / 2)

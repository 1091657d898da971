"""plan_policy(optimize=size|speed|balanced): LiteRT encodings the estimator predicts slower than dense are not
chosen unless the smallest file is asked for; TFLite Micro plans are the same for every mode."""

from __future__ import annotations

import pytest

from edgesparse.errors import PruningError
from edgesparse.estimate.speed import layer_speed
from edgesparse.pipeline.prune import ScheduleOptions, plan_policy
from edgesparse.pipeline.prune.policy import DEPTHWISE_SHARE, MAX_ALLOCATED
from edgesparse.profiles.profile import load_profile


def keras():
    from edgesparse.pipeline.tf_env import import_tf

    return import_tf()[1]


def mlp():
    """hidden (256 -> 128: 1x16-able int8 FC), head (output layer)."""
    k = keras()
    k.utils.set_random_seed(0)
    return k.Sequential([k.Input((256,)), k.layers.Dense(128, activation="relu", name="hidden"),
                         k.layers.Dense(64, activation="relu", name="second"), k.layers.Dense(4, name="head")])


def cnn():
    k = keras()
    k.utils.set_random_seed(0)
    inp = k.Input((8, 8, 4))
    x = k.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv")(inp)
    x = k.layers.Flatten()(x)
    x = k.layers.Dense(64, activation="relu", name="fc")(x)
    return k.Model(inp, k.layers.Dense(4, name="head")(x))


def plan(model, profile, optimize, quantize="int8"):
    return {p.name: p for p in plan_policy(model, load_profile(profile), ScheduleOptions(), quantize=quantize,
                                           optimize=optimize, min_params=0, min_share=0)}


def test_host_int8_block_fc_is_not_chosen_unless_size_is_asked():
    """On x86 the 1x16 int8 sparse FC runs LiteRT's builtin kernel (timed on the host: slower than XNNPACK's
    dense FC), and an int8 FC fed by DENSIFY is declined by XNNPACK: balanced keeps that layer dense."""
    size = plan(mlp(), "host", "size")
    assert size["hidden"].pattern == "block 1x16" and size["hidden"].prune
    assert "optimize" not in size["hidden"].reason
    predicted = layer_speed(load_profile("host"), kind="fc", macs=256 * 128, sparsity=0.8, dtype="int8",
                            encoding="block")
    assert predicted["verdict"] == "slower" and predicted["priced_by"] == "fc_int8_builtin"
    balanced = plan(mlp(), "host", "balanced")
    hidden = balanced["hidden"]
    assert not hidden.prune and hidden.pattern == "dense" and hidden.target_sparsity == 0.0
    assert "--optimize balanced" in hidden.reason and "slower than dense on host" in hidden.reason
    assert "--optimize size" in hidden.reason
    speed = plan(mlp(), "host", "speed")
    assert not speed["hidden"].prune and "--optimize speed" in speed["hidden"].reason


def test_rpi4_int8_block_fc_is_kept_and_its_reason_says_it_is_a_transfer():
    """rpi4 has no coefficient for the NEON 1x16 kernel: it is priced at the dense int8 rate, predicted faster,
    and the reason says that rests on a transfer."""
    for optimize in ("balanced", "speed"):
        hidden = plan(mlp(), "rpi4", optimize)["hidden"]
        assert hidden.prune and hidden.pattern == "block 1x16"
        assert f"--optimize {optimize}" in hidden.reason and "faster than dense on rpi4" in hidden.reason
        assert "transferred" in hidden.reason and "a transfer" in hidden.reason


def test_speed_prunes_only_where_faster_balanced_where_not_slower():
    """A float conv is stored with DENSIFY: the dense kernel runs every MAC (the same speed). balanced prunes it
    for file size; speed leaves it dense, saying why."""
    balanced = plan(cnn(), "rpi4", "balanced", quantize="none")
    assert balanced["conv"].prune and balanced["conv"].pattern == "element-wise"
    assert "as fast as dense on rpi4" in balanced["conv"].reason
    speed = plan(cnn(), "rpi4", "speed", quantize="none")
    assert not speed["conv"].prune and "prunes only where the estimator predicts a speed-up" in speed["conv"].reason
    assert speed["fc"].prune and speed["fc"].pattern == "block 1x4"
    size = plan(cnn(), "rpi4", "size", quantize="none")
    assert size["conv"].prune and size["fc"].pattern == "block 1x4"


def test_tflm_plans_are_identical_for_every_mode():
    plans = [plan(cnn(), "nrf52840", optimize) for optimize in ("size", "speed", "balanced")]
    assert plans[0] == plans[1] == plans[2]
    assert plans[0]["conv"].prune and "TFLite Micro" in plans[0]["conv"].reason


def test_unknown_optimize_is_rejected():
    with pytest.raises(PruningError, match="optimization goal") as err:
        plan(mlp(), "host", "fastest")
    assert "size | speed | balanced" in str(err.value)


def test_ethos_u_policy_prunes_every_kernel_vela_encodes_and_says_why_the_others_stay_dense():
    """Conv and Dense kernels element-wise (Vela's encoder shrinks with any zero pattern); an Embedding (GATHER on
    the CPU, plain int8) dense; a depthwise kernel pruned too (Vela encodes it; TFMOT's registry lists no weights
    for it, so edgesparse's PrunableLayer stand-in is pruned)."""
    from support.npu import npu_profile

    k = keras()
    k.utils.set_random_seed(0)
    inp = k.Input((12,), dtype="int32")
    x = k.layers.Embedding(500, 32, name="embed")(inp)
    x = k.layers.Reshape((12, 1, 32))(x)
    x = k.layers.Conv2D(64, (3, 1), name="conv")(x)
    x = k.layers.DepthwiseConv2D((3, 1), name="dw")(x)
    x = k.layers.Flatten()(x)
    x = k.layers.Dense(64, name="fc")(x)
    model = k.Model(inp, k.layers.Dense(4, name="head")(x))
    policies = {p.name: p for p in plan_policy(model, npu_profile(), ScheduleOptions(), quantize="int8",
                                                min_params=0, min_share=0)}
    for name in ("conv", "dw", "fc"):
        assert policies[name].prune and policies[name].pattern == "element-wise"
        assert "Vela" in policies[name].reason and "--cluster" in policies[name].reason
    assert policies["dw"].weights == (model.get_layer("dw").depthwise_kernel.name,)
    assert not policies["embed"].prune and "Vela does not encode Embedding" in policies["embed"].reason
    assert not policies["head"].prune and "--prune-output-layer" in policies["head"].reason


def dw_cnn(channels=64):
    """conv -> dw (3x3 depthwise, 9 x `channels` weights) -> pointwise -> head."""
    k = keras()
    k.utils.set_random_seed(0)
    inp = k.Input((8, 8, 4))
    x = k.layers.Conv2D(channels, 1, name="conv")(inp)
    x = k.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = k.layers.Conv2D(channels, 1, name="pw")(x)
    x = k.layers.GlobalAveragePooling2D()(x)
    return k.Model(inp, k.layers.Dense(4, name="head")(x))


@pytest.mark.parametrize(("profile", "optimize", "prunes", "says"), [
    ("npu", "balanced", True, "Vela"),
    ("nrf52840", "balanced", False, "on TFLite Micro a depthwise kernel's zeros pay little"),
    ("nrf52840", "speed", False, "Ethos-U profiles prune it"),
    ("rpi4", "balanced", False, "LiteRT has no sparse depthwise kernel"),
    ("rpi4", "speed", False, "--optimize size"),
    ("rpi4", "size", True, "--optimize size prunes it for file size"),
    (None, "balanced", False, "no device profile"),
])
def test_which_profiles_prune_depthwise_kernels(profile, optimize, prunes, says):
    """Ethos-U (Vela encodes DEPTHWISE_CONV_2D weights) prunes them; TFLite Micro keeps them dense (DECODE saves
    little there, measured, at an accuracy cost); LiteRT (DENSIFY, no sparse depthwise kernel) only for file size or
    a predicted speed-up; no profile never."""
    from support.npu import npu_profile

    prof = npu_profile() if profile == "npu" else load_profile(profile) if profile else None
    dw = {p.name: p for p in plan_policy(dw_cnn(), prof, ScheduleOptions(), quantize="int8", optimize=optimize,
                                         min_params=0, min_share=0)}["dw"]
    assert (dw.prune, dw.pattern) == ((True, "element-wise") if prunes else (False, "dense"))
    assert dw.target_sparsity == pytest.approx(0.8 * DEPTHWISE_SHARE if prunes else 0.0) and dw.params == 9 * 64
    assert says in dw.reason


@pytest.mark.parametrize("profile", ["npu", "rpi4"])
def test_a_pruned_depthwise_kernel_gets_a_share_of_the_target_and_the_rest_carry_it(profile):
    """dw at DEPTHWISE_SHARE x 0.8; conv and pw raised so the pruned weights are still 0.8 zeros (the encoded size
    follows the model's zeros); the reasons give both targets."""
    from support.npu import npu_profile

    prof = npu_profile() if profile == "npu" else load_profile(profile)
    policies = {p.name: p for p in plan_policy(dw_cnn(), prof, ScheduleOptions(), quantize="int8", optimize="size",
                                               min_params=0, min_share=0)}
    pruned = [p for p in policies.values() if p.prune]
    assert {p.name for p in pruned} == {"conv", "dw", "pw"}
    mean = sum(p.target_sparsity * p.params for p in pruned) / sum(p.params for p in pruned)
    assert mean == pytest.approx(0.8)
    dw, raised = policies["dw"].target_sparsity, policies["pw"].target_sparsity
    assert dw == pytest.approx(0.8 * DEPTHWISE_SHARE)
    assert policies["conv"].target_sparsity == raised == pytest.approx((0.8 * 4928 - dw * 576) / 4352)
    assert f"target {dw:.3g}" in policies["dw"].reason and f"target {raised:.3g}" in policies["pw"].reason


def test_allocation_leaves_targets_alone_where_it_cannot_move_zeros():
    """Only depthwise kernels pruned, 2:4 (every layer exactly 2 of 4), or a rest that would pass MAX_ALLOCATED:
    every pruned layer keeps the model's target."""
    from support.npu import npu_profile

    def targets(model, schedule=None, **kw):
        schedule = schedule or ScheduleOptions()
        return {p.name: p.target_sparsity for p in plan_policy(model, npu_profile(), schedule, quantize="int8",
                                                                min_params=0, min_share=0, **kw) if p.prune}

    assert targets(dw_cnn(), skip_layers=["conv", "pw"]) == {"dw": 0.8}
    k = keras()
    inp = k.Input((8, 8, 64))
    x = k.layers.DepthwiseConv2D(3, padding="same", name="dw")(inp)          # 576 weights
    x = k.layers.Conv2D(8, 1, name="pw")(x)                                  # 512 weights
    x = k.layers.GlobalAveragePooling2D()(x)
    small_rest = k.Model(inp, k.layers.Dense(4, name="head")(x))
    assert (0.8 * 1088 - 0.8 * DEPTHWISE_SHARE * 576) / 512 >= MAX_ALLOCATED
    assert targets(small_rest) == {"dw": 0.8, "pw": 0.8}
    assert set(targets(dw_cnn(), ScheduleOptions(structured=(2, 4), final_sparsity=0.5)).values()) <= {0.5}


def test_depthwise_kernels_keep_the_min_params_and_share_rules():
    """576 weights: under the default --min-params (1000) on every profile, and under 1 % of a model whose other
    kernels are large once --min-params is lowered."""
    from support.npu import npu_profile

    for prof in (npu_profile(),):
        dw = {p.name: p for p in plan_policy(dw_cnn(), prof, ScheduleOptions(), quantize="int8")}["dw"]
        assert not dw.prune and "--min-params" in dw.reason
    k = keras()
    inp = k.Input((8, 8, 4))
    x = k.layers.Conv2D(64, 1, name="conv")(inp)
    x = k.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = k.layers.Flatten()(x)
    x = k.layers.Dense(32, name="fc")(x)                    # 4,096 x 32 weights: dw is 0.4 % of the model
    model = k.Model(inp, k.layers.Dense(4, name="head")(x))
    dw = {p.name: p for p in plan_policy(model, npu_profile(), ScheduleOptions(), quantize="int8",
                                         min_params=0)}["dw"]
    assert not dw.prune and "under 1%" in dw.reason

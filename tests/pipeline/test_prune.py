"""Pruning: real TFMOT fine-tuning of tiny models (no mocks), policy, schedule validation."""

from __future__ import annotations

import importlib.util
import re
import types

import numpy as np
import pytest
from support.models import projection_data

from edgesparse.errors import DataError, MissingDependency, PruningError
from edgesparse.pipeline.prune import (
    LayerPolicy,
    ScheduleOptions,
    derive_end_step,
    measure_sparsity,
    plan_policy,
    prune_and_finetune,
    resolve_schedule,
)
from edgesparse.profiles.profile import load_profile

HAVE_TENSORBOARD = importlib.util.find_spec("tensorboard") is not None


def keras():
    from edgesparse.pipeline.tf_env import import_tf

    return import_tf()[1]


def tiny_cnn(num_classes=4):
    """conv_small (288 w, small), conv (2304), dw (depthwise), fc (512x64, 1x4-able), classifier."""
    k = keras()
    k.utils.set_random_seed(1)
    inp = k.Input((8, 8, 4))
    x = k.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_small")(inp)
    x = k.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv")(x)
    x = k.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = k.layers.MaxPooling2D(2)(x)
    x = k.layers.Flatten(name="flatten")(x)
    x = k.layers.Dense(64, activation="relu", name="fc")(x)
    out = k.layers.Dense(num_classes, activation="softmax", name="classifier")(x)
    return k.Model(inp, out, name="tiny_cnn")


def make_data(n=128, shape=(8, 8, 4), num_classes=4, n_val=32, seed=0):
    return projection_data(n, shape, num_classes, n_val, seed)


def by_name(items):
    return {item.name: item for item in items}


@pytest.fixture(scope="module")
def rpi4():
    return load_profile("rpi4")


@pytest.fixture(scope="module")
def nrf():
    return load_profile("nrf52840")


@pytest.fixture(scope="module")
def litert_dense_profile(rpi4, tmp_path_factory):
    """rpi4 with no block shapes: a LiteRT device that reads only unstructured sparsity."""
    text = re.sub(r"(?m)^block_sparsity(_int8)?\s*=.*$", r"block_sparsity\1 = []",
                  rpi4.path.read_text())
    text = re.sub(r'(?m)^name = "rpi4"', 'name = "rpi4_noblock"', text)
    path = tmp_path_factory.mktemp("profiles") / "rpi4_noblock.toml"
    path.write_text(text)
    profile = load_profile(str(path))
    assert profile.runtime == "litert" and profile.sparse_weights and profile.block_sparsity is None
    return profile


def block_1x4_holds(kernel):
    """Keras Dense kernel [in, out]; TFLite 1x4 = 4 consecutive inputs of one output."""
    d_in, d_out = kernel.shape
    blocks = (kernel == 0).reshape(d_in // 4, 4, d_out).sum(axis=1)
    return bool(np.isin(blocks, (0, 4)).all()), float((blocks == 4).mean())


def two_of_four_holds(kernel):
    """Every group of 4 consecutive input channels has >= 2 zeros."""
    if kernel.ndim == 2:  # [in, out] -> [out, in]
        rows = kernel.T
    else:  # [h, w, cin, cout] -> [cout*h*w, cin]
        rows = np.transpose(kernel, (3, 0, 1, 2)).reshape(-1, kernel.shape[2])
    groups = (rows == 0).reshape(rows.shape[0], -1, 4).sum(axis=2)
    return bool((groups >= 2).all())


# --------------------------------------------------------------------------- schedule


def test_end_step_derivation_leaves_the_last_quarter_at_final_sparsity():
    r = resolve_schedule(ScheduleOptions(), num_train=60000, batch_size=128, epochs=10)
    assert (r.steps_per_epoch, r.total_steps) == (469, 4690)
    assert r.end_step == derive_end_step(4690, 0, 100) == 3500  # floor(0.75*4690/100)*100
    assert r.frequency == 100 and r.mask_updates == 35
    assert r.sparsity_at(r.end_step) == pytest.approx(0.8)
    r = resolve_schedule(ScheduleOptions(begin_step=1000), num_train=60000, batch_size=128,
                         epochs=10)
    assert r.end_step == 1000 + 2700  # floor(0.75*3690) = 2767 -> multiple of 100


def test_frequency_is_capped_for_small_data_sets():
    r = resolve_schedule(ScheduleOptions(), num_train=200, batch_size=16, epochs=3)
    assert r.total_steps == 39
    assert r.frequency == 2 and r.end_step == 28 and r.mask_updates == 14
    assert any("frequency lowered" in n for n in r.notes)
    r = resolve_schedule(ScheduleOptions(auto_frequency=False, frequency=5), num_train=200,
                         batch_size=16, epochs=3)
    assert r.frequency == 5 and r.end_step == 25


def test_polynomial_schedule_matches_tfmot_formula():
    r = resolve_schedule(ScheduleOptions(initial_sparsity=0.2, final_sparsity=0.6, power=2,
                                         begin_step=10, end_step=110, frequency=10,
                                         auto_frequency=False),
                         num_train=1000, batch_size=10, epochs=2)
    tf_schedule = r.to_tfmot()
    for step in (10, 20, 60, 110, 150):
        should, sparsity = tf_schedule(step)
        assert float(sparsity) == pytest.approx(r.sparsity_at(step), abs=1e-6)
        assert bool(should) == r.is_update_step(step)


@pytest.mark.parametrize("kwargs, fragment", [
    (dict(final_sparsity=1.0), "Sparsity out of range"),
    (dict(final_sparsity=-0.1), "[0, 1)"),
    (dict(initial_sparsity=0.9, final_sparsity=0.5), "lower the sparsity"),
    (dict(begin_step=100, end_step=100), "begin_step must come before end_step"),
    (dict(kind="polynomal"), "Did you mean 'polynomial'"),
    (dict(frequency=0), "frequency"),
    (dict(structured=(2, 4)), "final_sparsity=0.5"),
    (dict(structured=(2, 4), final_sparsity=0.5, block_size=(1, 4)), "block"),
    (dict(structured=(2, 4), final_sparsity=0.5, end_step=50), "step 1"),
    (dict(final_sparsity=0.0), "nothing would be pruned"),
    (dict(kind="constant", initial_sparsity=0.2), "only applies to PolynomialDecay"),
    (dict(structured=(4, 2), final_sparsity=0.5), "fewer zeros"),
    (dict(block_size=(0, 4)), "TFLite [out, in]"),
])
def test_bad_options_are_rejected_with_a_clear_message(kwargs, fragment):
    with pytest.raises(PruningError) as err:
        ScheduleOptions(**kwargs)
    assert fragment in str(err.value)
    assert "ScheduleOptions." in str(err.value)


def test_end_step_beyond_training_and_misaligned_end_step():
    with pytest.raises(PruningError, match="never be reached") as err:
        resolve_schedule(ScheduleOptions(end_step=5000), num_train=100, batch_size=10, epochs=2)
    assert "end_step <= 20" in str(err.value) and "derived: 15" in str(err.value)
    with pytest.raises(PruningError, match="last mask update") as err:
        resolve_schedule(ScheduleOptions(end_step=150, frequency=100, auto_frequency=False),
                         num_train=1000, batch_size=10, epochs=2)
    assert "Use end_step=100" in str(err.value)
    with pytest.raises(PruningError, match="begin after training ends"):
        resolve_schedule(ScheduleOptions(begin_step=20), num_train=100, batch_size=10, epochs=2)
    with pytest.raises(PruningError, match="Too few training steps"):
        resolve_schedule(ScheduleOptions(), num_train=4, batch_size=8, epochs=1)


# --------------------------------------------------------------------------- policy


def test_policy_block_for_dense_element_wise_for_conv_under_litert_blocks(rpi4):
    plan = by_name(plan_policy(tiny_cnn(), rpi4, ScheduleOptions()))
    assert set(plan) == {"conv_small", "conv", "dw", "fc", "classifier"}
    fc = plan["fc"]
    assert (fc.prune, fc.pattern, fc.block_size, fc.target_sparsity) == (True, "block 1x4", (4, 1), 0.8)
    assert "FULLY_CONNECTED" in fc.reason and "block_size=(4, 1)" in fc.reason
    assert (plan["conv"].pattern, plan["conv"].block_size) == ("element-wise", (1, 1))
    assert "2-D" in plan["conv"].reason
    assert plan["conv_small"].pattern == "dense" and "too small" in plan["conv_small"].reason
    assert plan["dw"].pattern == "dense" and "too small" in plan["dw"].reason  # 288 weights: the depthwise rules
    # per profile are in test_optimize_policy.py
    assert plan["classifier"].pattern == "dense" and plan["classifier"].output_layer
    assert "prune_output_layer=True" in plan["classifier"].reason
    assert all(p.reason for p in plan.values())


def test_policy_element_wise_everywhere_without_block_sparsity(litert_dense_profile, nrf):
    plan = by_name(plan_policy(tiny_cnn(), litert_dense_profile, ScheduleOptions(),
                               prune_output_layer=True, min_params=0, min_share=0))
    assert {n: p.pattern for n, p in plan.items()} == {
        "conv_small": "element-wise", "conv": "element-wise", "dw": "dense",
        "fc": "element-wise", "classifier": "element-wise"}
    plan = by_name(plan_policy(tiny_cnn(), nrf, ScheduleOptions()))
    assert plan["fc"].pattern == "element-wise" and plan["conv"].pattern == "element-wise"
    assert "TFLite Micro" in plan["fc"].reason and "DECODE" in plan["fc"].reason


def test_small_layer_threshold_and_skip_layers(rpi4):
    model = tiny_cnn()
    plan = by_name(plan_policy(model, rpi4, ScheduleOptions(), min_params=3000))
    assert plan["conv"].pattern == "dense" and "3000" in plan["conv"].reason
    plan = by_name(plan_policy(model, rpi4, ScheduleOptions(), skip_layers={"fc", "flatten"}))
    assert plan["fc"].pattern == "dense" and "skip_layers" in plan["fc"].reason
    assert plan["conv"].prune


def test_unknown_skip_layer_lists_the_real_names(rpi4):
    with pytest.raises(PruningError) as err:
        plan_policy(tiny_cnn(), rpi4, ScheduleOptions(), skip_layers={"fc1"})
    message = str(err.value)
    assert "'fc1'" in message and "conv, dw, fc, classifier" in message
    assert "Did you mean 'fc1' -> 'fc'" in message


def test_int8_builds_use_the_int8_block_shape(rpi4):
    plan = by_name(plan_policy(tiny_cnn(), rpi4, ScheduleOptions(), quantize="int8"))
    assert (plan["fc"].pattern, plan["fc"].block_size) == ("block 1x16", (16, 1))
    assert "int8" in plan["fc"].reason
    plan = by_name(plan_policy(tiny_cnn(), rpi4, ScheduleOptions(), quantize="float16"))
    assert plan["fc"].pattern == "block 1x4"


def test_block_size_override_and_indivisible_dense(rpi4):
    k = keras()
    model = k.Sequential([k.layers.Dense(64, input_shape=(30,), name="odd"),  # in=30
                          k.layers.Dense(48, name="even"), k.layers.Dense(3, name="head")])
    plan = by_name(plan_policy(model, rpi4, ScheduleOptions(block_size=(1, 16)),
                               min_params=0, min_share=0))
    assert plan["odd"].pattern == "element-wise" and "does not divide" in plan["odd"].reason
    assert plan["even"].pattern == "block 1x16" and plan["even"].block_size == (16, 1)


def test_a_single_row_of_blocks_is_pruned_element_wise(rpi4):
    """TFMOT's block pruning squeezes a kernel that is one block tall or wide to rank 1 and fails mid-training
    ("Input tensor must be rank 2"), so such a kernel is planned element-wise and fine-tunes."""
    k = keras()
    k.utils.set_random_seed(0)
    model = k.Sequential([k.Input((16,)), k.layers.Dense(64, activation="relu", name="hidden"),
                          k.layers.Dense(64, activation="relu", name="wide"), k.layers.Dense(3, name="head")])
    schedule = ScheduleOptions(final_sparsity=0.5)
    plan = by_name(plan_policy(model, rpi4, schedule, quantize="int8", min_params=0, min_share=0))
    assert plan["hidden"].pattern == "element-wise" and "single row of 1x16 blocks" in plan["hidden"].reason
    assert plan["wide"].pattern == "block 1x16"
    rng = np.random.default_rng(0)
    data = types.SimpleNamespace(x_train=rng.normal(size=(64, 16)).astype("float32"), y_train=np.arange(64) % 3,
                                 x_val=None, y_val=None, num_classes=3, source="synthetic", labels=None)
    result = prune_and_finetune(model, data, list(plan.values()), schedule, epochs=2, batch_size=16)
    assert by_name(result.layers)["hidden"].achieved == pytest.approx(0.5, abs=0.02)


# --------------------------------------------------------------------------- fine-tuning


@pytest.fixture(scope="module")
def polynomial_run(rpi4, tmp_path_factory):
    """One real fine-tune shared by several tests: rpi4 plan, PolynomialDecay to 75%."""
    model = tiny_cnn()
    before = [w.copy() for w in model.get_weights()]
    schedule = ScheduleOptions(final_sparsity=0.75)
    plan = plan_policy(model, rpi4, schedule)
    events = []
    tb = tmp_path_factory.mktemp("tb") if HAVE_TENSORBOARD else None
    result = prune_and_finetune(model, make_data(), plan, schedule, epochs=3, batch_size=16,
                                tensorboard_dir=tb, progress=lambda e, f: events.append((e, f)))
    return types.SimpleNamespace(model=model, before=before, plan=plan, result=result,
                                 events=events, tb=tb)


def test_polynomial_reaches_target_and_block_structure_holds(polynomial_run):
    result = polynomial_run.result
    layers = by_name(result.layers)
    for name in ("fc", "conv"):
        assert layers[name].pruned
        assert abs(layers[name].achieved - 0.75) <= 0.01, layers[name]
    assert not layers["classifier"].pruned and layers["classifier"].achieved < 0.01
    holds, zero_blocks = block_1x4_holds(result.model.get_layer("fc").get_weights()[0])
    assert holds and zero_blocks == pytest.approx(0.75, abs=0.01)
    pruned = [ly for ly in result.layers if ly.pruned]
    expected = sum(ly.zeros for ly in pruned) / sum(ly.params for ly in pruned)
    assert result.overall_sparsity == pytest.approx(expected)
    assert result.end_step == result.schedule.end_step == 18  # 24 steps, ramp 18, freq 1
    assert not any("prune_low_magnitude" in ly.name for ly in result.model.layers)


def test_progress_events_history_and_caller_model_untouched(polynomial_run):
    events, result = polynomial_run.events, polynomial_run.result
    kinds = [e for e, _ in events]
    assert kinds[0] == "train_begin" and events[0][1]["steps_per_epoch"] == 8
    assert kinds.count("batch_end") == 24 and kinds.count("epoch_end") == 3
    batch = [f["sparsity"] for e, f in events if e == "batch_end"]
    assert batch == sorted(batch) and batch[0] < 0.2 and batch[-1] == pytest.approx(0.75, abs=0.01)
    last_epoch = [f for e, f in events if e == "epoch_end"][-1]
    assert last_epoch["val_accuracy"] is not None and last_epoch["epoch"] == 3
    assert set(result.history) >= {"loss", "accuracy", "val_accuracy", "sparsity"}
    for w, b in zip(polynomial_run.model.get_weights(), polynomial_run.before):
        np.testing.assert_array_equal(w, b)


def test_tensorboard_dir_gets_event_files(polynomial_run, rpi4, tmp_path):
    if not HAVE_TENSORBOARD:  # the build extra should install it; say so clearly if it did not
        model = tiny_cnn()
        with pytest.raises(MissingDependency, match="pip install tensorboard"):
            prune_and_finetune(model, make_data(), plan_policy(model, rpi4, ScheduleOptions()),
                               ScheduleOptions(), epochs=1, batch_size=16, tensorboard_dir=tmp_path)
        return
    files = list(polynomial_run.tb.rglob("events.out.tfevents*"))
    assert files, "PruningSummaries wrote no event file"
    assert any("metrics" in f.parts for f in files)  # per-layer mask sparsity / threshold


def test_constant_schedule_reaches_target_and_is_deterministic(nrf):
    k = keras()
    k.utils.set_random_seed(3)
    model = k.Sequential([k.layers.Dense(64, activation="relu", input_shape=(32,), name="h1"),
                          k.layers.Dense(32, activation="relu", name="h2"),
                          k.layers.Dense(3, name="logits")], name="mlp")
    schedule = ScheduleOptions(kind="constant", final_sparsity=0.6)
    plan = plan_policy(model, nrf, schedule, min_params=0, min_share=0)
    data = make_data(n=96, shape=(32,), num_classes=3, n_val=0)
    runs = [prune_and_finetune(model, data, plan, schedule, epochs=2, batch_size=16, seed=7)
            for _ in range(2)]
    layers = by_name(runs[0].layers)
    assert abs(layers["h1"].achieved - 0.6) <= 0.01 and abs(layers["h2"].achieved - 0.6) <= 0.01
    assert layers["h1"].pattern == "element-wise"
    for a, b in zip(runs[0].model.get_weights(), runs[1].model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert "val_accuracy" not in runs[0].history


def test_two_of_four_structure_holds(rpi4):
    schedule = ScheduleOptions(structured=(2, 4), final_sparsity=0.5)
    plan = by_name(plan_policy(tiny_cnn(), rpi4, schedule, min_params=0, min_share=0,
                               prune_output_layer=True))
    assert {n: p.pattern for n, p in plan.items() if p.prune} == {
        "conv_small": "2:4", "conv": "2:4", "fc": "2:4", "classifier": "2:4"}
    result = prune_and_finetune(tiny_cnn(), make_data(), list(plan.values()), schedule, epochs=1,
                                batch_size=32)
    for name in ("conv_small", "conv", "fc", "classifier"):
        kernel = result.model.get_layer(name).get_weights()[0]
        assert two_of_four_holds(kernel), name
        assert by_name(result.layers)[name].achieved == pytest.approx(0.5, abs=0.01)


def test_nested_model_is_left_dense_and_training_still_works(rpi4):
    k = keras()
    inner = k.Sequential([k.layers.Dense(64, activation="relu", input_shape=(32,))], name="inner")
    inp = k.Input((32,))
    x = k.layers.Dense(64, activation="relu", name="pre")(inp)
    x = inner(k.layers.Dense(32, name="squeeze")(x))
    out = k.layers.Dense(3, name="head")(x)
    model = k.Model(inp, out)
    schedule = ScheduleOptions(final_sparsity=0.5)
    plan = by_name(plan_policy(model, rpi4, schedule, min_params=0, min_share=0))
    assert plan["inner"].pattern == "dense" and "nested model" in plan["inner"].reason
    result = prune_and_finetune(model, make_data(n=64, shape=(32,), num_classes=3, n_val=0),
                                list(plan.values()), schedule, epochs=2, batch_size=16)
    assert by_name(result.layers)["pre"].achieved == pytest.approx(0.5, abs=0.01)


def test_mlperf_resnet8_prunes_for_a_couple_of_steps(mlperf_dir, rpi4):
    k = keras()
    model = k.models.load_model(mlperf_dir / "image_classification" / "pretrainedResnet.h5",
                                compile=False)
    schedule = ScheduleOptions(final_sparsity=0.5)
    plan = plan_policy(model, rpi4, schedule)
    patterns = {p.name: p.pattern for p in plan}
    assert patterns["dense"] == "dense"  # the softmax classifier
    assert patterns["conv2d"] == "dense"  # 432 weights
    assert patterns["conv2d_7"] == "element-wise"
    data = make_data(n=16, shape=(32, 32, 3), num_classes=10, n_val=0)
    result = prune_and_finetune(model, data, plan, schedule, epochs=1, batch_size=8)
    assert result.schedule.total_steps == 2 and result.end_step == 1
    for layer in result.layers:
        if layer.pruned:
            assert abs(layer.achieved - 0.5) <= 0.01, layer
    assert result.overall_sparsity == pytest.approx(0.5, abs=0.01)


# --------------------------------------------------------------------------- failures


def test_keyboard_interrupt_propagates(rpi4):
    schedule = ScheduleOptions()
    model = tiny_cnn()
    plan = plan_policy(model, rpi4, schedule)

    def interrupt(event, fields):
        if event == "batch_end":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        prune_and_finetune(model, make_data(n=64), plan, schedule, epochs=2, batch_size=16,
                           progress=interrupt)


def test_bad_inputs_to_finetune(rpi4):
    model = tiny_cnn()
    schedule = ScheduleOptions()
    plan = plan_policy(model, rpi4, schedule)
    with pytest.raises(DataError, match="x_train"):
        prune_and_finetune(model, make_data(shape=(8, 8, 3)), plan, schedule, epochs=1,
                           batch_size=16)
    with pytest.raises(PruningError, match="output"):
        prune_and_finetune(model, make_data(num_classes=5), plan, schedule, epochs=1,
                           batch_size=16)
    with pytest.raises(PruningError, match="different schedule"):
        prune_and_finetune(model, make_data(), plan, ScheduleOptions(final_sparsity=0.5),
                           epochs=1, batch_size=16)
    dense_only = [LayerPolicy(**{**p.__dict__, "prune": False}) for p in plan]
    bad_labels = make_data()
    bad_labels.y_train = np.eye(4)[bad_labels.y_train]
    with pytest.raises(DataError, match="one-hot"):  # data.check_compatible, the one owner of data checks
        prune_and_finetune(model, bad_labels, plan, schedule, epochs=1, batch_size=16)
    with pytest.raises(PruningError, match="No layer would be pruned"):
        prune_and_finetune(model, make_data(), dense_only, schedule, epochs=1, batch_size=16)


def test_shortfall_is_reported_per_layer_with_the_schedule():
    """The safety net after strip_pruning: a layer short of its target names itself and why."""
    k = keras()
    model = k.Sequential([k.layers.Dense(64, input_shape=(32,), name="h1")])
    kernel, bias = model.get_weights()
    kernel[:, :32] = 0.0  # 50 % zeros, but the plan says 80 %
    model.set_weights([kernel, bias])
    policy = LayerPolicy(name="h1", layer_type="Dense", params=kernel.size, prune=True,
                         target_sparsity=0.8, block_size=(1, 1), pattern="element-wise",
                         reason="test", weights=("h1/kernel:0",), weight_indices=(0,))
    resolved = resolve_schedule(ScheduleOptions(), num_train=64, batch_size=16, epochs=5)
    with pytest.raises(PruningError) as err:
        measure_sparsity(model, [policy], resolved)
    assert "h1: 50.0% of target 80.0%" in str(err.value) and "end_step" in str(err.value)

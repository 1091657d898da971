"""Channel pruning on the pruning schedule, and `build --granularity channel` end to end (LiteRT and TFLite Micro)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgesparse.cli.commands import main
from edgesparse.data import Dataset

pytestmark = pytest.mark.tensorflow


def _tiny_model():
    from edgesparse.pipeline.tf_env import import_tf

    _, keras = import_tf()
    keras.utils.set_random_seed(0)
    layers = keras.layers
    inputs = keras.Input((8, 8, 1))
    x = layers.Conv2D(8, 3, padding="same", name="conv1")(inputs)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU(name="relu1")(x)
    x = layers.Conv2D(12, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(4, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs)


def _tiny_dataset(n_train=96, n_val=32):
    rng = np.random.default_rng(0)
    y = np.arange(n_train + n_val) % 4
    x = rng.normal(size=(n_train + n_val, 8, 8, 1)).astype(np.float32)
    x[np.arange(len(y)), y, y, 0] += 3.0       # a learnable signal per class
    return Dataset(x_train=x[:n_train], y_train=y[:n_train], x_val=x[n_train:], y_val=y[n_train:],
                   num_classes=4, source="test:tiny")


def test_masked_fraction_follows_the_schedule_and_masked_channels_stay_masked():
    from edgesparse.pipeline.prune import ScheduleOptions
    from edgesparse.pipeline.prune.channel_finetune import channel_prune_and_finetune

    def channels_to_remove(channels, fraction):     # channels.select_channels' rule: nearest, one kept
        return min(round(fraction * channels), channels - 1)

    model = _tiny_model()
    before = [w.copy() for w in model.get_weights()]
    events = []
    result = channel_prune_and_finetune(model, _tiny_dataset(), ScheduleOptions(final_sparsity=0.5), epochs=3,
                                        batch_size=8, progress=lambda e, f: events.append((e, dict(f))))
    resolved = result.schedule
    assert resolved.total_steps == 36 and resolved.mask_updates >= 5
    # The caller's model is untouched.
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))

    prunable = [g for g in result.groups if g.prunable]
    assert {name for g in prunable for name in g.producers} >= {"conv1", "conv2"}
    head = [g for g in result.groups if "head" in g.producers]
    assert head and not head[0].prunable and head[0].reason          # the output layer keeps its channels
    total = sum(g.channels_before for g in prunable)

    # Every update masks the schedule's fraction of each group (nearest channel), and the masked set only grows:
    # a masked channel's filters stay zero through training, so it is never re-selected as a live one.
    assert [u.step for u in result.mask_updates] == [s for s in range(1, 37) if resolved.is_update_step(s)]
    previous = {g.id: set() for g in prunable}
    for update in result.mask_updates:
        assert update.target_fraction == pytest.approx(resolved.sparsity_at(update.step))
        for g in prunable:
            masked = set(update.masked[g.id])
            assert len(masked) == channels_to_remove(g.channels_before, update.target_fraction)
            assert masked >= previous[g.id], (update.step, g.id)
            previous[g.id] = masked
        assert update.masked_fraction == pytest.approx(
            sum(len(update.masked[g.id]) for g in prunable) / total)
    assert result.mask_updates[0].target_fraction < result.mask_updates[-1].target_fraction == pytest.approx(0.5)

    # The progress events report the live masked fraction at every batch.
    batches = [f for e, f in events if e == "batch_end"]
    assert len(batches) == 36
    updates = {u.step: u.masked_fraction for u in result.mask_updates}
    live = 0.0
    for fields in batches:
        live = updates.get(fields["step"], live)
        assert fields["sparsity"] == pytest.approx(live)
    assert events[0][0] == "train_begin" and events[0][1]["granularity"] == "channel"

    # After training the masked filters are exactly zero, the small model has the kept channels only and
    # computes what the masked model does.
    masked = result.masked_model
    for g in prunable:
        gone = np.flatnonzero(~result.keep[g.id])
        for m in g.members:
            if m.layer in g.producers:
                kernel = masked.get_layer(m.layer).get_weights()[0]
                assert not kernel[..., gone + m.offset].any()
        assert g.channels_after == g.channels_before - channels_to_remove(g.channels_before, 0.5)
    small = result.model
    assert small.get_layer("conv1").filters == 4 and small.get_layer("conv2").filters == 6
    assert result.removed_fraction == pytest.approx(0.5)
    assert result.max_abs_difference <= 1e-4
    assert result.params_after < result.params_before and result.macs_after < result.macs_before
    assert result.accuracy_small == pytest.approx(result.accuracy_masked, abs=1 / 32)
    section = result.as_dict()
    assert section["final_sparsity_means"].startswith("the fraction of prunable channels removed")
    assert section["unprunable"] and json.dumps(section)


def _build(*args):
    return CliRunner().invoke(main, ["build", *args], catch_exceptions=False)


@pytest.mark.parametrize("flags, flag", [
    (["--granularity", "channel", "--structured", "2:4"], "--structured"),
    (["--granularity", "element", "--structured", "2:4"], "--structured"),
    (["--element-sparsity", "0.5"], "--element-sparsity"),
    (["--granularity", "2:4", "--element-sparsity", "0.5"], "--element-sparsity"),
    (["--granularity", "channel", "--cluster", "4", "--profile", "nrf52840"], "--cluster"),
    (["--granularity", "block", "--profile", "nrf52840"], "block"),
])
def test_bad_combinations_are_refused_before_any_work(tmp_path, flags, flag, monkeypatch):
    from edgesparse.pipeline import build as build_mod

    def no_loading(*args, **kwargs):
        raise AssertionError("the model was loaded before the options were checked")

    monkeypatch.setattr(build_mod, "prepare_inputs", no_loading)
    result = CliRunner().invoke(main, ["build", *flags, "--out", str(tmp_path / "out")])
    assert result.exit_code == 2, result.output
    assert flag in result.output
    assert not (tmp_path / "out").exists()


def test_structured_2_4_is_granularity_2_4(tmp_path):
    """--structured 2:4 and --granularity 2:4 are one thing: both refuse a sparsity other than 0.5, before loading."""
    from edgesparse.errors import PruningError
    from edgesparse.pipeline.build import BuildOptions, build

    for options in (BuildOptions(structured="2:4", final_sparsity=0.7, out=tmp_path / "a"),
                    BuildOptions(granularity="2:4", final_sparsity=0.7, out=tmp_path / "b")):
        with pytest.raises(PruningError, match="2:4"):
            build(options)


@pytest.fixture(scope="module")
def channel_builds(tmp_path_factory):
    root = tmp_path_factory.mktemp("channel")
    out = {}
    # The microcontroller build also prunes what is left element-wise: speed from channels, flash from DECODE.
    for profile, extra in (("rpi4", ()), ("nrf52840", ("--element-sparsity", "0.7"))):
        target = root / profile
        result = _build("--profile", profile, "--granularity", "channel", "--final-sparsity", "0.5",
                        "--epochs", "1", "--out", str(target), *extra)
        out[profile] = (result, target)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("profile, runtime", [("rpi4", "litert"), ("nrf52840", "tflm")])
def test_build_granularity_channel_runs_in_the_devices_interpreter(channel_builds, profile, runtime):
    from edgesparse.runtime.verify import run_tflite
    from edgesparse.tflite.graph import load_graph

    result, out = channel_builds[profile]
    assert result.exit_code in (0, 1), result.output     # 1 only for a budget; never a crash
    report = json.loads((out / "report.json").read_text())
    assert report["granularity"] == "channel" and report["options"]["final_sparsity"] == 0.5
    channels = report["channels"]
    assert channels["final_sparsity_means"].startswith("the fraction of prunable channels removed")
    assert channels["removed_fraction"] == pytest.approx(0.5, abs=0.02)
    groups = {tuple(g["producers"]): g for g in channels["groups"]}
    assert groups[("conv1",)]["channels_before"] == 16 and groups[("conv1",)]["channels_after"] == 8
    assert any("classifier" in u["layers"] for u in channels["unprunable"])
    assert channels["macs_after"] < 0.5 * channels["macs_before"]
    assert channels["tflite_macs_after"] < 0.5 * channels["tflite_macs_before"]
    assert channels["params_after"] < channels["params_before"]
    assert channels["equivalence"]["max_abs_difference"] <= 1e-4
    # The artifact is the small model, smaller than the original's dense int8 baseline, and runs in the
    # profile's interpreter (the build verified it there; run it again here).
    artifact = (out / "model.tflite").read_bytes()
    baseline = (out / "baselines" / "dense_int8.tflite").read_bytes()
    assert len(artifact) < 0.7 * len(baseline)
    assert load_graph(artifact).total_macs == channels["tflite_macs_after"]
    assert report["verification"]["interpreter"]
    assert report["accuracy"]["agreement_pruned_keras_vs_tflite"] >= 0.9
    with np.load(out / "sample.npz") as sample:
        outputs = run_tflite(artifact, sample["x"], runtime=runtime).outputs
    assert outputs.shape == (16, 10) and np.isfinite(outputs).all()
    assert "channels removed" in result.output
    if profile == "nrf52840":      # --element-sparsity 0.7 on the small model, then DECODE
        assert report["options"]["element_sparsity"] == 0.7
        pruned = [layer for layer in report["sparsity"]["layers"] if layer["pruned"]]
        assert pruned and all(abs(layer["achieved"] - 0.7) <= 0.01 for layer in pruned)
        assert report["compression"]["applied"] is True
    else:
        assert report["sparsity"]["overall"] == 0.0 and report["compression"] is None

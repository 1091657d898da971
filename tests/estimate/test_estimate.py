"""Estimator: greedy plan, RAM vs the TFLM interpreter, energy/battery arithmetic, rates, `check`."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from edgesparse import estimate
from edgesparse.cli.commands import main
from edgesparse.errors import DataError
from edgesparse.estimate import Buffer, energy_and_battery, parse_rate, plan_greedy
from edgesparse.estimate.calibrate import render_table, replace_table, set_latency_sources

REPO = Path(__file__).resolve().parents[2]

MLPERF_INT8 = [
    "keyword_spotting/kws_ref_model.tflite",
    "visual_wake_words/vww_96_int8.tflite",
    "image_classification/pretrainedResnet_quant.tflite",
    "anomaly_detection/ad01_int8.tflite",
    "streaming_wakeword/str_ww_ref_model.tflite",
    "image_classification/pretrainedResnet_large_int8.tflite",
]
KWS = "keyword_spotting/kws_ref_model.tflite"


# --------------------------------------------------------------------------- greedy planner, hand-made


def test_disjoint_lifetimes_share_memory():
    plan = plan_greedy([Buffer(100, 0, 1), Buffer(100, 2, 3)], alignment=1)
    assert plan.offsets == [0, 0]
    assert plan.peak_bytes == 100


def test_overlapping_lifetimes_stack_largest_first():
    plan = plan_greedy([Buffer(100, 0, 2), Buffer(300, 1, 3)], alignment=1)
    assert plan.offsets == [300, 0]  # the larger buffer is placed first, at 0
    assert plan.peak_bytes == 400


def test_small_buffer_fills_a_gap():
    # a (0..1) and c (2..3) share offset 0; b (1..2) overlaps both and sits above;
    # d (3..3) fits in the gap a leaves once it is dead.
    bufs = [Buffer(200, 0, 1, "a"), Buffer(100, 1, 2, "b"), Buffer(200, 2, 3, "c"), Buffer(50, 3, 3, "d")]
    plan = plan_greedy(bufs, alignment=1)
    assert plan.offsets[0] == 0 and plan.offsets[1] == 200
    assert plan.offsets[2] == 0 or plan.offsets[2] == 300
    assert plan.offsets[3] in (200, 0, 250)  # never beyond the peak of the others
    assert plan.peak_bytes == 300
    assert not plan.overlaps()


def test_chain_of_ops_needs_two_buffers():
    # input -> op1 -> t1 -> op2 -> t2 -> op3 -> out: at most two adjacent tensors live at once
    bufs = [Buffer(1000, 0, 1), Buffer(800, 1, 2), Buffer(1000, 2, 3), Buffer(10, 3, 3)]
    plan = plan_greedy(bufs, alignment=1)
    assert plan.peak_bytes == 1800
    assert not plan.overlaps()


def test_alignment_rounds_sizes_up():
    plan = plan_greedy([Buffer(10, 0, 0), Buffer(10, 0, 0)], alignment=16)
    assert sorted(plan.offsets) == [0, 16]
    assert plan.peak_bytes == 32


def test_offline_offsets_are_kept():
    plan = plan_greedy([Buffer(64, 0, 1, offline_offset=128), Buffer(64, 0, 1)], alignment=16)
    assert plan.offsets[0] == 128
    assert plan.offsets[1] == 0
    assert plan.peak_bytes == 192


def test_equal_sizes_tie_break_like_tflm():
    # TFLM fills its sort array from the tail, so among equal sizes the last added goes first (offset 0).
    plan = plan_greedy([Buffer(32, 0, 1), Buffer(32, 0, 1), Buffer(32, 0, 1)], alignment=16)
    assert plan.offsets == [64, 32, 0]


def test_random_plans_never_overlap_and_respect_the_live_bound():
    rng = random.Random(0)
    for _ in range(50):
        bufs = []
        for _ in range(rng.randint(1, 25)):
            first = rng.randint(0, 10)
            bufs.append(Buffer(rng.randint(1, 500), first, first + rng.randint(0, 4)))
        plan = plan_greedy(bufs, alignment=16)
        assert not plan.overlaps()
        live_peak = max(sum(b.size for b in plan.buffers if b.first <= t <= b.last) for t in range(15))
        assert plan.peak_bytes >= live_peak


# --------------------------------------------------------------------------- RAM vs the TFLM interpreter


def _tflm_total(path_or_bytes) -> dict:
    from edgesparse.runtime.measure import tflm_arena_bytes

    return tflm_arena_bytes(path_or_bytes)


@pytest.mark.parametrize("rel", MLPERF_INT8)
def test_planned_arena_matches_tflm_interpreter(mlperf_dir, rel):
    from edgesparse.tflite.graph import load_graph

    path = mlperf_dir / rel
    est = estimate.tflm_ram(load_graph(path))
    real = _tflm_total(path)
    assert abs(est.total_bytes / real["total"] - 1) <= 0.05, (est.breakdown, real)
    assert est.planned_bytes == real["head"]  # the activation plan itself is exact
    assert est.total_bytes == est.planned_bytes + est.persistent_bytes


@pytest.fixture(scope="module")
def demo_like_int8(tmp_path_factory) -> bytes:
    """A small Conv2D/Dense int8 CNN like the built-in demo (built here, cached for the module)."""
    import numpy as np

    from edgesparse.pipeline.tf_env import import_tf

    tf, keras = import_tf()
    keras.utils.set_random_seed(0)
    layers = keras.layers
    model = keras.Sequential([
        keras.Input((28, 28, 1)), layers.Conv2D(8, 3, activation="relu"), layers.MaxPooling2D(2),
        layers.Conv2D(16, 3, activation="relu"), layers.MaxPooling2D(2), layers.Flatten(),
        layers.Dense(32, activation="relu"), layers.Dense(10), layers.Softmax()])
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    rng = np.random.default_rng(0)
    conv.representative_dataset = lambda: ([rng.random((1, 28, 28, 1), dtype=np.float32)] for _ in range(8))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def test_planned_arena_matches_tflm_on_demo_like_cnn(demo_like_int8):
    from edgesparse.tflite.graph import load_graph

    est = estimate.tflm_ram(load_graph(demo_like_int8))
    real = _tflm_total(demo_like_int8)
    assert abs(est.total_bytes / real["total"] - 1) <= 0.05, (est.breakdown, real)


def test_cmsis_nn_scratch_is_planned_and_reported(mlperf_dir):
    from edgesparse.tflite.graph import load_graph

    graph = load_graph(mlperf_dir / KWS)
    ref = estimate.tflm_ram(graph, kernels="reference")
    cmsis = estimate.tflm_ram(graph, kernels="cmsis-nn")
    assert ref.scratch_bytes == 0
    assert cmsis.scratch_bytes > 0  # KWS's first conv (10x4 on 1 channel) needs an im2col buffer
    assert cmsis.planned_bytes >= ref.planned_bytes
    assert cmsis.persistent_bytes == ref.persistent_bytes


# --------------------------------------------------------------------------- energy, battery, rates


@pytest.mark.parametrize("text, per_s", [("1/s", 1.0), ("10/min", 10 / 60), ("3/h", 3 / 3600),
                                         ("0.5/s", 0.5), ("2 / hour", 2 / 3600), ("24/day", 24 / 86400),
                                         ("120/m", 2.0)])
def test_parse_rate(text, per_s):
    assert parse_rate(text) == pytest.approx(per_s)


@pytest.mark.parametrize("bad", ["", "1", "fast", "0/s", "-1/s", "1/fortnight", "1/s/s"])
def test_parse_rate_rejects_bad_input(bad):
    with pytest.raises(DataError, match="rate"):
        parse_rate(bad)


def test_energy_and_battery_hand_computed():
    # 20 ms at 50 mW = 1 mJ per inference; 1/s -> 1 mW of inference + 0.98 x 0.1 mW sleep = 1.098 mW.
    energy, avg, hours, share, notes = energy_and_battery(
        20.0, active_mw=50.0, sleep_mw=0.1, rate_per_s=1.0, battery_mah=1000.0, voltage_v=3.0)
    assert energy == pytest.approx(1.0)
    assert avg == pytest.approx(1.0 + 0.98 * 0.1)
    assert hours == pytest.approx(3000.0 / 1.098)   # 1000 mAh x 3 V = 3000 mWh
    assert share == pytest.approx(1.0 / 1.098)
    assert notes == []


def test_battery_at_one_inference_per_hour_is_dominated_by_sleep():
    energy, avg, hours, share, _ = energy_and_battery(
        100.0, active_mw=36.0, sleep_mw=0.01, rate_per_s=1 / 3600, battery_mah=220.0, voltage_v=3.0)
    assert energy == pytest.approx(3.6)                   # mJ
    inference_mw = 3.6 / 3600                             # 1 mJ/h = 1/3600 mW
    sleep_mw = (1 - 0.1 / 3600) * 0.01
    assert avg == pytest.approx(inference_mw + sleep_mw)
    assert hours == pytest.approx(660.0 / (inference_mw + sleep_mw))
    assert share == pytest.approx(inference_mw / (inference_mw + sleep_mw))
    assert share < 0.1


def test_rate_faster_than_latency_is_flagged():
    _, avg, _, share, notes = energy_and_battery(
        500.0, active_mw=10.0, sleep_mw=1.0, rate_per_s=4.0, battery_mah=100.0, voltage_v=3.0)
    assert avg == pytest.approx(10.0)
    assert share == pytest.approx(1.0)
    assert notes and "cannot keep up" in notes[0]


# --------------------------------------------------------------------------- check


def _profile_text(name: str = "stm32l4r5", **budget) -> str:
    """A shipped profile with our own (fitted, test-only) latency table and the given budget."""
    from edgesparse.profiles.profile import PROFILE_DIR

    text = (PROFILE_DIR / f"{name}.toml").read_text()
    latency = {"fitted": True, "fit_source": "test: hand-set coefficients", "fit_rows": ["test"],
               "macs_per_cycle": {"int8": 0.5}, "overhead_us_per_op": 10.0, "fixed_overhead_us": 0.0}
    text = replace_table(text, "latency", render_table("latency", latency))
    text = set_latency_sources(text, {})  # the shipped table's per-coefficient sources go with it
    if budget:
        import tomllib

        values = dict(tomllib.loads(text)["budget"])
        values.update(budget)
        text = replace_table(text, "budget", render_table("budget", values))
    return text


@pytest.fixture()
def roomy_profile(tmp_path) -> Path:
    path = tmp_path / "roomy.toml"
    path.write_text(_profile_text(flash_bytes=2_000_000, ram_bytes=600_000, latency_ms=100_000))
    return path


@pytest.fixture()
def tiny_profile(tmp_path) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(_profile_text(flash_bytes=90_000, ram_bytes=5_000, latency_ms=0.001))
    return path


def test_check_model_api(mlperf_dir, roomy_profile):
    from edgesparse.profiles.profile import load_profile

    result = estimate.check_model(mlperf_dir / KWS, load_profile(str(roomy_profile)), rate="1/s", battery_mah=500)
    assert result.fits
    d = result.to_dict()
    for key in ("profile", "flash_bytes", "ram_bytes", "latency_ms", "energy_mj", "battery_hours", "fits",
                "budgets", "ops", "assumptions"):
        assert key in d
    assert d["latency_basis"] == "fitted"
    # 13 ops at 10 us + MACs at 0.5 MAC/cycle, 120 MHz
    macs = sum(o["macs_used"] for o in d["ops"])
    assert d["latency_ms"] == pytest.approx((macs / 0.5 / 120 + 13 * 10) / 1000, rel=1e-3)
    assert d["energy_mj"] == pytest.approx(d["latency_ms"] * 41.4769 / 1000, rel=1e-3)
    assert d["energy"]["battery_mah"] == 500
    assert sum(o["share"] for o in d["ops"]) == pytest.approx(1.0, abs=1e-3)
    assert {b["name"] for b in d["budgets"]} >= {"flash_bytes", "ram_bytes", "latency_ms"}
    json.dumps(d)  # serialisable as is


def test_unfitted_latency_is_flagged_as_assumption(mlperf_dir, tmp_path):
    from edgesparse.profiles.profile import PROFILE_DIR

    text = replace_table((PROFILE_DIR / "stm32l4r5.toml").read_text(), "latency", render_table("latency", {
        "fitted": False, "fit_source": "", "macs_per_cycle": {"int8": 0.5}}))
    text = set_latency_sources(text, {})
    text = text.replace("[sources]\n", '[sources]\n"latency.macs_per_cycle" = "assumption: a guess for this test"\n')
    path = tmp_path / "guess.toml"
    path.write_text(text)
    result = estimate.check_model(mlperf_dir / KWS, str(path))
    assert result.latency.basis == "assumption"
    assert any("NOT fitted" in w for w in result.warnings)
    assert all("assumption" in o.flag for o in result.latency.ops)
    assert any(a.startswith("latency") for a in result.assumptions)


def test_check_exit_0_when_it_fits(mlperf_dir, roomy_profile):
    res = CliRunner().invoke(main, ["check", str(mlperf_dir / KWS), "--profile", str(roomy_profile)])
    assert res.exit_code == 0, res.output
    assert "fits" in res.output and "latency per op" in res.output


def test_check_exit_1_when_a_budget_fails(mlperf_dir, tiny_profile):
    res = CliRunner().invoke(main, ["check", str(mlperf_dir / KWS), "--profile", str(tiny_profile)])
    assert res.exit_code == 1, res.output
    assert "FAIL" in res.output


def test_check_exit_2_for_a_corrupt_file(tmp_path, roomy_profile):
    bad = tmp_path / "broken.tflite"
    bad.write_bytes(b"\x1c\x00\x00\x00TFL3" + b"\xff" * 40)
    res = CliRunner().invoke(main, ["check", str(bad), "--profile", str(roomy_profile)])
    assert res.exit_code == 2
    assert "corrupt TFLite flatbuffer" in res.output
    assert "Traceback" not in res.output


def test_check_exit_2_for_an_unknown_profile(mlperf_dir):
    res = CliRunner().invoke(main, ["check", str(mlperf_dir / KWS), "--profile", "no_such_board"])
    assert res.exit_code == 2
    assert "Unknown device profile (no_such_board)" in res.output


def test_check_exit_2_for_a_bad_rate(mlperf_dir, roomy_profile):
    res = CliRunner().invoke(main, ["check", str(mlperf_dir / KWS), "--profile", str(roomy_profile),
                                    "--rate", "often"])
    assert res.exit_code == 2
    assert "Bad inference rate (--rate)" in res.output and "'often'" in res.output


def test_check_json_lists_one_object_per_profile(mlperf_dir, roomy_profile, tiny_profile):
    res = CliRunner().invoke(main, ["check", str(mlperf_dir / KWS), "--profile", str(roomy_profile),
                                    "--profile", str(tiny_profile), "--json", "--rate", "10/min"])
    assert res.exit_code == 1  # the tiny one fails
    data = json.loads(res.output)
    assert [d["fits"] for d in data] == [True, False]
    for d in data:
        for key in ("profile", "flash_bytes", "ram_bytes", "latency_ms", "energy_mj", "battery_hours", "fits",
                    "budgets", "ops", "assumptions"):
            assert key in d
        for b in d["budgets"]:
            assert set(b) >= {"name", "limit", "value", "ok"}
        assert d["ops"] and set(d["ops"][0]) >= {"op", "type", "dtype", "macs", "bytes", "predicted_us", "share"}
        assert d["energy"]["rate_per_s"] == pytest.approx(10 / 60)


def test_check_imports_no_tensorflow(mlperf_dir, roomy_profile):
    code = (
        "import sys\n"
        "from edgesparse.cli.commands import main\n"
        f"sys.argv = ['edgesparse', 'check', {str(mlperf_dir / KWS)!r}, '--profile', {str(roomy_profile)!r}, "
        "'--json']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
        "sys.exit(code)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout)[0]["fits"] is True


def test_shipped_profiles_give_a_latency_basis(mlperf_dir):
    """Every shipped profile gives a latency; 'fitted' only when every coefficient that prices it is fitted."""
    from edgesparse.profiles.profile import available_profiles, load_profile

    for name in available_profiles():
        profile = load_profile(name)
        result = estimate.check_model(mlperf_dir / KWS, profile)
        assert result.latency_ms is not None and result.latency_ms > 0, name
        bases = {c.basis for c in result.latency.coefficients if c.us > 0}
        if profile.npu is not None:  # Ethos-U: Vela's cycles, plus the CPU part's basis when it is weaker
            assert result.latency.basis.startswith("Vela performance model"), name
            assert any(a.startswith("latency: Vela performance model") for a in result.assumptions), name
        elif result.latency.basis == "fitted":
            assert bases == {"fitted"} and profile.latency_fitted, name
        else:
            assert result.latency.basis in ("fitted+transferred", "transferred", "assumption"), name
            assert result.warnings and any(a.startswith("latency") for a in result.assumptions), name
        if not profile.latency_fitted:
            assert result.latency.basis != "fitted", name


# --------------------------------------------------------------------------- latency basis, transfers, unknown budgets

PREVIOUSLY_MISSING = ["nrf52840", "esp32s3", "rp2040", "stm32h7a3", "rpi5", "rpizero2w", "midrange_a76", "rpi3bplus"]


@pytest.mark.parametrize("name", PREVIOUSLY_MISSING)
def test_previously_missing_profiles_give_a_flagged_latency(mlperf_dir, name):
    """Each gets a latency, never called 'fitted', and the output says what it rests on."""
    result = estimate.check_model(mlperf_dir / KWS, name)
    assert result.latency_ms is not None and result.latency_ms > 0
    assert result.latency.basis in ("transferred", "fitted+transferred")
    assert any(a.startswith(f"latency basis: {result.latency.basis}") and "transferred from" in a
               for a in result.assumptions), result.assumptions
    assert any("transferred from" in w for w in result.warnings), result.warnings
    assert result.energy_mj is not None
    assert all(b.ok is not None for b in result.budgets if b.name == "latency_ms")
    d = result.to_dict()
    assert d["latency_basis"] == result.latency.basis
    assert {c["basis"] for c in d["latency"]["coefficients"]} <= {"fitted", "transferred"}
    assert any(c["basis"] == "transferred" for c in d["latency"]["coefficients"])


def test_transferred_tables_say_so_and_are_never_fitted():
    from edgesparse.profiles.profile import load_profile

    for name in ("nrf52840", "rp2040", "stm32h7a3", "rpi5", "rpizero2w", "midrange_a76"):
        lat = load_profile(name).raw["latency"]
        assert lat["fitted"] is False and lat["basis"] == "transferred"
        assert lat["transferred_from"] and lat["transfer_factor"] > 0
        coefs = estimate.latency_coefficients(load_profile(name))
        assert coefs.basis_of("macs_per_cycle.int8") == "transferred"
        assert coefs.source_of("macs_per_cycle.int8").startswith("assumption: transferred from")


@pytest.mark.parametrize("target", ["nrf52840", "rp2040", "stm32h7a3", "rpizero2w", "rpi5", "midrange_a76"])
def test_transferred_coefficient_is_the_source_scaled_by_the_stated_factor(target):
    from edgesparse.estimate.calibrate import transfer_macs_per_cycle, transfer_overhead_us
    from edgesparse.profiles.profile import load_profile

    lat = load_profile(target).raw["latency"]
    src = load_profile(lat["transferred_from"]).raw["latency"]
    expected = transfer_macs_per_cycle(src["macs_per_cycle"], lat["transfer_factor"])
    assert set(lat["macs_per_cycle"]) == set(expected)
    for key, value in expected.items():
        assert lat["macs_per_cycle"][key] == pytest.approx(value, rel=2e-5)  # TOML keeps 6 significant digits
    if lat.get("overhead_from"):
        ovh = load_profile(lat["overhead_from"]).raw["latency"]
        for key in ("overhead_us_per_op", "fixed_overhead_us"):
            if ovh.get(key):
                assert lat[key] == pytest.approx(transfer_overhead_us(ovh[key], lat["overhead_factor"]), rel=2e-5)


def test_litert_overhead_is_priced_for_a_small_model():
    """A tiny model on a Pi is not priced by its MACs alone: the host's per-op overhead, scaled, is added."""
    from edgesparse.profiles.profile import load_profile

    prof = load_profile("rpi4")
    assert prof.raw["latency"]["overhead_us_per_op"] > 0 and prof.raw["latency"]["overhead_from"] == "host"
    coefs = estimate.latency_coefficients(prof)
    assert coefs.basis_of("overhead_us_per_op") == "transferred"
    assert coefs.basis_of("macs_per_cycle.int8") == "fitted"


def _no_latency_profile(tmp_path, **budget) -> Path:
    from edgesparse.profiles.profile import PROFILE_DIR

    text = replace_table((PROFILE_DIR / "stm32l4r5.toml").read_text(), "latency",
                         render_table("latency", {"fitted": False, "fit_source": ""}))
    text = set_latency_sources(text, {})
    if budget:
        import tomllib

        values = dict(tomllib.loads(text)["budget"])
        values.update(budget)
        text = replace_table(text, "budget", render_table("budget", values))
    path = tmp_path / "nolat.toml"
    path.write_text(text)
    return path


def test_unknown_budget_is_not_a_failure(mlperf_dir, tmp_path):
    path = _no_latency_profile(tmp_path, flash_bytes=2_000_000, ram_bytes=600_000)
    result = estimate.check_model(mlperf_dir / KWS, str(path))
    assert result.latency_ms is None and result.latency.basis == "none"
    lat = next(b for b in result.budgets if b.name == "latency_ms")
    assert lat.ok is None and lat.status == "unknown" and lat.value is None
    assert result.fits is True and result.complete is False and result.unknown_budgets == ["latency_ms"]
    assert any(w.startswith("incomplete check") and "latency_ms" in w for w in result.warnings)
    d = result.to_dict()
    assert d["fits"] is True and d["complete"] is False
    assert next(b for b in d["budgets"] if b["name"] == "latency_ms")["ok"] is None


def test_a_known_failure_still_fails_next_to_an_unknown(mlperf_dir, tmp_path):
    path = _no_latency_profile(tmp_path, flash_bytes=90_000, ram_bytes=5_000)
    result = estimate.check_model(mlperf_dir / KWS, str(path))
    assert result.fits is False and result.complete is False


def test_check_exit_0_with_a_warning_when_only_unknown(mlperf_dir, tmp_path):
    path = _no_latency_profile(tmp_path, flash_bytes=2_000_000, ram_bytes=600_000)
    res = CliRunner().invoke(main, ["check", str(mlperf_dir / KWS), "--profile", str(path), "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)[0]
    assert data["fits"] is True and data["complete"] is False
    assert any("incomplete check" in w for w in data["warnings"])
    for key in ("profile", "flash_bytes", "ram_bytes", "latency_ms", "energy_mj", "battery_hours", "fits",
                "budgets", "ops"):
        assert key in data
    res = CliRunner().invoke(main, ["check", str(mlperf_dir / KWS), "--profile", str(path)])
    assert res.exit_code == 0, res.output
    assert "incomplete check" in res.output
    both = CliRunner().invoke(main, ["check", str(mlperf_dir / KWS), "--profile", str(path), "--profile", "stm32l4r5"])
    assert both.exit_code == 0, both.output
    assert "unknown" in both.output


# --------------------------------------------------------------------------- which FULLY_CONNECTED kernel runs


def _fake_fc_graph(filter_sparse: bool, densify: bool, dtype: str = "float32"):
    """input -> [DENSIFY(sparse const) ->] FULLY_CONNECTED: 64 x 32 weights, 80% zeros."""
    from types import SimpleNamespace as NS

    sparsity = NS(density=0.2)
    tensors = [NS(shape=(1, 64), dtype=dtype, sparsity=None, is_constant=False),                # 0 input
               NS(shape=(32, 64), dtype=dtype, sparsity=sparsity, is_constant=True),             # 1 sparse const
               NS(shape=(32, 64), dtype=dtype, sparsity=None, is_constant=False),                # 2 densified
               NS(shape=(1, 32), dtype=dtype, sparsity=None, is_constant=False)]                 # 3 output
    ops = []
    if densify:
        ops.append(NS(opcode="DENSIFY", inputs=(1,), outputs=(2,), kind="data", one_time=True, dtype=dtype,
                      macs=0, effective_macs=0, elementwise_ops=0, bytes_moved=0, sparse_weights=False,
                      weights_densified=False, weight_tensor=None))
    w = 2 if densify else (1 if filter_sparse else 2)
    ops.append(NS(opcode="FULLY_CONNECTED", inputs=(0, w), outputs=(3,), kind="fc", one_time=False, dtype=dtype,
                  macs=2048, effective_macs=410, elementwise_ops=0, bytes_moved=0, sparse_weights=True,
                  weights_densified=densify, weight_tensor=w))
    return NS(ops=ops, tensors=tensors, inputs=[0], outputs=[3])


def test_densify_fed_fully_connected_is_charged_dense_macs():
    from edgesparse.profiles.profile import load_profile

    host = load_profile("host")
    fc = next(f for f in estimate.op_features(_fake_fc_graph(filter_sparse=False, densify=True), host)
              if f.op == "FULLY_CONNECTED")
    assert fc.macs_used == fc.macs == 2048
    assert fc.coef_key == "fc_float32" and "densified" in fc.kernel


def test_fully_connected_reading_sparse_weights_runs_the_sparse_kernel():
    from edgesparse.profiles.profile import load_profile

    fc = estimate.op_features(_fake_fc_graph(filter_sparse=True, densify=False), load_profile("host"))[0]
    assert fc.macs_used == 410 and fc.coef_key == "fc_float32_sparse"
    tflm = estimate.op_features(_fake_fc_graph(filter_sparse=True, densify=False), load_profile("stm32l4r5"))[0]
    assert tflm.macs_used == 2048  # TFLM has no sparse kernel


def test_densify_fed_fc_in_a_converted_model_is_dense(tmp_path):
    """A real EXPERIMENTAL_SPARSITY float32 model: DENSIFY -> FULLY_CONNECTED runs the dense kernel."""
    import numpy as np

    from edgesparse.pipeline.tf_env import import_tf
    from edgesparse.profiles.profile import load_profile
    from edgesparse.tflite.graph import load_graph

    tf, keras = import_tf()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((128,)), keras.layers.Dense(64)])
    w, b = model.layers[0].get_weights()
    w[np.abs(w) < np.quantile(np.abs(w), 0.8)] = 0.0  # 80 % unstructured zeros: stored CSR + DENSIFY
    model.layers[0].set_weights([w, b])
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    graph = load_graph(conv.convert())
    assert "DENSIFY" in [o.opcode for o in graph.ops]
    fc = next(f for f in estimate.op_features(graph, load_profile("host")) if f.op == "FULLY_CONNECTED")
    assert fc.macs_used == fc.macs and not fc.coef_key.endswith("_sparse")


def test_transferred_basis_with_fitted_true_is_rejected():
    import tomllib

    from edgesparse.profiles.profile import PROFILE_DIR, validate

    raw = tomllib.loads((PROFILE_DIR / "nrf52840.toml").read_text())
    raw["latency"]["fitted"] = True
    raw["latency"]["fit_source"] = "x"
    raw["latency"]["fit_rows"] = ["x"]
    assert any("latency.fitted" in p and "transferred" in p for p in validate(raw, "x.toml"))
    del raw["latency"]["transfer_factor"]
    assert any("latency.transfer_factor" in p for p in validate(raw, "x.toml"))


def _fake_elementwise_graph(opcode: str, dtype: str, elements: int, macs: int = 0):
    """input -> one op (no weights) -> output, `elements` element ops, `elements` output elements."""
    from types import SimpleNamespace as NS

    tensors = [NS(shape=(1, elements), dtype=dtype, sparsity=None, is_constant=False),
               NS(shape=(1, elements), dtype=dtype, sparsity=None, is_constant=False)]
    ops = [NS(opcode=opcode, inputs=(0,), outputs=(1,), kind="elementwise", one_time=False, dtype=dtype,
              macs=macs, effective_macs=macs, elementwise_ops=elements, bytes_moved=0, sparse_weights=False,
              weights_densified=False, weight_tensor=None)]
    return NS(ops=ops, tensors=tensors, inputs=[0], outputs=[1])


def test_int8_ops_xnnpack_leaves_to_builtin_kernels_get_their_own_class():
    """On LiteRT + XNNPACK an int8 HARD_SWISH runs in the builtin kernels (priced per output element); an int8
    ADD is delegated; float HARD_SWISH is delegated; TFLM keeps one element class per dtype."""
    from edgesparse.profiles.profile import load_profile

    host = load_profile("host")
    hs = estimate.op_features(_fake_elementwise_graph("HARD_SWISH", "int8", 4096), host)[0]
    assert hs.coef_key == "elementwise_int8_builtin" and "builtin" in hs.kernel and hs.elementwise_ops == 4096
    add = estimate.op_features(_fake_elementwise_graph("ADD", "int8", 4096), host)[0]
    assert add.coef_key == "elementwise_int8"
    assert estimate.op_features(_fake_elementwise_graph("HARD_SWISH", "float32", 4096), host)[0].coef_key \
        == "elementwise_float32"
    tflm = estimate.op_features(_fake_elementwise_graph("HARD_SWISH", "int8", 4096), load_profile("stm32l4r5"))[0]
    assert tflm.coef_key == "elementwise_int8"
    # a profile without the builtin class falls back to elementwise_int8
    coefs = estimate.LatencyCoefficients(fitted=True, fit_source="x", fit_rows=[], clock_mhz=1000.0,
                                         macs_per_cycle={"elementwise_int8": 2.0}, bytes_per_cycle=0.0,
                                         elementwise_per_cycle=0.0, overhead_us_per_op=0.0, fixed_overhead_us=0.0,
                                         parallel_efficiency=0.0, fit_threads=1)
    assert coefs.elementwise_rate_key("int8", "elementwise_int8_builtin") == (2.0, "macs_per_cycle.elementwise_int8")


def test_xnnpack_per_op_overhead_only_for_ops_worth_dispatching():
    """LiteRT + XNNPACK: an op with less work than XNNPACK_DISPATCH_MIN_WORK pays no overhead_us_per_op
    (timed: chains of tiny ops cost a few hundredths of a us per op); on TFLM every op pays it."""
    from edgesparse.estimate.calibrate import model_features
    from edgesparse.profiles.profile import load_profile

    host = load_profile("host")
    small = _fake_elementwise_graph("ADD", "float32", 128)
    big = _fake_elementwise_graph("ADD", "float32", 4 * estimate.XNNPACK_DISPATCH_MIN_WORK)
    assert not estimate.op_features(small, host)[0].dispatched
    assert estimate.op_features(big, host)[0].dispatched
    assert model_features(small, host).get("ops", 0) == 0 and model_features(big, host)["ops"] == 1
    assert estimate.op_features(small, load_profile("stm32l4r5"))[0].dispatched
    coefs = estimate.latency_coefficients(host)
    parts = estimate.price_ops(estimate.op_features(small, host), coefs)[0][2]
    assert "overhead_us_per_op" not in parts
    if coefs.overhead_us_per_op > 0:
        assert estimate.price_ops(estimate.op_features(big, host), coefs)[0][2]["overhead_us_per_op"] \
            == coefs.overhead_us_per_op


def test_xnnpack_convolutions_are_charged_whole_channel_tiles_on_avx512():
    """Host (AVX-512): a convolution with 8 output channels is charged the MACs of a 32-channel tile;
    a profile without AVX-512 (rpi4) is charged its MACs."""
    from types import SimpleNamespace as NS

    from edgesparse.profiles.profile import load_profile

    tensors = [NS(shape=(1, 8, 8, 4), dtype="float32", sparsity=None, is_constant=False),
               NS(shape=(8, 1, 1, 4), dtype="float32", sparsity=None, is_constant=True),
               NS(shape=(1, 8, 8, 8), dtype="float32", sparsity=None, is_constant=False)]
    macs = 8 * 8 * 8 * 4
    ops = [NS(opcode="CONV_2D", inputs=(0, 1), outputs=(2,), kind="conv", one_time=False, dtype="float32",
              macs=macs, effective_macs=macs, elementwise_ops=0, bytes_moved=0, sparse_weights=False,
              weights_densified=False, weight_tensor=1)]
    graph = NS(ops=ops, tensors=tensors, inputs=[0], outputs=[2])
    host = estimate.op_features(graph, load_profile("host"))[0]
    assert estimate.xnnpack_channel_tile(load_profile("host")) == 32
    assert host.macs == macs and host.macs_used == macs * 4 and "tiles of 32" in host.kernel
    assert estimate.op_features(graph, load_profile("rpi4"))[0].macs_used == macs

"""speed_claim: the real estimator on a real pruned int8 file (1x16 block-sparse FULLY_CONNECTED, converted by the
pipeline's convert module) against the same model's dense int8 file, per profile; check --baseline's function."""

from __future__ import annotations

import numpy as np
import pytest

from edgesparse.estimate.speed import (
    ESTIMATE_BAND,
    HOST_BAND,
    HostTiming,
    check_speed,
    default_baseline,
    measure_host,
    speed_claim,
    verdict,
)

pytestmark = pytest.mark.tensorflow


@pytest.fixture(scope="module")
def pair():
    """(pruned int8 with 1x16 block-sparse FULLY_CONNECTED, dense int8 of the same weights)."""
    from edgesparse.pipeline.convert import convert_keras
    from edgesparse.pipeline.tf_env import import_tf

    _, keras = import_tf()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((256,)), keras.layers.Dense(256, activation="relu"),
                              keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10)])
    rng = np.random.default_rng(0)
    for layer in model.layers[:2]:
        kernel, bias = layer.get_weights()  # Keras [in, out]: a 1x16 TFLite block is 16 consecutive inputs
        keep = rng.random((kernel.shape[0] // 16, kernel.shape[1])) < 0.2
        layer.set_weights([kernel * np.repeat(keep, 16, axis=0), bias])
    x = rng.normal(size=(32, 256)).astype(np.float32)
    sparse = convert_keras(model, quantize="int8", representative=x, sparse=True)
    dense = convert_keras(model, quantize="int8", representative=x, sparse=False)
    assert len(sparse) < 0.6 * len(dense)
    return sparse, dense


def test_rpi4_is_predicted_faster_and_says_the_1x16_kernel_is_a_transfer(pair):
    s = speed_claim(*pair, "rpi4")
    e = s["estimated"]
    assert s["profile"] == "rpi4" and s["host"] is None and s["band"] == ESTIMATE_BAND
    assert e["verdict"] == "faster" and e["ratio"] < 1 - ESTIMATE_BAND
    assert e["ratio"] == pytest.approx(e["artifact_ms"] / e["dense_int8_ms"], rel=1e-2)
    assert e["basis"] == "transferred" and e["assumed"]
    sparse_fc = [k for k in e["kernels"] if k["class"] == "fc_int8_sparse"]
    assert len(sparse_fc) == 2 and all(k["priced_by"] == "int8" and k["basis"] == "transferred" for k in sparse_fc)
    assert all(k["macs_used"] < 0.3 * k["macs"] for k in sparse_fc)
    note = next(n for n in e["notes"] if "1x16 block-sparse int8 FULLY_CONNECTED" in n)
    assert "TRANSFER" in note and "fully_connected.cc" in note and "FullyConnectedSparseWeight1x16" in note
    assert any(n.startswith("cross-check: on the host profile") for n in e["notes"])
    assert not s["size_only"] and s["file_ratio"] < 0.6
    assert "expected to be" in s["claim"] and "faster than dense int8" in s["claim"] and "a transfer" in s["claim"]


def test_host_is_predicted_slower_so_the_pruning_is_size_only(pair):
    """On x86 LiteRT's builtin kernels run the model (timed there: slower than XNNPACK's dense ones); measured
    here 2.1x slower interleaved."""
    s = speed_claim(*pair, "host")
    assert s["estimated"]["verdict"] == "slower" and s["size_only"]
    assert "size only" in s["claim"]


def test_the_same_file_is_the_same_speed_on_every_runtime(pair):
    dense = pair[1]
    for profile in ("rpi4", "nrf52840"):
        s = speed_claim(dense, dense, profile)
        assert s["estimated"]["ratio"] == 1.0 and s["estimated"]["verdict"] == "same"
        assert s["estimated"]["kernels"] == [] and not s["size_only"] and s["file_ratio"] == 1.0


def test_tflm_says_it_has_no_sparse_kernels(pair):
    s = speed_claim(*pair, "nrf52840")
    assert s["runtime"] == "tflm" and s["estimated"]["verdict"] == "same"
    assert any("TFLite Micro has no sparse kernels" in n for n in s["estimated"]["notes"])
    assert s["size_only"]


def test_host_measurement_is_interleaved_and_judged_with_its_own_band(pair):
    timing = measure_host(*pair, rounds=3, runs_per_round=5)
    assert timing.runtime == "litert" and timing.rounds == 3 and timing.runs_per_round == 5
    assert timing.ratio == pytest.approx(timing.artifact_ms / timing.dense_int8_ms)
    s = speed_claim(*pair, "rpi4", host=timing)
    host = s["host"]
    assert host["verdict"] == verdict(timing.ratio, HOST_BAND) and host["band"] == HOST_BAND
    assert any("FULLY_CONNECTED" in k for k in host["artifact_kernels"])
    assert "On this host it measured" in s["claim"] and "3 interleaved rounds" in s["claim"]


def test_verdict_band():
    assert verdict(None) == "unknown"
    assert verdict(0.94) == "faster" and verdict(0.96) == "same" and verdict(1.04) == "same"
    assert verdict(1.06) == "slower" and verdict(1.06, HOST_BAND) == "same"


def test_host_timing_reads_compare_latency_output():
    result = {"runtime": "litert", "interpreter": "ai-edge-litert", "threads": 1, "rounds": 2, "runs_per_round": 3,
              "models": {"dense_int8": {"median_ms": 2.0, "kernels": []},
                         "artifact": {"median_ms": 3.0, "kernels": ["builtin kernels ran 1 ops: FULLY_CONNECTED"]}}}
    t = HostTiming.from_comparison(result)
    assert t.ratio == 1.5 and t.to_dict()["verdict"] == "slower"


def test_check_speed_and_the_build_directory_baseline(tmp_path, pair):
    build = tmp_path / "build"
    (build / "baselines").mkdir(parents=True)
    (build / "model.tflite").write_bytes(pair[0])
    assert default_baseline(build / "model.tflite") is None
    (build / "baselines" / "dense_int8.tflite").write_bytes(pair[1])
    baseline = default_baseline(build / "model.tflite")
    assert baseline == build / "baselines" / "dense_int8.tflite"
    sections = check_speed(build / "model.tflite", baseline, ["rpi4", "nrf52840"])
    assert [s["profile"] for s in sections] == ["rpi4", "nrf52840"]
    assert [s["estimated"]["verdict"] for s in sections] == ["faster", "same"]
    assert sections[0] == speed_claim(*pair, "rpi4")


def test_check_cli_prints_the_speed_verdict_from_the_build_baseline(tmp_path, pair):
    """`edgesparse check` on a build's model.tflite compares with baselines/dense_int8.tflite by itself; --baseline
    names another file; a missing --baseline file is refused (exit 2); the verdict never changes the exit code."""
    import json

    from click.testing import CliRunner

    from edgesparse.cli.commands import main

    build = tmp_path / "build"
    (build / "baselines").mkdir(parents=True)
    (build / "model.tflite").write_bytes(pair[0])
    (build / "baselines" / "dense_int8.tflite").write_bytes(pair[1])
    runner = CliRunner()
    result = runner.invoke(main, ["check", str(build / "model.tflite"), "--profile", "rpi4", "--json"])
    [document] = json.loads(result.output)
    assert document["speed"]["estimated"]["verdict"] == "faster" and result.exit_code == (0 if document["fits"] else 1)
    text = runner.invoke(main, ["check", str(build / "model.tflite"), "--profile", "rpi4"], env={"COLUMNS": "160"})
    assert "speed on rpi4" in text.output and "transfer" in " ".join(text.output.split())
    other = tmp_path / "dense.tflite"
    other.write_bytes(pair[1])
    alone = tmp_path / "alone.tflite"
    alone.write_bytes(pair[0])
    named = runner.invoke(main, ["check", str(alone), "--profile", "rpi4", "--json", "--baseline", str(other)])
    assert json.loads(named.output)[0]["speed"] == document["speed"]
    assert "speed" not in json.loads(runner.invoke(main, ["check", str(alone), "--profile", "rpi4",
                                                          "--json"]).output)[0]
    missing = runner.invoke(main, ["check", str(alone), "--profile", "rpi4", "--baseline", str(tmp_path / "no")])
    assert missing.exit_code == 2 and "does not exist" in missing.output

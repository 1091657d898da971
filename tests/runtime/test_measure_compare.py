"""compare_latency: models timed side by side in one child process, alternating round by round (real LiteRT and
TFLM on tiny models; the structure and the interleaving are asserted, never timing values)."""

from __future__ import annotations

import pytest

from edgesparse.errors import ModelError
from edgesparse.runtime.measure import compare_latency


def test_models_alternate_round_by_round_and_ratios_are_against_the_first(tiny_models):
    models = {"dense_int8": tiny_models["digits"][0], "kws": tiny_models["kws"][0],
              "sparse_fc": tiny_models["sparse_fc"][0]}
    r = compare_latency(models, rounds=4, runs_per_round=3, warmup=1)
    assert r["runtime"] == "litert" and r["baseline"] == "dense_int8" and r["threads"] == 1
    # every round runs every model once, and the first model rotates: none always goes first
    assert r["order"] == [["dense_int8", "kws", "sparse_fc"], ["kws", "sparse_fc", "dense_int8"],
                          ["sparse_fc", "dense_int8", "kws"], ["dense_int8", "kws", "sparse_fc"]]
    for name, m in r["models"].items():
        assert m["runs"] == 4 * 3 and 0 < m["min_ms"] <= m["median_ms"] <= m["p90_ms"]
        assert r["ratios"][name] == pytest.approx(m["median_ms"] / r["models"]["dense_int8"]["median_ms"])
        assert len(r["round_ratios"][name]) == 4
    assert r["ratios"]["dense_int8"] == 1.0
    # the sparse int8 FULLY_CONNECTED runs on LiteRT's builtin kernels, the dense model in XNNPACK
    assert any("builtin" in k for k in r["models"]["sparse_fc"]["kernels"])
    assert any("XNNPACK" in k for k in r["models"]["dense_int8"]["kernels"])


def test_tflm_comparison(tiny_models):
    r = compare_latency({"a": tiny_models["digits"][0], "b": tiny_models["kws"][0]}, runtime="tflm", rounds=2,
                        runs_per_round=2, warmup=0)
    assert r["runtime"] == "tflm" and r["threads"] == 1 and r["order"] == [["a", "b"], ["b", "a"]]
    assert "tflite-micro" in r["interpreter"] and r["models"]["b"]["runs"] == 4


def test_bad_options_and_bad_files_are_model_errors(tiny_models):
    digits = tiny_models["digits"][0]
    with pytest.raises(ModelError, match="two or more models"):
        compare_latency({"only": digits})
    with pytest.raises(ModelError, match="rounds >= 1"):
        compare_latency({"a": digits, "b": digits}, rounds=0)
    with pytest.raises(ModelError):
        compare_latency({"a": digits, "b": b"not a flatbuffer"})


def test_a_time_budget_cuts_runs_per_round_never_rounds(tiny_models):
    """A build's host measurement is bounded: a tiny budget leaves every round, each with the minimum runs."""
    from edgesparse.runtime.measure import MIN_RUNS_PER_ROUND

    models = {"a": tiny_models["kws"][0], "b": tiny_models["digits"][0]}
    r = compare_latency(models, rounds=4, runs_per_round=50, warmup=1, max_seconds=1e-6)
    assert r["rounds"] == 4 and r["runs_per_round"] == MIN_RUNS_PER_ROUND
    assert r["models"]["a"]["runs"] == 4 * MIN_RUNS_PER_ROUND and len(r["order"]) == 4
    roomy = compare_latency(models, rounds=2, runs_per_round=5, warmup=1, max_seconds=60.0)
    assert roomy["runs_per_round"] == 5

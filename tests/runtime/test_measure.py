"""measure(): benchmark_model-style timing in LiteRT and TFLM; random inputs; XNNPACK fallback."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgesparse.cli.commands import main
from edgesparse.errors import ModelError
from edgesparse.runtime import litert
from edgesparse.runtime.measure import measure, random_input, tflm_arena_bytes
from edgesparse.tflite import edit as tflite_edit

KWS = "keyword_spotting/kws_ref_model.tflite"


def _sane(m, runs):
    assert m.runs == runs
    assert len(m.samples_ms) == runs
    assert 0 < m.min_ms <= m.median_ms <= m.p90_ms
    assert m.min_ms <= m.mean_ms
    assert m.std_ms >= 0


def test_measure_litert_on_a_tiny_model(mlperf_dir):
    m = measure(mlperf_dir / KWS, runs=7, warmup=2, threads=1)
    _sane(m, 7)
    assert m.runtime == "litert" and m.interpreter in ("ai-edge-litert", "tflite-runtime")
    assert m.kernels and "XNNPACK" in m.kernels[0]
    assert set(m.to_dict()) >= {"median_ms", "p90_ms", "min_ms", "mean_ms", "std_ms"}


def test_measure_tflm_reports_arena(mlperf_dir):
    m = measure(mlperf_dir / KWS, runs=3, warmup=1, runtime="tflm")
    _sane(m, 3)
    assert m.arena_bytes == tflm_arena_bytes(mlperf_dir / KWS)["total"]


def test_random_input_dtypes():
    rng = np.random.default_rng(0)
    x = random_input([1, 4, 4, 3], np.int8, rng)
    assert x.dtype == np.int8 and x.shape == (1, 4, 4, 3)
    assert random_input([2, 3], np.float32, rng).dtype == np.float32
    u = random_input([100], np.uint8, rng)
    assert u.dtype == np.uint8 and u.max() <= 127
    assert random_input([5], np.bool_, rng).dtype == np.bool_


def test_measure_rejects_bad_options(mlperf_dir, tmp_path):
    with pytest.raises(ModelError):
        measure(mlperf_dir / KWS, runs=0)
    with pytest.raises(ModelError):
        measure(tmp_path / "missing.tflite")
    with pytest.raises(ModelError):
        measure(mlperf_dir / KWS, runtime="onnx")


@pytest.fixture(scope="module")
def sparse_int8_fc() -> bytes:
    """A small Dense model, 80% zeros, full int8 with EXPERIMENTAL_SPARSITY: XNNPACK refuses it."""
    from edgesparse.pipeline.tf_env import import_tf

    tf, keras = import_tf()
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((256,)), keras.layers.Dense(256, activation="relu"),
                              keras.layers.Dense(16)])
    for layer in model.layers:
        w, b = layer.get_weights()
        w[np.abs(w) < np.quantile(np.abs(w), 0.8)] = 0
        layer.set_weights([w, b])
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT, tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    rng = np.random.default_rng(0)
    conv.representative_dataset = lambda: ([rng.random((1, 256), dtype=np.float32)] for _ in range(8))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    return conv.convert()


def test_sparse_int8_fc_falls_back_to_builtin_kernels(sparse_int8_fc):
    m = measure(sparse_int8_fc, runs=3, warmup=1)
    _sane(m, 3)
    assert "builtin kernels used" in m.kernels[0]


def test_sparse_int8_fc_is_priced_with_builtin_kernels(sparse_int8_fc):
    from edgesparse.estimate import op_features
    from edgesparse.profiles.profile import load_profile
    from edgesparse.tflite.graph import load_graph

    feats = [f for f in op_features(load_graph(sparse_int8_fc), load_profile("host")) if f.kind == "fc"]
    assert feats and all("builtin" in f.coef_key or "sparse" in f.coef_key for f in feats)


def test_measure_command_json(mlperf_dir):
    res = CliRunner().invoke(main, ["measure", str(mlperf_dir / KWS), "--runs", "3", "--warmup", "1", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["runs"] == 3 and data["median_ms"] > 0


def test_measure_command_bad_file(tmp_path):
    bad = tmp_path / "x.tflite"
    bad.write_bytes(b"not a model")
    res = CliRunner().invoke(main, ["measure", str(bad), "--runs", "2"])
    assert res.exit_code == 2
    assert "not a TFLite flatbuffer" in res.output and "Pass a .tflite file" in res.output


def test_measure_tflm_without_tflite_micro_exits_2_with_the_install_hint(mlperf_dir, monkeypatch):
    import sys

    for name in [m for m in sys.modules if m == "tflite_micro" or m.startswith("tflite_micro.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "tflite_micro", None)
    res = CliRunner().invoke(main, ["measure", str(mlperf_dir / KWS), "--runtime", "tflm", "--runs", "1"])
    assert res.exit_code == 2, res.output
    assert "TFLite Micro's Python interpreter is not installed" in res.output
    assert "pip install tflite-micro" in res.output


def test_measure_refuses_a_graph_without_operators(mlperf_dir):
    model = tflite_edit.load_model((mlperf_dir / KWS).read_bytes())
    model.subgraphs[0].operators = []
    for runtime in ("litert", "tflm"):
        with pytest.raises(ModelError, match="0 operators") as info:
            measure(tflite_edit.save_model(model), runs=1, warmup=0, runtime=runtime)
        assert info.value.exit_code == 2


class _FailsToInvoke:
    def invoke(self):
        raise RuntimeError("Node number 3 (CONV_2D) failed to invoke.")


def test_a_failure_while_invoking_a_users_file_is_exit_2(mlperf_dir, monkeypatch):
    monkeypatch.setattr(litert, "run_with_fallback",
                        lambda data, work, threads=None: (litert.Prepared(_FailsToInvoke(), "ai-edge-litert", "LiteRT"),
                                                          None))
    monkeypatch.setattr(litert, "kernel_report", lambda prepared, graph: litert.KernelReport(["builtin kernels"]))
    res = CliRunner().invoke(main, ["measure", str(mlperf_dir / KWS), "--runs", "2"])
    assert res.exit_code == 2, res.output
    assert "The model failed while running" in res.output and "failed to invoke" in res.output

"""The estimator on DECODE-compressed TFLite Micro models: the planned arena against TFLM's own (with and
without alternate decompression memory), the decode work in the latency, a pruned model's figures against
the dense one's, and a corrupt DECODE through `edgesparse check`. No TensorFlow: the models are built with
the tflite-micro wheel's model editor."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgesparse import estimate
from edgesparse.estimate.decoding import decode_work
from edgesparse.profiles.profile import PROFILE_DIR, load_profile
from edgesparse.runtime.tflm_decode import measured_arena
from edgesparse.tflite.decode import DCM_BYTES, decode_sites
from edgesparse.tflite.decode_compress import compress_model
from edgesparse.tflite.graph import load_graph

pytest.importorskip("tflite_micro")  # builds the models (model editor) and measures them


def _two_fc_model(k=96, n1=64, n2=32, density=0.2, lut_second=False) -> bytes:
    """x (1, k) -> FC (n1 x k, pruned) -> FC (n2 x n1: pruned, or 8 distinct values for LUT) -> y, int8."""
    from tflite_micro.tensorflow.lite.micro.compression import model_editor as me
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    rng = np.random.default_rng(0)

    def weights(n, m):
        if lut_second and n == n2:
            return rng.choice(np.arange(-112, 113, 32, dtype=np.int8), size=(n, m))
        return np.where(rng.random((n, m)) < density, rng.integers(-127, 128, (n, m)), 0).astype(np.int8)

    def fc(x, n, m, name, zero_point):
        w = me.Tensor(shape=(n, m), dtype=fb.TensorType.INT8, data=weights(n, m),
                      quantization=me.Quantization([0.01] * n, [0] * n, axis=0), name=f"{name}_w")
        b = me.Tensor(shape=(n,), dtype=fb.TensorType.INT32, data=rng.integers(-500, 500, n).astype(np.int32),
                      quantization=me.Quantization([0.0005] * n, [0] * n, axis=0), name=f"{name}_b")
        y = me.Tensor(shape=(1, n), dtype=fb.TensorType.INT8, quantization=me.Quantization(0.1, zero_point),
                      name=f"{name}_y")
        return [w, b, y], me.Operator(opcode=fb.BuiltinOperator.FULLY_CONNECTED, inputs=[x, w, b], outputs=[y])

    x = me.Tensor(shape=(1, k), dtype=fb.TensorType.INT8, quantization=me.Quantization(0.05, 0), name="x")
    t1, op1 = fc(x, n1, k, "fc1", 0)
    t2, op2 = fc(t1[2], n2, n1, "fc2", 3)
    model = me.Model()
    model.add_subgraph(tensors=[x, *t1, *t2], inputs=[x], outputs=[t2[2]], operators=[op1, op2])
    return bytes(model.build())


@pytest.fixture(scope="module")
def models() -> dict[str, bytes]:
    dense = _two_fc_model()
    mixed = _two_fc_model(lut_second=True)
    return {"dense": dense, "pruning": compress_model(dense, {"fc1_w": "PRUNING", "fc2_w": "PRUNING"}),
            "lut": compress_model(mixed, {"fc1_w": "PRUNING", "fc2_w": "LUT"}), "lut_dense": mixed}


@pytest.mark.parametrize("name", ["dense", "pruning", "lut"])
def test_planned_arena_of_a_compressed_model_matches_tflm(models, name):
    """The head is exact; the tail is exact too on these models (DECODE's state included)."""
    model = models[name]
    est = estimate.tflm_ram(load_graph(model))
    real = measured_arena(model)
    assert est.planned_bytes == real["head"], (est.breakdown, real)
    assert est.total_bytes == real["total"], (est.breakdown, real)
    if name != "dense":
        assert est.decode is not None and est.decode["tensors"] == 2
        assert est.breakdown["decode_state"] == 2 * 96      # measured: 96 B of persistent buffers per DECODE


def test_decoded_tensor_lives_in_the_arena_from_its_decode_to_its_reader(models):
    graph = load_graph(models["pruning"])
    lifetimes = estimate.tensor_lifetimes(graph)
    for site in decode_sites(graph):
        first, last = lifetimes[site.output]
        assert first == site.op + 1 and last == max(site.consumers) + 1


@pytest.mark.parametrize("extra", [0, -1])
def test_alternate_decompression_memory_matches_tflm(models, extra):
    """Decoded tensors go to the alternate memory; one that does not fit is decoded into the arena (TFLM's rule)."""
    model = models["pruning"]
    largest = decode_work(load_graph(model)).largest_decoded_bytes
    alt = largest + extra
    est = estimate.tflm_ram(load_graph(model), alt_decompression_bytes=alt)
    real = measured_arena(model, alt_decompression_bytes=alt)
    assert (est.planned_bytes, est.total_bytes) == (real["head"], real["total"]), (est.breakdown, real)
    assert est.alt_decompression["needed_bytes"] == largest
    assert bool(est.alt_decompression["tensors_in_arena"]) == (extra < 0)
    plain = estimate.tflm_ram(load_graph(model))
    assert (est.planned_bytes < plain.planned_bytes) == (extra == 0)


def _nrf52840_with_alt(tmp_path, alt: int):
    text = (PROFILE_DIR / "nrf52840.toml").read_text()
    text = text.replace("[runtime]\n", f"[runtime]\nalt_decompression_bytes = {alt}\n", 1)
    source = '"runtime.alt_decompression_bytes" = "assumption: a test device"'
    text = text.replace("[sources]\n", f"[sources]\n{source}\n", 1)
    path = tmp_path / "nrf52840_alt.toml"
    path.write_text(text)
    return load_profile(str(path))


def test_pruned_and_dense_get_different_correct_figures_on_nrf52840(models):
    dense = estimate.check_model(models["dense"], "nrf52840")
    pruned = estimate.check_model(models["pruning"], "nrf52840")
    assert pruned.flash.model_bytes == len(models["pruning"]) < len(models["dense"]) == dense.flash.model_bytes
    assert pruned.flash_bytes - dense.flash_bytes == len(models["pruning"]) - len(models["dense"])
    # RAM: the decoded tensors in the arena and DECODE's state, on the 32-bit layout (64 B per DECODE)
    graph = load_graph(models["pruning"])
    assert pruned.ram.breakdown["decode_state"] == 2 * 64
    assert pruned.ram.planned_bytes > dense.ram.planned_bytes
    # latency: the same MACs plus the decode work, priced per element and said to be a transfer
    work = decode_work(graph)
    d = pruned.to_dict()
    assert d["decode"]["elements_per_invoke"] == work.elements == 96 * 64 + 64 * 32
    [coef] = d["decode"]["latency_coefficients"]
    assert coef["basis"] == "transferred" and coef["source"].startswith("assumption")
    decode_us = sum(o.predicted_us for o in pruned.latency.ops if o.elements_decoded)
    assert decode_us > 0
    assert pruned.latency_ms > dense.latency_ms
    assert d["decode"]["decode_us"] == pytest.approx(
        work.elements * coef["cycles_per_element"] / load_profile("nrf52840").clock_mhz, rel=1e-3)
    assert dense.to_dict()["decode"] is None


def test_alt_memory_profile_reports_what_it_needs(models, tmp_path):
    largest = decode_work(load_graph(models["pruning"])).largest_decoded_bytes
    roomy = estimate.check_model(models["pruning"], _nrf52840_with_alt(tmp_path, largest))
    plain = estimate.check_model(models["pruning"], "nrf52840")
    alt = roomy.to_dict()["decode"]["alt_decompression"]
    assert alt["needed_bytes"] == largest and alt["fits"] and not alt["tensors_in_arena"]
    assert roomy.ram.planned_bytes < plain.ram.planned_bytes
    small = estimate.check_model(models["pruning"], _nrf52840_with_alt(tmp_path, largest - 1))
    assert not small.to_dict()["decode"]["alt_decompression"]["fits"]
    assert any("alternate decompression memory" in w for w in small.warnings)


def test_lut_decode_is_priced_with_its_own_coefficient(models):
    d = estimate.check_model(models["lut"], "nrf52840").to_dict()["decode"]
    assert d["elements_by_type"] == {"PRUNING": 96 * 64, "LUT": 64 * 32}
    assert {c["type"] for c in d["latency_coefficients"]} == {"PRUNING", "LUT"}


def _corrupt(model: bytes) -> bytes:
    """The first DECODE's PRUNING header with a prune version the kernel does not know."""
    graph = load_graph(model)
    site = decode_sites(graph)[0]
    anc = graph.tensors[site.ancillary]
    start = anc.buffer_offset
    assert start is not None
    bad = bytearray(model)
    bad[start + 4] = 9           # the prune version byte: the kernel would refuse it, we must too
    assert anc.buffer_bytes > DCM_BYTES
    return bytes(bad)


def test_corrupt_decode_is_one_clear_error_from_check(models, tmp_path):
    path = tmp_path / "corrupt.tflite"
    path.write_bytes(_corrupt(models["pruning"]))
    done = subprocess.run([sys.executable, "-m", "edgesparse", "check", str(path), "--profile", "nrf52840"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "unsupported version" in done.stderr + done.stdout


def test_truncated_decode_table_is_one_clear_error_from_check(models, tmp_path):
    """A bitmap with every bit set needs more values than the table holds: ModelError, exit 2."""
    from click.testing import CliRunner

    from edgesparse.cli.commands import main

    graph = load_graph(models["pruning"])
    site = decode_sites(graph)[0]
    enc = graph.tensors[site.encoded]
    bad = bytearray(models["pruning"])
    bad[enc.buffer_offset:enc.buffer_offset + enc.buffer_bytes] = b"\xff" * enc.buffer_bytes
    path = tmp_path / "truncated.tflite"
    path.write_bytes(bytes(bad))
    res = CliRunner().invoke(main, ["check", str(path), "--profile", "nrf52840"])
    assert res.exit_code == 2, res.output
    assert "value table is shorter" in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_check_of_a_compressed_file_imports_no_tensorflow(models, tmp_path):
    """`check` on a DECODE file is the analysis half: no TensorFlow (and no tflite-micro) is loaded for it."""
    path = tmp_path / "compressed.tflite"
    path.write_bytes(models["pruning"])
    code = (
        "import json, sys\n"
        "from edgesparse.cli.commands import main\n"
        f"sys.argv = ['edgesparse', 'check', {str(path)!r}, '--profile', 'nrf52840', '--json']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    code = e.code\n"
        "loaded = [m for m in ('tensorflow', 'tflite_micro') if m in sys.modules]\n"
        "assert not loaded, f'{loaded} imported'\n"
        "sys.exit(code)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    [result] = json.loads(proc.stdout)
    assert result["decode"]["elements_per_invoke"] == 96 * 64 + 64 * 32
    assert result["flash"]["model_bytes"] == len(models["pruning"])

"""DECODE compression in `edgesparse build` for TFLite Micro profiles (pipeline.mcu_compress, --mcu-compression).

Module tests run a small pruned int8 model (conv, depthwise, FC 512x64 and 64x32 kernels that pay, a classifier) in
TFLite Micro itself; one whole build checks --mcu-compression off end to end (the default, auto, is checked on
test_build_e2e's nrf52840 build), and a LiteRT profile with --mcu-compression is refused before any work.
"""

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from support.models import pruned_cnn_int8

from edgesparse.builddir import BASELINES, REPORT_SECTIONS, check_report_shape
from edgesparse.cli.commands import main
from edgesparse.errors import DataError
from edgesparse.pipeline.build import BuildOptions, build
from edgesparse.pipeline.build_checks import mcu_compression_mode
from edgesparse.pipeline.mcu_compress import compress_for_mcu, model_inputs
from edgesparse.profiles.profile import load_profile
from edgesparse.runtime.tflm_decode import measured_arena
from edgesparse.runtime.verify import run_tflite
from edgesparse.tflite.decode import decode_sites

pytest.importorskip("tflite_micro")

FC_NAME = "fc"                  # the name pruned_cnn gives the first Dense


@pytest.fixture(scope="module")
def pruned_int8():
    """(int8 .tflite, float inputs): conv 8x3x3 -> depthwise -> Dense 512x64 -> Dense 64x32 -> Dense 4, 80 % zeros."""
    return pruned_cnn_int8(samples=48, dense=(64, 32), classes=4)


def _profile_copy(tmp_path, name, *, budget_ram=None, alt=None):
    """A copy of nrf52840.toml under another name, with its [budget] ram_bytes and/or alt decompression memory."""
    text = load_profile("nrf52840").path.read_text()
    text = re.sub(r'(?m)^name = "nrf52840"', f'name = "{name}"', text)
    if budget_ram is not None:
        text = re.sub(r"(?ms)(^\[budget\].*?^ram_bytes = )[0-9_]+", rf"\g<1>{budget_ram}", text)
    if alt is not None:
        text = text.replace("persistent_ram_bytes = 4096",
                            f"persistent_ram_bytes = 4096\nalt_decompression_bytes = {alt}")
        text += '"runtime.alt_decompression_bytes" = "assumption: a test device with a separate decompression memory"\n'
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return load_profile(str(path))


def _compressed(section):
    return [t for t in section["tensors"] if t["method"] != "dense"]


@pytest.fixture(scope="module")
def default_result(pruned_int8):
    model, x = pruned_int8
    return compress_for_mcu(model, load_profile("nrf52840"), "auto", x, dense_int8=model, random_samples=16)


def test_compressed_model_is_smaller_and_bitwise_the_same_in_tflm(pruned_int8, default_result):
    model, x = pruned_int8
    result, section = default_result, default_result.section
    assert result.applied and len(result.uncompressed) < len(model)          # graph overhead stripped first
    assert result.dense_int8 == result.uncompressed                           # the baseline stripped the same way
    assert len(result.model) < 0.7 * len(result.uncompressed)
    assert section["compressed_bytes"] == len(result.model)
    assert section["uncompressed_bytes"] == len(result.uncompressed)
    assert section["saved_bytes"] == len(result.uncompressed) - len(result.model)
    assert section["ratio_vs_dense_int8"] == round(len(result.uncompressed) / len(result.model), 3)
    overhead = section["overhead"]
    assert overhead["saved_bytes"] == len(model) - len(result.uncompressed) == overhead["dense_int8_saved_bytes"]
    assert "tensor names" in {item["what"] for item in overhead["items"] if item["when"] == "before DECODE"}
    assert sorted(t["shape"] for t in _compressed(section)) == [[32, 64], [64, 512]]   # the two FC kernels pay
    assert len(decode_sites(result.model)) == 2
    # outputs bitwise identical in TFLM, checked here independently of the module's own proof
    expected = run_tflite(model, x, runtime="tflm").outputs.tobytes()
    assert run_tflite(result.model, x, runtime="tflm").outputs.tobytes() == expected
    assert run_tflite(result.uncompressed, x, runtime="tflm").outputs.tobytes() == expected
    verification = section["verification"]
    assert verification["bitwise_identical"] is True
    assert (verification["samples"], verification["random_samples"], verification["decoded_tensors_equal"]) == (
        48, 16, 2)
    arena = section["arena"]
    assert arena["compressed_measured_bytes"] == measured_arena(result.model)["total"]
    assert arena["uncompressed_measured_bytes"] == measured_arena(result.uncompressed)["total"]
    names = {t["name"] for t in _compressed(section)}
    assert any("fc2" in name for name in names) and all(names)              # the converter's names, not stripped
    assert arena["added_bytes"] >= 64 * 512 - 4096                          # the decoded FC kernel lives there
    assert section["decoded_elements_per_invoke"] == 64 * 512 + 32 * 64
    assert section["ram_budget"] == {"limit_bytes": 131_072, "kept_dense_for_ram": [], "reason": None}
    assert result.warnings == []


def test_a_small_ram_budget_sends_the_largest_decoded_tensor_back_to_dense(tmp_path, pruned_int8, default_result):
    model, x = pruned_int8
    arena = default_result.section["arena"]
    # room for the plain model and the decoded 2 KiB fc2 kernel, not for the decoded 32 KiB fc kernel
    limit = arena["uncompressed_measured_bytes"] + 4096 + 4096
    assert arena["compressed_measured_bytes"] + 4096 > limit
    events = []
    result = compress_for_mcu(model, _profile_copy(tmp_path, "small_ram", budget_ram=limit), "auto", x,
                              random_samples=8, progress=lambda event, fields: events.append((event, fields)))
    section = result.section
    ram = section["ram_budget"]
    assert ram["limit_bytes"] == limit and len(ram["kept_dense_for_ram"]) == 1
    assert ram["kept_dense_for_ram"][0].startswith(f"{FC_NAME}/") or "/fc/" in ram["kept_dense_for_ram"][0]
    assert "exceeds the RAM budget" in ram["reason"] and f"{limit:,} B" in ram["reason"]
    fc = next(t for t in section["tensors"] if t["name"] == ram["kept_dense_for_ram"][0])
    assert fc["method"] == "dense" and "kept dense for RAM" in fc["reason"]
    assert [t["shape"] for t in _compressed(section)] == [[32, 64]]        # the smaller one still pays and fits
    assert section["arena"]["compressed_measured_bytes"] + 4096 <= limit
    assert section["arena"]["compressed_measured_bytes"] == measured_arena(result.model)["total"]
    assert [f["message"] for e, f in events if e == "warning"] == result.warnings and result.warnings
    assert "kept dense to fit RAM" in result.warnings[0]


def test_a_decompression_memory_takes_the_decoded_tensors(tmp_path, pruned_int8, default_result):
    model, x = pruned_int8
    largest = 64 * 512
    fits = compress_for_mcu(model, _profile_copy(tmp_path, "alt_fits", alt=largest), "auto", x, random_samples=8)
    assert fits.applied and fits.section["alt_decompression"] == {"available_bytes": largest, "needed_bytes": largest}
    measured = fits.section["arena"]["compressed_measured_bytes"]
    assert measured == measured_arena(fits.model, alt_decompression_bytes=largest)["total"]
    assert measured < default_result.section["arena"]["compressed_measured_bytes"] - largest // 2
    assert all(t["arena_added_bytes"] == 0 for t in fits.section["tensors"])
    short = compress_for_mcu(model, _profile_copy(tmp_path, "alt_short", alt=largest - 1), "auto", x,
                             random_samples=8)
    assert [t["shape"] for t in _compressed(short.section)] == [[32, 64]]   # fc's decoded 32 KiB no longer fit
    assert short.section["alt_decompression"] == {"available_bytes": largest - 1, "needed_bytes": 32 * 64}
    assert "does not fit the 32,767 B decompression memory" in short.section["ram_budget"]["reason"]


def test_off_returns_the_uncompressed_file_stripped(pruned_int8):
    model, x = pruned_int8
    result = compress_for_mcu(model, load_profile("nrf52840"), "off", x, random_samples=8)
    assert result.model == result.uncompressed and not result.applied and result.section["mode"] == "off"
    assert decode_sites(result.model) == [] and len(result.model) < len(model)
    assert result.section["tensors"] == [] and result.section["verification"]["decoded_tensors_equal"] == 0
    assert result.section["verification"]["bitwise_identical"] is True


def test_model_inputs_quantize_like_the_input_tensor(pruned_int8):
    model, x = pruned_int8
    q = model_inputs(model, x)
    assert q.dtype == np.int8 and q.shape == x.shape and q.min() >= -128


def test_mode_follows_the_runtime():
    assert mcu_compression_mode(None, "tflm") == "auto" and mcu_compression_mode("lut", "tflm") == "lut"
    assert mcu_compression_mode(None, "litert") == "off" and mcu_compression_mode("off", "litert") == "off"
    for bad in ("prune", "lut", "auto"):
        with pytest.raises(DataError, match="only to TFLite Micro"):
            mcu_compression_mode(bad, "litert")
    with pytest.raises(DataError, match="Bad --mcu-compression"):
        mcu_compression_mode("gzip", "tflm")


def test_report_section_and_baseline_are_part_of_the_build_dir_contract():
    assert BASELINES["pruned_int8"] == "baselines/pruned_int8.tflite"
    assert REPORT_SECTIONS["compression"] is dict
    check_report_shape({"schema_version": 1, "compression": None}, "report.json")


def test_compression_on_a_litert_profile_is_refused_before_any_work(tmp_path):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["build", "--profile", "rpi4", "--mcu-compression", "prune",
                                       "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert "--mcu-compression applies only to TFLite Micro profiles" in result.output
    assert not out.exists()
    events = []
    with pytest.raises(DataError):
        build(BuildOptions(profile="rpi4", mcu_compression="auto", out=out),
              progress=lambda event, fields: events.append(event))
    assert events == []                                   # no stage started: nothing was loaded or trained


def _digits_nrf52840_build(out, *options) -> dict:
    """`edgesparse build` of the digits demo for nrf52840 (1 epoch) with `options`; its report.json.

    Exit code 1 is allowed: a one-epoch build may fail a gate (agreement, a budget) and still writes its report;
    a crash or a refused option is not.
    """
    result = CliRunner().invoke(main, ["build", "--profile", "nrf52840", "--epochs", "1", *options, "--out", str(out)],
                                catch_exceptions=False)
    assert result.exit_code in (0, 1), result.output
    return json.loads((out / "report.json").read_text())


@pytest.mark.slow
def test_build_with_compression_off_writes_the_plain_int8_file(tmp_path):
    out = tmp_path / "digits-nrf-off"
    report = _digits_nrf52840_build(out, "--mcu-compression", "off")
    section = report["compression"]
    assert section["mode"] == "off" and section["applied"] is False
    assert report["options"]["mcu_compression"] == "off"
    artifact = (out / "model.tflite").read_bytes()
    assert decode_sites(artifact) == [] and section["compressed_bytes"] == len(artifact)
    assert not (out / BASELINES["pruned_int8"]).exists()           # it would be model.tflite again
    assert "compress" not in report["timings_s"]


@pytest.mark.parametrize(("args", "message"), [
    (["--profile", "rpi4", "--cluster", "4"], "--cluster pays only where TFLite Micro's LUT decoder"),
    (["--profile", "nrf52840", "--mcu-compression", "prune", "--cluster", "4"], "--mcu-compression prune"),
    (["--profile", "nrf52840", "--cluster", "2"], "Too few clusters"),
    (["--profile", "nrf52840", "--cluster", "200"], "Too many clusters"),
])
def test_cluster_is_refused_before_any_work_where_it_cannot_pay(tmp_path, args, message):
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["build", *args, "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 2, result.output
    assert message in result.output and not out.exists()


@pytest.mark.slow
def test_build_with_cluster_reports_its_accuracy_and_lut_pays(tmp_path):
    """--cluster 4 on the digits demo: 4 values per kernel, so LUT's 2-bit indices beat PRUNING's bitmap."""
    report = _digits_nrf52840_build(tmp_path / "digits-nrf-cluster", "--cluster", "4")
    cluster = report["compression"]["cluster"]
    assert cluster["clusters"] == 4 and cluster["clustered_layers"]
    assert all(layer["distinct_values"] <= 4 for layer in cluster["layers"] if layer["clustered"])
    assert 0.0 <= cluster["accuracy_after"] <= 1.0 and cluster["accuracy_before"] == report["accuracy"]["pruned_keras"]
    assert report["accuracy"]["clustered_keras"] == cluster["accuracy_after"]
    assert "cluster" in report["timings_s"] and report["options"]["cluster"] == 4
    assert "LUT" in {t["method"] for t in report["compression"]["tensors"]}
    assert report["compression"]["verification"]["bitwise_identical"] is True

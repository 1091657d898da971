"""`edgesparse build` end to end: real TFMOT, converter, LiteRT and TFLite Micro."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from edgesparse.cli.commands import main

pytestmark = pytest.mark.slow

REQUIRED_KEYS = [
    ("sizes", "dense_float32_bytes"), ("sizes", "dense_int8_bytes"), ("sizes", "artifact_bytes"),
    ("accuracy", "dense_float"), ("accuracy", "pruned_keras"), ("accuracy", "tflite"),
    ("accuracy", "drop_points"), ("sparsity", "overall"), ("sparsity", "layers"),
]


def _build(*args):
    return CliRunner().invoke(main, ["build", *args], catch_exceptions=False)


def _graph_ops(path):
    from edgesparse.tflite.graph import load_graph

    return {op.opcode for op in load_graph(path).ops}


@pytest.fixture(scope="module")
def litert_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("litert") / "digits-rpi4"
    result = _build("--profile", "rpi4", "--epochs", "3", "--out", str(out))
    return result, out


@pytest.fixture(scope="module")
def tflm_build(tmp_path_factory):
    out = tmp_path_factory.mktemp("tflm") / "digits-nrf"
    result = _build("--profile", "nrf52840", "--epochs", "3", "--out", str(out))
    return result, out


def test_litert_build_writes_a_verified_artifact(litert_build):
    result, out = litert_build
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] is True and report["failures"] == []
    for section, key in REQUIRED_KEYS:
        assert key in report[section], (section, key)
    assert report["schema_version"] == 1
    assert report["profile"]["name"] == "rpi4" and len(report["profile"]["sha256"]) == 64
    assert report["options"]["final_sparsity"] == 0.8
    assert (out / "pruned_model.keras").is_file()
    # The artifact really runs in LiteRT and agrees with the pruned Keras model.
    from edgesparse.runtime.verify import run_tflite

    x = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)
    outputs = run_tflite((out / "model.tflite").read_bytes(), x, runtime="litert").outputs
    assert outputs.shape == (4, 10)
    assert report["accuracy"]["agreement_pruned_keras_vs_tflite"] >= 0.95
    for layer in report["sparsity"]["layers"]:
        assert abs(layer["achieved"] - layer["target"]) <= 0.01, layer
    assert report["sizes"]["artifact_bytes"] == (out / "model.tflite").stat().st_size
    assert "artifact" in result.output


def test_litert_build_states_its_speed_against_dense_int8_estimated_and_measured(litert_build):
    """report.json's "speed": the estimator's verdict for rpi4 and the host's interleaved measurement."""
    result, out = litert_build
    speed = json.loads((out / "report.json").read_text())["speed"]
    assert speed["profile"] == "rpi4"
    assert speed["dense_int8_bytes"] == (out / "baselines/dense_int8.tflite").stat().st_size
    assert speed["estimated"]["verdict"] in ("faster", "same", "slower") and speed["estimated"]["ratio"] > 0
    assert speed["host"]["rounds"] > 1 and speed["host"]["dense_int8_ms"] > 0 and speed["claim"]
    assert "speed" in " ".join(result.output.split())


def test_build_writes_its_sample_and_labels_for_deploy(litert_build):
    """sample.npz: the first 16 validation inputs exactly as the model takes them; labels.txt: class names in order."""
    import hashlib

    from edgesparse.pipeline.demos.digits import load_digits_dataset
    from edgesparse.runtime.verify import run_tflite, top1

    _, out = litert_build
    report = json.loads((out / "report.json").read_text())
    with np.load(out / "sample.npz", allow_pickle=False) as sample:
        assert sorted(sample.files) == ["x", "y"]
        x, y = sample["x"], sample["y"]
    assert x.shape == (16, 8, 8, 1) and x.dtype == np.float32 and y.shape == (16,) and y.dtype == np.int64
    ds = load_digits_dataset()
    np.testing.assert_array_equal(x, ds.x_val[:16])
    np.testing.assert_array_equal(y, ds.y_val[:16])
    assert (out / "labels.txt").read_text() == "".join(f"{d}\n" for d in range(10))
    outputs = run_tflite((out / "model.tflite").read_bytes(), x, runtime="litert").outputs
    assert np.mean(top1(outputs) == y) >= 0.8            # the artifact classifies its own sample
    for name in ("model.tflite", "sample.npz", "labels.txt"):
        entry = report["files"][name]
        data = (out / name).read_bytes()
        assert entry["bytes"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest(), name
    assert report["files"]["sample.npz"]["samples"] == 16 and report["files"]["labels.txt"]["classes"] == 10


def test_class_names_follow_the_model_outputs():
    from types import SimpleNamespace

    from edgesparse.pipeline.build import class_names

    assert class_names(SimpleNamespace(labels=["cat", "dog", "cow"]), 3) == ["cat", "dog", "cow"]
    assert class_names(SimpleNamespace(labels=None), 4) == ["0", "1", "2", "3"]
    assert class_names(SimpleNamespace(labels=["cat"]), 3) == ["cat", "1", "2"]      # ids for unnamed outputs
    assert class_names(SimpleNamespace(labels=["a", "b", "c"]), 2) == ["a", "b"]     # one line per model output


def test_tflm_build_has_no_densify_and_runs_in_tflm(tflm_build):
    result, out = tflm_build
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] is True
    assert report["profile"]["runtime"] == "tflm"
    assert "DENSIFY" not in _graph_ops(out / "model.tflite")
    assert report["verification"]["arena_bytes"] > 0
    from edgesparse.runtime.verify import run_tflite

    x = np.random.default_rng(0).random((2, 8, 8, 1), dtype=np.float32)
    assert run_tflite((out / "model.tflite").read_bytes(), x, runtime="tflm").outputs.shape == (2, 10)


def test_tflm_build_is_decode_compressed_and_bitwise_the_pruned_int8_file(tflm_build):
    """--mcu-compression auto (the default on nrf52840): a smaller model.tflite, the same outputs in TFLM."""
    from edgesparse.runtime.verify import run_tflite
    from edgesparse.tflite.decode import decode_sites

    result, out = tflm_build
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    compressed, uncompressed = (out / "model.tflite").read_bytes(), (out / "baselines/pruned_int8.tflite").read_bytes()
    section = report["compression"]
    assert report["options"]["mcu_compression"] == "auto" and section["applied"] is True
    assert len(compressed) < 0.6 * len(uncompressed)                   # the 512x128 FC kernel at 80 % zeros
    assert (section["compressed_bytes"], section["uncompressed_bytes"]) == (len(compressed), len(uncompressed))
    assert report["sizes"]["artifact_bytes"] == len(compressed) and decode_sites(compressed)
    assert section["dense_int8_bytes"] == (out / "baselines/dense_int8.tflite").stat().st_size
    assert section["verification"]["bitwise_identical"] is True and section["verification"]["samples"] > 0
    assert section["arena"]["compressed_measured_bytes"] > section["arena"]["uncompressed_measured_bytes"]
    assert section["arena"]["compressed_estimated_bytes"] > 0
    assert "compress" in report["timings_s"]
    assert section["decode_ms"] > 0 and "transferred" in section["decode_basis"]
    assert section["arena"]["compressed_estimated_head_bytes"] == section["arena"]["compressed_measured_head_bytes"]
    speed = report["speed"]   # DECODE work on every invoke: estimated slower than dense int8, not measured here
    assert speed["profile"] == "nrf52840" and speed["host"] is None and speed["estimated"]["verdict"] == "slower"
    with np.load(out / "sample.npz") as sample:
        x = sample["x"]
    outputs = run_tflite(compressed, x, runtime="tflm").outputs
    assert outputs.tobytes() == run_tflite(uncompressed, x, runtime="tflm").outputs.tobytes()


def test_missing_model_file(tmp_path):
    npz = tmp_path / "d.npz"
    np.savez(npz, x_train=np.zeros((4, 8, 8, 1)), y_train=np.zeros(4, int), x_val=np.zeros((2, 8, 8, 1)),
             y_val=np.zeros(2, int))
    result = _build("--model", str(tmp_path / "nope.h5"), "--data", str(npz), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert "The model file does not exist" in result.output                 # ours, not a click usage error
    assert "nope.h5" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def test_file_that_is_not_a_model(tmp_path):
    fake = tmp_path / "model.h5"
    fake.write_bytes(b"this is not an HDF5 file at all")
    npz = tmp_path / "d.npz"
    np.savez(npz, x_train=np.zeros((4, 8, 8, 1)), y_train=np.zeros(4, int), x_val=np.zeros((2, 8, 8, 1)),
             y_val=np.zeros(2, int))
    result = _build("--model", str(fake), "--data", str(npz), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2
    assert "The file is not a Keras model" in result.output and "a text file" in result.output
    assert "model.h5" in result.output and "Traceback" not in result.output


def test_data_whose_shape_does_not_match(tmp_path):
    from edgesparse.pipeline.demos.digits import build_digits_model

    model = build_digits_model()
    model_path = tmp_path / "digits.keras"
    model.save(model_path)
    npz = tmp_path / "wrong.npz"
    np.savez(npz, x_train=np.zeros((4, 28, 28, 1), np.float32), y_train=np.zeros(4, int),
             x_val=np.zeros((2, 28, 28, 1), np.float32), y_val=np.zeros(2, int))
    result = _build("--model", str(model_path), "--data", str(npz), "--out", str(tmp_path / "o"))
    assert result.exit_code == 2, result.output
    assert "x_train has the wrong per-sample shape for the model" in result.output
    assert "x_train" in result.output and "(8, 8, 1)" in result.output and "(28, 28, 1)" in result.output
    assert not (tmp_path / "o").exists()


def test_mlperf_tiny_resnet_builds_with_generated_data(tmp_path, mlperf_dir):
    from edgesparse.data.dataset import generate_for_model

    ds = generate_for_model((32, 32, 3), 10, n_train=256, n_val=64, seed=0, value_range=(0, 255))
    npz = tmp_path / "cifar_like.npz"
    np.savez(npz, x_train=ds.x_train, y_train=ds.y_train, x_val=ds.x_val, y_val=ds.y_val)
    out = tmp_path / "resnet"
    result = _build("--model", str(mlperf_dir / "image_classification" / "pretrainedResnet.h5"), "--data", str(npz),
                    "--profile", "rpi4", "--epochs", "2", "--max-accuracy-drop", "100", "--out", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] is True
    assert report["model"]["format"] == "h5"
    assert report["sparsity"]["overall"] > 0.7
    assert report["sizes"]["artifact_bytes"] < report["sizes"]["dense_float32_bytes"] / 4


def test_battery_compares_the_artifact_with_its_dense_baselines(litert_build, tflm_build):
    _, out = litert_build
    result = CliRunner().invoke(main, ["battery", str(out), "--rate", "1/s", "--json"])
    assert result.exit_code == 0, result.output
    (entry,) = json.loads(result.output)
    rows = {row["variant"]: row for row in entry["variants"]}
    assert set(rows) == {"pruned artifact", "dense float32", "dense int8"}
    assert rows["pruned artifact"]["model_bytes"] < rows["dense float32"]["model_bytes"]
    for row in rows.values():
        assert row["rate"] == "1/s" and row["battery_hours"] > 0 and row["energy_mj"] > 0
    # int8 work costs less energy than float32 on the same board.
    assert rows["pruned artifact"]["energy_mj"] < rows["dense float32"]["energy_mj"]

    _, out = tflm_build
    result = CliRunner().invoke(main, ["battery", str(out), "--rate", "1/s"])
    assert result.exit_code == 0, result.output
    assert "dense int8 flatbuffer" not in result.output   # DECODE compression: the artifact is not the int8 file
    as_json = CliRunner().invoke(main, ["battery", str(out), "--rate", "1/s", "--json"])
    rows = {row["variant"]: row for row in json.loads(as_json.output)[0]["variants"]}
    assert rows["pruned artifact"]["model_bytes"] < rows["pruned int8"]["model_bytes"]   # the same model, before
    # The nRF52840 profile has int8 coefficients only: float32 is unknown, not a wrong number.
    assert "unknown" in result.output


@pytest.mark.parametrize("free_kib", [150, 600], ids=["full-in-baselines", "full-in-keras-save"])
def test_a_disk_that_fills_mid_write_is_exit_2_and_keeps_the_earlier_build(tmp_path, free_kib):
    """Issue 9 item 2: the write error names the path and the OS reason; the earlier build and nothing else stays."""
    import contextlib
    import shutil
    import subprocess

    from support.builds import make_build_dir

    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        earlier = make_build_dir(disk / "digits", b"an earlier build's model", name="digits", input_shape=(8, 8, 1),
                                 num_classes=10)
        before = {p.name: p.read_bytes() for p in earlier.iterdir()}
        with contextlib.suppress(OSError), open(disk / "filler", "wb") as filler:   # leave free_kib free
            while shutil.disk_usage(disk).free > free_kib * 1024:
                filler.write(b"\0" * 16384)
                filler.flush()
        result = _build("--profile", "rpi4", "--epochs", "1", "--out", str(earlier), "--force")
        output = " ".join(result.output.split())
        assert result.exit_code == 2, output
        assert "Could not write the output" in output and "No space left on device" in output, output
        assert str(disk) in output and "internal error" not in output
        assert {p.name: p.read_bytes() for p in earlier.iterdir()} == before
        assert sorted(p.name for p in disk.iterdir()) == ["digits", "filler"]     # no staging or .old- copy
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)

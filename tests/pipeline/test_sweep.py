"""edgesparse sweep: planning, Pareto fronts, the choice, and a real interrupted-then-resumed sweep."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from edgesparse.cli.commands import main
from edgesparse.errors import DataError
from edgesparse.pipeline import sweep as sweep_mod
from edgesparse.profiles.profile import load_profile
from edgesparse.report import format as fmt

# --------------------------------------------------------------------------- planning (no TensorFlow)

def test_profiles_are_built_once_per_runtime_family():
    fams = sweep_mod.families([load_profile(n) for n in ("rpi4", "nrf52840", "pixel4", "stm32l4r5")])
    assert [(f.name, f.runtime, [p.name for p in f.profiles]) for f in fams] == [
        ("rpi4", "litert", ["rpi4", "pixel4"]), ("nrf52840", "tflm", ["nrf52840", "stm32l4r5"])]
    tflm = fams[1]
    assert sweep_mod.unbuildable_reason(tflm, "float16") and sweep_mod.unbuildable_reason(tflm, "int8") is None
    assert sweep_mod.unbuildable_reason(fams[0], "float16") is None


@pytest.mark.parametrize("text", ["", "0.5,1.0", "0,0.5", "a,b", "0.5,0.5", "1.5"])
def test_bad_sparsities(text):
    with pytest.raises(DataError, match="--sparsities"):
        sweep_mod.parse_sparsities(text)


def test_bad_quantize():
    assert sweep_mod.parse_quantize("int8, float16") == ("int8", "float16")
    with pytest.raises(DataError, match="int8, dynamic, float16, none"):
        sweep_mod.parse_quantize("int4")


def test_cache_key_follows_inputs_and_options(tmp_path):
    from edgesparse.pipeline.build import BuildOptions

    model, data = tmp_path / "m.keras", tmp_path / "d.npz"
    model.write_bytes(b"model-v1")
    data.write_bytes(b"data")
    base = BuildOptions(model=model, data=data)
    rpi4 = load_profile("rpi4")
    key = sweep_mod.point_key(sweep_mod.inputs_key(base), base, rpi4, 0.8, "int8")
    assert key == sweep_mod.point_key(sweep_mod.inputs_key(base), base, rpi4, 0.8, "int8")
    assert key != sweep_mod.point_key(sweep_mod.inputs_key(base), base, rpi4, 0.9, "int8")
    assert key != sweep_mod.point_key(sweep_mod.inputs_key(base), BuildOptions(model=model, data=data, epochs=2),
                                      rpi4, 0.8, "int8")
    assert key != sweep_mod.point_key(sweep_mod.inputs_key(base), base, load_profile("pixel4"), 0.8, "int8")
    model.write_bytes(b"model-v2")  # same path, new contents: the cache must not be reused
    assert key != sweep_mod.point_key(sweep_mod.inputs_key(base), base, rpi4, 0.8, "int8")


def test_pareto_front():
    rows = [{"accuracy": 0.99, "latency_ms": 5.0}, {"accuracy": 0.98, "latency_ms": 2.0},
            {"accuracy": 0.97, "latency_ms": 3.0},   # dominated by the 0.98 @ 2 ms row
            {"accuracy": 0.90, "latency_ms": 1.0},
            {"accuracy": 0.99, "latency_ms": 6.0},  # dominated (same acc, slower)
            {"accuracy": 0.95, "latency_ms": None}]  # no estimate: not on any front
    assert sweep_mod.pareto(rows, "latency_ms") == [3, 1, 0]


def _point(s, q, **checks):
    def check(acc_drop=0.5, fits=True, size=1000, latency=1.0, unknown=False, error=None):
        if error:
            return {"error": error, "budgets": []}
        budgets = [{"name": "ram_bytes", "ok": fits, "value": 1.0},
                   {"name": "latency_ms", "ok": not unknown, "value": None if unknown else latency}]
        return {"accuracy": 0.9, "drop_points": acc_drop, "model_bytes": size, "latency_ms": latency,
                "energy_mj": latency * 2.0, "fits": fits and not unknown, "budgets": budgets}
    return {"label": f"{s:g}/{q}", "sparsity": s, "quantize": q, "builds": {},
            "checks": {name: check(**kw) for name, kw in checks.items()}}


def test_choice_is_the_sparsest_point_that_keeps_accuracy_and_fits_everywhere():
    points = [
        _point(0.5, "int8", a={}, b={}),
        _point(0.8, "int8", a={"size": 900, "latency": 1.0}, b={}),
        _point(0.8, "float16", a={"size": 700, "latency": 2.5}, b={}),   # smaller but slower: more energy
        _point(0.9, "int8", a={"acc_drop": 3.0}, b={}),              # too much accuracy lost
        _point(0.95, "int8", a={}, b={"fits": False}),               # misses b's RAM budget
        _point(0.97, "int8", a={}, b={"unknown": True}),             # b's latency unknown: not shown to fit
        _point(0.99, "float16", a={}, b={"error": "TFLite Micro has no float16 kernels"}),
    ]
    chosen, why, rejected = sweep_mod.choose(points, ["a", "b"], 2.0)
    assert chosen["label"] == "0.8/int8"   # sparsest qualifying; less energy than 0.8/float16 on a
    assert "sparsest" in why and "least energy per inference on a" in why
    assert [r["point"] for r in rejected] == ["0.99/float16", "0.97/int8", "0.95/int8", "0.9/int8"]
    reasons = {r["point"]: " ".join(r["why"]) for r in rejected}
    assert "not buildable for b" in reasons["0.99/float16"]
    assert "latency_ms unknown" in reasons["0.97/int8"]
    assert "does not fit b: ram_bytes" in reasons["0.95/int8"]
    assert "accuracy drop 3.00 points > 2" in reasons["0.9/int8"]
    nothing, why, rejected = sweep_mod.choose(points[3:], ["a", "b"], 2.0)
    assert nothing is None and "No point" in why and len(rejected) == 4


def test_sweep_refuses_a_directory_that_is_not_a_sweep(tmp_path):
    from edgesparse.errors import OutputExistsError
    from edgesparse.pipeline.build import BuildOptions

    build = tmp_path / "digits-rpi4"
    build.mkdir()
    (build / "report.json").write_text("{}")
    with pytest.raises(OutputExistsError, match="not a sweep"):
        sweep_mod.run_sweep(sweep_mod.SweepOptions(base=BuildOptions(), out=build))
    assert (build / "report.json").read_text() == "{}" and sorted(p.name for p in build.iterdir()) == ["report.json"]


def test_a_sweep_whose_every_point_failed_fails_naming_the_causes(tmp_path, monkeypatch):
    """Issue 9 item 6: not "ok" and exit 0, and not "lower the sparsity, train longer" either."""
    from edgesparse.errors import ConversionError, PruningError
    from edgesparse.pipeline import build as pipeline

    causes = iter([ConversionError("The converter failed", received="'tf.TensorListReserve' op requires "
                                   "element_shape to be static")] * 2
                  + [PruningError("No layer would be pruned", received="head: output layer")] * 4)

    def build(options, progress=None, prepared=None):
        raise next(causes)

    monkeypatch.setattr(pipeline, "prepare_inputs", lambda options, progress=None: object())
    monkeypatch.setattr(pipeline, "build", build)
    out = tmp_path / "sweep"
    result = CliRunner().invoke(main, ["sweep", "--profile", "rpi4", "--profile", "nrf52840", "--sparsities",
                                       "0.5,0.8,0.9", "--max-accuracy-drop", "2", "--out", str(out)])
    output = " ".join(result.output.split())
    assert result.exit_code == 2, output                # a ConversionError, as the single build would exit
    assert "Every point of the sweep failed (6 of 6)" in output
    assert "element_shape to be static" in output and "No layer would be pruned" in output
    assert "lower the sparsity" not in output and "ok" not in output.split("error:")[0].split()
    doc = json.loads((out / "sweep.json").read_text())  # written for inspection, each point with its error
    assert all("error" in c for p in doc["points"] for c in p["checks"].values())
    assert not (out / "model.tflite").exists()


def test_a_sweep_that_can_build_no_point_fails(tmp_path):
    """Every job unbuildable (TFLite Micro has no float16 kernels): nothing to chart, so no exit 0."""
    result = CliRunner().invoke(main, ["sweep", "--profile", "nrf52840", "--quantize", "float16", "--sparsities",
                                       "0.5", "--out", str(tmp_path / "sweep")])
    output = " ".join(result.output.split())
    assert result.exit_code == 2, output
    assert "Every point of the sweep failed" in output and "no float16 kernels" in output


@pytest.mark.slow
def test_a_real_sweep_of_a_model_with_nothing_to_prune_fails(tmp_path):
    """A real model whose one weight layer is its output: every point raises "No layer would be pruned"."""
    import numpy as np

    from edgesparse.pipeline.tf_env import import_tf

    keras = import_tf()[1]
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(2, name="head"), keras.layers.Softmax()])
    model.save(tmp_path / "m.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x_train=rng.random((128, 8), np.float32), y_train=np.arange(128) % 2,
             x_val=rng.random((8, 8), np.float32), y_val=np.arange(8) % 2)
    result = CliRunner().invoke(main, ["sweep", "--model", str(tmp_path / "m.keras"), "--data", str(tmp_path / "d.npz"),
                                       "--profile", "rpi4", "--sparsities", "0.5,0.8", "--epochs", "1",
                                       "--out", str(tmp_path / "sweep")])
    output = " ".join(result.output.split())
    assert result.exit_code == 2, output
    assert "Every point of the sweep failed (2 of 2)" in output and "No layer would be pruned" in output
    assert "--prune-output-layer" in output                 # a fix a command-line user can apply


# --------------------------------------------------------------------------- a real sweep, interrupted and resumed

SPARSITIES = "0.5,0.8,0.95"
MAX_DROP = 3.0


@pytest.mark.parametrize("flags, refused", [
    (["--profile", "rpi4", "--cluster", "4"], "--cluster applies only to TFLite Micro and Ethos-U profiles"),
    (["--profile", "rpi4", "--mcu-compression", "prune"], "--mcu-compression applies only to TFLite Micro"),
    (["--profile", "nrf52840", "--cluster", "2"], "--cluster"),
    (["--profile", "nrf52840", "--mcu-compression", "off", "--cluster", "4"], "LUT decoder"),
])
def test_sweep_refuses_microcontroller_options_it_cannot_apply_before_building(tmp_path, flags, refused):
    """DECODE and clustering exist only for TFLite Micro families; a sweep that cannot use them says so at once."""
    out = tmp_path / "sweep"
    result = CliRunner().invoke(main, ["sweep", *flags, "--sparsities", "0.5", "--out", str(out)])
    output = " ".join(result.output.split())
    assert result.exit_code == 2, output
    assert refused in output and not out.exists()


def test_granularity_keys_the_cache_and_picks_its_default_points(tmp_path):
    """Channel and element-wise points of the same fraction are different builds; channel fractions default lower."""
    base = sweep_mod.BuildOptions()
    rpi4 = load_profile("rpi4")
    inputs = sweep_mod.inputs_key(base)
    keys = {sweep_mod.point_key(inputs, options, rpi4, 0.5, "int8")
            for options in (base, sweep_mod.BuildOptions(granularity="channel"),
                            sweep_mod.BuildOptions(granularity="channel", element_sparsity=0.6),
                            sweep_mod.BuildOptions(granularity="element"))}
    assert len(keys) == 4
    assert sweep_mod.default_sparsities("channel") == (0.25, 0.5)
    assert sweep_mod.default_sparsities("2:4") == (0.5,)
    assert sweep_mod.default_sparsities("auto") == (0.5, 0.7, 0.8, 0.9, 0.95)
    # The swept axis of a channel point is the fraction of channels removed, not the weights' sparsity.
    assert sweep_mod.achieved_sparsity({"sparsity": {"overall": 0.0}, "channels": {"removed_fraction": 0.25}}) == 0.25
    assert sweep_mod.achieved_sparsity({"sparsity": {"overall": 0.8}, "channels": None}) == 0.8


def test_block_granularity_is_not_buildable_where_the_runtime_reads_no_blocks():
    fams = {f.runtime: f for f in sweep_mod.families([load_profile("rpi4"), load_profile("nrf52840")])}
    assert "block" in sweep_mod.unbuildable_reason(fams["tflm"], "int8", "block")
    assert sweep_mod.unbuildable_reason(fams["litert"], "int8", "block") is None
    assert sweep_mod.unbuildable_reason(fams["tflm"], "int8", "channel") is None


@pytest.mark.parametrize("flags, refused", [
    (["--element-sparsity", "0.5"], "--element-sparsity"),
    (["--granularity", "2:4", "--sparsities", "0.5,0.8"], "one point"),
    (["--granularity", "channel", "--cluster", "4", "--profile", "nrf52840"], "--cluster"),
])
def test_sweep_refuses_granularity_combinations_before_building(tmp_path, flags, refused):
    out = tmp_path / "sweep"
    result = CliRunner().invoke(main, ["sweep", "--profile", "rpi4", *flags, "--out", str(out)])
    output = " ".join(result.output.split())
    assert result.exit_code == 2, output
    assert refused in output and not out.exists()


def test_microcontroller_options_reach_only_the_tflm_family():
    """A mixed sweep builds its LiteRT family without DECODE or clustering, and keys its cache without them."""
    base = sweep_mod.BuildOptions(cluster=4, mcu_compression="lut")
    fams = {f.runtime: f for f in sweep_mod.families([load_profile("rpi4"), load_profile("nrf52840")])}
    assert sweep_mod.family_options(base, fams["tflm"]) is base
    litert = sweep_mod.family_options(base, fams["litert"])
    assert (litert.cluster, litert.mcu_compression) == (None, None)


def _cli(out: Path, *extra):
    return CliRunner().invoke(main, ["sweep", "--profile", "rpi4", "--profile", "pixel4", "--sparsities", SPARSITIES,
                                     "--epochs", "1", "--max-accuracy-drop", str(MAX_DROP), "--out", str(out), *extra])


@pytest.mark.slow
def test_sweep_interrupted_then_resumed(tmp_path, monkeypatch):
    from edgesparse.pipeline import build as pipeline

    out = tmp_path / "sweep"
    real_build, real_prepare = pipeline.build, pipeline.prepare_inputs
    calls = {"build": 0, "prepare": 0}

    def build(options, progress=None, prepared=None):
        calls["build"] += 1
        if calls["build"] == 2 and interrupt:  # Ctrl-C in the middle of the second point's conversion
            def progress_then_ctrl_c(event, fields, inner=progress):
                inner(event, fields)
                if event == "stage" and fields["name"] == "convert":
                    raise KeyboardInterrupt
            return real_build(options, progress_then_ctrl_c, prepared)
        return real_build(options, progress, prepared)

    def prepare(options, progress=None):
        calls["prepare"] += 1
        return real_prepare(options, progress)

    monkeypatch.setattr(pipeline, "build", build)
    monkeypatch.setattr(pipeline, "prepare_inputs", prepare)

    # 1. Interrupted after the first point: exit 130, the finished point cached, nothing half-written.
    interrupt = True
    result = _cli(out)
    assert result.exit_code == 130, result.output
    assert "Run the same command again to resume" in result.output
    index = json.loads((out / "points" / "index.json").read_text())["points"]
    assert len(index) == 1
    (_, first), = index.items()
    first_dir = out / "points" / first["dir"]
    assert first["sparsity"] == 0.5 and (first_dir / "report.html").is_file()
    assert sorted(p.name for p in (out / "points").iterdir()) == sorted(["index.json", first["dir"]])  # no staging
    assert not (out / "sweep.json").exists()
    first_mtime = (first_dir / "model.tflite").stat().st_mtime_ns

    # 2. The same command again: the cached point is not rebuilt, the dense model is loaded once.
    interrupt = False
    calls.update(build=0, prepare=0)
    result = _cli(out)
    assert result.exit_code == 0, result.output          # a point qualifies (asserted below), so no failed choice
    assert calls == {"build": 2, "prepare": 1}
    assert (first_dir / "model.tflite").stat().st_mtime_ns == first_mtime
    assert "cached" in result.output and "sweep.html" in result.output
    doc = json.loads((out / "sweep.json").read_text())
    assert (doc["built"], doc["cached"]) == (2, 1)
    assert [p["label"] for p in doc["points"]] == ["0.5/int8", "0.8/int8", "0.95/int8"]

    # Every point was checked on both profiles, from the one rpi4 build (same runtime family).
    for p in doc["points"]:
        assert set(p["checks"]) == {"rpi4", "pixel4"} and set(p["builds"]) == {"rpi4"}
        assert (out / p["builds"]["rpi4"]["dir"] / "report.html").is_file()
        assert p["checks"]["pixel4"]["model_bytes"] == p["checks"]["rpi4"]["model_bytes"]

    # The choice, recomputed here from sweep.json: the sparsest point within MAX_DROP that fits everywhere.
    def qualifies(p):
        return all(c["drop_points"] <= MAX_DROP and all(b["ok"] and b["value"] is not None for b in c["budgets"])
                   for c in p["checks"].values())
    expected = max((p for p in doc["points"] if qualifies(p)), key=lambda p: p["sparsity"], default=None)
    assert expected is not None, "0.5 sparsity should keep the digits demo within 3 points"
    assert doc["choice"]["point"] == expected["label"]
    assert expected["label"] in result.output and "sparsest" in doc["choice"]["explanation"]
    chosen_dir = out / expected["builds"]["rpi4"]["dir"]
    assert (out / "model.tflite").read_bytes() == (chosen_dir / "model.tflite").read_bytes()
    for name in ("sample.npz", "labels.txt"):            # the copied build is deployable as it is
        assert (out / name).read_bytes() == (chosen_dir / name).read_bytes()
    assert json.loads((out / "report.json").read_text()) == json.loads((chosen_dir / "report.json").read_text())
    for r in doc["choice"]["rejected"]:
        assert r["sparsity"] > expected["sparsity"] and r["why"]

    rows = list(csv.DictReader(io.StringIO((out / "sweep.csv").read_text())))
    assert len(rows) == 6 and {r["profile"] for r in rows} == {"rpi4", "pixel4"}
    assert [r["chosen"] for r in rows].count("True") == 2
    for name in ("rpi4", "pixel4"):
        assert doc["pareto"][name]["latency_ms"], name

    # 3. Everything cached: no build and no training at all.
    calls.update(build=0, prepare=0)
    result = _cli(out)
    assert result.exit_code == 0 and calls == {"build": 0, "prepare": 0}, result.output

    # sweep.html renders in a real browser: every plot drawn, no errors, no fetches.
    from support.chromium import CHROMIUM, assert_renders_cleanly, render_in_chromium

    if Path(CHROMIUM).exists():
        assert_renders_cleanly(render_in_chromium(out / "sweep.html"), expected_svgs=3)


# --------------------------------------------------------------------------- edgesparse check, several profiles

def test_check_prints_one_matrix_for_several_profiles(mlperf_dir, monkeypatch):
    import re

    from edgesparse.estimate import latency as estimate

    real = estimate.latency_coefficients
    monkeypatch.setattr(estimate, "latency_coefficients",   # nrf52840 as a profile with no latency model
                        lambda profile: None if profile.name == "nrf52840" else real(profile))
    model = mlperf_dir / "keyword_spotting" / "kws_ref_model.tflite"
    args = ["check", str(model), "--profile", "rpi4", "--profile", "nrf52840", "--profile", "stm32l4r5"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output   # an unknown budget is not a failed one: check exits 0
    out = result.output
    header = next(line for line in out.splitlines() if "rpi4" in line and "nrf52840" in line)
    assert header.index("rpi4") < header.index("nrf52840") < header.index("stm32l4r5")
    for row in ("budget flash_bytes", "budget ram_bytes", "budget latency_ms", "flash", "RAM", "latency",
                "energy / inference", "battery life", "verdict"):
        assert re.search(rf"^\s*{re.escape(row)}\s", out, re.M), row
    latency_row = out[out.index("budget latency_ms"):].splitlines()[:2]
    assert "? / 1000 ms" in latency_row[0] and "unknown" in latency_row[1]
    assert "latency per op" not in out                      # the per-profile detail is behind --all-ops
    assert not re.search(r"^\s*budgets\s*$", out, re.M)  # no per-profile tables
    assert re.search(r"^\s*verdict\s+fits\s+latency_ms unknown\s+fits\s*$", out, re.M), out
    detailed = CliRunner().invoke(main, [*args, "--all-ops"]).output
    assert detailed.count("latency per op") == 2          # rpi4 and stm32l4r5 (nrf52840 has no latency here)
    as_json = json.loads(CliRunner().invoke(main, [*args, "--json"]).output)
    assert [d["profile"] for d in as_json] == ["rpi4", "nrf52840", "stm32l4r5"]


# --------------------------------------------------------------------------- microcontroller builds (DECODE)

def _fc_int8(n: int = 64, k: int = 96, density: float = 0.2) -> bytes:
    """input (1, k) -> FULLY_CONNECTED(int8 weights (n, k), 80 % zeros) -> output; written with TFLM's editor."""
    pytest.importorskip("tflite_micro")
    import numpy as np
    from tflite_micro.tensorflow.lite.micro.compression import model_editor as me
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    rng = np.random.default_rng(3)
    weights = np.where(rng.random((n, k)) < density, rng.integers(-127, 128, (n, k)), 0).astype(np.int8)
    x = me.Tensor(shape=(1, k), dtype=fb.TensorType.INT8, quantization=me.Quantization(0.05, 0), name="x")
    w = me.Tensor(shape=(n, k), dtype=fb.TensorType.INT8, data=weights,
                  quantization=me.Quantization([0.01] * n, [0] * n, axis=0), name="fc/weights")
    b = me.Tensor(shape=(n,), dtype=fb.TensorType.INT32, data=rng.integers(-500, 500, n).astype(np.int32),
                  quantization=me.Quantization([0.0005] * n, [0] * n, axis=0), name="fc/bias")
    y = me.Tensor(shape=(1, n), dtype=fb.TensorType.INT8, quantization=me.Quantization(0.1, 3), name="y")
    op = me.Operator(opcode=fb.BuiltinOperator.FULLY_CONNECTED, inputs=[x, w, b], outputs=[y])
    model = me.Model()
    model.add_subgraph(tensors=[x, w, b, y], inputs=[x], outputs=[y], operators=[op])
    return bytes(model.build())


def _compression_of(uncompressed: bytes, compressed: bytes, plan) -> dict:
    """The report.json section a TFLM build writes (the agreed shape), from a real compression plan."""
    return {
        "mode": "auto", "applied": True, "cluster": None, "uncompressed_bytes": len(uncompressed),
        "compressed_bytes": len(compressed), "saved_bytes": len(uncompressed) - len(compressed),
        "dense_int8_bytes": len(uncompressed), "ratio_vs_dense_int8": round(len(uncompressed) / len(compressed), 3),
        "overhead": {"saved_bytes": 0, "items": []}, "arena": {}, "alt_decompression": {},
        "decoded_elements_per_invoke": 64 * 96, "decode_ms": 0.1, "decode_basis": "assumption: test",
        "ram_budget": {"limit_bytes": 131_072, "kept_dense_for_ram": [], "reason": None},
        "tensors": [{"name": t.name, "method": t.method, "dense_bytes": t.dense_bytes} for t in plan.tensors],
        "verification": {"bitwise_identical": True, "samples": 8, "random_samples": 8, "decoded_tensors_equal": 1}}


def test_a_microcontroller_sweep_sizes_and_checks_the_compressed_file(tmp_path, monkeypatch):
    """TFLM points are charted, checked and budgeted on model.tflite (the DECODE-compressed file); their int8
    size before DECODE and the ratio are columns of sweep.csv, sweep.html and the terminal table."""
    import hashlib

    from edgesparse.estimate import check_model
    from edgesparse.pipeline import build as pipeline
    from edgesparse.tflite.decode_compress import choose_compression

    uncompressed = _fc_int8()
    plan = choose_compression(uncompressed)
    compressed = plan.model
    assert len(compressed) < len(uncompressed) and plan.compressed

    def build(options, progress=None, prepared=None):      # the build's outputs, without TensorFlow's minutes
        tflm = load_profile(options.profile).runtime == "tflm"
        artifact = compressed if tflm else uncompressed
        report = {"schema_version": 1, "tool": {"name": "edgesparse"}, "sparsity": {"overall": 0.8},
                  "accuracy": {"dense_float": 0.9, "pruned_keras": 0.89, "tflite": 0.89, "drop_points": 1.0,
                               "agreement_pruned_keras_vs_tflite": 1.0, "n_samples": 100},
                  "sizes": {"artifact_bytes": len(artifact), "artifact_gzip_bytes": len(artifact) // 2},
                  "conversion": {"has_densify": False}, "failures": [], "passed": True,
                  "compression": _compression_of(uncompressed, compressed, plan) if tflm else None,
                  "files": {"model.tflite": {"bytes": len(artifact),
                                             "sha256": hashlib.sha256(artifact).hexdigest()}}}
        options.out.mkdir(parents=True)
        (options.out / "model.tflite").write_bytes(artifact)
        (options.out / "report.json").write_text(json.dumps(report))
        return SimpleNamespace(report=report, out_dir=options.out, warnings=[])

    monkeypatch.setattr(pipeline, "prepare_inputs", lambda options, progress=None: object())
    monkeypatch.setattr(pipeline, "build", build)
    out = tmp_path / "sweep"
    result = CliRunner().invoke(main, ["sweep", "--profile", "nrf52840", "--profile", "stm32l4r5", "--profile", "rpi4",
                                       "--sparsities", "0.8", "--out", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    ratio = round(len(uncompressed) / len(compressed), 3)
    cell = f"{fmt.byte_size(len(uncompressed))} -> {fmt.byte_size(len(compressed))} ({fmt.ratio(ratio)})"
    assert "TFLM int8 -> DECODE" in result.output and cell in result.output
    doc = json.loads((out / "sweep.json").read_text())
    [point] = doc["points"]
    for name in ("nrf52840", "stm32l4r5"):               # one TFLM build, checked on both of its profiles
        c = point["checks"][name]
        expected = check_model(compressed, load_profile(name)).to_dict()
        assert c["model_bytes"] == len(compressed)
        assert (c["flash_bytes"], c["ram_bytes"]) == (expected["flash_bytes"], expected["ram_bytes"])
    assert point["checks"]["rpi4"]["model_bytes"] == len(uncompressed)
    summary = point["builds"]["nrf52840"]["compression"]
    assert summary["uncompressed_bytes"] == len(uncompressed) and summary["compressed_bytes"] == len(compressed)
    assert point["builds"]["rpi4"]["compression"] is None
    rows = {r["profile"]: r for r in csv.DictReader(io.StringIO((out / "sweep.csv").read_text()))}
    assert (rows["nrf52840"]["uncompressed_bytes"], rows["nrf52840"]["compression_ratio"]) == (
        str(len(uncompressed)), str(ratio))
    assert rows["stm32l4r5"]["compression_ratio"] == str(ratio)
    assert (rows["rpi4"]["uncompressed_bytes"], rows["rpi4"]["compression_ratio"]) == ("", "")
    page = (out / "sweep.html").read_text()
    assert "int8 before DECODE" in page and page.count('data-col="uncompressed"') == 2   # one per build
    assert page.count('data-col="ratio">—<') == 1                                         # rpi4's build


# --------------------------------------------------------------------------- --scheduler (Dask)

def test_scheduler_specs():
    from edgesparse.pipeline.sweep_dask import parse_scheduler

    assert parse_scheduler("local:3").workers == 3 and parse_scheduler("local:3").local
    assert parse_scheduler("local").workers >= 1
    assert parse_scheduler("tcp://10.0.0.5:8786").address == "tcp://10.0.0.5:8786"
    assert parse_scheduler("10.0.0.5:8786").address == "tcp://10.0.0.5:8786"
    for bad in ("local:0", "local:x", "tcp://host", "host"):
        with pytest.raises(DataError, match="--scheduler"):
            parse_scheduler(bad)


def test_an_unreachable_scheduler_fails_before_any_work_naming_it(tmp_path):
    """Nothing listens on the port: exit 2 with the address, and no point was built (no TensorFlow loaded)."""
    import socket

    import dask
    import distributed  # noqa: F401  its config defaults exist before config.set, which would drop them on exit

    with socket.socket() as s:                     # a port that was free a moment ago: refused, not routed
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    with dask.config.set({"distributed.comm.timeouts.connect": "2s"}):
        result = CliRunner().invoke(main, ["sweep", "--profile", "rpi4", "--sparsities", "0.5", "--scheduler",
                                           address, "--out", str(tmp_path / "sweep")])
    output = " ".join(result.output.split())
    assert result.exit_code == 2, output
    assert "Cannot reach the Dask scheduler" in output and address in output
    assert not list((tmp_path / "sweep" / "points").glob("rpi4-*"))


def test_scheduler_without_dask_names_the_extra(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "distributed", None)   # what an install without the extra looks like
    result = CliRunner().invoke(main, ["sweep", "--profile", "rpi4", "--sparsities", "0.5", "--scheduler", "local:2",
                                       "--out", str(tmp_path / "sweep")])
    output = " ".join(result.output.split())
    assert result.exit_code == 2, output
    assert "edgesparse[distributed]" in output

"""Benchmark of the estimator: RAM plan vs TFLM, host latency fit and test, published-device fits.

Run by `make bench` (through bench/run_all.py) or standalone:

    .venv/bin/python bench/estimation.py [--quick] [--no-write]

It (1) compares the planned TFLM arena with the TFLM interpreter's own arena
for every MLPerf Tiny int8 model and a demo-like CNN; (2) builds a set of small
synthetic models (one op family each), times them in LiteRT on this machine,
fits the host profile's [latency] coefficients to them (non-negative least
squares) and reports predicted vs measured latency on models NOT used to fit
(MLPerf Tiny, keras.applications MobileNet V1/V2/V3, float and int8, dense and
sparse); (3) fits the published devices' coefficients to
../shared/calibration/published_latency.csv and reports leave-one-out errors
against a naive MACs/clock baseline. The figures are printed and written into
docs/estimation.md between the BENCH markers; the fitted coefficients are
written into device_profiles/*.toml [latency] tables.

Needs TensorFlow (to make the synthetic and MobileNet models); models are
cached under build/bench-cache/.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"
MLPERF = SHARED / "mlperf_tiny"
PUBLISHED = SHARED / "calibration" / "published_latency.csv"
CACHE = Path(os.environ.get("EDGESPARSE_BENCH_CACHE", REPO / "build" / "bench-cache"))
DOC = REPO / "docs" / "estimation.md"
BEGIN, END = "<!-- BENCH:estimation:begin -->", "<!-- BENCH:estimation:end -->"
STAT = os.environ.get("EDGESPARSE_BENCH_STAT", "min")  # which timing statistic to fit and test on

MLPERF_INT8 = {
    "kws_ref_model": "keyword_spotting/kws_ref_model.tflite",
    "vww_96_int8": "visual_wake_words/vww_96_int8.tflite",
    "pretrainedResnet_quant": "image_classification/pretrainedResnet_quant.tflite",
    "ad01_int8": "anomaly_detection/ad01_int8.tflite",
    "str_ww_ref_model": "streaming_wakeword/str_ww_ref_model.tflite",
    "pretrainedResnet_large_int8": "image_classification/pretrainedResnet_large_int8.tflite",
}
MLPERF_FLOAT = {
    "kws_ref_model_float32": "keyword_spotting/kws_ref_model_float32.tflite",
    "vww_96_float": "visual_wake_words/vww_96_float.tflite",
    "pretrainedResnet_float": "image_classification/pretrainedResnet.tflite",
    "ad01_fp32": "anomaly_detection/ad01_fp32.tflite",
    "pretrainedResnet_large_float": "image_classification/pretrainedResnet_large_float.tflite",
}


# --------------------------------------------------------------------------- model zoo (needs TF)


def _tf():
    from edgesparse.tf_env import import_tf

    return import_tf()


def _convert(model, quant: str, sample_shape, *, sparse: bool = False, seed: int = 0) -> bytes:
    import numpy as np

    tf, _ = _tf()
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    opts = []
    if quant == "int8":
        rng = np.random.default_rng(seed)

        def rep():
            for _ in range(16):
                yield [rng.random((1, *sample_shape), dtype=np.float32)]

        opts.append(tf.lite.Optimize.DEFAULT)
        conv.representative_dataset = rep
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    if sparse:
        opts.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    conv.optimizations = opts
    return conv.convert()


def _sparsify(model, fraction: float, seed: int = 0, block: int = 1):
    """Zero `fraction` of each Dense kernel (smallest magnitudes; blocks of `block` along the input axis)."""
    import numpy as np

    _, keras = _tf()
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            w, b = layer.get_weights()
            if block > 1 and w.shape[0] % block == 0:
                blocks = np.abs(w).reshape(w.shape[0] // block, block, w.shape[1]).sum(1)
                cut = np.quantile(blocks, fraction)
                mask = np.repeat(blocks > cut, block, axis=0)
            else:
                cut = np.quantile(np.abs(w), fraction)
                mask = np.abs(w) > cut
            layer.set_weights([w * mask, b])
    return model


def _seq(shape, layers):
    _, keras = _tf()
    keras.utils.set_random_seed(0)
    inp = keras.Input(shape)
    x = inp
    for layer in layers:
        x = layer(x)
    return keras.Model(inp, x)


def fit_model_specs():
    """Synthetic models that isolate one op family each: the host fit set."""
    _, keras = _tf()
    L = keras.layers
    specs = {
        "conv_a": ((32, 32, 8), lambda: [L.Conv2D(16, 3, padding="same", activation="relu") for _ in range(3)]),
        "conv_b": ((64, 64, 3), lambda: [L.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
                                         L.Conv2D(32, 3, padding="same", activation="relu")]),
        "conv_c": ((16, 16, 32), lambda: [L.Conv2D(64, 1, activation="relu") for _ in range(4)]),
        "conv_d": ((48, 48, 16), lambda: [L.Conv2D(32, 3, padding="same", activation="relu") for _ in range(2)]),
        "conv_e": ((8, 8, 64), lambda: [L.Conv2D(64, 3, padding="same", activation="relu") for _ in range(6)]),
        "dw_a": ((64, 64, 32), lambda: [L.DepthwiseConv2D(3, padding="same", activation="relu") for _ in range(3)]),
        "dw_b": ((24, 24, 128), lambda: [L.DepthwiseConv2D(3, padding="same", activation="relu") for _ in range(4)]),
        "dw_c": ((16, 16, 16), lambda: [L.DepthwiseConv2D(3, padding="same", activation="relu") for _ in range(8)]),
        "fc_a": ((512,), lambda: [L.Dense(256, activation="relu") for _ in range(3)]),
        "fc_b": ((1024,), lambda: [L.Dense(1024, activation="relu"), L.Dense(512)]),
        "fc_c": ((64,), lambda: [L.Dense(128, activation="relu") for _ in range(6)]),
        "elem_a": ((64, 64, 32), lambda: [L.MaxPooling2D(2), L.ReLU(), L.AveragePooling2D(2)]),
        "elem_b": ((32, 32, 64), lambda: [L.ReLU(6.0), L.GlobalAveragePooling2D(), L.Softmax()]),
        "elem_c": ((16, 16, 16), lambda: [L.ReLU(), L.MaxPooling2D(2), L.ReLU(), L.Flatten()]),
        "elem_d": ((32, 32, 32), lambda: [L.Activation("sigmoid"), L.ReLU(6.0), L.Activation("tanh")]),
        # many ops with little work each: identify the per-op overhead
        "many_conv": ((4, 4, 8), lambda: [L.Conv2D(8, 1, activation="relu") for _ in range(30)]),
        "many_dw": ((4, 4, 8), lambda: [L.DepthwiseConv2D(3, padding="same") for _ in range(30)]),
        "many_fc": ((16,), lambda: [L.Dense(16, activation="relu") for _ in range(30)]),
        # MobileNet-like separable blocks (stride-2 depthwise + pointwise) of two widths
        "sep_a": ((64, 64, 16), lambda: [L.DepthwiseConv2D(3, strides=2, padding="same"), L.Conv2D(32, 1),
                                         L.DepthwiseConv2D(3, padding="same"), L.Conv2D(64, 1),
                                         L.DepthwiseConv2D(3, strides=2, padding="same"), L.Conv2D(64, 1)]),
        "sep_c": ((48, 48, 8), lambda: [L.DepthwiseConv2D(3, strides=2, padding="same"), L.Conv2D(16, 1),
                                        L.DepthwiseConv2D(3, padding="same"), L.Conv2D(16, 1),
                                        L.DepthwiseConv2D(3, strides=2, padding="same"), L.Conv2D(32, 1)]),
        "conv_small_ch": ((32, 32, 4), lambda: [L.Conv2D(8, 3, padding="same", activation="relu"),
                                               L.Conv2D(8, 1, activation="relu"), L.Conv2D(8, 3, padding="same")]),
        "sep_b": ((16, 16, 64), lambda: [L.DepthwiseConv2D(3, padding="same"), L.Conv2D(128, 1),
                                         L.DepthwiseConv2D(3, strides=2, padding="same"), L.Conv2D(256, 1),
                                         L.DepthwiseConv2D(3, padding="same"), L.Conv2D(256, 1)]),
    }
    sparse = {
        "fc_sparse_a": ((512,), lambda: [L.Dense(512, activation="relu") for _ in range(3)], 0.8, 1),
        "fc_sparse_b": ((1024,), lambda: [L.Dense(1024, activation="relu"), L.Dense(256)], 0.9, 4),
        "fc_sparse_c": ((256,), lambda: [L.Dense(256, activation="relu") for _ in range(4)], 0.7, 1),
    }
    return specs, sparse


def test_model_specs():
    """keras.applications models (random weights) and a sparse MLPerf model: part of the host test set."""
    _, keras = _tf()
    apps = keras.applications
    return {
        "mobilenet_v1_0.25_128": ((128, 128, 3), lambda: apps.MobileNet(input_shape=(128, 128, 3), alpha=0.25, weights=None)),
        "mobilenet_v2_0.35_96": ((96, 96, 3), lambda: apps.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None)),
        "mobilenet_v3s_0.75_96": ((96, 96, 3), lambda: apps.MobileNetV3Small(input_shape=(96, 96, 3), alpha=0.75,
                                                                             weights=None, minimalistic=False)),
        "mobilenet_v1_1.0_224": ((224, 224, 3), lambda: apps.MobileNet(input_shape=(224, 224, 3), alpha=1.0, weights=None)),
    }


def _cached(name: str, make) -> Path:
    path = CACHE / f"{name}.tflite"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(make())
        os.replace(tmp, path)
    return path


def build_fit_set() -> dict[str, Path]:
    specs, sparse = fit_model_specs()
    out = {}
    for name, (shape, layers) in specs.items():
        for quant in ("float32", "int8"):
            out[f"{name}_{quant}"] = _cached(f"fit_{name}_{quant}", lambda: _convert(_seq(shape, layers()), quant, shape))
    for name, (shape, layers, frac, block) in sparse.items():
        for quant in ("float32", "int8"):
            out[f"{name}_{quant}"] = _cached(
                f"fit_{name}_{quant}",
                lambda: _convert(_sparsify(_seq(shape, layers()), frac, block=block), quant, shape, sparse=True))
    return out


def build_test_set() -> dict[str, Path]:
    out = {name: MLPERF / rel for name, rel in {**MLPERF_INT8, **MLPERF_FLOAT}.items()}
    for name, (shape, make) in test_model_specs().items():
        if name == "mobilenet_v1_1.0_224":
            continue  # used for the published devices, too slow to time here on every run
        for quant in ("float32", "int8"):
            out[f"{name}_{quant}"] = _cached(f"test_{name}_{quant}", lambda: _convert(make(), quant, shape))

    def sparse_ad(quant):
        _, keras = _tf()
        model = keras.models.load_model(MLPERF / "anomaly_detection" / "ad01.h5", compile=False)
        return _convert(_sparsify(model, 0.8), quant, tuple(model.input_shape[1:]), sparse=True)

    for quant in ("float32", "int8"):
        out[f"ad01_sparse80_{quant}"] = _cached(f"test_ad01_sparse80_{quant}", lambda: sparse_ad(quant))
    return out


def mobilenet_v1_224() -> dict[str, Path]:
    """MobileNet v1 1.0 224 (random weights): the model of the published RPi 4 and Pixel rows."""
    shape, make = test_model_specs()["mobilenet_v1_1.0_224"]
    return {quant: _cached(f"pub_mobilenet_v1_1.0_224_{quant}", lambda: _convert(make(), quant, shape))
            for quant in ("float32", "int8")}


def demo_like_int8() -> Path:
    """A small Conv2D/Dense int8 CNN like the built-in demo: part of the RAM check."""
    _, keras = _tf()
    L = keras.layers
    shape = (32, 32, 1)
    layers = lambda: [L.Conv2D(8, 3, activation="relu"), L.MaxPooling2D(2), L.Conv2D(16, 3, activation="relu"),
                      L.MaxPooling2D(2), L.Flatten(), L.Dense(32, activation="relu"), L.Dense(10), L.Softmax()]
    return _cached("demo_like_int8", lambda: _convert(_seq(shape, layers()), "int8", shape))


# --------------------------------------------------------------------------- (1) RAM


def ram_rows() -> list[dict]:
    """Planned TFLM arena vs the TFLM interpreter's own, per MLPerf Tiny int8 model and the demo-like CNN."""
    from edgesparse.estimate import tflm_ram
    from edgesparse.graph import load_graph
    from edgesparse.measure import tflm_arena_bytes

    models = {name: MLPERF / rel for name, rel in MLPERF_INT8.items()}
    models["demo_like_cnn_int8"] = demo_like_int8()
    rows = []
    for name, path in models.items():
        est = tflm_ram(load_graph(path))
        real = tflm_arena_bytes(path)
        rows.append({"model": name, "planned_bytes": est.total_bytes, "tflm_bytes": real["total"],
                     "planned_head": est.planned_bytes, "tflm_head": real["head"],
                     "planned_tail": est.persistent_bytes, "tflm_tail": real["tail"],
                     "error": est.total_bytes / real["total"] - 1.0})
    return rows


# --------------------------------------------------------------------------- (2) host latency


def measure_models(models: dict[str, Path], threads: int, budget_s: float = 1.5) -> dict[str, float]:
    """Median latency (ms) of each model in LiteRT at `threads`: warm-up, then runs for ~budget_s."""
    from edgesparse.measure import measure

    out = {}
    for name, path in models.items():
        probe = measure(path, threads=threads, runs=3, warmup=2)
        runs = int(max(10, min(200, budget_s * 1000.0 / max(probe.median_ms, 1e-3))))
        m = measure(path, threads=threads, runs=runs, warmup=3, max_seconds=budget_s * 2)
        # Contention from other processes only ever adds time, so on a shared machine the fastest
        # runs are the stable estimate of the model's own cost; on a quiet machine min ~ median.
        out[name] = m.min_ms if STAT == "min" else m.median_ms
        print(f"  measured {name:34s} min {m.min_ms:9.4f} ms  median {m.median_ms:9.4f} ms  ({m.runs} runs"
              f"{'; builtin kernels' if len(m.kernels) and 'refused' in m.kernels[0] else ''})", flush=True)
    return out


def host_fit(threads: int, quick: bool = False):
    from edgesparse.calibrate import Sample, fit_latency, model_features
    from edgesparse.estimate import LatencyCoefficients, op_features, predict_ops_us
    from edgesparse.graph import load_graph
    from edgesparse.profiles import load_profile

    host = load_profile("host")
    clock = float(host.raw["device"]["clock_mhz"])
    fit_models = build_fit_set()
    test_models = build_test_set()
    print(f"host: timing {len(fit_models)} fit models and {len(test_models)} test models at {threads} thread(s)", flush=True)
    budget = 0.5 if quick else 1.5
    fit_ms = measure_models(fit_models, threads, budget)
    test_ms = measure_models(test_models, threads, budget)
    samples = [Sample(name, model_features(load_graph(path), host), fit_ms[name], threads)
               for name, path in fit_models.items()]
    keys = sorted({k for s in samples for k in s.features if k not in ("bytes", "ops", "fixed")})
    fit = fit_latency(samples, keys, clock, robust=True)
    table = dict(fit.table)
    coefs = LatencyCoefficients(fitted=True, fit_source="", fit_rows=[], clock_mhz=clock,
                                macs_per_cycle=table["macs_per_cycle"],
                                bytes_per_cycle=table.get("bytes_per_cycle", 0.0),
                                elementwise_per_cycle=table.get("elementwise_per_cycle", 0.0),
                                overhead_us_per_op=table["overhead_us_per_op"],
                                fixed_overhead_us=table["fixed_overhead_us"], parallel_efficiency=0.0,
                                fit_threads=threads)
    rows = []
    for name, path in test_models.items():
        feats = op_features(load_graph(path), host)
        pred = (sum(us for us, _ in predict_ops_us(feats, coefs)) + coefs.fixed_overhead_us) / 1000.0
        rows.append({"model": name, "measured_ms": test_ms[name], "predicted_ms": pred,
                     "error": pred / test_ms[name] - 1.0})
    fit_rows = [{"model": n, "measured_ms": s.latency_ms, "predicted_ms": p, "error": e}
                for n, s, p, e in zip(fit.names, samples, fit.predictions_ms, fit.errors)]
    return fit, table, fit_rows, rows, sorted(fit_models)


# --------------------------------------------------------------------------- (3) published devices


def published_rows() -> list[dict]:
    with PUBLISHED.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


_DEVICE_PROFILE = {"Nucleo-L4R5ZI": "stm32l4r5", "EK-RA6M4": "ek_ra6m4", "RPi 4 (BCM2711)": "rpi4",
                   "RPi 4 (BCM2711, ARM64)": "rpi4", "Pixel 3": "pixel3", "Pixel 4": "pixel4"}


def published_features() -> list[dict]:
    """One dict per published row: device/profile, family, clock, MACs (int8, float), op count, measured ms."""
    from edgesparse.calibrate import model_features
    from edgesparse.graph import load_graph
    from edgesparse.profiles import load_profile

    mobilenet = None
    out = []
    for i, row in enumerate(published_rows(), start=2):
        profile = load_profile(_DEVICE_PROFILE[row["device"]])
        if row["model_file"]:
            path = SHARED / row["model_file"]
        else:
            mobilenet = mobilenet or mobilenet_v1_224()
            path = mobilenet["int8" if row["precision"].lower() == "int8" else "float32"]
        feats = model_features(load_graph(path), profile)
        macs = {k: v for k, v in feats.items() if k.split("_")[0] in ("conv", "dwconv", "fc")}
        # the shared-ratio class: depthwise for TFLM (CMSIS-NN depthwise does fewer MACs per cycle),
        # int8 for LiteRT (int8 vs float32 kernels)
        if profile.runtime == "tflm":
            weighted = sum(v for k, v in macs.items() if k.startswith("dwconv"))
        else:
            weighted = sum(v for k, v in macs.items() if "int8" in k)
        out.append({"line": i, "device": row["device"], "profile": profile.name, "family": profile.runtime,
                    "clock_mhz": float(profile.raw["device"]["clock_mhz"]), "macs": sum(macs.values()),
                    "macs_weighted": weighted, "macs_base": sum(macs.values()) - weighted,
                    "ops": feats.get("ops", 0.0), "ms": float(row["latency_ms"]),
                    "label": f"{row['device']} {row['benchmark']}"})
    return out


def _nnls_rel(a, y):
    import numpy as np

    from edgesparse.calibrate import nnls

    w = 1.0 / y
    aw = a * w[:, None]
    scale = np.maximum(np.abs(aw).max(axis=0), 1e-30)
    return nnls(aw / scale, np.ones_like(y)) / scale


def fit_family(rows: list[dict]):
    """The published-device cost model for one runtime family: (cycles/MAC per device, shared ratio, predict).

    t = cycles_per_MAC[device] x (MACs_base + r x MACs_weighted) / clock, where the weighted class is
    depthwise conv for TFLM + CMSIS-NN (MCU) rows and int8 ops for LiteRT/XNNPACK rows, and r is one
    number shared by the family: one parameter per device plus one per family.
    """
    import numpy as np

    devices = sorted({r["profile"] for r in rows})
    y = np.array([r["ms"] * 1000.0 for r in rows])
    best = None
    for ratio in np.linspace(0.05, 6.0, 1191):
        a = np.zeros((len(rows), len(devices)))
        for i, r in enumerate(rows):
            a[i, devices.index(r["profile"])] = (r["macs_base"] + ratio * r["macs_weighted"]) / r["clock_mhz"]
        x = _nnls_rel(a, y)
        err = np.sum((a @ x / y - 1.0) ** 2)
        if best is None or err < best[0] - 1e-12:
            best = (err, float(ratio), x)
    _, ratio, x = best
    if not any(r["macs_weighted"] for r in rows):
        ratio = 1.0
    params = {d: {"cycles_per_mac": float(x[j])} for j, d in enumerate(devices)}

    def predict(r):
        cpm = params[r["profile"]]["cycles_per_mac"]
        return cpm * (r["macs_base"] + ratio * r["macs_weighted"]) / r["clock_mhz"] / 1000.0
    return params, {"ratio": ratio}, predict


def fit_baseline(rows: list[dict]):
    """Naive baseline: t = c x MACs / clock with one c for the family."""
    import numpy as np

    a = np.array([[r["macs"] / r["clock_mhz"]] for r in rows])
    y = np.array([r["ms"] * 1000.0 for r in rows])
    c = float(_nnls_rel(a, y)[0])
    return lambda r: c * r["macs"] / r["clock_mhz"] / 1000.0


def leave_one_out(rows: list[dict]) -> list[dict]:
    out = []
    for i, r in enumerate(rows):
        train = rows[:i] + rows[i + 1:]
        family = [t for t in train if t["family"] == r["family"]]
        if not any(t["profile"] == r["profile"] for t in family):
            out.append({**r, "model_ms": None, "baseline_ms": None})
            continue
        _, _, predict = fit_family(family)
        base = fit_baseline(family)
        out.append({**r, "model_ms": predict(r), "baseline_ms": base(r)})
    return out


def write_latency_table(profile_name: str, values: dict) -> None:
    """Replace a shipped profile's [latency] table (re-read right before writing; validated; atomic)."""
    import tomllib

    from edgesparse.calibrate import _ordered_latency, render_table, replace_table
    from edgesparse.fsutil import atomic_write_text
    from edgesparse.profiles import PROFILE_DIR, ProfileValidationError, validate

    path = PROFILE_DIR / f"{profile_name}.toml"
    text = path.read_text(encoding="utf-8")
    new = replace_table(text, "latency", render_table("latency", _ordered_latency(values)))
    problems = validate(tomllib.loads(new), str(path))
    if problems:
        raise ProfileValidationError(problems)
    if new != text:
        atomic_write_text(path, new)


def published_fit_tables(rows: list[dict]) -> dict[str, dict]:
    """The [latency] tables of the published devices, fitted on all their family's rows."""
    tables = {}
    for family in ("tflm", "litert"):
        fam = [r for r in rows if r["family"] == family]
        params, shared, _ = fit_family(fam)
        lines = "; ".join(f"line {r['line']} ({r['label']}, {r['ms']:g} ms)" for r in fam)
        for device, p in params.items():
            own = [r for r in fam if r["profile"] == device]
            clock = own[0]["clock_mhz"]
            cpm, ratio = p["cycles_per_mac"], shared["ratio"]
            if family == "tflm":
                mpc = {"int8": 1.0 / cpm, "dwconv_int8": 1.0 / (cpm * ratio)}
                how = (f"{len(params) + 1} parameters over {len(fam)} MCU rows: cycles/MAC per device "
                       f"({cpm:.3g} here) and a depthwise/conv cost ratio {ratio:.3g} shared by the "
                       "TFLM+CMSIS-NN family; elementwise ops and per-op overhead not identifiable (not priced)")
                threads = 1
            else:
                mpc = {"float32": 1.0 / cpm, "int8": 1.0 / (cpm * ratio)}
                how = (f"{len(params) + 1} parameters over {len(fam)} LiteRT/XNNPACK rows: cycles/MAC per device "
                       f"(float32 {cpm:.3g} here, all threads together) and an int8/float32 cost ratio "
                       f"{ratio:.3g} shared by the family; elementwise ops and per-op overhead not identifiable "
                       "from one model (not priced)")
                threads = 4
            overhead = 0.0
            tables[device] = {
                "fitted": True,
                "fit_source": "fit to ../shared/calibration/published_latency.csv rows " + lines,
                "fit_rows": [f"published_latency.csv line {r['line']}: {r['label']}" for r in own],
                "fit_threads": threads, "macs_per_cycle": mpc, "overhead_us_per_op": overhead,
                "fixed_overhead_us": 0.0, "notes": how + "; leave-one-out errors in docs/estimation.md",
            }
    return tables


# --------------------------------------------------------------------------- report


def _pct(x) -> str:
    return "-" if x is None else f"{x * 100:+.1f}%"


def render(ram, host, loo, meta) -> str:
    import numpy as np

    lines = [f"Generated by `python bench/estimation.py` on {meta['date']} ({meta['machine']}).", ""]
    lines += ["### 1. RAM: planned TFLM arena vs the TFLM interpreter's arena", "",
              "| model | planned (head + tail) | TFLM interpreter (head + tail) | error |", "|---|---|---|---|"]
    for r in ram:
        lines.append(f"| {r['model']} | {r['planned_bytes']:,} B ({r['planned_head']:,} + {r['planned_tail']:,}) | "
                     f"{r['tflm_bytes']:,} B ({r['tflm_head']:,} + {r['tflm_tail']:,}) | {_pct(r['error'])} |")
    worst = max(abs(r["error"]) for r in ram)
    lines += ["", f"Worst absolute error: {worst * 100:.2f}% (goal: within 5% on every model).", ""]
    fit, table, fit_rows, test_rows, fit_names = host
    errs = np.abs([r["error"] for r in test_rows])
    lines += ["### 2. Host latency (LiteRT, this machine): predicted vs measured on models not used to fit", "",
              f"Fitted on {len(fit_names)} synthetic models (one op family each; in-sample median |error| "
              f"{fit.median_abs_error * 100:.1f}%, worst {fit.worst_abs_error * 100:.1f}%), "
              f"{fit.parameters} parameters, at {meta['threads']} thread(s); timings are the {STAT} of up to 200 "
              "timed invokes after warm-up"
              + (f"; left out of the final fit as outliers: {', '.join(fit.dropped)}" if fit.dropped else "")
              + ". Test set:", "",
              "| model | measured ms | predicted ms | error |", "|---|---|---|---|"]
    for r in test_rows:
        lines.append(f"| {r['model']} | {r['measured_ms']:.4g} | {r['predicted_ms']:.4g} | {_pct(r['error'])} |")
    lines += ["", f"**{len(test_rows)} test models: median absolute error {np.median(errs) * 100:.1f}%, "
                  f"worst {np.max(errs) * 100:.1f}%** (goal: median <= 20%).", "",
              "Fitted host coefficients (device_profiles/host.toml [latency]):", "", "```",
              json.dumps(table, indent=1, sort_keys=True, default=float), "```", ""]
    lines += ["### 3. Published devices: leave-one-out error, cost model vs naive MACs/clock baseline", "",
              "| row (published_latency.csv) | measured ms | cost model (LOO) | error | baseline (LOO) | error |",
              "|---|---|---|---|---|---|"]
    for r in loo:
        m = "-" if r["model_ms"] is None else f"{r['model_ms']:.4g}"
        b = "-" if r["baseline_ms"] is None else f"{r['baseline_ms']:.4g}"
        lines.append(f"| line {r['line']}: {r['label']} | {r['ms']:g} | {m} | "
                     f"{_pct(None if r['model_ms'] is None else r['model_ms'] / r['ms'] - 1)} | {b} | "
                     f"{_pct(None if r['baseline_ms'] is None else r['baseline_ms'] / r['ms'] - 1)} |")
    for family in ("tflm", "litert"):
        fam = [r for r in loo if r["family"] == family and r["model_ms"] is not None]
        me = np.abs([r["model_ms"] / r["ms"] - 1 for r in fam])
        be = np.abs([r["baseline_ms"] / r["ms"] - 1 for r in fam])
        verdict = "beats" if np.median(me) < np.median(be) else "does NOT beat"
        lines.append("")
        lines.append(f"- {family}: cost model median |LOO error| {np.median(me) * 100:.1f}% (worst {np.max(me) * 100:.1f}%)"
                     f" vs baseline {np.median(be) * 100:.1f}% (worst {np.max(be) * 100:.1f}%): the cost model {verdict} the baseline.")
    lines.append("")
    return "\n".join(lines)


def update_doc(body: str) -> None:
    from edgesparse.fsutil import atomic_write_text

    text = DOC.read_text(encoding="utf-8") if DOC.is_file() else f"# Estimation\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text = text.rstrip("\n") + f"\n\n## Figures\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    atomic_write_text(DOC, head + BEGIN + "\n" + body + "\n" + END + tail)


def run(quick: bool = False, write: bool = True) -> str:
    """All three parts; prints progress, writes the fitted profiles and docs/estimation.md; returns Markdown."""
    import platform

    from edgesparse.profiles import load_profile

    threads = int(load_profile("host").raw["runtime"]["threads"])
    print("(1) RAM plan vs TFLM", flush=True)
    ram = ram_rows()
    print("(3) published devices", flush=True)
    pub = published_features()
    loo = leave_one_out(pub)
    print("(2) host latency", flush=True)
    host = host_fit(threads, quick=quick)
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "threads": threads}
    body = render(ram, host, loo, meta)
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / "estimation_figures.md").write_text(body, encoding="utf-8")
    if write:
        fit, table, _, _, fit_names = host
        write_latency_table("host", {
            "fitted": True,
            "fit_source": (f"edgesparse bench/estimation.py: LiteRT {STAT} latency on this machine of the "
                           "synthetic models listed in fit_rows (built by bench/estimation.py)"),
            "fit_rows": fit_names, "fit_threads": threads, **table,
            "notes": (f"NNLS on relative error, {fit.parameters} parameters, {len(fit_names)} models; "
                      "errors on unseen models in docs/estimation.md"),
        })
        for device, values in published_fit_tables(pub).items():
            write_latency_table(device, values)
        update_doc(body)
    return "## Estimation (bench/estimation.py)\n\n" + body


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing loops")
    parser.add_argument("--no-write", action="store_true", help="print only; leave profiles and docs alone")
    args = parser.parse_args(argv)
    print(run(quick=args.quick, write=not args.no_write))
    return 0


if __name__ == "__main__" and "--zoo-only" not in sys.argv:
    raise SystemExit(main())


if __name__ == "__main__" and "--zoo-only" in sys.argv:
    t0 = time.time()
    for group in (build_fit_set, build_test_set, mobilenet_v1_224):
        print(group.__name__, len(group()), f"{time.time() - t0:.0f}s", flush=True)
    print(demo_like_int8())
    raise SystemExit(0)

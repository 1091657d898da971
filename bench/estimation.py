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
    from edgesparse.pipeline.tf_env import import_tf

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

    # Elementwise ops one type at a time at MobileNet-like shapes. In int8 several of them run in LiteRT's
    # builtin kernels (not XNNPACK) at very different element rates: binary arithmetic (ADD, MUL), nonlinear
    # lookups/activations (HARD_SWISH, LOGISTIC, TANH), reductions (MEAN). Plain functions are layers too.
    def add_self(x):
        return L.Add()([x, x])

    def mul_self(x):
        return L.Multiply()([x, x])

    def hard_sigmoid(x):
        return L.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)

    def hswish(x):  # as keras.applications' MobileNetV3 writes it: the converter makes it one HARD_SWISH
        return L.Multiply()([x, hard_sigmoid(x)])

    def se_block(filters):
        def block(x):  # MobileNetV3's squeeze-excite: MEAN, 1x1 convs, hard-sigmoid, broadcast MUL
            s = L.GlobalAveragePooling2D(keepdims=True)(x)
            s = L.Conv2D(max(8, filters // 4), 1, activation="relu")(s)
            s = L.Conv2D(filters, 1)(s)
            s = hard_sigmoid(s)
            return L.Multiply()([x, s])
        return block

    specs.update({
        "add_a": ((24, 24, 32), lambda: [add_self for _ in range(4)]),
        "add_b": ((12, 12, 96), lambda: [add_self for _ in range(3)]),
        "mul_a": ((24, 24, 32), lambda: [mul_self for _ in range(3)]),
        "hswish_a": ((24, 24, 48), lambda: [hswish for _ in range(3)]),
        "hswish_b": ((6, 6, 288), lambda: [hswish for _ in range(4)]),
        "sigmoid_a": ((24, 24, 32), lambda: [L.Activation("sigmoid") for _ in range(3)]),
        "mean_a": ((24, 24, 64), lambda: [L.GlobalAveragePooling2D()]),
        "mean_b": ((6, 6, 256), lambda: [L.GlobalAveragePooling2D()]),
        "se_a": ((12, 12, 96), lambda: [se_block(96), se_block(96)]),
        "se_b": ((6, 6, 288), lambda: [se_block(288)]),
        # chains of cheap ops of each family (per-op overhead inside and outside XNNPACK)
        "many_add": ((4, 4, 8), lambda: [add_self for _ in range(30)]),
        "many_hswish": ((4, 4, 8), lambda: [hswish for _ in range(30)]),
    })
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
    from edgesparse.estimate.latency import tflm_ram
    from edgesparse.tflite.graph import load_graph
    from edgesparse.runtime.measure import tflm_arena_bytes

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


def measure_models(models: dict[str, Path], threads: int, budget_s: float = 1.5, passes: int = 2) -> dict[str, float]:
    """Latency (ms, the STAT of each pass, best pass kept) of each model in LiteRT at `threads`.

    Each pass times every model in turn (warm-up, then runs for ~budget_s); the best of `passes` passes is
    kept, because on this 2-vCPU VM a whole timing loop sometimes runs at half speed (one thread descheduled:
    the same model measured 2x slower in one pass and not in the next)."""
    from edgesparse.runtime.measure import measure

    out: dict[str, float] = {}
    for p in range(passes):
        for name, path in models.items():
            probe = measure(path, threads=threads, runs=3, warmup=2)
            runs = int(max(10, min(200, budget_s * 1000.0 / max(probe.median_ms, 1e-3))))
            m = measure(path, threads=threads, runs=runs, warmup=3, max_seconds=budget_s * 2)
            # Contention from other processes only ever adds time, so on a shared machine the fastest
            # runs are the stable estimate of the model's own cost; on a quiet machine min ~ median.
            value = m.min_ms if STAT == "min" else m.median_ms
            out[name] = min(out.get(name, value), value)
            print(f"  pass {p + 1} {name:34s} min {m.min_ms:9.4f} ms  median {m.median_ms:9.4f} ms  ({m.runs} runs"
                  f"{'; builtin kernels' if len(m.kernels) and 'refused' in m.kernels[0] else ''})", flush=True)
    return out


def host_fit(threads: int, quick: bool = False):
    from edgesparse.estimate.calibrate import Sample, fit_latency, model_features
    from edgesparse.estimate.latency import LatencyCoefficients, op_features, predict_ops_us
    from edgesparse.tflite.graph import load_graph
    from edgesparse.profiles.profile import load_profile

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
    # A MAC class the fit prices at zero (its cost carried entirely by the bytes term, e.g. int8
    # FULLY_CONNECTED at batch 1) cannot be written to the profile (rates are positive) and would leave
    # `check` without a coefficient for it: pool its MACs with another class of the same dtype and refit.
    merged: dict[str, str] = {}
    while True:
        fit = fit_latency(samples, keys, clock, loss="log")
        zero = [k for k in keys if k.split("_")[0] in ("conv", "dwconv", "fc") and k in fit.coef_us
                and fit.coef_us[k] <= 0]
        if not zero:
            break
        k = zero[0]
        dtype = k.split("_")[1]
        target = next(c for c in (f"conv_{dtype}", f"fc_{dtype}", f"dwconv_{dtype}")
                      if c != k and fit.coef_us.get(c, 0) > 0)
        merged[k] = target
        samples = [Sample(s.name, {**{f: v for f, v in s.features.items() if f != k},
                                   target: s.features.get(target, 0.0) + s.features.get(k, 0.0)},
                          s.latency_ms, s.threads) for s in samples]
        keys = [c for c in keys if c != k]
    fit.merged = merged
    table = dict(fit.table)
    table["macs_per_cycle"] = dict(table["macs_per_cycle"])
    for k, target in merged.items():
        table["macs_per_cycle"][k] = table["macs_per_cycle"][target]
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


EXTRA_NAME = "edgesparse/calibration_extra.csv"


def published_rows() -> list[dict]:
    with PUBLISHED.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


_DEVICE_PROFILE = {"Nucleo-L4R5ZI": "stm32l4r5", "EK-RA6M4": "ek_ra6m4", "RPi 4 (BCM2711)": "rpi4",
                   "RPi 4 (BCM2711, ARM64)": "rpi4", "Pixel 3": "pixel3", "Pixel 4": "pixel4"}


def bench_models() -> dict[str, object]:
    """Models the extra calibration rows name as `bench:<name>`, built (random weights) and cached here."""
    _, keras = _tf()
    L = keras.layers
    apps = keras.applications

    def digits():
        from edgesparse.pipeline.demos import digits as demo

        return _convert(demo.build_digits_model(0), "int8", demo.INPUT_SHAPE)

    return {
        "mobilenet_v1_1.0_224_float32": lambda: mobilenet_v1_224()["float32"],
        "mobilenet_v1_1.0_224_int8": lambda: mobilenet_v1_224()["int8"],
        "mobilenet_v2_1.0_224_float32": lambda: _cached("pub_mobilenet_v2_1.0_224_float32", lambda: _convert(
            apps.MobileNetV2(input_shape=(224, 224, 3), alpha=1.0, weights=None), "float32", (224, 224, 3))),
        "mobilenet_v2_1.0_224_int8": lambda: _cached("pub_mobilenet_v2_1.0_224_int8", lambda: _convert(
            apps.MobileNetV2(input_shape=(224, 224, 3), alpha=1.0, weights=None), "int8", (224, 224, 3))),
        # The TFLM person_detection model: MobileNet v1 0.25 on 96x96 grayscale, 2 classes.
        "person_detect_int8": lambda: _cached("pub_person_detect_int8", lambda: _convert(
            apps.MobileNet(input_shape=(96, 96, 1), alpha=0.25, weights=None, classes=2), "int8", (96, 96, 1))),
        # The TFLM hello_world model: Dense 16 (relu) - Dense 16 (relu) - Dense 1 on one float, int8 in/out.
        "hello_world_int8": lambda: _cached("pub_hello_world_int8", lambda: _convert(
            _seq((1,), [L.Dense(16, activation="relu"), L.Dense(16, activation="relu"), L.Dense(1)]), "int8", (1,))),
        "digits_int8": lambda: _cached("demo_digits_int8", digits),
    }


def resolve_model(model_file: str) -> Path:
    if model_file.startswith("bench:"):
        made = bench_models()[model_file[len("bench:"):]]()
        return Path(made)
    return SHARED / model_file


def _features_row(label: str, profile_name: str, path: Path, ms: float, line: str, use: str = "fit") -> dict:
    """Cost features of one measured row under its profile: MACs split into the family's two classes."""
    from edgesparse.estimate.calibrate import model_features
    from edgesparse.tflite.graph import load_graph
    from edgesparse.profiles.profile import load_profile

    profile = load_profile(profile_name)
    feats = model_features(load_graph(path), profile)
    macs = {k: v for k, v in feats.items() if k.split("_")[0] in ("conv", "dwconv", "fc")}
    # the shared-ratio class: depthwise for TFLM (CMSIS-NN depthwise does fewer MACs per cycle),
    # int8 for LiteRT (int8 vs float32 kernels)
    if profile.runtime == "tflm":
        weighted = sum(v for k, v in macs.items() if k.startswith("dwconv"))
    else:
        weighted = sum(v for k, v in macs.items() if "int8" in k)
    return {"line": line, "profile": profile.name, "family": profile.runtime, "kernels": profile.kernels,
            "clock_mhz": float(profile.raw["device"]["clock_mhz"]), "macs": sum(macs.values()),
            "macs_weighted": weighted, "macs_base": sum(macs.values()) - weighted,
            "ops": feats.get("ops", 0.0), "ms": float(ms), "label": label, "use": use, "offset_us": 0.0,
            "path": str(path)}


def published_features() -> list[dict]:
    """One dict per fitted row: ../shared/calibration/published_latency.csv and the 'fit' rows of the extra CSV."""
    from edgesparse.estimate.calibrate import read_extra_rows

    out = []
    for i, row in enumerate(published_rows(), start=2):
        if row["model_file"]:
            path = SHARED / row["model_file"]
        else:
            path = mobilenet_v1_224()["int8" if row["precision"].lower() == "int8" else "float32"]
        out.append(_features_row(f"{row['device']} {row['benchmark']}", _DEVICE_PROFILE[row["device"]], path,
                                 float(row["latency_ms"]), f"published_latency.csv line {i}"))
    for row in read_extra_rows():
        if row["use"] in ("fit", "test") and row["profile"]:
            out.append(_features_row(f"{row['device']} {row['benchmark']}", row["profile"],
                                     resolve_model(row["model_file"]), float(row["latency_ms"]),
                                     f"calibration_extra.csv line {row['line']}", use=row["use"]))
    return out


def _nnls_rel(a, y):
    import numpy as np

    from edgesparse.estimate.calibrate import nnls

    w = 1.0 / y
    aw = a * w[:, None]
    scale = np.maximum(np.abs(aw).max(axis=0), 1e-30)
    return nnls(aw / scale, np.ones_like(y)) / scale


def fit_family(rows: list[dict]):
    """The published-device cost model for one runtime family: (cycles/MAC per device, shared ratio, predict).

    t = cycles_per_MAC[device] x (MACs_base + r x MACs_weighted) / clock + offset, where the weighted class is
    depthwise conv for TFLM + CMSIS-NN (MCU) rows and int8 ops for LiteRT/XNNPACK rows, r is one number shared
    by the family (one parameter per device plus one per family), and `offset_us` is the row's per-op
    overhead, priced beforehand (it is not identifiable from these rows).
    """
    import numpy as np

    devices = sorted({r["profile"] for r in rows})
    y = np.array([r["ms"] * 1000.0 - r.get("offset_us", 0.0) for r in rows])
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
        return (cpm * (r["macs_base"] + ratio * r["macs_weighted"]) / r["clock_mhz"] + r.get("offset_us", 0.0)) / 1000.0
    return params, {"ratio": ratio}, predict


def fit_baseline(rows: list[dict]):
    """Naive baseline: t = c x MACs / clock with one c for the family."""
    import numpy as np

    a = np.array([[r["macs"] / r["clock_mhz"]] for r in rows])
    y = np.array([r["ms"] * 1000.0 for r in rows])
    c = float(_nnls_rel(a, y)[0])
    return lambda r: c * r["macs"] / r["clock_mhz"] / 1000.0


def _family_rows(rows: list[dict], family: str) -> list[dict]:
    """Rows fitted together: LiteRT/XNNPACK rows; TFLM rows with CMSIS-NN kernels (ESP-NN is fitted alone)."""
    return [r for r in rows if r["use"] == "fit" and r["family"] == family
            and (family != "tflm" or r["kernels"] == "cmsis-nn")]


def leave_one_out(rows: list[dict]) -> list[dict]:
    out = []
    for family in ("tflm", "litert"):
        fam = _family_rows(rows, family)
        for i, r in enumerate(fam):
            train = fam[:i] + fam[i + 1:]
            if not any(t["profile"] == r["profile"] for t in train):
                out.append({**r, "model_ms": None, "baseline_ms": None})
                continue
            _, _, predict = fit_family(train)
            base = fit_baseline(train)
            out.append({**r, "model_ms": predict(r), "baseline_ms": base(r)})
    return out


def write_latency_table(profile_name: str, values: dict, sources: dict | None = None) -> None:
    """Replace a shipped profile's [latency] table and its [sources] "latency.*" entries (re-read right before
    writing; validated; atomic)."""
    import tomllib

    from edgesparse.estimate.calibrate import _ordered_latency, render_table, replace_table, set_latency_sources
    from edgesparse.fsutil import atomic_write_text
    from edgesparse.profiles.profile import PROFILE_DIR, ProfileValidationError, validate

    path = PROFILE_DIR / f"{profile_name}.toml"
    text = path.read_text(encoding="utf-8")
    new = replace_table(text, "latency", render_table("latency", _ordered_latency(values)))
    new = set_latency_sources(new, sources or {})
    problems = validate(tomllib.loads(new), str(path))
    if problems:
        raise ProfileValidationError(problems)
    if new != text:
        atomic_write_text(path, new)


# ----------------------------------------------------------------- ratios from the extra rows (transfer factors)


def _geomean(values) -> float:
    import math

    values = list(values)
    return math.exp(sum(math.log(v) for v in values) / len(values))


def transfer_factors() -> dict:
    """Every transfer factor with the rows it is computed from (calibration_extra.csv)."""
    from edgesparse.estimate.calibrate import read_extra_rows

    extra = read_extra_rows()

    def cycles(row):  # cycles per inference (or per event)
        return float(row["latency_ms"]) * 1000.0 * float(row["clock_mhz"])

    def find(device_part, bench_part="", runtime_part=""):
        hits = [r for r in extra if device_part in r["device"] and bench_part in r["benchmark"]
                and runtime_part in r["runtime"]]
        if len(hits) != 1:
            raise SystemExit(f"calibration_extra.csv: expected one row for {device_part!r} {bench_part!r} "
                             f"{runtime_part!r}, found {len(hits)}")
        return hits[0]

    out: dict = {}
    # Cortex-M7 vs Cortex-M4 MAC work, same runtime on both (Bosch HALE 1.0; ST X-CUBE-AI 7.1)
    m7 = []
    for runtime in ("Bosch HALE", "X-CUBE-AI"):
        for bench in ("kws", "ic"):
            h7 = find("H7A3", bench, runtime)
            l4 = find("L4R5", bench, runtime)
            m7.append((cycles(h7) / cycles(l4), h7, l4))
    out["m7_vs_m4"] = {"factor": _geomean(r for r, _, _ in m7),
                       "parts": [(f"{h['runtime']} {h['benchmark']}", r, h["line"], l["line"]) for r, h, l in m7]}
    # Cortex-M0+ vs Cortex-M4, same runtime (Bosch HALE 1.0, STM32G0B1 vs STM32L4R5)
    m0 = []
    for bench in ("kws", "ic"):
        g0 = find("G0B1RE", bench, "Bosch")
        l4 = find("L4R5", bench, "Bosch")
        m0.append((cycles(g0) / cycles(l4), g0, l4))
    out["m0p_vs_m4"] = {"factor": _geomean(r for r, _, _ in m0),
                        "parts": [(f"Bosch HALE {g['benchmark']}", r, g["line"], l["line"]) for r, g, l in m0]}
    # TFLM per-invoke cycles of the same tiny model (hello_world), relative to the nRF52840 DK
    nrf = find("nRF52840 DK", "hello_world")
    for key, dev in (("m0p_overhead", "Raspberry Pi Pico"), ("m7_overhead", "SAMV71"), ("lx6_overhead", "ESP32-S (ESP32)"),
                     ("m4_f429_check", "F429ZI"), ("m0p_samd21_check", "SAMD21")):
        row = find(dev, "hello_world")
        out[key] = {"factor": cycles(row) / cycles(nrf), "parts": [(row["device"], cycles(row) / cycles(nrf),
                                                                     row["line"], nrf["line"])]}
    out["nrf_hello_world"] = nrf
    # single-thread scalar speed (sysbench cpu), time per event relative to the host
    host = find("edgesparse development VM", "sysbench")
    for key, dev in (("pi3", "Raspberry Pi 3+"), ("pi4", "Raspberry Pi 4"), ("pi5", "Raspberry Pi 5")):
        row = find(dev, "sysbench")
        out[f"sysbench_{key}"] = {"factor": float(row["latency_ms"]) / float(host["latency_ms"]),
                                  "parts": [(row["device"], float(row["latency_ms"]) / float(host["latency_ms"]),
                                             row["line"], host["line"])], "clock_mhz": float(row["clock_mhz"])}
    # XNNPACK thread scaling: speed-up of MobileNet v1 at 2 and at 4 threads over 1 thread
    speed = {}
    for dev in ("Pixel (Snapdragon 821)", "Pixel 2 (Snapdragon 835)", "Pixel 3a (Snapdragon 670)"):
        rows = [r for r in extra if r["device"] == dev and r["use"] == "threads"]
        single = next(float(r["latency_ms"]) for r in rows if r["threads"] == "1")
        multi = next(r for r in rows if r["threads"] != "1")
        speed.setdefault(int(multi["threads"]), []).append((single / float(multi["latency_ms"]), multi["line"]))
    out["xnnpack_speedup"] = {t: (_geomean(v for v, _ in vals), [line for _, line in vals]) for t, vals in speed.items()}
    return out


# ----------------------------------------------------------------- the [latency] tables of every shipped profile


EXTRA_REF = "edgesparse/calibration_extra.csv"


def _line_list(factor_entry) -> str:
    return ", ".join(f"{name} {ratio:.3g} (lines {a}/{b})" for name, ratio, a, b in factor_entry["parts"])


def published_fit_tables(rows: list[dict], host_table: dict | None = None) -> dict[str, tuple[dict, dict]]:
    """(values, [sources] latency entries) for every shipped profile except host.

    Fitted: the MAC rates of devices with published rows (LiteRT/XNNPACK family and TFLM + CMSIS-NN family, as
    before; plus the Raspberry Pi 3B+ and the ESP32-S3 from calibration_extra.csv). Transferred: MAC rates of
    devices without rows, from a fitted device of the same core family and runtime, and every device's per-op
    and per-inference overhead (host: LiteRT, nRF52840 hello_world row: TFLM). Every factor names its rows.
    """
    import tomllib

    from edgesparse.estimate.calibrate import transfer_macs_per_cycle, transfer_overhead_us
    from edgesparse.profiles.profile import PROFILE_DIR, load_profile

    f = transfer_factors()
    tables: dict[str, tuple[dict, dict]] = {}
    clock = {n: float(load_profile(n).raw["device"]["clock_mhz"]) for n in
             ("stm32l4r5", "ek_ra6m4", "nrf52840", "stm32h7a3", "rp2040", "esp32s3", "rpi4", "rpi3bplus",
              "rpizero2w", "rpi5", "pixel3", "pixel4", "midrange_a76", "host")}
    if host_table is None:
        host_table = tomllib.loads((PROFILE_DIR / "host.toml").read_text())["latency"]

    # --- TFLM: per-op overhead from the nRF52840 hello_world row; MAC rates from the CMSIS-NN family rows
    nrf = f["nrf_hello_world"]
    hello = _features_row("nRF52840 DK hello_world", "nrf52840", resolve_model(nrf["model_file"]),
                          float(nrf["latency_ms"]), f"calibration_extra.csv line {nrf['line']}")
    tflm = _family_rows(rows, "tflm")
    ovh_cycles = 0.0
    for _ in range(5):  # the overhead needs the M4's MAC rate and the MAC fit needs the overhead: iterate
        for r in tflm:
            r["offset_us"] = r["ops"] * ovh_cycles / r["clock_mhz"]
        params, shared, _ = fit_family(tflm)
        cpm_m4 = params["stm32l4r5"]["cycles_per_mac"]
        mac_cycles = cpm_m4 * (hello["macs_base"] + shared["ratio"] * hello["macs_weighted"])
        ovh_cycles = max(hello["ms"] * 1000.0 * hello["clock_mhz"] - mac_cycles, 0.0) / hello["ops"]
    ratio = shared["ratio"]
    lines = "; ".join(f"line {r['line'].split()[-1]} ({r['label']}, {r['ms']:g} ms)" for r in tflm)
    nrf_ovh_us = ovh_cycles / clock["nrf52840"]
    hello_src = (f"{EXTRA_REF} line {nrf['line']}: nRF52840 DK, TFLM hello_world (3 FULLY_CONNECTED, "
                 f"{hello['macs']:.0f} MACs) {float(nrf['latency_ms']) * 1000:g} us per invoke ({nrf['source']})")
    ovh_note = (f"{ovh_cycles:.0f} cycles per op: the nRF52840 DK hello_world invoke ({hello_src}) less its MACs at "
                f"the STM32L4R5's fitted rate, over its 3 ops (all non-MAC time, timer and input quantisation "
                "included, is attributed to per-op overhead; fixed per-inference overhead is not separated)")
    tflm_sources_m4 = "fit to ../shared/calibration/published_latency.csv rows " + lines
    mcu_overhead = {  # device -> (cycle factor vs the nRF52840, why)
        "stm32l4r5": (1.0, "same Cortex-M4F core as the nRF52840; the second M4 of the same benchmark, an STM32F429ZI "
                           f"(Arduino), needs {f['m4_f429_check']['factor']:.2f}x the nRF52840's cycles per invoke ({EXTRA_REF} "
                           f"lines {f['m4_f429_check']['parts'][0][2]}/{f['m4_f429_check']['parts'][0][3]})"),
        "ek_ra6m4": (1.0, "Cortex-M33 assumed to need the Cortex-M4's cycles per op (no published comparison found)"),
        "stm32h7a3": (f["m7_overhead"]["factor"], "Cortex-M7 vs Cortex-M4 cycles per invoke of the same TFLM "
                      f"hello_world benchmark: ATSAMV71 (M7, Zephyr) vs nRF52840 (M4F, Zephyr), {_line_list(f['m7_overhead'])}"),
        "rp2040": (f["m0p_overhead"]["factor"], "Cortex-M0+ vs Cortex-M4 cycles per invoke of the same TFLM hello_world "
                   f"benchmark: Raspberry Pi Pico vs nRF52840, {_line_list(f['m0p_overhead'])} (SAMD21, the other M0+: "
                   f"{f['m0p_samd21_check']['factor']:.2f}x)"),
        "esp32s3": (f["lx6_overhead"]["factor"], "Xtensa vs Cortex-M4 cycles per invoke of the same TFLM hello_world "
                    f"benchmark: ESP32 (LX6, Arduino) vs nRF52840, {_line_list(f['lx6_overhead'])}; the ESP32-S3's LX7 "
                    "is assumed to need the LX6's cycles"),
    }

    def mcu_overhead_entry(name):
        factor, why = mcu_overhead[name]
        time_factor = factor * clock["nrf52840"] / clock[name]
        us = transfer_overhead_us(nrf_ovh_us, time_factor)
        src = (f"assumption: transferred from nrf52840 ({nrf_ovh_us:.4g} us per op at 64 MHz) x overhead_factor "
               f"{time_factor:.4g} = {factor:.3g} x the nRF52840's cycles ({why}) x 64/{clock[name]:g} MHz")
        return us, time_factor, src

    for name, p in params.items():
        cpm = p["cycles_per_mac"]
        us, time_factor, src = mcu_overhead_entry(name)
        tables[name] = ({
            "fitted": True, "basis": "fitted+transferred", "fit_source": tflm_sources_m4,
            "fit_rows": [f"{r['line']}: {r['label']}" for r in tflm if r["profile"] == name], "fit_threads": 1,
            "overhead_from": "nrf52840", "overhead_factor": time_factor,
            "macs_per_cycle": {"int8": 1.0 / cpm, "dwconv_int8": 1.0 / (cpm * ratio)},
            "overhead_us_per_op": us, "fixed_overhead_us": 0.0,
            "notes": (f"{len(params) + 1} parameters over {len(tflm)} MCU rows: cycles/MAC per device ({cpm:.3g} here) "
                      f"and a depthwise/conv cost ratio {ratio:.3g} shared by the TFLM+CMSIS-NN family, fitted after "
                      f"subtracting the per-op overhead; per-op overhead transferred ({ovh_note}); elementwise ops not "
                      "priced; leave-one-out errors in docs/estimation.md"),
        }, {"overhead_us_per_op": src, "overhead_factor": src})
    l4 = tables["stm32l4r5"][0]["macs_per_cycle"]
    l4_src = f"stm32l4r5 (fitted: {tflm_sources_m4})"

    def mcu_transfer(name, factor, why, basis_note):
        us, time_factor, ovh_src = mcu_overhead_entry(name) if name != "nrf52840" else (
            nrf_ovh_us, None, f"fitted: {ovh_note}")
        values = {"fitted": False, "basis": "transferred", "fit_source": "", "fit_threads": 1,
                  "transferred_from": "stm32l4r5", "transfer_factor": factor}
        if time_factor is not None:
            values.update({"overhead_from": "nrf52840", "overhead_factor": time_factor})
        values.update({"macs_per_cycle": transfer_macs_per_cycle(l4, factor), "overhead_us_per_op": us,
                       "fixed_overhead_us": 0.0, "notes": basis_note})
        mac_src = (f"assumption: transferred from {l4_src}: macs_per_cycle / transfer_factor {factor:.4g} ({why})")
        sources = {"fit_threads": "TFLM runs one invoke on one core", "transfer_factor": mac_src,
                   "macs_per_cycle": mac_src, "overhead_us_per_op": ovh_src,
                   "fixed_overhead_us": "assumption: 0 - per-invoke time beyond MACs is priced as per-op overhead"}
        if time_factor is not None:
            sources["overhead_factor"] = ovh_src
        tables[name] = (values, sources)

    mcu_transfer("nrf52840", 1.0, "same Cortex-M4F core and TFLM + CMSIS-NN; cycles per MAC assumed equal, so the "
                 "time scales with the clock (64 vs 120 MHz); flash wait states and caches differ and are not modelled",
                 "MAC rates transferred from stm32l4r5 (same core); per-op overhead fitted to the nRF52840 DK hello_world "
                 "row of calibration_extra.csv")
    m7 = f["m7_vs_m4"]
    mcu_transfer("stm32h7a3", m7["factor"], "Cortex-M7 vs Cortex-M4 cycles per inference with the same runtime on "
                 f"the NUCLEO-H7A3ZI(-Q) and NUCLEO-L4R5ZI, geometric mean of {_line_list(m7)} in {EXTRA_REF} "
                 "(MLPerf Tiny: Bosch HALE 1.0 and ST X-CUBE-AI 7.1); assumed to hold for TFLM + CMSIS-NN",
                 "MAC rates transferred from stm32l4r5 with the published M7/M4 cycle ratio; per-op overhead from nrf52840")
    m0 = f["m0p_vs_m4"]
    mcu_transfer("rp2040", m0["factor"], "Cortex-M0+ (no DSP/SIMD) vs Cortex-M4 (DSP) cycles per inference with the "
                 f"same runtime: STM32G0B1 vs STM32L4R5, geometric mean of {_line_list(m0)} in {EXTRA_REF} (MLPerf "
                 "Tiny v1.1, Bosch HALE 1.0); the RP2040 runs TFLM reference kernels from XIP flash with a cache, "
                 "which may be slower still",
                 "MAC rates transferred from stm32l4r5 with the published M0+/M4 cycle ratio; per-op overhead from nrf52840")

    # ESP32-S3: one published row (person detection, ESP-NN) fits its int8 MAC rate; depthwise ratio transferred
    esp = [r for r in rows if r["profile"] == "esp32s3" and r["use"] == "fit"]
    us_esp, tf_esp, src_esp = mcu_overhead_entry("esp32s3")
    if esp:
        r = esp[0]
        mac_us = r["ms"] * 1000.0 - r["ops"] * us_esp
        cpm = mac_us * r["clock_mhz"] / (r["macs_base"] + ratio * r["macs_weighted"])
        tables["esp32s3"] = ({
            "fitted": True, "basis": "fitted+transferred",
            "fit_source": f"fit to {EXTRA_REF} line {r['line'].split()[-1]} ({r['label']}, {r['ms']:g} ms)",
            "fit_rows": [f"{r['line']}: {r['label']}"], "fit_threads": 1,
            "transferred_from": "stm32l4r5", "transfer_factor": 1.0,
            "overhead_from": "nrf52840", "overhead_factor": tf_esp,
            "macs_per_cycle": {"int8": 1.0 / cpm, "dwconv_int8": 1.0 / (cpm * ratio)},
            "overhead_us_per_op": us_esp, "fixed_overhead_us": 0.0,
            "notes": (f"one published row: cycles/MAC {cpm:.3g} fitted to it with the depthwise/conv ratio {ratio:.3g} "
                      "of the TFLM+CMSIS-NN family (transferred: ESP-NN's own ratio is not identifiable from one "
                      "model); per-op overhead from nrf52840"),
        }, {"macs_per_cycle.dwconv_int8": ("assumption: transferred from the TFLM+CMSIS-NN family fit (stm32l4r5, "
                                            f"ek_ra6m4): depthwise costs {ratio:.3g}x a conv MAC, assumed for ESP-NN; "
                                            "transfer_factor 1.0 applies to this ratio only"),
            "transfer_factor": "assumption: 1.0 - only the depthwise/conv ratio is transferred, not a MAC rate",
            "overhead_us_per_op": src_esp, "overhead_factor": src_esp})

    # --- LiteRT/XNNPACK: MAC rates from the family fit; per-op and per-inference overhead from the host
    lit = _family_rows(rows, "litert")
    params, shared, _ = fit_family(lit)
    ratio = shared["ratio"]
    lines = "; ".join(f"{r['line']} ({r['label']}, {r['ms']:g} ms)" for r in lit)
    host_ovh = float(host_table.get("overhead_us_per_op", 0.0))
    host_fixed = float(host_table.get("fixed_overhead_us", 0.0))
    host_threads = int(host_table.get("fit_threads", 2))
    pi3, pi4, pi5 = f["sysbench_pi3"], f["sysbench_pi4"], f["sysbench_pi5"]
    overhead_factor = {  # device -> (time factor vs the host, why)
        "rpi4": (pi4["factor"], f"sysbench cpu single-thread time per event, Raspberry Pi 4 vs this host: {_line_list(pi4)}"),
        "rpi3bplus": (pi3["factor"], f"sysbench cpu single-thread time per event, Raspberry Pi 3+ vs this host: {_line_list(pi3)}"),
        "rpizero2w": (pi3["factor"] * pi3["clock_mhz"] / clock["rpizero2w"],
                      f"the Raspberry Pi 3+'s sysbench ratio ({_line_list(pi3)}) x {pi3['clock_mhz']:g}/{clock['rpizero2w']:g} MHz "
                      "(same Cortex-A53 at a lower clock)"),
        "rpi5": (pi5["factor"], f"sysbench cpu single-thread time per event, Raspberry Pi 5 vs this host: {_line_list(pi5)}"),
        "pixel4": (pi5["factor"] * pi5["clock_mhz"] / clock["pixel4"],
                   f"the Raspberry Pi 5's (Cortex-A76) sysbench ratio ({_line_list(pi5)}) x {pi5['clock_mhz']:g}/{clock['pixel4']:g} MHz"),
        "pixel3": (pi5["factor"] * pi5["clock_mhz"] / clock["pixel3"],
                   f"the Raspberry Pi 5's (Cortex-A76) sysbench ratio ({_line_list(pi5)}) x {pi5['clock_mhz']:g}/{clock['pixel3']:g} MHz; "
                   "the Cortex-A75 assumed as fast per clock as the A76"),
        "midrange_a76": (pi5["factor"] * pi5["clock_mhz"] / clock["midrange_a76"],
                         f"the Raspberry Pi 5's (Cortex-A76) sysbench ratio ({_line_list(pi5)}) x {pi5['clock_mhz']:g}/{clock['midrange_a76']:g} MHz"),
    }

    def litert_overhead(name):
        factor, why = overhead_factor[name]
        src = (f"assumption: transferred from host (fitted by timing: {host_ovh:.4g} us per op, {host_fixed:.4g} us per "
               f"inference at {host_threads} threads) x overhead_factor {factor:.4g} ({why}); a scalar integer benchmark "
               "stands in for the interpreter's dispatch code, and the host was timed at its own thread count")
        return (transfer_overhead_us(host_ovh, factor), transfer_overhead_us(host_fixed, factor), factor, src)

    for name, p in params.items():
        cpm = p["cycles_per_mac"]
        ovh, fixed, factor, src = litert_overhead(name)
        tables[name] = ({
            "fitted": True, "basis": "fitted+transferred",
            "fit_source": "fit to ../shared/calibration/published_latency.csv and edgesparse/calibration_extra.csv rows " + lines,
            "fit_rows": [f"{r['line']}: {r['label']}" for r in lit if r["profile"] == name], "fit_threads": 4,
            "overhead_from": "host", "overhead_factor": factor,
            "macs_per_cycle": {"float32": 1.0 / cpm, "int8": 1.0 / (cpm * ratio)},
            "overhead_us_per_op": ovh, "fixed_overhead_us": fixed,
            "notes": (f"{len(params) + 1} parameters over {len(lit)} LiteRT/XNNPACK rows: cycles/MAC per device "
                      f"(float32 {cpm:.3g} here, all threads together) and an int8/float32 cost ratio {ratio:.3g} shared "
                      "by the family; the rows are XNNPACK/benchmark_model timings of large models, so per-op and "
                      "per-inference overhead are transferred from the host; elementwise ops not priced; "
                      "leave-one-out errors in docs/estimation.md"),
        }, {"overhead_us_per_op": src, "fixed_overhead_us": src, "overhead_factor": src})

    def litert_transfer(name, source, factor, why, threads):
        ovh, fixed, ofactor, src = litert_overhead(name)
        mac_src = (f"assumption: transferred from {source} (fitted: {tables[source][0]['fit_source'][:120]}...): "
                   f"macs_per_cycle / transfer_factor {factor:.4g} ({why})")
        tables[name] = ({
            "fitted": False, "basis": "transferred", "fit_source": "", "fit_threads": threads,
            "transferred_from": source, "transfer_factor": factor, "overhead_from": "host", "overhead_factor": ofactor,
            "macs_per_cycle": transfer_macs_per_cycle(tables[source][0]["macs_per_cycle"], factor),
            "overhead_us_per_op": ovh, "fixed_overhead_us": fixed,
            "notes": f"MAC rates transferred from {source}; per-op and per-inference overhead from host",
        }, {"fit_threads": f"the profile's [runtime] threads ({threads})", "transfer_factor": mac_src,
            "macs_per_cycle": mac_src, "overhead_us_per_op": src, "fixed_overhead_us": src, "overhead_factor": src})

    litert_transfer("rpizero2w", "rpi3bplus", 1.0, "same 4x Cortex-A53 and XNNPACK (RP3A0 = BCM2710A1, the Pi 3's SoC "
                    "family): cycles per MAC assumed equal, time scales with the clock (1000 vs 1400 MHz); 512 MB vs 1 GB "
                    "LPDDR2", 4)
    p4_clock_sum = 2840 + 3 * 2420  # Pixel 4: 1x A76 @ 2.84 + 3x A76 @ 2.42 GHz (profile core_layout), 4 threads
    # The Pixel 4's rates are per cycle of its 2840 MHz prime core while its 4 threads run on cores summing
    # p4_clock_sum MHz. With equal work per core-cycle, the target's throughput is the Pixel 4's x (its cores'
    # summed MHz / p4_clock_sum) x (per-thread efficiency ratio), so its per-cycle rate (own clock) is the Pixel
    # 4's / factor with factor = clock_target x p4_clock_sum / (2840 x summed_target x efficiency).
    rpi5_factor = clock["rpi5"] * p4_clock_sum / (clock["pixel4"] * 4 * clock["rpi5"])
    litert_transfer("rpi5", "pixel4", rpi5_factor, "same Cortex-A76 and XNNPACK at 4 threads: equal work per core-cycle "
                    f"assumed; the Pixel 4's rates are per cycle of its 2840 MHz prime core while its 4 threads run on "
                    f"cores summing {p4_clock_sum} MHz, the Pi 5's on 4x {clock['rpi5']:g} MHz, so the factor is "
                    f"{p4_clock_sum} / (4 x 2840); memory systems differ (not modelled)", 4)
    s2, s2_lines = f["xnnpack_speedup"][2]
    s4, s4_lines = f["xnnpack_speedup"][4]
    efficiency = (s2 / 2) / (s4 / 4)  # per-thread speed at 2 threads relative to 4 threads
    mid_factor = clock["midrange_a76"] * p4_clock_sum / (clock["pixel4"] * 2 * clock["midrange_a76"] * efficiency)
    litert_transfer("midrange_a76", "pixel4", mid_factor, "same Cortex-A76 and XNNPACK: 2 threads on 2x "
                    f"{clock['midrange_a76']:g} MHz vs the Pixel 4's 4 threads on cores summing {p4_clock_sum} MHz, with "
                    f"XNNPACK's per-thread efficiency at 2 vs 4 threads ({s2:.3g}x vs {s4:.3g}x speed-up over one thread, "
                    f"MobileNet v1 on Pixel phones, {EXTRA_REF} lines {', '.join(s2_lines + s4_lines)}); equal work per "
                    "core-cycle assumed", 2)
    return tables


def held_out_rows(rows: list[dict], tables: dict) -> list[dict]:
    """Published rows not used to fit ('test' rows: a second model), predicted with the final tables."""
    out = []
    for r in rows:
        if r["use"] != "test":
            continue
        values = tables[r["profile"]][0]
        mpc = values["macs_per_cycle"]
        key_base, key_w = ("float32", "int8")
        us = (r["macs_base"] / mpc[key_base] + r["macs_weighted"] / mpc[key_w]) / r["clock_mhz"]
        us += r["ops"] * values.get("overhead_us_per_op", 0.0) + values.get("fixed_overhead_us", 0.0)
        out.append({**r, "predicted_ms": us / 1000.0, "error": us / 1000.0 / r["ms"] - 1.0})
    return out


def profile_predictions() -> tuple[list[dict], list[dict], dict]:
    """The latency basis of every shipped profile and its predicted latency for the digits demo and MLPerf KWS."""
    from edgesparse.estimate.latency import check_model
    from edgesparse.tflite.graph import load_graph
    from edgesparse.profiles.profile import available_profiles, load_profile

    digits = resolve_model("bench:digits_int8")
    kws = MLPERF / "keyword_spotting" / "kws_ref_model.tflite"
    dg, kg = load_graph(digits), load_graph(kws)
    basis_rows, pred_rows = [], []
    for name in available_profiles():
        prof = load_profile(name)
        lat = prof.raw.get("latency", {})
        d = check_model(digits, prof)
        k = check_model(kws, prof)
        basis_rows.append({"profile": name, "basis": lat.get("basis") or ("fitted" if lat.get("fitted") else "assumption"),
                           "fit_rows": lat.get("fit_rows") or [], "transferred_from": lat.get("transferred_from", ""),
                           "transfer_factor": lat.get("transfer_factor"), "overhead_from": lat.get("overhead_from", ""),
                           "overhead_factor": lat.get("overhead_factor")})
        pred_rows.append({"profile": name, "digits_ms": d.latency_ms, "digits_basis": d.latency.basis,
                          "kws_ms": k.latency_ms, "kws_basis": k.latency.basis,
                          "digits_overhead_share": sum(c.share for c in d.latency.coefficients
                                                       if c.coefficient in ("overhead_us_per_op", "fixed_overhead_us"))})
    meta = {"digits_ops": len(dg.ops), "digits_macs": dg.total_macs, "kws_ops": len(kg.ops), "kws_macs": kg.total_macs}
    return basis_rows, pred_rows, meta


# --------------------------------------------------------------------------- report


def _pct(x) -> str:
    return "-" if x is None else f"{x * 100:+.1f}%"


def render_ram_only(ram, meta) -> str:
    lines = [f"Generated by `python bench/estimation.py` on {meta['date']} ({meta['machine']}).", ""]
    lines += ["### 1. RAM: planned TFLM arena vs the TFLM interpreter's arena", "",
              "| model | planned (head + tail) | TFLM interpreter (head + tail) | error |", "|---|---|---|---|"]
    for r in ram:
        lines.append(f"| {r['model']} | {r['planned_bytes']:,} B ({r['planned_head']:,} + {r['planned_tail']:,}) | "
                     f"{r['tflm_bytes']:,} B ({r['tflm_head']:,} + {r['tflm_tail']:,}) | {_pct(r['error'])} |")
    worst = max(abs(r["error"]) for r in ram)
    lines += ["", f"Worst absolute error: {worst * 100:.2f}% (goal: within 5% on every model).", ""]
    return "\n".join(lines) + "\n"


def render_host(host, meta) -> str:
    import numpy as np

    fit, table, fit_rows, test_rows, fit_names = host
    errs = np.abs([r["error"] for r in test_rows])
    lines = ["### 2. Host latency (LiteRT, this machine): predicted vs measured on models not used to fit", "",
             f"Fitted on {len(fit_names)} synthetic models (one op family each, plus chains of cheap ops; "
             f"in-sample median |error| {fit.median_abs_error * 100:.1f}%, worst {fit.worst_abs_error * 100:.1f}%, "
             f"median signed error {float(np.median(fit.errors)) * 100:+.1f}%), "
             f"{fit.parameters} parameters, by NNLS on log error (IRLS), no row dropped, at {meta['threads']} "
             f"thread(s); timings are the {STAT} of up to 200 timed invokes after warm-up, best of two passes"
             + "".join(f"; {k} fitted at zero cost beyond its bytes, so pooled with {t} (same rate)"
                       for k, t in getattr(fit, "merged", {}).items())
             + (f"; left out of the final fit as outliers: {', '.join(fit.dropped)}" if fit.dropped else "")
             + ". Test set:", "",
             "| model | measured ms | predicted ms | error |", "|---|---|---|---|"]
    for r in test_rows:
        lines.append(f"| {r['model']} | {r['measured_ms']:.4g} | {r['predicted_ms']:.4g} | {_pct(r['error'])} |")
    signed = np.median([r["error"] for r in test_rows])
    lines += ["", f"**{len(test_rows)} test models: median absolute error {np.median(errs) * 100:.1f}%, "
                  f"worst {np.max(errs) * 100:.1f}%** (goal: median <= 20%); median signed error "
                  f"{signed * 100:+.1f}% (negative: predicted too fast).", "",
              "Fitted host coefficients (device_profiles/host.toml [latency]):", "", "```",
              json.dumps(table, indent=1, sort_keys=True, default=float), "```", ""]
    return "\n".join(lines) + "\n"


def render_published(loo) -> str:
    import numpy as np

    lines = ["### 3. Published devices: leave-one-out error, cost model vs naive MACs/clock baseline", "",
             "TFLM rows are priced with their per-op overhead (the nRF52840 hello_world figure, section 5) before the MAC terms are fitted; the ESP32-S3 "
             "has one row (nothing to leave out).", "",
             "| row | measured ms | cost model (LOO) | error | baseline (LOO) | error |",
             "|---|---|---|---|---|---|"]
    for r in loo:
        m = "-" if r["model_ms"] is None else f"{r['model_ms']:.4g}"
        b = "-" if r["baseline_ms"] is None else f"{r['baseline_ms']:.4g}"
        lines.append(f"| {r['line']}: {r['label']} | {r['ms']:g} | {m} | "
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
    return "\n".join(lines) + "\n"


def render(ram, host, loo, meta, extra=None) -> str:
    body = render_ram_only(ram, meta) + render_host(host, meta) + render_published(loo)
    if extra:
        body += "\n".join(render_extra(extra))
    return body


def _fmt_ms(x) -> str:
    if x is None:
        return "-"
    return f"{x:.3g}" if x >= 0.01 else f"{x:.2g}"


def render_extra(extra: dict) -> list[str]:
    """Sections 4-6: held-out published rows, transfer factors, every profile's latency basis and predictions."""
    lines = ["### 4. Published rows not used to fit (a second model, MobileNet v2 1.0)", "",
             "| row (calibration_extra.csv) | measured ms | predicted ms | error |", "|---|---|---|---|"]
    for r in extra["held_out"]:
        lines.append(f"| {r['line']}: {r['label']} | {r['ms']:g} | {r['predicted_ms']:.4g} | {_pct(r['error'])} |")
    lines += ["", "### 5. Transfer factors (edgesparse/calibration_extra.csv; each a ratio of published rows)", "",
              "| factor | value | from |", "|---|---|---|"]
    f = extra["factors"]
    labels = {"m7_vs_m4": "Cortex-M7 / Cortex-M4 cycles per inference, same runtime (stm32h7a3 MACs)",
              "m0p_vs_m4": "Cortex-M0+ / Cortex-M4 cycles per inference, same runtime (rp2040 MACs)",
              "m7_overhead": "Cortex-M7 / M4 cycles per TFLM hello_world invoke (stm32h7a3 overhead)",
              "m0p_overhead": "Cortex-M0+ / M4 cycles per TFLM hello_world invoke (rp2040 overhead)",
              "lx6_overhead": "Xtensa LX6 / M4 cycles per TFLM hello_world invoke (esp32s3 overhead)",
              "m4_f429_check": "check: STM32F429 (M4) / nRF52840 (M4F) cycles per hello_world invoke (1 expected)",
              "m0p_samd21_check": "check: SAMD21 (M0+) / nRF52840 cycles per hello_world invoke",
              "sysbench_pi3": "sysbench time per event, Pi 3+ / host (rpi3bplus, rpizero2w overhead)",
              "sysbench_pi4": "sysbench time per event, Pi 4 / host (rpi4 overhead)",
              "sysbench_pi5": "sysbench time per event, Pi 5 / host (rpi5, pixel, midrange overhead)"}
    for key, label in labels.items():
        e = f[key]
        lines.append(f"| {label} | {e['factor']:.3g} | " + "; ".join(
            f"{n} {v:.3g} (lines {a}/{b})" for n, v, a, b in e["parts"]) + " |")
    for t, (s, rows) in sorted(f["xnnpack_speedup"].items()):
        lines.append(f"| XNNPACK MobileNet v1 speed-up at {t} threads over 1 (thread scaling, midrange_a76) | {s:.3g} | "
                     f"lines {', '.join(rows)} |")
    lines += ["", "### 6. Latency basis of every profile", "",
              "| profile | basis | MAC rates | per-op / per-inference overhead |", "|---|---|---|---|"]
    for b in extra["basis"]:
        if b["profile"] == "host":
            macs = f"fitted by timing {len(b['fit_rows'])} synthetic models on this machine (section 2)"
        elif b["basis"] in ("fitted", "fitted+transferred") and b["fit_rows"]:
            macs = "fitted to " + "; ".join(b["fit_rows"])
            if b["profile"] == "esp32s3":
                macs += " (depthwise/conv ratio transferred from the CMSIS-NN family)"
        elif b["transferred_from"]:
            macs = f"transferred from {b['transferred_from']}, transfer_factor {b['transfer_factor']:.3g} (assumption)"
        else:
            macs = b["basis"]
        if b["overhead_from"]:
            ovh = f"transferred from {b['overhead_from']}, overhead_factor {b['overhead_factor']:.3g} (assumption)"
        elif b["profile"] == "nrf52840":
            ovh = "fitted to its hello_world row (given the transferred MAC rate)"
        elif b["profile"] == "host":
            ovh = "fitted (timing, this machine)"
        else:
            ovh = "-"
        if b["profile"] == "nrf52840":
            ovh = "fitted to its hello_world row (given the transferred MAC rate)"
        lines.append(f"| {b['profile']} | {b['basis']} | {macs} | {ovh} |")
    m = extra["meta"]
    lines += ["", f"### 7. Predicted latency of the digits demo and MLPerf Tiny KWS on every profile", "",
              f"digits demo: the built-in demo CNN (`edgesparse.pipeline.demos.digits.build_digits_model`, dense int8, random weights: "
              f"{m['digits_ops']} ops, {m['digits_macs'] / 1e6:.2f} M MACs); KWS: "
              f"`mlperf_tiny/keyword_spotting/kws_ref_model.tflite` ({m['kws_ops']} ops, {m['kws_macs'] / 1e6:.2f} M MACs). "
              "The basis is the one `check` reports for that model (fitted+transferred: mostly fitted, transferred "
              "part named in the output).", "",
              "| profile | digits ms | basis | overhead share | KWS int8 ms | basis |", "|---|---|---|---|---|---|"]
    for p in extra["predictions"]:
        lines.append(f"| {p['profile']} | {_fmt_ms(p['digits_ms'])} | {p['digits_basis']} | "
                     f"{p['digits_overhead_share']:.0%} | {_fmt_ms(p['kws_ms'])} | {p['kws_basis']} |")
    lines.append("")
    return lines


def update_doc(body: str) -> None:
    from edgesparse.fsutil import atomic_write_text

    text = DOC.read_text(encoding="utf-8") if DOC.is_file() else f"# Estimation\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text:
        text = text.rstrip("\n") + f"\n\n## Figures\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    atomic_write_text(DOC, head + BEGIN + "\n" + body + "\n" + END + tail)


def run(quick: bool = False, write: bool = True, host_timing: bool = True) -> str:
    """All parts; prints progress, writes the fitted profiles and docs/estimation.md; returns Markdown.

    host_timing=False reuses device_profiles/host.toml (and the last run's host section) instead of timing.
    """
    import platform
    import tomllib

    from edgesparse.profiles.profile import PROFILE_DIR, load_profile

    threads = int(load_profile("host").raw["runtime"]["threads"])
    print("(1) RAM plan vs TFLM", flush=True)
    ram = ram_rows()
    print("(3) published devices", flush=True)
    pub = published_features()
    host = None
    host_table = None
    if host_timing:
        print("(2) host latency", flush=True)
        host = host_fit(threads, quick=quick)
        fit, table, _, _, fit_names = host
        host_table = {**table, "fit_threads": threads}
    tables = published_fit_tables(pub, host_table)  # also prices the TFLM rows' per-op overhead for the LOO
    loo = leave_one_out(pub)
    meta = {"date": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
            "threads": threads}
    if write:
        if host is not None:
            fit, table, _, _, fit_names = host
            write_latency_table("host", {
                "fitted": True, "basis": "fitted",
                "fit_source": (f"edgesparse bench/estimation.py: LiteRT {STAT} latency on this machine of the "
                               "synthetic models listed in fit_rows (built by bench/estimation.py)"),
                "fit_rows": fit_names, "fit_threads": threads, **table,
                "notes": (f"NNLS on log error (IRLS), {fit.parameters} parameters, {len(fit_names)} models; "
                          "errors on unseen models in docs/estimation.md"),
            })
        for device, (values, sources) in tables.items():
            write_latency_table(device, values, sources)
    print("(4) held-out rows, basis and predictions per profile", flush=True)
    basis, preds, pmeta = profile_predictions()
    extra = {"held_out": held_out_rows(pub, tables), "factors": transfer_factors(), "basis": basis,
             "predictions": preds, "meta": pmeta}
    if host is not None:
        body = render(ram, host, loo, meta, extra)
    else:
        body = render_without_host(ram, loo, meta, extra)
    CACHE.mkdir(parents=True, exist_ok=True)
    (CACHE / "estimation_figures.md").write_text(body, encoding="utf-8")
    if write:
        update_doc(body)
    return "## Estimation (bench/estimation.py)\n\n" + body


def render_without_host(ram, loo, meta, extra) -> str:
    """Like render(), keeping the host section (2) of the current docs/estimation.md (host not re-timed)."""
    text = DOC.read_text(encoding="utf-8")
    section = text[text.index("### 2. Host latency"):text.index("### 3. Published devices")]
    return render_ram_only(ram, meta) + section + render_published(loo) + "\n".join(render_extra(extra))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing loops")
    parser.add_argument("--no-write", action="store_true", help="print only; leave profiles and docs alone")
    parser.add_argument("--no-host-timing", action="store_true",
                        help="reuse device_profiles/host.toml instead of timing the host (published fits only)")
    args = parser.parse_args(argv)
    print(run(quick=args.quick, write=not args.no_write, host_timing=not args.no_host_timing))
    return 0


if __name__ == "__main__" and "--zoo-only" not in sys.argv:
    raise SystemExit(main())


if __name__ == "__main__" and "--zoo-only" in sys.argv:
    t0 = time.time()
    for group in (build_fit_set, build_test_set, mobilenet_v1_224):
        print(group.__name__, len(group()), f"{time.time() - t0:.0f}s", flush=True)
    print(demo_like_int8())
    raise SystemExit(0)

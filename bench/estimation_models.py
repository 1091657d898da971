"""The models the estimation benchmark times and fits, and the host latency fit (parts 1 and 2).

Why a module of its own: everything here needs TensorFlow (to build the
synthetic, MobileNet and demo-like models, cached under build/bench-cache/) or
times models on this machine; bench/estimation_fits.py only does arithmetic
on published rows. Run through bench/estimation.py. Raises nothing of its own;
TensorFlow and LiteRT errors propagate.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from edgesparse.estimate import LatencyCoefficients, op_features, predict_ops_us, tflm_ram  # noqa: E402
from edgesparse.estimate.calibrate import Sample, fit_latency, model_features  # noqa: E402
from edgesparse.profiles import load_profile  # noqa: E402
from edgesparse.runtime.measure import measure, tflm_arena_bytes  # noqa: E402
from edgesparse.tflite.graph import load_graph  # noqa: E402

__all__ = [
    "CACHE",
    "MLPERF",
    "MLPERF_FLOAT",
    "MLPERF_INT8",
    "REPO",
    "SHARED",
    "STAT",
    "bench_models",
    "build_fit_set",
    "build_test_set",
    "demo_like_int8",
    "fit_model_specs",
    "host_fit",
    "measure_models",
    "mobilenet_v1_224",
    "ram_rows",
    "resolve_model",
    "test_model_specs",
]

SHARED = REPO.parent / "shared"
MLPERF = SHARED / "mlperf_tiny"
CACHE = Path(os.environ.get("EDGESPARSE_BENCH_CACHE", REPO / "build" / "bench-cache"))
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

    specs.update(_elementwise_specs(L))
    sparse = {
        "fc_sparse_a": ((512,), lambda: [L.Dense(512, activation="relu") for _ in range(3)], 0.8, 1),
        "fc_sparse_b": ((1024,), lambda: [L.Dense(1024, activation="relu"), L.Dense(256)], 0.9, 4),
        "fc_sparse_c": ((256,), lambda: [L.Dense(256, activation="relu") for _ in range(4)], 0.7, 1),
    }
    return specs, sparse


def _elementwise_specs(L):
    """Elementwise ops one type at a time at MobileNet-like shapes (part of the host fit set)."""
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

    return {
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
    }


def test_model_specs():
    """keras.applications models (random weights) and a sparse MLPerf model: part of the host test set."""
    _, keras = _tf()
    apps = keras.applications
    return {
        "mobilenet_v1_0.25_128": ((128, 128, 3), lambda: apps.MobileNet(input_shape=(128, 128, 3), alpha=0.25,
                                                                        weights=None)),
        "mobilenet_v2_0.35_96": ((96, 96, 3), lambda: apps.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35,
                                                                       weights=None)),
        "mobilenet_v3s_0.75_96": ((96, 96, 3), lambda: apps.MobileNetV3Small(input_shape=(96, 96, 3), alpha=0.75,
                                                                             weights=None, minimalistic=False)),
        "mobilenet_v1_1.0_224": ((224, 224, 3), lambda: apps.MobileNet(input_shape=(224, 224, 3), alpha=1.0,
                                                                       weights=None)),
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
    # _cached calls `make` at once, so the lambdas bind the loop variables of this iteration (default arguments
    # only to say so).
    for name, (shape, layers) in specs.items():
        for quant in ("float32", "int8"):
            out[f"{name}_{quant}"] = _cached(
                f"fit_{name}_{quant}",
                lambda shape=shape, layers=layers, quant=quant: _convert(_seq(shape, layers()), quant, shape))
    for name, (shape, layers, frac, block) in sparse.items():
        for quant in ("float32", "int8"):
            out[f"{name}_{quant}"] = _cached(
                f"fit_{name}_{quant}",
                lambda shape=shape, layers=layers, frac=frac, block=block, quant=quant: _convert(
                    _sparsify(_seq(shape, layers()), frac, block=block), quant, shape, sparse=True))
    return out


def build_test_set() -> dict[str, Path]:
    out = {name: MLPERF / rel for name, rel in {**MLPERF_INT8, **MLPERF_FLOAT}.items()}
    for name, (shape, make) in test_model_specs().items():
        if name == "mobilenet_v1_1.0_224":
            continue  # used for the published devices, too slow to time here on every run
        for quant in ("float32", "int8"):
            out[f"{name}_{quant}"] = _cached(f"test_{name}_{quant}",
                                             lambda make=make, quant=quant, shape=shape: _convert(make(), quant, shape))

    def sparse_ad(quant):
        _, keras = _tf()
        model = keras.models.load_model(MLPERF / "anomaly_detection" / "ad01.h5", compile=False)
        return _convert(_sparsify(model, 0.8), quant, tuple(model.input_shape[1:]), sparse=True)

    for quant in ("float32", "int8"):
        out[f"ad01_sparse80_{quant}"] = _cached(f"test_ad01_sparse80_{quant}", lambda quant=quant: sparse_ad(quant))
    return out


def mobilenet_v1_224() -> dict[str, Path]:
    """MobileNet v1 1.0 224 (random weights): the model of the published RPi 4 and Pixel rows."""
    shape, make = test_model_specs()["mobilenet_v1_1.0_224"]
    return {quant: _cached(f"pub_mobilenet_v1_1.0_224_{quant}", lambda quant=quant: _convert(make(), quant, shape))
            for quant in ("float32", "int8")}


def demo_like_int8() -> Path:
    """A small Conv2D/Dense int8 CNN like the built-in demo: part of the RAM check."""
    _, keras = _tf()
    L = keras.layers
    shape = (32, 32, 1)

    def layers():
        return [L.Conv2D(8, 3, activation="relu"), L.MaxPooling2D(2), L.Conv2D(16, 3, activation="relu"),
                L.MaxPooling2D(2), L.Flatten(), L.Dense(32, activation="relu"), L.Dense(10), L.Softmax()]

    return _cached("demo_like_int8", lambda: _convert(_seq(shape, layers()), "int8", shape))


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


# --------------------------------------------------------------------------- (1) RAM


def ram_rows() -> list[dict]:
    """Planned TFLM arena vs the TFLM interpreter's own, per MLPerf Tiny int8 model and the demo-like CNN."""
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

    host = load_profile("host")
    clock = float(host.clock_mhz or 0)
    fit_models = build_fit_set()
    test_models = build_test_set()
    print(f"host: timing {len(fit_models)} fit models and {len(test_models)} test models at {threads} thread(s)",
          flush=True)
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


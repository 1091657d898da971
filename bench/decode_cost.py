"""The cost of TFLM's DECODE per decoded element, relative to a MAC: what edgesparse's latency model charges.

    .venv/bin/python bench/decode_cost.py [--rows 512] [--cols 1024] [--repeats 30]

One int8 FULLY_CONNECTED of rows x cols weights (one MAC per weight at batch 1), timed in TFLite Micro's
Python interpreter (reference kernels, this host) three ways: dense, its weights PRUNING-encoded (20 %
kept) and LUT-encoded (16 values, 4-bit indices). The compressed models do exactly the dense model's
work plus one DECODE of every weight, so per decode type

    decode cost in MACs per element = (t_compressed - t_dense) / t_dense      (MACs == elements)

The estimator (edgesparse.estimate.latency.DECODE_MACS_PER_ELEMENT) charges that many of the profile's
own int8 FULLY_CONNECTED MACs per decoded element: a transfer from this host's reference kernels to the
device's kernels, stated as an assumption in every estimate it prices. Timings are the minimum over
`--repeats` invokes after a warm-up (other processes only ever add time on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from edgesparse.tflite.decode import decode_sites
from edgesparse.tflite.decode_compress import compress_model


def fc_model(weights: np.ndarray) -> bytes:
    """input (1, k) int8 -> FULLY_CONNECTED(weights (n, k) int8 per channel, int32 bias) -> (1, n) int8."""
    from tflite_micro.tensorflow.lite.micro.compression import model_editor as me
    from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb

    n, k = weights.shape
    x = me.Tensor(shape=(1, k), dtype=fb.TensorType.INT8, quantization=me.Quantization(0.05, 0), name="x")
    w = me.Tensor(shape=(n, k), dtype=fb.TensorType.INT8, data=weights,
                  quantization=me.Quantization([0.01] * n, [0] * n, axis=0), name="weights")
    b = me.Tensor(shape=(n,), dtype=fb.TensorType.INT32, data=np.zeros(n, np.int32),
                  quantization=me.Quantization([0.0005] * n, [0] * n, axis=0), name="bias")
    y = me.Tensor(shape=(1, n), dtype=fb.TensorType.INT8, quantization=me.Quantization(0.1, 0), name="y")
    op = me.Operator(opcode=fb.BuiltinOperator.FULLY_CONNECTED, inputs=[x, w, b], outputs=[y])
    model = me.Model()
    model.add_subgraph(tensors=[x, w, b, y], inputs=[x], outputs=[y], operators=[op])
    return bytes(model.build())


def invoke_seconds(model: bytes, repeats: int) -> float:
    """Minimum wall time of one invoke in TFLM's Python interpreter."""
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_bytes(model, arena_size=8 * len(model) + (4 << 20))
    x = np.random.default_rng(0).integers(-128, 128, interpreter.get_input_details(0)["shape"], dtype=np.int8)
    interpreter.set_input(x, 0)
    interpreter.invoke()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        interpreter.invoke()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--cols", type=int, default=1024)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    rng = np.random.default_rng(1)
    shape = (args.rows, args.cols)
    pruned = np.where(rng.random(shape) < 0.2, rng.integers(-127, 128, shape), 0).astype(np.int8)
    few = rng.choice(np.arange(-120, 121, 16, dtype=np.int8), size=shape)
    result: dict[str, object] = {"rows": args.rows, "cols": args.cols, "macs": args.rows * args.cols,
                                 "host": "TFLM Python interpreter (reference kernels), x86-64"}
    for method, weights in (("PRUNING", pruned), ("LUT", few)):
        dense = fc_model(weights)
        compressed = compress_model(dense, {"weights": method})
        [site] = decode_sites(compressed)
        t_dense, t_comp = invoke_seconds(dense, args.repeats), invoke_seconds(compressed, args.repeats)
        elements = site.info.elements
        result[method] = {
            "elements": elements, "bit_width": site.info.bit_width, "dense_us": round(t_dense * 1e6, 2),
            "compressed_us": round(t_comp * 1e6, 2),
            "ns_per_mac": round(t_dense * 1e9 / (args.rows * args.cols), 4),
            "ns_per_element": round((t_comp - t_dense) * 1e9 / elements, 4),
            "macs_per_element": round((t_comp - t_dense) / t_dense * (args.rows * args.cols) / elements, 3)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

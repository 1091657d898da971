"""What `--cluster N` buys on a microcontroller: the digits demo, pruned, then clustered, int8, DECODE-compressed.

    .venv/bin/python bench/cluster_compression.py [--sparsity 0.8 0.9] [--clusters 16 8 4] [--builds DIR]
                                                 [--epochs 3]

For each sparsity: the pruned model of `edgesparse build --profile nrf52840 --demo digits` (DIR/digits-S/
pruned_model.keras; built when absent), then for "pruning only" and each N: cluster_and_finetune (N only),
build_artifact for nrf52840 (int8), choose_compression "auto" and "prune", verify_compressed in TFLM (bitwise
outputs on the validation set + 64 random inputs, decoded tensors equal), the artifact's accuracy in TFLM
and the most int8 values in one channel of the clustered kernels. A markdown table goes to stdout.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edgesparse.pipeline.convert import build_artifact
from edgesparse.pipeline.demos.digits import load_digits_dataset
from edgesparse.pipeline.prune import ScheduleOptions, cluster_and_finetune, plan_policy
from edgesparse.pipeline.tf_env import import_tf
from edgesparse.profiles import load_profile
from edgesparse.runtime.tflm_decode import verify_compressed
from edgesparse.runtime.verify import top1, verify_artifact
from edgesparse.tflite.decode_compress import choose_compression
from edgesparse.tflite.graph import io_quantization, load_graph

REPO = Path(__file__).resolve().parents[1]
PROFILE = "nrf52840"


def pruned_model(sparsity: float, builds: Path):
    out = builds / f"digits-{sparsity}"
    if not (out / "pruned_model.keras").exists():
        cmd = [str(REPO / ".venv/bin/edgesparse"), "build", "--profile", PROFILE, "--demo", "digits",
               "--final-sparsity", str(sparsity), "--out", str(out)]
        print("$", " ".join(cmd), file=sys.stderr)
        subprocess.run(cmd, check=False, stdout=sys.stderr)  # the table alone goes to stdout
    _, keras = import_tf()
    return keras.models.load_model(out / "pruned_model.keras", compile=False)


def quantized(model: bytes, x: np.ndarray) -> np.ndarray:
    q = io_quantization(model)["input"]
    return np.clip(np.round(x / q["scale"] + q["zero_point"]), -128, 127).astype(np.int8)


def max_channel_values(model: bytes, names: list[str]) -> int:
    """The most distinct int8 values in one output channel of the kernels of `names` (Keras layer names)."""
    graph = load_graph(model)
    most = 0
    for t in graph.subgraphs[0].tensors:
        if t.is_constant and t.dtype == "int8" and any(f"/{n}/" in t.name for n in names):
            values = np.frombuffer(graph.data, np.int8, t.num_elements, t.buffer_offset).reshape(t.shape)
            axis = t.quantization.quantized_dimension
            most = max(most, *(len(np.unique(s)) for s in np.moveaxis(values, axis, 0)))
    return most


def row(model, dataset, profile, label: str, keras_before: float, keras_after: float, names: list[str]) -> dict:
    artifact = build_artifact(model, dataset, quantize="int8", profile=profile).artifact
    auto, prune_only = choose_compression(artifact, "auto"), choose_compression(artifact, "prune")
    proof = verify_compressed(artifact, auto.model, quantized(artifact, dataset.x_val), random_samples=64)
    tflm = verify_artifact(auto.model, dataset.x_val, dataset.y_val, runtime="tflm")
    return {"label": label, "keras_before": keras_before, "keras_after": keras_after, "tflm": tflm.accuracy,
            "dense": len(artifact), "prune": prune_only.file_bytes, "auto": auto.file_bytes,
            "methods": ", ".join(f"{t.name.split('/')[1]} {t.method}" + (f" {t.lut_bits}b" if t.method == "LUT"
                                                                          else "") for t in auto.compressed),
            "values": max_channel_values(artifact, names) if names else None,
            "proof": f"{proof.samples} inputs, {proof.decoded_tensors} decoded",
            "arena": proof.arena_compressed["total"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sparsity", type=float, nargs="+", default=[0.8, 0.9])
    parser.add_argument("--clusters", type=int, nargs="+", default=[16, 8, 4])
    parser.add_argument("--builds", type=Path, default=Path("build/decode-bench"))
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    dataset, profile = load_digits_dataset(), load_profile(PROFILE)
    rows = []
    for sparsity in args.sparsity:
        pruned = pruned_model(sparsity, args.builds)
        policies = plan_policy(pruned, profile, ScheduleOptions(final_sparsity=sparsity), quantize="int8")
        acc = float(np.mean(top1(pruned.predict(dataset.x_val, verbose=0)) == dataset.y_val))
        rows.append(dict(row(pruned, dataset, profile, f"{sparsity} pruning only", acc, acc, []), sparsity=sparsity))
        for n in args.clusters:
            started = time.perf_counter()
            result = cluster_and_finetune(pruned, dataset, n, policies=policies, epochs=args.epochs, batch_size=32)
            print(f"  {sparsity} N={n}: clustered {result.clustered_layers} in {time.perf_counter() - started:.1f} s;"
                  f" zeros {[(c.zeros_before, c.zeros_after) for c in result.layers]}", file=sys.stderr)
            rows.append(dict(row(result.model, dataset, profile, f"{sparsity} + --cluster {n}",
                                 result.accuracy_before, result.accuracy_after, result.clustered_layers),
                             sparsity=sparsity))
    print("| digits (nrf52840) | Keras acc. before -> after | TFLM int8 acc. | dense int8 | PRUNING only | auto "
          "| ratio (auto) | chosen | int8 values per channel | TFLM check | arena |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        values = "-" if r["values"] is None else f"<= {r['values']}"
        print(f"| {r['label']} | {r['keras_before']:.2%} -> {r['keras_after']:.2%} | {r['tflm']:.2%} | "
              f"{r['dense']:,} B | {r['prune']:,} B | {r['auto']:,} B | {r['dense'] / r['auto']:.2f}x | {r['methods']} "
              f"| {values} | bitwise identical ({r['proof']}) | {r['arena']:,} B |")


if __name__ == "__main__":
    main()

"""Reproduce issue 10's DECODE figures: the digits and KWS demos built for nrf52840, compressed, proven in TFLM.

    .venv/bin/python bench/decode_compression.py [--sparsity 0.8 0.9] [--demo digits kws] [--builds DIR]

For each demo and sparsity: `edgesparse build --profile nrf52840` (skipped when the build directory exists),
then choose_compression(model.tflite) and verify_compressed against the uncompressed model.tflite on the
build's sample.npz (quantized as the model's input) plus 64 random inputs, the smallest arena of each by
child-process probes, and a markdown table on stdout.
"""

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from edgesparse.runtime.tflm_decode import smallest_arena, verify_compressed
from edgesparse.tflite.decode_compress import choose_compression
from edgesparse.tflite.graph import io_quantization

REPO = Path(__file__).resolve().parents[1]


def build(demo: str, sparsity: float, out: Path) -> Path:
    if (out / "model.tflite").exists():
        return out
    cmd = [str(REPO / ".venv/bin/edgesparse"), "build", "--profile", "nrf52840", "--demo", demo,
           "--final-sparsity", str(sparsity), "--out", str(out)]
    print("$", " ".join(cmd), file=sys.stderr)
    done = subprocess.run(cmd, check=False)
    if not (out / "model.tflite").exists():
        raise SystemExit(f"build failed ({done.returncode}): {out}")
    return out


def quantized_samples(model: bytes, build_dir: Path) -> np.ndarray:
    x = np.load(build_dir / "sample.npz")["x"]
    q = io_quantization(model)["input"]
    if q["dtype"] != "int8":
        return x.astype(q["dtype"])
    return np.clip(np.round(x / q["scale"] + q["zero_point"]), -128, 127).astype(np.int8)


def measure(demo: str, sparsity: float, builds: Path) -> dict:
    d = build(demo, sparsity, builds / f"{demo}-{sparsity}")
    model = (d / "model.tflite").read_bytes()
    t = time.perf_counter()
    plan = choose_compression(model)
    choose_s = time.perf_counter() - t
    proof = verify_compressed(model, plan.model, quantized_samples(model, d), random_samples=64)
    row = {"demo": demo, "sparsity": sparsity, "dense": len(model), "compressed": plan.file_bytes,
           "ratio": len(model) / plan.file_bytes, "tensors": len(plan.compressed),
           "recorded_dense": proof.arena_dense["total"], "recorded_compressed": proof.arena_compressed["total"],
           "smallest_dense": smallest_arena(model), "smallest_compressed": smallest_arena(plan.model),
           "samples": proof.samples, "decoded": proof.decoded_tensors, "choose_s": choose_s,
           "decoded_elements": sum(int(np.prod(c.shape)) for c in plan.compressed)}
    (builds / f"{demo}-{sparsity}.compressed.tflite").write_bytes(plan.model)
    for c in plan.tensors:
        if c.method != "dense" or c.dense_bytes >= 1024:
            print(f"  {demo} {sparsity} {c.name[:50]:50s} {c.dense_bytes:>7,} B {c.method:8s} {c.reason}",
                  file=sys.stderr)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sparsity", type=float, nargs="+", default=[0.8])
    parser.add_argument("--demo", nargs="+", default=["digits", "kws"])
    parser.add_argument("--builds", type=Path, default=Path("build/decode-bench"))
    args = parser.parse_args()
    args.builds.mkdir(parents=True, exist_ok=True)
    rows = [measure(demo, s, args.builds) for demo in args.demo for s in args.sparsity]
    print("| model | sparsity | dense int8 | compressed | ratio | tensors compressed | elements decoded "
          "per invoke | arena dense | arena compressed | outputs |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        same = "recorded = smallest" if (r["recorded_dense"], r["recorded_compressed"]) == (
            r["smallest_dense"], r["smallest_compressed"]) else f"smallest {r['smallest_dense']:,} / " \
            f"{r['smallest_compressed']:,}"
        print(f"| {r['demo']} | {r['sparsity']} | {r['dense']:,} B | {r['compressed']:,} B | {r['ratio']:.2f}x | "
              f"{r['tensors']} | {r['decoded_elements']:,} | {r['recorded_dense']:,} B | "
              f"{r['recorded_compressed']:,} B ({same}) | bitwise identical on {r['samples']} inputs, "
              f"{r['decoded']} decoded tensors equal |")


if __name__ == "__main__":
    main()

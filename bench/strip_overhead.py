"""Reproduce docs/compression.md's "Graph overhead" figures: what strip_overhead saves on the demo builds.

    .venv/bin/python bench/strip_overhead.py [--builds DIR] [--runtime tflm litert] [--no-verify]

For every build directory DIR/<demo>-<sparsity>/ (as bench/decode_compression.py makes them): the dense int8
baseline (baselines/dense_int8.tflite), the pruned int8 model (model.tflite) and the DECODE-compressed file
(DIR/<demo>-<sparsity>.compressed.tflite, made with choose_compression when absent; TFLM only) are stripped
for each runtime; a markdown table on stdout gives bytes before and after and each item's measured saving. Unless
--no-verify, every TFLM-stripped file runs in TFLite Micro against its unstripped int8 original (the pruned
model for the compressed file) on the build's sample.npz plus 32 random inputs (verify_compressed: outputs
bitwise identical, decoded tensors equal to the weights), and every LiteRT-stripped file in LiteRT
(run_tflite): a difference stops the script.
"""

import argparse
import sys
from pathlib import Path

import numpy as np

from edgesparse.runtime.tflm_decode import verify_compressed
from edgesparse.runtime.verify import run_tflite
from edgesparse.tflite.decode_compress import choose_compression
from edgesparse.tflite.graph import io_quantization
from edgesparse.tflite.strip import ITEMS, strip_overhead


def quantized_samples(model: bytes, build_dir: Path) -> np.ndarray:
    x = np.load(build_dir / "sample.npz")["x"]
    q = io_quantization(model)["input"]
    if q["dtype"] != "int8":
        return x.astype(q["dtype"])
    return np.clip(np.round(x / q["scale"] + q["zero_point"]), -128, 127).astype(np.int8)


def files(build_dir: Path) -> dict[str, bytes]:
    model = (build_dir / "model.tflite").read_bytes()
    compressed = build_dir.parent / f"{build_dir.name}.compressed.tflite"
    if not compressed.exists():
        print(f"  compressing {build_dir.name} (choose_compression)", file=sys.stderr)
        compressed.write_bytes(choose_compression(model).model)
    return {"dense int8": (build_dir / "baselines" / "dense_int8.tflite").read_bytes(), "pruned int8": model,
            "compressed": compressed.read_bytes()}


def verify(original: bytes, stripped: bytes, runtime: str, build_dir: Path) -> str:
    samples = quantized_samples(original, build_dir)
    if runtime == "tflm":
        proof = verify_compressed(original, stripped, samples, random_samples=32)
        return f"TFLM bitwise on {proof.samples}"
    x = np.concatenate([samples, np.random.default_rng(0).integers(-128, 128, (32, *samples.shape[1:]), np.int8)])
    if run_tflite(original, x).outputs.tobytes() != run_tflite(stripped, x).outputs.tobytes():
        raise SystemExit(f"LiteRT outputs differ after stripping: {build_dir}")
    return f"LiteRT bitwise on {len(x)}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--builds", type=Path, default=Path("build/decode-bench"))
    parser.add_argument("--runtime", nargs="+", default=["tflm", "litert"], choices=sorted(ITEMS))
    parser.add_argument("--no-verify", action="store_true")
    args = parser.parse_args()
    builds = sorted(d for d in args.builds.iterdir() if (d / "model.tflite").exists())
    if not builds:
        raise SystemExit(f"no build directories with a model.tflite under {args.builds}")
    columns = list(dict.fromkeys(i for rt in args.runtime for i in ITEMS[rt]))
    print("| build | file | runtime | before | after | saved | " + " | ".join(columns) + " | rewrite | outputs |")
    print("|---|---|---|---|---|---|" + "---|" * len(columns) + "---|---|")
    ratios = []
    for build_dir in builds:
        found = files(build_dir)
        for kind, data in found.items():
            for runtime in args.runtime:
                if kind == "compressed" and runtime != "tflm":
                    continue   # DECODE is TFLM's: LiteRT has no kernel for it
                result = strip_overhead(data, runtime)
                saved = {i.what: f"{i.saved_bytes:,}" for i in result.items}
                reference = found["pruned int8"] if kind == "compressed" else data   # the decoded weights' origin
                proof = "not run" if args.no_verify else verify(reference, result.model, runtime, build_dir)
                print(f"| {build_dir.name} | {kind} | {runtime} | {len(data):,} B | {result.file_bytes:,} B | "
                      f"{result.saved_bytes:,} B ({result.saved_bytes / len(data):.1%}) | "
                      + " | ".join(saved.get(c, "-") for c in columns) + f" | {result.rewrite_bytes:,} | {proof} |")
                if kind == "compressed" and runtime == "tflm":
                    dense = len(found["dense int8"])
                    ratios.append(f"| {build_dir.name} | {dense:,} B | {len(data):,} B ({dense / len(data):.2f}x) | "
                                  f"{result.file_bytes:,} B ({dense / result.file_bytes:.2f}x) |")
    if ratios:
        print("\n| build | dense int8 | compressed | compressed and stripped (tflm) |\n|---|---|---|---|")
        print("\n".join(ratios))


if __name__ == "__main__":
    main()

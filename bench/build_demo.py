"""Benchmark: the built-in demo through `edgesparse build --profile rpi4`.

Measures, in one run: the size ratio of the dense float32 .tflite to the final
artifact (and of the dense int8 one), the accuracy drop from the dense float
model to the final .tflite, and the wall time of the build. The dense demo
model is trained (and cached) before the timed build so the wall time is that
of prune -> convert -> verify -> estimate, what a user pays per build.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

GOALS = {"max_drop_points": 1.0, "min_ratio_float32": 8.0, "min_ratio_int8": 1.5}


def _build(out: Path, env: dict) -> tuple[float, dict]:
    cmd = [sys.executable, "-m", "edgesparse", "build", "--profile", "rpi4", "--out", str(out)]
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if proc.returncode not in (0, 1):
        raise SystemExit(f"build failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return wall, json.loads((out / "report.json").read_text())


def run() -> str:
    import os

    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, EDGESPARSE_CACHE=str(Path(tmp) / "cache"))
        cold_wall, _ = _build(Path(tmp) / "cold", env)      # trains and caches the dense model
        wall, report = _build(Path(tmp) / "warm", env)      # the build a user repeats
    sizes, acc = report["sizes"], report["accuracy"]
    r32, r8 = sizes["ratio_dense_float32_to_artifact"], sizes["ratio_dense_int8_to_artifact"]
    drop = acc["drop_points"]
    def size(kind: str) -> str:
        return f"{sizes[kind + '_bytes']:,} B (gzip {sizes[kind + '_gzip_bytes']:,} B)"

    min32, min8, max_drop = GOALS["min_ratio_float32"], GOALS["min_ratio_int8"], GOALS["max_drop_points"]
    rows = [
        ("dense float32 .tflite", size("dense_float32"), ""),
        ("dense int8 .tflite", size("dense_int8"), ""),
        ("final artifact", size("artifact"), ""),
        ("size ratio dense float32 / artifact", f"{r32:.2f}x", _goal(r32 >= min32, f">= {min32}x")),
        ("size ratio dense int8 / artifact", f"{r8:.2f}x", _goal(r8 >= min8, f">= {min8}x")),
        ("sparsity of pruned weights", f"{report['sparsity']['overall']:.1%}", ""),
        ("accuracy dense float / pruned Keras / .tflite",
         f"{acc['dense_float']:.2%} / {acc['pruned_keras']:.2%} / {acc['tflite']:.2%}", ""),
        ("accuracy drop dense float -> .tflite", f"{drop:.2f} points",
         _goal(drop <= max_drop, f"<= {max_drop} points")),
        ("wall time, build with cached dense model", f"{wall:.1f} s", ""),
        ("wall time, first build (trains the dense model)", f"{cold_wall:.1f} s", ""),
    ]
    lines = [
        "## Build pipeline: the built-in demo on rpi4",
        "",
        "`python bench/build_demo.py` (or `make bench`): `edgesparse build --profile rpi4` with default options "
        f"(final sparsity {report['options']['final_sparsity']}, --quantize {report['options']['quantize']}, "
        f"{report['options']['epochs']} fine-tuning epochs), validation set of {acc['n_samples']} digits.",
        "",
        "| figure | value | goal |",
        "|---|---|---|",
    ] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    lines += ["", "Per-layer policy and achieved sparsity:", "",
              "| layer | pattern | target | achieved |", "|---|---|---|---|"]
    for layer in report["sparsity"]["layers"]:
        lines.append(f"| {layer.get('name')} | {layer.get('pattern')} | {layer.get('target', 0):.2f} "
                     f"| {layer.get('achieved', 0):.3f} |")
    lines += ["", "Sparse encoding decisions:", "",
              "| tensor | dense bytes | sparse bytes | kept sparse |", "|---|---|---|---|"]
    for t in report["conversion"]["tensors"]:
        lines.append(f"| {t.get('name')} | {t.get('dense_bytes')} | {t.get('sparse_bytes')} | {t.get('kept_sparse')} |")
    for note in report["conversion"]["notes"]:
        lines.append(f"\n- {note}")
    return "\n".join(lines)


def _goal(ok: bool, text: str) -> str:
    return f"{text}: {'met' if ok else '**not met**'}"


if __name__ == "__main__":
    print(run())

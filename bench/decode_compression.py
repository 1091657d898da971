"""Benchmark of issue 10: the digits and KWS demos built for nrf52840, DECODE-compressed by `edgesparse build`.

Run by `make bench` (through bench/run_all.py) or standalone:

    .venv/bin/python bench/decode_compression.py [--sparsity 0.8 0.9] [--demo digits kws] [--builds DIR]

For each demo and sparsity, `edgesparse build --profile nrf52840 --demo D --final-sparsity S` into
DIR/D-S/ (default build/bench-decode/; a directory whose report.json has the same options is reused,
anything else is rebuilt with --force). Then, from the build's files and in this run:

- bytes: the unpruned demo model's int8 file as the converter writes it and stripped for TFLM (converted here:
  needs TensorFlow; the build's baselines/dense_int8.tflite is the pruned model stored dense),
  baselines/pruned_int8.tflite (stripped, before DECODE) and model.tflite (DECODE-compressed), and the
  ratios against both dense files;
- arena: `check_model` (the estimator) and `measured_arena` (TFLM's recorded allocation, in a child
  process) on the dense int8 file and on model.tflite; the estimator's decode time per invoke;
- accuracy in TFLM on the demo's whole validation split (`verify_artifact`, runtime "tflm") of the dense
  int8, pruned int8 and compressed files, and whether the pruned and compressed outputs are bitwise equal;
- what stays dense and why (report.json's per-tensor choices) and where the compressed file's bytes go.

The Markdown section goes to stdout (the builds' own output to stderr).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import reusable_report  # bench/_common.py (bench/ is the script directory)

from edgesparse.estimate import tflm_ram
from edgesparse.estimate.check import check_model
from edgesparse.runtime.tflm_decode import measured_arena
from edgesparse.runtime.verify import verify_artifact
from edgesparse.tflite.decode import decode_sites
from edgesparse.tflite.graph import load_graph
from edgesparse.tflite.strip import strip_overhead

__all__ = ["GOALS", "PROFILE", "DemoBuild", "byte_budget", "ensure_build", "main", "measure", "render", "run"]

REPO = Path(__file__).resolve().parent.parent
BUILDS = REPO / "build" / "bench-decode"
PROFILE = "nrf52840"
DEMOS = ("digits", "kws")
SPARSITIES = (0.8, 0.9)
GOAL_SPARSITY = 0.8
GOALS = {"kws": 2.0, "digits": 2.5}      # issue 10: at 0.8 sparsity, x smaller than the dense int8 file
DEMO_NAMES = {"digits": "digits CNN", "kws": "KWS DS-CNN"}


@dataclass
class DemoBuild:
    """One build directory and what this run measured on its files."""

    demo: str
    sparsity: float
    out: Path
    report: dict[str, Any] = field(repr=False)
    build_s: float | None                      # None: an earlier build with the same options was reused
    figures: dict[str, Any] = field(default_factory=dict)


def _wanted_options(demo: str, sparsity: float) -> dict[str, Any]:
    return {"profile": PROFILE, "demo": demo, "final_sparsity": sparsity, "model": None, "data": None,
            "quantize": "int8", "mcu_compression": "auto", "cluster": None, "seed": 0}


def _reusable(out: Path, wanted: dict[str, Any]) -> dict[str, Any] | None:
    """The build's report when it was made with these options and has every file this benchmark reads."""
    files = ("model.tflite", "baselines/dense_int8.tflite", "baselines/pruned_int8.tflite")
    return reusable_report(out, wanted, files, "compression")


def ensure_build(demo: str, sparsity: float, builds: Path = BUILDS) -> DemoBuild:
    """`edgesparse build` for nrf52840 into builds/demo-sparsity, unless a build with the same options is there."""
    out = builds / f"{demo}-{sparsity}"
    report = _reusable(out, _wanted_options(demo, sparsity))
    if report is not None:
        print(f"reusing {out} (built {report.get('created_utc')})", file=sys.stderr, flush=True)
        return DemoBuild(demo, sparsity, out, report, None)
    cmd = [sys.executable, "-m", "edgesparse", "build", "--profile", PROFILE, "--demo", demo,
           "--final-sparsity", str(sparsity), "--mcu-compression", "auto", "--out", str(out)]
    if out.exists():
        cmd.append("--force")
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, stdout=sys.stderr, check=False)   # the section alone on stdout
    seconds = time.perf_counter() - started
    report = _reusable(out, _wanted_options(demo, sparsity))
    if done.returncode not in (0, 1) or report is None:       # 1: built, a gate failed (the report says which)
        raise SystemExit(f"edgesparse build failed (exit {done.returncode}): {out}")
    return DemoBuild(demo, sparsity, out, report, seconds)


@dataclass
class DenseReference:
    """The demo's unpruned model as int8 (the build's baselines/dense_int8.tflite is the *pruned* model stored
    dense), and the validation split the build measured its accuracy on."""

    converter: bytes = field(repr=False)     # TFLiteConverter's int8 file of the unpruned demo model
    stripped: bytes = field(repr=False)      # the same, overhead stripped for TFLM as the build strips
    x_val: np.ndarray = field(repr=False)
    y_val: np.ndarray = field(repr=False)


def dense_reference(demo: str) -> DenseReference:
    """Converts the cached dense demo model with the build's converter and calibration data (needs TensorFlow)."""
    from edgesparse.pipeline import convert
    from edgesparse.pipeline.demos import digits, kws

    model, dataset = (kws if demo == "kws" else digits).demo_model()
    converter = convert.convert_keras(model, quantize="int8", representative=dataset.x_train)
    return DenseReference(converter, strip_overhead(converter, "tflm").model, dataset.x_val, dataset.y_val)


def _arena_estimate(check: dict[str, Any]) -> int:
    """The estimator's arena: its RAM total less the profile's persistent runtime RAM (outside the arena)."""
    ram = check["ram"]
    return int(ram["total_bytes"]) - int(ram["breakdown"].get("runtime_persistent_ram", 0))


def byte_budget(model: bytes) -> dict[str, int]:
    """Where a compressed file's bytes go: DECODE payloads, dense constants, quantization arrays, the rest."""
    graph = load_graph(model)
    sites = decode_sites(graph)
    tensors = graph.subgraphs[0].tensors
    decode_inputs = {i for s in sites for i in (s.encoded, s.ancillary)}
    dense = [t for t in tensors if t.is_constant and t.index not in decode_inputs]
    quant = sum(4 * len(t.quantization.scales) + 8 * len(t.quantization.zero_points)
                for t in tensors if t.quantization is not None)
    parts = {
        "bitmaps": sum(s.info.encoded_bytes for s in sites),
        "kept values": sum(s.info.ancillary_bytes - 16 for s in sites),
        "DECODE headers": 16 * len(sites),
        "dense int8 constants": sum(t.buffer_bytes for t in dense if t.dtype == "int8"),
        "dense int32 constants (biases, shapes)": sum(t.buffer_bytes for t in dense if t.dtype != "int8"),
        "scales and zero points": quant,
    }
    parts["flatbuffer tables, names, padding"] = len(model) - graph.size.weight_bytes - quant
    parts["total"] = len(model)
    return parts


def measure(build: DemoBuild, ref: DenseReference) -> dict[str, Any]:
    """Every figure of one build, measured on its files (and the unpruned dense int8 file) in this run."""
    files = {"baseline": build.out / "baselines/dense_int8.tflite",
             "pruned": build.out / "baselines/pruned_int8.tflite", "compressed": build.out / "model.tflite"}
    data = {k: p.read_bytes() for k, p in files.items()}
    data["dense"], data["converter"] = ref.stripped, ref.converter
    section = build.report["compression"]
    pruned_converter = len(data["baseline"]) + int(section["overhead"].get("dense_int8_saved_bytes", 0))
    converter = len(ref.converter)
    checks = {k: check_model(data[k], PROFILE).to_dict() for k in ("dense", "compressed")}
    recorded = {k: measured_arena(data[k]) for k in ("dense", "compressed")}
    arena = {k: int(r["total"]) for k, r in recorded.items()}
    runs = {k: verify_artifact(data[k], ref.x_val, ref.y_val, runtime="tflm")
            for k in ("converter", "dense", "pruned", "compressed")}
    decode = checks["compressed"]["decode"] or {}
    y_val = ref.y_val
    return {
        "pruned_converter_bytes": pruned_converter, "baseline_is_pruned": data["baseline"] == data["pruned"],
        "dense_stripped_bitwise": bool(np.array_equal(runs["converter"].predictions, runs["dense"].predictions)),
        "converter_bytes": converter, "dense_bytes": len(data["dense"]), "pruned_bytes": len(data["pruned"]),
        "compressed_bytes": len(data["compressed"]),
        "ratio_converter": converter / len(data["compressed"]),
        "ratio_stripped": len(data["dense"]) / len(data["compressed"]),
        "compressed_tensors": [t for t in section["tensors"] if t["method"] != "dense"],
        "arena_estimated": {k: _arena_estimate(c) for k, c in checks.items()}, "arena_measured": arena,
        # the plan for the interpreter that measured it (x86-64 layout, reference kernels: no CMSIS-NN scratch)
        "head_planned": {k: int(tflm_ram(load_graph(data[k])).planned_bytes) for k in ("dense", "compressed")},
        "head_measured": {k: int(r["head"]) for k, r in recorded.items()},
        "decode_ms": decode.get("decode_ms"), "decoded_elements": decode.get("elements_per_invoke", 0),
        "decode_basis": [c.get("basis") for c in decode.get("latency_coefficients", [])],
        "latency_ms": {k: c["latency_ms"] for k, c in checks.items()},
        "accuracy": {k: r.accuracy for k, r in runs.items()}, "samples": len(y_val),
        "bitwise": bool(np.array_equal(runs["pruned"].predictions, runs["compressed"].predictions)),
        "report_accuracy": build.report["accuracy"]["tflite"],
        "bytes": byte_budget(data["compressed"]),
    }


def _b(n: int) -> str:
    return f"{n:,} B"


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f} ms"


def _pct(x: float | None, n: int | None = None) -> str:
    if x is None:
        return "-"
    return f"{x:.2%}" if n is None else f"{x:.2%} ({round(x * n)}/{n})"


def _short(name: str, dtype: str = "", rank: int = 0) -> str:
    """The converter's fused names cut to their first part; a bias (int32 vector, named after its layer) says so."""
    if not name:
        return "(unnamed)"
    first = name.split(";")[0]
    if dtype == "int32" and rank == 1 and "/" in first and not first.startswith("arith."):
        return f"{first.rsplit('/', 1)[0].removesuffix('_relu')} (bias)"
    return first


def _layer_reason(report: dict[str, Any], tensor_name: str) -> str | None:
    """Why the build's pruning policy left the layer of this tensor dense (its first clause), if it did."""
    for layer in report["sparsity"]["layers"]:
        if f"/{layer['name']}/" in tensor_name and not layer.get("pruned"):
            return str(layer.get("reason", "")).split(":")[0].split(";")[0]
    return None


def _goal_lines(builds: list[DemoBuild]) -> list[str]:
    lines = []
    for b in builds:
        if b.sparsity != GOAL_SPARSITY or b.demo not in GOALS:
            continue
        goal, f = GOALS[b.demo], b.figures
        for label, ratio, base in (("the converter's dense int8 file", f["ratio_converter"], f["converter_bytes"]),
                                   ("the stripped dense int8 file", f["ratio_stripped"], f["dense_bytes"])):
            verdict = "**met**" if ratio >= goal else "**not met**"
            lines.append(f"- {DEMO_NAMES[b.demo]} at {b.sparsity}: {ratio:.2f}x smaller than {label} "
                         f"({_b(base)} -> {_b(f['compressed_bytes'])}); goal >= {goal}x: {verdict}")
    return lines


def _main_tables(builds: list[DemoBuild]) -> list[str]:
    lines = ["| demo | sparsity | dense int8 (converter) | dense int8 (stripped) | pruned int8 (stripped) "
             "| compressed (model.tflite) | ratio vs converter | ratio vs stripped | tensors compressed |",
             "|---|---|---|---|---|---|---|---|---|"]
    for b in builds:
        f = b.figures
        methods = ", ".join(sorted({t["method"] for t in f["compressed_tensors"]})) or "none"
        lines.append(f"| {DEMO_NAMES[b.demo]} | {b.sparsity} | {_b(f['converter_bytes'])} | {_b(f['dense_bytes'])} "
                     f"| {_b(f['pruned_bytes'])} | {_b(f['compressed_bytes'])} | {f['ratio_converter']:.2f}x "
                     f"| {f['ratio_stripped']:.2f}x | {len(f['compressed_tensors'])} ({methods}) |")
    lines += ["", "| demo | sparsity | arena dense int8: estimated / measured | arena compressed: estimated / "
              "measured | arena head (activations) dense; compressed: planned for the interpreter / TFLM "
              "| decode per invoke (estimator) | latency dense -> compressed (estimator) | accuracy "
              "dense int8 | accuracy pruned int8 | accuracy compressed | pruned vs compressed outputs |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for b in builds:
        f = b.figures
        hp, hm = f["head_planned"], f["head_measured"]
        head = (f"{_b(hp['dense'])} / {_b(hm['dense'])}; {_b(hp['compressed'])} / {_b(hm['compressed'])}"
                + ("" if hp == hm else " **differ**"))
        est, mea, acc, n = f["arena_estimated"], f["arena_measured"], f["accuracy"], f["samples"]
        same = "bitwise identical" if f["bitwise"] else "**differ**"
        lines.append(f"| {DEMO_NAMES[b.demo]} | {b.sparsity} | {_b(est['dense'])} / {_b(mea['dense'])} "
                     f"| {_b(est['compressed'])} / {_b(mea['compressed'])} | {head} | {_ms(f['decode_ms'])} "
                     f"({f['decoded_elements']:,} elements) | {f['latency_ms']['dense']:.2f} -> "
                     f"{f['latency_ms']['compressed']:.2f} ms | {_pct(acc['dense'], n)} | {_pct(acc['pruned'], n)} "
                     f"| {_pct(acc['compressed'], n)} | {same} on {f['samples']} samples |")
    return lines


def _tensor_table(build: DemoBuild) -> list[str]:
    lines = [f"Per-tensor choices, {DEMO_NAMES[build.demo]} at {build.sparsity} (report.json's compression "
             "section):", "", "| tensor | shape | type | encoding | dense bytes | encoded bytes | file saved "
             "| why |", "|---|---|---|---|---|---|---|---|"]
    for t in build.report["compression"]["tensors"]:
        shape = "x".join(str(d) for d in t["shape"])
        enc = "-" if t["encoded_bytes"] is None else _b(t["encoded_bytes"])
        saved = "-" if t["saved_bytes"] is None else _b(t["saved_bytes"])
        lines.append(f"| {_short(t['name'], t['dtype'], len(t['shape']))} | {shape} | {t['dtype']} | {t['method']} "
                     f"| {_b(t['dense_bytes'])} | {enc} | {saved} | {t['reason']} |")
    return lines


def _dense_why(report: dict[str, Any], tensors: list[dict[str, Any]]) -> str:
    """The dense int8 weights grouped by why the build's pruning policy left their layer unpruned."""
    groups: dict[str, list[str]] = {}
    for t in tensors:
        groups.setdefault(_layer_reason(report, t["name"]) or t["reason"], []).append(_short(t["name"]))
    return "; ".join(f"{', '.join(names)}: {why}" for why, names in groups.items())


def _limits(build: DemoBuild) -> list[str]:
    """What limits the ratio, in figures of the compressed file (the KWS demo at the goal's sparsity)."""
    f, parts = build.figures, build.figures["bytes"]
    total = parts["total"]
    payload = parts["bitmaps"] + parts["kept values"] + parts["DECODE headers"]
    dense_tensors = [t for t in build.report["compression"]["tensors"] if t["method"] == "dense"]
    dense_int8 = [t for t in dense_tensors if t["dtype"] == "int8"]
    non_weight = parts["scales and zero points"] + parts["flatbuffer tables, names, padding"]
    lines = [f"Where the bytes of {DEMO_NAMES[build.demo]} {build.sparsity}'s compressed file go:", "",
             "| part | bytes | share |", "|---|---|---|"]
    lines += [f"| {k} | {_b(v)} | {v / total:.1%} |" for k, v in parts.items() if k != "total"]
    lines += [f"| total | {_b(total)} | |", ""]
    ideal = 0.125 + (1 - build.sparsity)
    kept_share = sum(t["encoded_bytes"] for t in f["compressed_tensors"]) / max(
        1, sum(t["dense_bytes"] for t in f["compressed_tensors"]))
    lines.append(
        f"What limits the ratio. The {len(f['compressed_tensors'])} compressed tensors still take "
        f"{_b(payload)} ({payload / total:.0%} of the file): PRUNING keeps one bit per element plus every kept "
        f"value, so at {build.sparsity:.0%} sparsity an int8 tensor keeps 1/8 + {1 - build.sparsity:.0%} = "
        f"{ideal:.1%} of its bytes ({kept_share:.1%} here, with headers), which caps the weights alone at "
        f"{1 / ideal:.1f}x. "
        f"{len(dense_int8)} int8 weight tensor(s) stay dense ({_b(parts['dense int8 constants'])}), not pruned by "
        f"the build's policy ({_dense_why(build.report, dense_int8) or 'none'}): unpruned, PRUNING stores a bitmap on "
        f"top of every value, so each would grow the file; the int32 biases and shapes "
        f"({_b(parts['dense int32 constants (biases, shapes)'])}, no zeros) would grow the same way. "
        f"What is not weights is {_b(non_weight)} ({non_weight / total:.0%}): "
        f"{_b(parts['scales and zero points'])} of quantization arrays (per-channel float scales and one zero point "
        f"per tensor; kept: every quantized kernel reads "
        f"them; the repeated zero points and unread bias quantization are already stripped) and "
        f"{_b(parts['flatbuffer tables, names, padding'])} of tensor and operator tables, the signature and "
        f"16-byte buffer alignment. "
        f"So a higher ratio needs fewer bytes per kept value (LUT after `--cluster`), pruning the layers the policy "
        f"keeps dense, or a higher sparsity, not more stripping.")
    return lines


def render(builds: list[DemoBuild], seconds: float) -> str:
    reused = [b for b in builds if b.build_s is None]
    built = [b for b in builds if b.build_s is not None]
    how = (f"{len(built)} built in this run ({sum(b.build_s or 0 for b in built):.0f} s of builds)" if built
           else "none built in this run")
    if reused:
        how += "; reused (same options in report.json): " + ", ".join(
            f"{b.out.name} ({b.report.get('created_utc')})" for b in reused)
    lines = [
        "## DECODE compression on nrf52840 (bench/decode_compression.py)", "",
        f"`python bench/decode_compression.py` (or `make bench`): `edgesparse build --profile {PROFILE} --demo D "
        f"--final-sparsity S` (default `--mcu-compression auto`) into `build/bench-decode/D-S/`; {how}. "
        f"Section time {seconds:.0f} s. Every figure below is measured on the build's files in this run: "
        "*dense int8 (converter)* is the unpruned demo model's int8 file as the TFLite converter writes it, "
        "*(stripped)* the same with the graph overhead TFLM never reads removed (see the notes), *pruned int8* "
        "is `baselines/pruned_int8.tflite` (the pruned model, stripped, before DECODE), *compressed* is "
        "`model.tflite`. "
        "Arenas: *estimated* by `edgesparse.estimate.check_model` (RAM less the profile's persistent runtime RAM), "
        "*measured* as TFLite Micro's recorded allocation after one invoke (`runtime.tflm_decode.measured_arena`, "
        "in a child process). The estimate is for the device (nrf52840: 32-bit pointers, CMSIS-NN scratch "
        "buffers); the interpreter here is x86-64 with reference kernels, so totals differ by layout. The head "
        "(the planned activations, DECODE outputs included) is planned again for the interpreter's kernels "
        "(`estimate.tflm_ram`) and must equal TFLM's exactly. Decode time and latency as the estimator prints "
        "them. Accuracy: each file run in "
        "the TFLite Micro interpreter (`verify_artifact(..., runtime=\"tflm\")`) on the demo's whole validation "
        "split.", "",
    ]
    lines += _main_tables(builds)
    lines += ["", f"Goals (issue 10, at {GOAL_SPARSITY} sparsity):", "", *_goal_lines(builds)]
    basis = sorted({str(x) for b in builds for x in b.figures["decode_basis"] if x})
    notes = [f"- Decode time basis: {', '.join(basis) or '-'} (a coefficient transferred from a host measurement, "
             "bench/decode_cost.py: an assumption, not a device measurement)."]
    for b in builds:
        f = b.figures
        if not f["dense_stripped_bitwise"] or f["accuracy"]["converter"] != f["accuracy"]["dense"]:
            notes.append(f"- {b.out.name}: the stripped dense int8 file's outputs **differ** from the converter's.")
        if f["pruned_converter_bytes"] != f["converter_bytes"]:
            notes.append(f"- {b.out.name}: the converter's file of the pruned model (report.json) is "
                         f"{_b(f['pruned_converter_bytes'])}, of the unpruned one {_b(f['converter_bytes'])}.")
        if not b.report.get("passed", True):
            notes.append(f"- {b.out.name}: the build itself did not pass its gates (report.json): "
                         f"{'; '.join(b.report.get('failures') or [])}.")
        if f["report_accuracy"] is not None and abs(f["report_accuracy"] - f["accuracy"]["compressed"]) > 1e-12:
            notes.append(f"- {b.out.name}: the build's report.json gives accuracy {_pct(f['report_accuracy'])} for "
                         f"model.tflite, this run {_pct(f['accuracy']['compressed'])}.")
    same = all(b.figures["baseline_is_pruned"] for b in builds)
    bitwise = all(b.figures["dense_stripped_bitwise"] for b in builds)
    sizes = all(b.figures["pruned_converter_bytes"] == b.figures["converter_bytes"] for b in builds)
    notes.insert(0, "- *Dense int8* is the demo's unpruned model, converted here with the build's converter and "
                 "calibration data (`pipeline.convert.convert_keras`) and stripped for TFLM as the build strips "
                 "(`tflite.strip.strip_overhead`); arenas, latency and accuracy are those of the stripped file"
                 + (", whose outputs are bitwise the converter's on every validation sample" if bitwise else "")
                 + ". The build's own `baselines/dense_int8.tflite` is the *pruned* model stored dense"
                 + (" (bitwise `baselines/pruned_int8.tflite` in every build here)" if same else "")
                 + (": as large as the unpruned one, to the byte." if sizes else "."))
    lines += ["", *notes]
    for b in builds:
        if b.sparsity == GOAL_SPARSITY:
            lines += ["", *_tensor_table(b)]
    kws = [b for b in builds if b.demo == "kws" and b.sparsity == GOAL_SPARSITY] or builds[-1:]
    lines += ["", *_limits(kws[0])]
    return "\n".join(lines)


def run(demos: tuple[str, ...] = DEMOS, sparsities: tuple[float, ...] = SPARSITIES, builds: Path = BUILDS) -> str:
    """Build (or reuse) every demo x sparsity, measure each, return the Markdown section."""
    started = time.perf_counter()
    builds.mkdir(parents=True, exist_ok=True)
    done = []
    for demo in demos:
        ref = dense_reference(demo)
        for sparsity in sparsities:
            build = ensure_build(demo, sparsity, builds)
            build.figures = measure(build, ref)
            done.append(build)
    return render(done, time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sparsity", type=float, nargs="+", default=list(SPARSITIES))
    parser.add_argument("--demo", nargs="+", choices=DEMOS, default=list(DEMOS))
    parser.add_argument("--builds", type=Path, default=BUILDS)
    args = parser.parse_args(argv)
    print(run(tuple(args.demo), tuple(args.sparsity), args.builds.resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

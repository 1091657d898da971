"""Benchmark of issue 12: the digits and KWS demos built for two Arm Ethos-U profiles, dense and at 0.8 sparsity.

Run by `make bench` (through bench/run_all.py) or standalone:

    .venv/bin/python bench/npu.py [--profile alif_e7_he himax_we2] [--demo kws digits] [--cluster 16]
                                  [--builds DIR] [--no-reference]

For each demo D and Ethos-U profile P: `edgesparse build --profile P --demo D --final-sparsity 0.8` into
DIR/D-P-0.8/ (default build/bench-npu/; a directory whose report.json has the same options is reused,
anything else is rebuilt with --force); the KWS demo again with `--cluster 16` (DIR/kws-P-0.8-c16/: pruning
then TFMOT's sparsity-preserving clustering, few distinct values per kernel, which Vela's encoding also
shrinks); and the KWS demo for nrf52840 at 0.8 (DIR/kws-nrf52840-0.8/, a plain TFLite Micro profile: the
accuracy the TFLM profiles get, for the goal).

Sparsity 0 is each build's dense int8 baseline, baselines/dense_int8.tflite: the demo model BEFORE pruning
converted to int8 by the build (an Ethos-U build compiles it with Vela too, for its report). Sparsity 0.8 is
baselines/pruned_int8.tflite, the int8 model the build verified and Vela compiled into model.tflite. In this
run, for each of the two files:

- Vela compiles it for the profile (`estimate.check.check_model`, which calls `runtime.vela` with the system
  configuration generated from the profile's [npu] table) and `estimate.npu` prices the compilation: raw int8
  weight bytes, Vela's encoded weight bytes, Vela's SRAM and flash, the compiled file, the flash total with the
  runtime's code, NPU cycles, latency (Vela's cycles at the NPU clock + the CPU's share) and energy per
  inference, each with its basis;
- its accuracy in the TFLite Micro interpreter (`runtime.verify.verify_artifact`, runtime "tflm") on the demo's
  whole validation split and, for KWS, its held-out test split (voices never heard in training).

The Vela command stream itself cannot run here (no Ethos-U, no simulator): NPU execution is not verified.
The Markdown section goes to stdout (the builds' own output to stderr).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import build_or_reuse, reusable_report  # bench/_common.py (bench/ is the script directory)

from edgesparse.estimate.check import check_model
from edgesparse.profiles import load_profile
from edgesparse.report.npu import NOT_VERIFIED
from edgesparse.runtime.verify import verify_artifact

__all__ = ["GOAL", "PROFILES", "Accuracy", "NpuBuild", "Split", "ensure_build", "main", "measure", "render", "run"]

REPO = Path(__file__).resolve().parent.parent
BUILDS = REPO / "build" / "bench-npu"
PROFILES = ("alif_e7_he", "himax_we2")
TFLM_PROFILE = "nrf52840"              # a TFLite Micro profile without an NPU: the accuracy reference
DEMOS = ("kws", "digits")
SPARSITY = 0.8
CLUSTER = 16                           # --cluster N for the goal demo's extra build (0: none)
EPOCHS = 8                             # `edgesparse build`'s default fine-tuning epochs
GOAL = {"demo": "kws", "ratio": 3.0, "tolerance_points": 1.0}   # issue 12
DEMO_NAMES = {"digits": "digits CNN", "kws": "KWS DS-CNN"}
VARIANTS = (("dense", "baselines/dense_int8.tflite", 0.0), ("pruned", "baselines/pruned_int8.tflite", SPARSITY))


@dataclass
class Split:
    """One labelled split of a demo's data."""

    name: str
    x: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)


@dataclass
class NpuBuild:
    """One build directory and what this run measured on its files."""

    demo: str
    profile: str
    out: Path
    report: dict[str, Any] = field(repr=False)
    build_s: float | None                      # None: an earlier build with the same options was reused
    figures: dict[str, Any] = field(default_factory=dict)
    cluster: int | None = None                 # --cluster N of the build, None without

    @property
    def label(self) -> str:
        return f"{SPARSITY:g}" + (f" + --cluster {self.cluster}" if self.cluster else "")


@dataclass
class Accuracy:
    """TFLM accuracy of one int8 file per split, and the interpreter that ran it."""

    by_split: dict[str, float]
    samples: dict[str, int]
    interpreter: str


def _wanted_options(demo: str, profile: str, cluster: int | None) -> dict[str, Any]:
    return {"profile": profile, "demo": demo, "final_sparsity": SPARSITY, "model": None, "data": None,
            "quantize": "int8", "cluster": cluster, "seed": 0, "epochs": EPOCHS, "granularity": "auto"}


def ensure_build(demo: str, profile: str, builds: Path = BUILDS, cluster: int | None = None) -> NpuBuild:
    """`edgesparse build --profile P --demo D --final-sparsity 0.8 [--cluster N]` into builds/D-P-0.8[-cN],
    unless a build with the same options is already there."""
    out = builds / (f"{demo}-{profile}-{SPARSITY}" + (f"-c{cluster}" if cluster else ""))
    wanted = _wanted_options(demo, profile, cluster)
    npu = load_profile(profile).npu is not None
    files = ("model.tflite", "baselines/dense_int8.tflite") + (("baselines/pruned_int8.tflite",) if npu else ())
    section = "npu" if npu else "accuracy"
    args = ["--profile", profile, "--demo", demo, "--final-sparsity", str(SPARSITY)]
    args += ["--cluster", str(cluster)] if cluster else []
    report, seconds = build_or_reuse(out, args, lambda: reusable_report(out, wanted, files, section))
    return NpuBuild(demo, profile, out, report, seconds, cluster=cluster)


def demo_splits(demo: str) -> list[Split]:
    """The demo's validation split (every build's gates use it) and, for KWS, its held-out test split."""
    from edgesparse.pipeline.demos import digits, kws

    _, dataset = (kws if demo == "kws" else digits).demo_model()
    splits = [Split("validation", np.asarray(dataset.x_val), np.asarray(dataset.y_val))]
    if demo == "kws":
        x_test, y_test = kws.test_split()
        splits.append(Split("test", np.asarray(x_test), np.asarray(y_test)))
    return splits


def tflm_accuracy(model: bytes, splits: list[Split]) -> Accuracy:
    """The int8 file run in the TFLite Micro interpreter on every split."""
    runs = {s.name: verify_artifact(model, s.x, s.y, runtime="tflm") for s in splits}
    interpreter = {r.interpreter for r in runs.values()}
    return Accuracy({k: float(r.accuracy or 0.0) for k, r in runs.items()},
                    {k: r.n_samples for k, r in runs.items()}, ", ".join(sorted(interpreter)))


def npu_figures(model: bytes, profile: str) -> dict[str, Any]:
    """Vela's compilation of one plain int8 file for the profile, priced by estimate.npu (this run)."""
    result = check_model(model, profile)
    est = result.npu
    if est is None:
        raise SystemExit(f"{profile} is not an Ethos-U profile (no NPU estimate)")
    c = est.compilation
    return {
        "int8_bytes": len(model), "raw_weight_bytes": c.raw_weight_bytes,
        "encoded_weight_bytes": c.encoded_weight_bytes, "sram_bytes": c.sram_bytes,
        "sram_limit_bytes": est.sram_limit_bytes, "vela_flash_bytes": c.flash_bytes,
        "compiled_bytes": len(c.model), "flash_total_bytes": result.flash.total_bytes,
        "runtime_code_bytes": result.flash.runtime_code_bytes, "ram_total_bytes": result.ram.total_bytes,
        "total_cycles": c.total_cycles, "npu_ms": est.npu_ms, "cpu_ms": est.cpu_ms,
        "latency_ms": est.latency_ms, "latency_basis": est.latency.basis, "energy_mj": est.energy_mj,
        "energy_basis": est.energy.basis, "npu_ops": c.npu_op_count, "accelerator": c.accelerator,
        "cpu_ops": [f"{op.op_type} ({op.reason or 'no reason given'})" for op in c.cpu_ops],
        "npu_clock_mhz": est.npu_clock_mhz, "cpu_clock_mhz": est.cpu_clock_mhz, "memory_mode": est.memory_mode,
        "vela": c.vela_version, "notes": list(est.notes), "fits": result.fits,
    }


def _report_check(build: NpuBuild, variants: dict[str, dict[str, Any]]) -> list[str]:
    """Differences between this run's Vela figures and the build's report.json "npu" section (none expected)."""
    section = build.report.get("npu") or {}
    sides = {"pruned": section, "dense": section.get("dense") or {}}
    diffs = []
    for name, side in sides.items():
        for key in ("encoded_weight_bytes", "raw_weight_bytes", "sram_bytes", "total_cycles"):
            if side.get(key) != variants[name][key]:
                diffs.append(f"{name} {key}: report.json {side.get(key)}, this run {variants[name][key]}")
    return diffs


def measure(build: NpuBuild, splits: list[Split], dense: dict[str, Any] | None = None) -> dict[str, Any]:
    """Both files of one Ethos-U build (dense int8 baseline, pruned int8), compiled, priced and run in TFLM.

    `dense`: another build's dense figures, reused when its file is this build's byte for byte."""
    variants: dict[str, dict[str, Any]] = {}
    for name, path, sparsity in VARIANTS:
        data = (build.out / path).read_bytes()
        if name == "dense" and dense is not None and dense["sha256"] == hashlib.sha256(data).hexdigest():
            variants[name] = dense
            continue
        figures = npu_figures(data, build.profile)
        figures["sparsity"] = sparsity
        figures["sha256"] = hashlib.sha256(data).hexdigest()
        figures["accuracy"] = tflm_accuracy(data, splits)
        variants[name] = figures
    accuracy = build.report["accuracy"]
    test = accuracy.get("test") or {}
    return {"variants": variants, "report_diffs": _report_check(build, variants),
            "clustered_keras": accuracy.get("clustered_keras"),
            "dense_float": {"validation": accuracy.get("dense_float"), "test": test.get("dense_float")},
            "report_tflite": {"validation": accuracy.get("tflite"), "test": test.get("tflite")},
            "ratio_encoded": variants["dense"]["encoded_weight_bytes"] / variants["pruned"]["encoded_weight_bytes"],
            "ratio_raw": variants["dense"]["raw_weight_bytes"] / variants["pruned"]["raw_weight_bytes"],
            **_layer_summary(build.report["sparsity"]["layers"])}


def _layer_summary(layers: list[dict[str, Any]]) -> dict[str, Any]:
    """Which layers the build pruned (with each one's target), which it left dense and why (grouped), and the zeros
    over all of them."""
    dense: dict[str, list[str]] = {}
    for layer in layers:
        if not layer.get("pruned"):
            why = str(layer.get("reason", "")).split(";")[0].split(" (")[0]
            dense.setdefault(why, []).append(f"{layer['name']} ({layer['params']:,} weights)")
    params = sum(int(layer.get("params", 0)) for layer in layers)
    zeros = sum(int(layer.get("zeros", 0)) for layer in layers)
    return {"pruned_layers": [f"{layer['name']} (to {float(layer['target']):.3g})"   # targets: policy.allocate_targets
                              for layer in layers if layer.get("pruned")],
            "dense_layers": [f"{', '.join(names)}: {why}" for why, names in dense.items()],
            "weight_sparsity": zeros / params if params else None, "params": params,
            "dense_params": sum(int(layer.get("params", 0)) for layer in layers if not layer.get("pruned"))}


def measure_reference(build: NpuBuild, splits: list[Split]) -> dict[str, Any]:
    """The TFLM profile's build: its artifact's accuracy in TFLM on the same splits."""
    return {"accuracy": tflm_accuracy((build.out / "model.tflite").read_bytes(), splits),
            "report_tflite": build.report["accuracy"].get("tflite")}


# --------------------------------------------------------------------------- rendering


def _b(n: int | None) -> str:
    return "-" if n is None else f"{n:,} B"


def _pct(x: float | None, n: int | None = None) -> str:
    if x is None:
        return "-"
    return f"{x:.2%}" if n is None else f"{x:.2%} ({round(x * n)}/{n})"


SHORT = {"validation": "val", "test": "test"}


def _acc(acc: Accuracy) -> str:
    return "; ".join(f"{SHORT[name]} {_pct(v, acc.samples[name])}" for name, v in acc.by_split.items())


def _latency(f: dict[str, Any]) -> str:
    if f["latency_ms"] is None:
        return "unknown"
    cpu = "" if not f["cpu_ms"] else f" (NPU {f['npu_ms']:.3f} + CPU {f['cpu_ms']:.3f})"
    return f"{f['latency_ms']:.3f} ms{cpu}"


def _energy(f: dict[str, Any]) -> str:
    return "unknown" if f["energy_mj"] is None else f"{f['energy_mj'] * 1000:.2f} uJ"


def _main_table(builds: list[NpuBuild]) -> list[str]:
    lines = ["| demo | profile (NPU) | sparsity | raw int8 weights | Vela encoded weights | encoded dense / pruned "
             "| SRAM (Vela) | flash: Vela (weights + command stream) / compiled file / total with runtime code "
             "| NPU cycles (Vela) | latency / inference | energy / inference | int8 accuracy in TFLM "
             "| dense float accuracy |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for b in builds:
        fig = b.figures
        floats = "; ".join(f"{SHORT[k]} {_pct(v)}" for k, v in fig["dense_float"].items() if v is not None)
        for name, _, _ in VARIANTS:
            if name == "dense" and b.cluster:
                continue                 # the same dense file as the build without --cluster, one row above
            f = fig["variants"][name]
            ratio = f"**{fig['ratio_encoded']:.2f}x**" if name == "pruned" else "1.00x"
            lines.append(
                f"| {DEMO_NAMES[b.demo]} | {b.profile} ({f['accelerator']} @ {f['npu_clock_mhz']:g} MHz) "
                f"| {'0 (dense baseline)' if name == 'dense' else b.label} | {_b(f['raw_weight_bytes'])} "
                f"| {_b(f['encoded_weight_bytes'])} | {ratio} | {_b(f['sram_bytes'])} | {_b(f['vela_flash_bytes'])} "
                f"/ {_b(f['compiled_bytes'])} / {_b(f['flash_total_bytes'])} | {f['total_cycles']:,} "
                f"| {_latency(f)} | {_energy(f)} | {_acc(f['accuracy'])} | {floats or '-'} |")
    return lines


def _basis_lines(builds: list[NpuBuild]) -> list[str]:
    """What each latency and energy figure rests on, once per profile."""
    lines, seen = [], set()
    for b in builds:
        if b.profile in seen:
            continue
        seen.add(b.profile)
        f = b.figures["variants"]["pruned"]
        notes = " ".join(n.rstrip(".") + "." for n in f["notes"])
        lines.append(f"- {b.profile}: {f['accelerator']} at {f['npu_clock_mhz']:g} MHz, CPU {f['cpu_clock_mhz']:g} "
                     f"MHz, memory mode {f['memory_mode']}, Vela {f['vela']}. Latency basis "
                     f"`{f['latency_basis']}`; energy basis `{f['energy_basis']}`. {notes}")
    return lines


def _goal_lines(builds: list[NpuBuild], reference: dict[str, Any] | None) -> list[str]:
    demo, goal, tol = GOAL["demo"], GOAL["ratio"], GOAL["tolerance_points"]
    lines = []
    for b in (b for b in builds if b.demo == demo):
        fig = b.figures
        dense, pruned = fig["variants"]["dense"], fig["variants"]["pruned"]
        size_ok = fig["ratio_encoded"] >= goal
        line = (f"- {DEMO_NAMES[demo]} on {b.profile}: Vela's encoded weights {_b(dense['encoded_weight_bytes'])} "
                f"dense -> {_b(pruned['encoded_weight_bytes'])} at {b.label}: **{fig['ratio_encoded']:.2f}x** "
                f"smaller (goal >= {goal}x: {'met' if size_ok else '**not met**'})")
        if reference is None:
            lines.append(line + "; accuracy: no TFLM reference build in this run.")
            continue
        ref: Accuracy = reference["accuracy"]
        gaps = {s: (pruned["accuracy"].by_split[s] - ref.by_split[s]) * 100 for s in ref.by_split}
        acc_ok = all(g >= -tol for g in gaps.values())
        compared = "; ".join(f"{s} {_pct(pruned['accuracy'].by_split[s])} vs {_pct(ref.by_split[s])} "
                             f"({g:+.2f} points)" for s, g in gaps.items())
        lines.append(line + f"; int8 accuracy in TFLM at {b.label} vs {TFLM_PROFILE} at {SPARSITY}: {compared} "
                     f"(goal: no more than {tol:g} point below on every split: {'met' if acc_ok else '**not met**'})."
                     f" Goal {'**met**' if size_ok and acc_ok else '**not met**'}.")
    return lines


def _limit_lines(builds: list[NpuBuild]) -> list[str]:
    """What the goal demo's ratio rests on: the kernels its builds prune (depthwise ones included, through
    prune.depthwise's PrunableLayer stand-in) and the kernels they leave dense, with the reason."""
    goal = [b for b in builds if b.demo == GOAL["demo"]]
    if not goal:
        return []
    first = goal[0].figures
    dense = first["variants"]["dense"]
    left = (f"{first['dense_params']:,} of {first['params']:,} kernel weights dense "
            f"({first['dense_params'] / first['params']:.0%}: {'; '.join(first['dense_layers'])})"
            if first["dense_layers"] else "no kernel dense")
    lines = [f"every {DEMO_NAMES[GOAL['demo']]} build above prunes {', '.join(first['pruned_layers'])} and leaves "
             f"{left}; Vela encodes dense int8 at about its raw size (the dense baseline: "
             f"{_b(dense['encoded_weight_bytes'])} encoded from {_b(dense['raw_weight_bytes'])} raw), so the weights "
             "left dense take a larger share of the encoded file than of the raw weights."]
    lines += [f"(left dense in {b.out.name}: {'; '.join(b.figures['dense_layers'])})"
              for b in goal[1:] if b.figures["dense_layers"] != first["dense_layers"]]
    return lines


def _build_notes(b: NpuBuild) -> list[str]:
    """One build's notes: what was pruned, where the ops run, and anything that disagrees with its report."""
    fig = b.figures
    cpu = fig["variants"]["pruned"]["cpu_ops"]
    cycles = fig["variants"]["pruned"]["total_cycles"] / fig["variants"]["dense"]["total_cycles"] - 1
    notes = [f"- {b.out.name}: NPU cycles {cycles:+.1%} against dense; pruned "
             f"{', '.join(fig['pruned_layers']) or 'nothing'}; zeros "
             f"{_pct(fig['weight_sparsity'])} of all kernel weights; {fig['variants']['pruned']['npu_ops']} op(s) on "
             f"the NPU, {len(cpu)} on the CPU{': ' + '; '.join(cpu) if cpu else ''}"
             + (f"; `--cluster {b.cluster}` after pruning (report.json: clustered Keras model "
                f"{_pct(fig['clustered_keras'])} on the validation split)" if b.cluster else "") + "."]
    if fig["report_diffs"]:
        notes.append(f"- {b.out.name}: this run's Vela figures **differ** from report.json's: "
                     + "; ".join(fig["report_diffs"]))
    tfl, mine = fig["report_tflite"]["validation"], fig["variants"]["pruned"]["accuracy"].by_split["validation"]
    if tfl is not None and abs(tfl - mine) > 1e-12:
        notes.append(f"- {b.out.name}: report.json gives {_pct(tfl)} for the pruned int8 file, this run {_pct(mine)}.")
    if not b.report.get("passed", True):
        notes.append(f"- {b.out.name}: the build did not pass its gates: {'; '.join(b.report.get('failures') or [])}")
    return notes


def _notes(builds: list[NpuBuild], reference: NpuBuild | None) -> list[str]:
    notes = [f"- Not verified: {NOT_VERIFIED}. Every accuracy above is the plain int8 file's in TFLite Micro "
             f"({builds[0].figures['variants']['pruned']['accuracy'].interpreter}); model.tflite (Vela's file) is "
             "that file compiled, and its figures are Vela's estimates."]
    for demo in dict.fromkeys(b.demo for b in builds):
        mine = [b for b in builds if b.demo == demo]
        hashes = {b.figures["variants"]["dense"]["sha256"] for b in mine}
        same = "the same file, byte for byte, in every build" if len(hashes) == 1 else "**not identical**"
        left = {"; ".join(b.figures["dense_layers"]) for b in mine}
        notes.append(f"- {DEMO_NAMES[demo]}: the dense int8 baseline is {same} (the demo model before pruning); "
                     + (f"left dense by every build: {left.pop() or 'nothing'}." if len(left) == 1 else
                        "the builds left different layers dense (below)."))
        for b in mine:
            notes += _build_notes(b)
    if not any(b.figures["report_diffs"] for b in builds):
        notes.append("- This run's Vela figures (raw and encoded weights, SRAM, cycles) equal each build's "
                     "report.json, dense and pruned.")
    if reference is not None:
        gate = ("" if reference.report.get("passed", True) else
                f"; it did not pass its gates ({'; '.join(reference.report.get('failures') or [])}), which does not "
                "touch its accuracy")
        notes.append(f"- TFLM reference: {reference.out.name} (`--profile {TFLM_PROFILE}`, DECODE-compressed "
                     f"model.tflite, same seed and fine-tuning schedule, its own per-layer policy){gate}.")
    return notes


def render(builds: list[NpuBuild], reference: NpuBuild | None, seconds: float) -> str:
    every = builds + ([reference] if reference is not None else [])
    built = [b for b in every if b.build_s is not None]
    how = (f"{len(built)} built in this run ({sum(b.build_s or 0 for b in built):.0f} s of builds)" if built
           else "none built in this run")
    reused = [b for b in every if b.build_s is None]
    if reused:
        how += "; reused (same options in report.json): " + ", ".join(
            f"{b.out.name} ({b.report.get('created_utc')})" for b in reused)
    profiles = ", ".join(dict.fromkeys(b.profile for b in builds))
    lines = [
        "## Arm Ethos-U NPUs through Vela (bench/npu.py)", "",
        f"`python bench/npu.py` (or `make bench`): `edgesparse build --profile P --demo D --final-sparsity {SPARSITY}` "
        f"for P in {profiles} (Ethos-U55 profiles of two shipping microcontrollers: a 128-MAC NPU with the weights "
        "in on-chip MRAM, and a 64-MAC NPU with the weights in off-chip SPI flash), the KWS demo again with "
        "`--cluster N` where listed (pruning, then TFMOT's sparsity-preserving clustering to N values per kernel), "
        f"and the KWS demo for {TFLM_PROFILE} (TFLite Micro, no NPU) as the accuracy reference; {how}. Section "
        f"time {seconds:.0f} s. "
        f"Sparsity 0 is each build's dense int8 baseline (`baselines/dense_int8.tflite`, the demo model before "
        f"pruning), {SPARSITY} is `baselines/pruned_int8.tflite` (the int8 model the build verified; `model.tflite` "
        "is its Vela compilation). In this run each file is compiled by Vela with the system configuration "
        "generated from the profile (`check_model`), priced by `estimate.npu`, and run in the TFLite Micro "
        "interpreter on the demo's whole validation split (and KWS's held-out test split). Latency = Vela's "
        "cycle estimate at the profile's NPU clock + the CPU's share (dispatch, any CPU-fallback op), energy = "
        "NPU time x [npu] active_mw + CPU time x [power] active_mw: estimates, with their basis below.", "",
    ]
    lines += _main_table(builds)
    ref = measure_summary(reference)
    lines += ["", f"Goal (issue 12: the {DEMO_NAMES[GOAL['demo']]}'s encoded weights at least {GOAL['ratio']:g}x "
              f"smaller at {SPARSITY} than dense, at the accuracy the TFLM profiles get):", "",
              *_goal_lines(builds, reference.figures if reference is not None else None)]
    if ref:
        lines += ["", ref]
    limits = _limit_lines(builds)
    if limits:
        lines += ["", f"What limits the {DEMO_NAMES[GOAL['demo']]}'s ratio: " + limits[0], *limits[1:]]
    lines += ["", "Basis of the estimates:", "", *_basis_lines(builds), "", "Notes:", "", *_notes(builds, reference)]
    return "\n".join(lines)


def measure_summary(reference: NpuBuild | None) -> str:
    if reference is None:
        return ""
    acc: Accuracy = reference.figures["accuracy"]
    return (f"TFLM reference ({DEMO_NAMES[reference.demo]} for {reference.profile} at {SPARSITY}, model.tflite in "
            f"TFLite Micro): {_acc(acc)}.")


def run(profiles: tuple[str, ...] = PROFILES, demos: tuple[str, ...] = DEMOS, builds: Path = BUILDS,
        reference: bool = True, cluster: int = CLUSTER) -> str:
    """Build (or reuse) every demo x Ethos-U profile, the goal demo with --cluster, and the TFLM reference;
    measure each; return the section."""
    started = time.perf_counter()
    builds.mkdir(parents=True, exist_ok=True)
    done: list[NpuBuild] = []
    ref_build: NpuBuild | None = None
    for demo in demos:
        splits = demo_splits(demo)
        for profile in profiles:
            build = ensure_build(demo, profile, builds)
            build.figures = measure(build, splits)
            done.append(build)
            if cluster and demo == GOAL["demo"]:
                clustered = ensure_build(demo, profile, builds, cluster)
                clustered.figures = measure(clustered, splits, dense=build.figures["variants"]["dense"])
                done.append(clustered)
        if reference and demo == GOAL["demo"]:
            ref_build = ensure_build(demo, TFLM_PROFILE, builds)
            ref_build.figures = measure_reference(ref_build, splits)
    return render(done, ref_build, time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", nargs="+", default=list(PROFILES), help="Ethos-U profiles")
    parser.add_argument("--demo", nargs="+", choices=DEMOS, default=list(DEMOS))
    parser.add_argument("--builds", type=Path, default=BUILDS)
    parser.add_argument("--cluster", type=int, default=CLUSTER, help="--cluster N for the KWS demo's extra "
                        "builds (0: none)")
    parser.add_argument("--no-reference", action="store_true", help=f"skip the {TFLM_PROFILE} KWS build")
    args = parser.parse_args(argv)
    print(run(tuple(args.profile), tuple(args.demo), args.builds.resolve(), not args.no_reference, args.cluster))
    return 0


if __name__ == "__main__":
    sys.exit(main())

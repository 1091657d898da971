"""Benchmark of issue 11: dense int8 against channel-pruned int8 (25 % and 50 % of channels removed).

Run by `make bench` (through bench/run_all.py) or standalone:

    .venv/bin/python bench/channel_pruning.py [--model kws digits resnet8] [--fractions 0.25 0.5]
                                              [--epochs 12] [--builds DIR] [--builds-only]

For each model, fraction F and profile P in (rpi4, nrf52840): `edgesparse build --granularity channel
--final-sparsity F --profile P --epochs E` into DIR/<model>-<P>-<F>/ (default build/bench-channel/; a
directory whose report.json has the same options is reused, anything else is rebuilt with --force).
The dense int8 baseline is each build's baselines/dense_int8.tflite: for channel builds the ORIGINAL
model converted (checked here by its MACs against report.json's channels.tflite_macs_before).
Then, on the builds' files and in this run:

- MACs (report.json channels section; the estimator's count of the dense file for the baseline);
- file bytes: rpi4 int8 file, nrf52840 file (stripped for TFLM, as the build writes it);
- TFLM arena: estimated (`check_model` on nrf52840, RAM less the persistent runtime RAM) and measured
  (`runtime.tflm_decode.measured_arena`, TFLM's recorded allocation, in a child process);
- host LiteRT latency: `runtime.measure.compare_latency`, dense int8 first then 25 % then 50 %,
  interleaved in one process; ratio of medians;
- the estimator's latency: rpi4 and pixel4 on the rpi4 build's file, stm32l4r5 on the nrf52840 build's;
- accuracy: report.json accuracy.test when the build had a test split, else the validation split (said).

MLPerf Tiny ResNet-8 (`pretrainedResnet.h5`, read in place): no CIFAR-10 is available offline, so its
data are generated (`data.generate_for_model`, value range 0..255, written once to DIR/cifar_like.npz);
its accuracy (validation split) is not CIFAR-10 accuracy.

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

from edgesparse.data.dataset import generate_for_model
from edgesparse.estimate.check import check_model
from edgesparse.runtime.measure import compare_latency
from edgesparse.runtime.tflm_decode import measured_arena

__all__ = ["GOALS", "MODELS", "ChannelBuild", "Split", "accuracy_split", "build_all", "build_command", "ensure_build",
           "main", "measure", "render", "resnet_data", "run"]

REPO = Path(__file__).resolve().parent.parent
BUILDS = REPO / "build" / "bench-channel"
RESNET8 = Path("/work/shared/mlperf_tiny/image_classification/pretrainedResnet.h5")
MODELS = ("kws", "digits", "resnet8")
NAMES = {"kws": "KWS DS-CNN (demo)", "digits": "digits CNN (demo)", "resnet8": "MLPerf Tiny ResNet-8"}
FRACTIONS = (0.25, 0.5)
PROFILES = ("rpi4", "nrf52840")
ESTIMATE_PROFILES = (("rpi4", "rpi4"), ("pixel4", "rpi4"), ("stm32l4r5", "nrf52840"))  # (profile, build's file)
EPOCHS = 12
GOALS = {"speedup": 2.0, "max_drop_points": 1.0, "arena_ratio": 1.5}   # issue 11, KWS demo
RESNET_DATA = {"n_train": 2000, "n_val": 500, "seed": 0}


def resnet_data(builds: Path) -> Path:
    """CIFAR-like generated data for ResNet-8 (no CIFAR-10 offline), written once and reused.

    No test split: the build does not read one from an .npz (edgesparse/data/load.py), so the builds and this
    benchmark score the validation split."""
    path = builds / "cifar_like.npz"
    if not path.is_file():
        ds = generate_for_model((32, 32, 3), 10, n_train=RESNET_DATA["n_train"], n_val=RESNET_DATA["n_val"],
                                seed=RESNET_DATA["seed"], value_range=(0, 255))
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, x_train=ds.x_train, y_train=ds.y_train, x_val=ds.x_val, y_val=ds.y_val)
        tmp.replace(path)
    return path


def _source_args(model: str, builds: Path) -> list[str]:
    if model == "resnet8":
        return ["--model", str(RESNET8), "--data", str(resnet_data(builds))]
    return ["--demo", model]


def build_command(model: str, profile: str, fraction: float, epochs: int, builds: Path) -> list[str]:
    """The `edgesparse build` command line of one build (without --out/--force)."""
    return ["edgesparse", "build", *_source_args(model, builds), "--profile", profile, "--granularity", "channel",
            "--final-sparsity", str(fraction), "--epochs", str(epochs)]


def _wanted_options(model: str, profile: str, fraction: float, epochs: int, builds: Path) -> dict[str, Any]:
    source: dict[str, Any] = ({"model": str(RESNET8), "data": str(builds / "cifar_like.npz")} if model == "resnet8"
                              else {"demo": model, "model": None, "data": None})
    return {**source, "profile": profile, "granularity": "channel", "final_sparsity": fraction, "epochs": epochs,
            "quantize": "int8", "seed": 0, "element_sparsity": None, "batch_size": 32}


def _reusable(out: Path, wanted: dict[str, Any]) -> dict[str, Any] | None:
    """The build's report when it was made with these options and has every file this benchmark reads."""
    return reusable_report(out, wanted, ("model.tflite", "baselines/dense_int8.tflite"), "channels")


@dataclass
class ChannelBuild:
    """One build directory and what this run measured on its files."""

    model: str
    profile: str
    fraction: float
    out: Path
    report: dict[str, Any] = field(repr=False)
    build_s: float | None                      # None: an earlier build with the same options was reused
    command: list[str] = field(default_factory=list)


def ensure_build(model: str, profile: str, fraction: float, epochs: int = EPOCHS,
                 builds: Path = BUILDS) -> ChannelBuild:
    """`edgesparse build --granularity channel` into builds/model-profile-fraction, unless already there."""
    out = builds / f"{model}-{profile}-{fraction}"
    command = build_command(model, profile, fraction, epochs, builds)
    report = _reusable(out, _wanted_options(model, profile, fraction, epochs, builds))
    if report is not None:
        print(f"reusing {out} (built {report.get('created_utc')})", file=sys.stderr, flush=True)
        return ChannelBuild(model, profile, fraction, out, report, None, command)
    cmd = [sys.executable, "-m", "edgesparse", *command[1:], "--out", str(out)]
    if out.exists():
        cmd.append("--force")
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, stdout=sys.stderr, check=False)   # the section alone on stdout
    seconds = time.perf_counter() - started
    report = _reusable(out, _wanted_options(model, profile, fraction, epochs, builds))
    if done.returncode not in (0, 1) or report is None:       # 1: built, a gate failed (the report says which)
        raise SystemExit(f"edgesparse build failed (exit {done.returncode}): {out}")
    return ChannelBuild(model, profile, fraction, out, report, seconds, command)


def build_all(models: tuple[str, ...], fractions: tuple[float, ...], epochs: int, builds: Path) -> list[ChannelBuild]:
    """Every build, sequentially (the machine's cores are shared): model x profile x fraction."""
    builds.mkdir(parents=True, exist_ok=True)
    return [ensure_build(m, p, f, epochs, builds) for m in models for p in PROFILES for f in fractions]



@dataclass
class Split:
    """The split a model's accuracy is measured on here: the one the build scored (test if it had one)."""

    name: str
    x: np.ndarray = field(repr=False)
    y: np.ndarray = field(repr=False)


def accuracy_split(model: str, builds: Path) -> Split:
    """KWS: the held-out synthetic test voices; digits and ResNet-8: the validation split (no test split is
    read). The same arrays the builds scored (seed 0)."""
    if model == "kws":
        from edgesparse.pipeline.demos import kws

        x, y = kws.test_split()
        return Split("test", np.asarray(x), np.asarray(y))
    if model == "digits":
        from edgesparse.pipeline.demos import digits

        _, ds = digits.demo_model()
        return Split("validation", np.asarray(ds.x_val), np.asarray(ds.y_val))
    with np.load(resnet_data(builds)) as f:
        return Split("validation", f["x_val"], f["y_val"])


def _arena_estimate(check: dict[str, Any]) -> int:
    """The estimator's arena: its RAM total less the profile's persistent runtime RAM (outside the arena)."""
    ram = check["ram"]
    return int(ram["total_bytes"]) - int(ram["breakdown"].get("runtime_persistent_ram", 0))


def _report_accuracy(report: dict[str, Any]) -> tuple[str, float, float]:
    """(split, dense float, .tflite) as the build's report.json gives them: test if present, else validation."""
    acc = report["accuracy"]
    test = acc.get("test")
    if test:
        return "test", float(test["dense_float"]), float(test["tflite"])
    return "validation", float(acc["dense_float"]), float(acc["tflite"])


def measure(model: str, builds: list[ChannelBuild], split: Split) -> dict[str, Any]:
    """Every figure of one model's dense baseline and channel builds, measured on their files in this run."""
    from edgesparse.runtime.verify import verify_artifact
    from edgesparse.tflite.graph import load_graph

    by = {(b.profile, b.fraction): b for b in builds}
    fractions = sorted({b.fraction for b in builds})
    files: dict[str, dict[str, bytes]] = {p: {} for p in PROFILES}
    for p in PROFILES:
        denses = {(by[p, f].out / "baselines/dense_int8.tflite").read_bytes() for f in fractions}
        files[p]["dense"] = (by[p, fractions[0]].out / "baselines/dense_int8.tflite").read_bytes()
        files[p]["dense_identical"] = b"1" if len(denses) == 1 else b""
        for f in fractions:
            files[p][str(f)] = (by[p, f].out / "model.tflite").read_bytes()
    keys = ["dense", *map(str, fractions)]
    rows: dict[str, dict[str, Any]] = {k: {} for k in keys}
    for k in keys:
        r = rows[k]
        r["macs"] = {p: int(load_graph(files[p][k]).total_macs) for p in PROFILES}
        r["bytes"] = {p: len(files[p][k]) for p in PROFILES}
        nrf = check_model(files["nrf52840"][k], "nrf52840").to_dict()
        r["arena_estimated"] = _arena_estimate(nrf)
        recorded = measured_arena(files["nrf52840"][k])
        r["arena_measured"] = int(recorded["total"])
        r["arena_head"], r["arena_tail"] = int(recorded["head"]), int(recorded["tail"])
        r["estimated_ms"] = {prof: float(check_model(files[src][k], prof).to_dict()["latency_ms"])
                             for prof, src in ESTIMATE_PROFILES}
        r["accuracy"] = {p: float(verify_artifact(files[p][k], split.x, split.y,
                                                  runtime="litert" if p == "rpi4" else "tflm").accuracy)
                         for p in PROFILES}
    for f in fractions:
        for p in PROFILES:
            b = by[p, f]
            c = b.report["channels"]
            rows[str(f)].setdefault("report", {})[p] = {
                "macs_before": c["tflite_macs_before"], "macs_after": c["tflite_macs_after"],
                "keras_macs": (c["macs_before"], c["macs_after"]), "params": (c["params_before"], c["params_after"]),
                "removed": c["removed_fraction"], "accuracy": _report_accuracy(b.report),
                "passed": b.report.get("passed"), "failures": b.report.get("failures") or [],
                "epochs": b.report["options"]["epochs"], "unprunable": c.get("unprunable") or [],
            }
    host = compare_latency({k: files["rpi4"][k] for k in keys}, runtime="litert", threads=1)
    return {"rows": rows, "keys": keys, "host": host, "split": split.name, "n": len(split.y),
            "dense_identical": {p: bool(files[p]["dense_identical"]) for p in PROFILES}}


def _b(n: int) -> str:
    return f"{n:,} B"


def _pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def _label(key: str) -> str:
    return "dense int8" if key == "dense" else f"channels {float(key):.0%} removed"


def _model_table(model: str, m: dict[str, Any]) -> list[str]:
    rows, host, dense = m["rows"], m["host"], m["rows"]["dense"]
    lines = [f"### {NAMES[model]}", "",
             "| int8 model | MACs (.tflite) | rpi4 file | nrf52840 file | TFLM arena est. / TFLM "
             "| arena vs dense (TFLM) | host LiteRT median (ratio) | est. rpi4 | est. pixel4 | est. stm32l4r5 "
             f"| accuracy rpi4 / nrf52840 ({m['split']}, n={m['n']}) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for k in m["keys"]:
        r = rows[k]
        h = host["models"][k]
        speed = host["ratios"][k]
        arena_x = dense["arena_measured"] / r["arena_measured"]
        drop = [100 * (dense["accuracy"][p] - r["accuracy"][p]) for p in PROFILES]
        acc = " / ".join(_pct(r["accuracy"][p]) for p in PROFILES)
        if k != "dense":
            acc += " (" + " / ".join(f"{d:+.2f}" for d in (-drop[0], -drop[1])) + " pt)"
        lines.append(
            f"| {_label(k)} | {r['macs']['rpi4']:,} | {_b(r['bytes']['rpi4'])} | {_b(r['bytes']['nrf52840'])} "
            f"| {_b(r['arena_estimated'])} / {_b(r['arena_measured'])} "
            f"| {'-' if k == 'dense' else f'{arena_x:.2f}x smaller'} "
            f"| {h['median_ms']:.4f} ms ({speed:.2f}{'' if k == 'dense' else f'; {1 / speed:.2f}x faster'}) | "
            + " | ".join(f"{r['estimated_ms'][p]:.3f} ms" for p, _ in ESTIMATE_PROFILES)
            + f" | {acc} |")
    return lines


def _model_notes(model: str, m: dict[str, Any]) -> list[str]:
    rows, dense = m["rows"], m["rows"]["dense"]
    notes = []
    for k in m["keys"][1:]:
        for p in PROFILES:
            rep = rows[k]["report"][p]
            split, dense_float, tfl = rep["accuracy"]
            same_macs = rep["macs_before"] == dense["macs"][p] and rep["macs_after"] == rows[k]["macs"][p]
            line = (f"- {p} {_label(k)}: report.json {split} accuracy {_pct(tfl)} (dense float {_pct(dense_float)}, "
                    f"drop {100 * (dense_float - tfl):.2f} pt); removed {rep['removed']:.1%} of prunable channels; "
                    f"parameters {rep['params'][0]:,} -> {rep['params'][1]:,}; MACs (report.json) "
                    f"{rep['macs_before']:,} -> {rep['macs_after']:,}"
                    + ("" if same_macs else " (**differs** from the files' count here)") + ".")
            if abs(tfl - rows[k]["accuracy"][p]) > 1e-9 and split == m["split"]:
                line += f" This run measured {_pct(rows[k]['accuracy'][p])} on the same split."
            if not rep["passed"]:
                line += f" The build's gates failed: {'; '.join(rep['failures'])}."
            notes.append(line)
    unprunable = {f"{', '.join(u['layers'])} ({u['reason']})"
                  for k in m["keys"][1:] for p in PROFILES for u in rows[k]["report"][p]["unprunable"]}
    if unprunable:
        notes.append("- Kept whole: " + "; ".join(sorted(unprunable)) + ".")
    if not all(m["dense_identical"].values()):
        notes.append("- The builds' baselines/dense_int8.tflite differ between fractions; the 25 % build's is used.")
    return notes


def _goal_lines(m: dict[str, Any]) -> list[str]:
    """Issue 11's goals for the KWS demo, per fraction: reached or not, in this run's figures."""
    rows, dense, host = m["rows"], m["rows"]["dense"], m["host"]
    lines = [f"| KWS, channels removed | host speed-up (goal >= {GOALS['speedup']}x) | accuracy drop vs dense int8, "
             f"rpi4 / nrf52840 ({m['split']}; goal <= {GOALS['max_drop_points']} pt) | drop vs dense float "
             f"(report.json) | TFLM arena smaller, measured / est. (goal >= {GOALS['arena_ratio']}x) | all three |",
             "|---|---|---|---|---|---|"]
    for k in m["keys"][1:]:
        r = rows[k]
        speedup = 1 / host["ratios"][k]
        drops = [100 * (dense["accuracy"][p] - r["accuracy"][p]) for p in PROFILES]
        float_drops = [100 * (r["report"][p]["accuracy"][1] - r["report"][p]["accuracy"][2]) for p in PROFILES]
        arena = dense["arena_measured"] / r["arena_measured"]
        arena_est = dense["arena_estimated"] / r["arena_estimated"]
        ok = [speedup >= GOALS["speedup"], max(drops) <= GOALS["max_drop_points"], arena >= GOALS["arena_ratio"]]
        mark = ["yes" if o else "**no**" for o in ok]
        lines.append(f"| {float(k):.0%} | {speedup:.2f}x ({mark[0]}) | {drops[0]:.2f} / {drops[1]:.2f} pt ({mark[1]}) "
                     f"| {float_drops[0]:.2f} / {float_drops[1]:.2f} pt | {arena:.2f}x / {arena_est:.2f}x ({mark[2]}) "
                     f"| {'yes' if all(ok) else '**no**'} |")
    return lines


def _limits(m: dict[str, Any], epochs: int) -> str:
    """What limits the KWS figures, from this run's numbers."""
    rows, dense, host = m["rows"], m["rows"]["dense"], m["host"]
    parts = []
    for k in m["keys"][1:]:
        r = rows[k]
        mac_x = dense["macs"]["rpi4"] / r["macs"]["rpi4"]
        parts.append(f"at {float(k):.0%} the MACs fall {mac_x:.2f}x, the host time {1 / host['ratios'][k]:.2f}x, "
                     f"the measured arena {dense['arena_measured'] / r['arena_measured']:.2f}x (its head, the "
                     f"planned activations, {_b(dense['arena_head'])} -> {_b(r['arena_head'])}, "
                     f"{dense['arena_head'] / r['arena_head']:.2f}x; its tail, TFLM's persistent tensors and op "
                     f"data, {_b(dense['arena_tail'])} -> {_b(r['arena_tail'])})")
    return ("What limits it: " + "; ".join(parts) + ". Host time falls less than the MACs: the per-invoke and "
            "per-op costs do not shrink with the channels (an interpretation; only the totals are measured). The "
            "arena falls less than the fraction removed because its tail shrinks less than the activations. "
            f"Accuracy is what {epochs} epochs of fine-tuning recover with every prunable group losing the same "
            "fraction (polynomial schedule, the last quarter of the steps at the final fraction, seed 0, one "
            "run per setting), with Adam at channel_finetune.FINETUNE_PEAK_LEARNING_RATE held while the masks "
            "grow and cosine-annealed to 0 after the last mask update; an earlier constant 1e-3 left KWS 1.20 / "
            "1.02 points (50 %) and 1.76 points (25 %) below dense int8 on the same test split, and a lower "
            "constant rate (1e-4) 2.78 points (50 %, rpi4).")


def render(models: dict[str, dict[str, Any]], builds: list[ChannelBuild], seconds: float, epochs: int) -> str:
    reused = [b for b in builds if b.build_s is None]
    built = [b for b in builds if b.build_s is not None]
    how = (f"{len(built)} built in this run ({sum(b.build_s or 0 for b in built):.0f} s of builds)" if built
           else "none built in this run")
    if reused:
        made = sorted(str(b.report.get("created_utc"))[:16] for b in reused)
        took = sum(float(b.report.get("timings_s", {}).get("total", 0)) for b in reused)
        how += (f"; {len(reused)} reused (same options in report.json; built {made[0]} to {made[-1]} UTC, "
                f"{took:.0f} s of builds by report.json's timings)")
    host = next(iter(models.values()))["host"]
    lines = [
        "## Channel pruning (bench/channel_pruning.py)", "",
        f"`python bench/channel_pruning.py` (or `make bench`): for each model, `edgesparse build <model> --profile P "
        f"--granularity channel --final-sparsity F --epochs {epochs}` for P in rpi4, nrf52840 and F in "
        f"{', '.join(str(f) for f in FRACTIONS)}, into `build/bench-channel/<model>-P-F/`; <model> is `--demo kws`, "
        f"`--demo digits` or `--model {RESNET8} --data build/bench-channel/cifar_like.npz`; {how}. "
        f"Section time {seconds:.0f} s. Fine-tuning: {epochs} epochs (the build's default is 8; at 8 the KWS "
        "drops measured 1.02-1.39 points), seed 0, batch 32, polynomial schedule.", "",
        "*Dense int8* is the build's `baselines/dense_int8.tflite`, the ORIGINAL model converted before any channel "
        "was removed (its MACs below equal report.json's `channels.tflite_macs_before`); the rpi4 file as the "
        "converter writes it, the nrf52840 file stripped for TFLM as the build strips. MACs as the estimator counts "
        "the .tflite graph. Arena: *est.* = `check_model(..., 'nrf52840')` RAM less the persistent runtime RAM "
        "(device layout, CMSIS-NN scratch), *TFLM* = TFLite Micro's recorded allocation after one invoke "
        "(`measured_arena`, x86-64 reference kernels, in a child process), both on the nrf52840 file. "
        f"Host LiteRT: `compare_latency`, the three rpi4 files in one process, interleaved, {host['threads']} "
        f"thread, {host['rounds']} rounds x {host['runs_per_round']} runs, median; ratio = model / dense int8 "
        "median. Estimated latency: `check_model` on the rpi4 file for rpi4 and pixel4 (LiteRT), on the nrf52840 "
        "file for stm32l4r5 (TFLM). Accuracy: each file run in its interpreter (LiteRT for rpi4, TFLite Micro for "
        "nrf52840) in this run on the split the builds scored (test when the build has one); the change in points "
        "is against the dense int8 file on the same split.", "",
    ]
    for model, m in models.items():
        lines += [*_model_table(model, m), "", *_model_notes(model, m), ""]
        if model == "resnet8":
            lines += [f"- Data: no CIFAR-10 is available offline; the ResNet-8 builds use generated CIFAR-like data "
                      f"(`data.generate_for_model((32, 32, 3), 10, ..., value_range=(0, 255))`, "
                      f"{RESNET_DATA['n_train']} train / {RESNET_DATA['n_val']} validation, seed 0; the build "
                      "reads no test split from an .npz). Its accuracies are on that data, **not CIFAR-10 "
                      "accuracy**: the dense int8 file is the pretrained model, never trained on these classes, "
                      "while the channel-pruned models were fine-tuned on them (the build warns that the dense "
                      "model is at chance). The accuracy column shows only that the pruned models learn the "
                      "generated task; MACs, files, arenas and latency do not depend on the data.", ""]
    if "kws" in models:
        lines += [f"Goals (issue 11, KWS demo, {epochs} epochs):", "", *_goal_lines(models["kws"]), "",
                  _limits(models["kws"], epochs)]
    return "\n".join(lines)


def run(models: tuple[str, ...] = MODELS, fractions: tuple[float, ...] = FRACTIONS, epochs: int = EPOCHS,
        builds: Path = BUILDS) -> str:
    """Build (or reuse) every model x profile x fraction, measure each model, return the Markdown section."""
    started = time.perf_counter()
    done = build_all(models, fractions, epochs, builds)
    figures = {}
    for model in models:
        print(f"measuring {model}", file=sys.stderr, flush=True)
        figures[model] = measure(model, [b for b in done if b.model == model], accuracy_split(model, builds))
    return render(figures, done, time.perf_counter() - started, epochs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--fractions", type=float, nargs="+", default=list(FRACTIONS))
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--builds", type=Path, default=BUILDS)
    parser.add_argument("--builds-only", action="store_true", help="only make the builds")
    args = parser.parse_args(argv)
    if args.builds_only:
        build_all(tuple(args.model), tuple(args.fractions), args.epochs, args.builds.resolve())
        return 0
    print(run(tuple(args.model), tuple(args.fractions), args.epochs, args.builds.resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

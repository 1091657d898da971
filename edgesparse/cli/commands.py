"""The `edgesparse` command line: options in, library calls, exit codes out. The only module that exits.

Each command parses its options, calls one library function and hands the
result to `edgesparse.cli.render` (tables) or prints JSON; long commands pass a
renderer from `edgesparse.cli.progress` as the library's progress callback.
Every EdgesparseError becomes one readable line and its exit code (2 bad
input, 1 a budget missed, 3 verification, 130 interrupted), anything else one
"internal error" line and exit 3: no tracebacks unless EDGESPARSE_DEBUG is set.

`edgesparse.pipeline` (TensorFlow) is imported only inside `build` and
`sweep`, so `--help` and the analysis commands run without TensorFlow.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from edgesparse import __version__, interrupts
from edgesparse.builddir import (
    ARTIFACT,
    BASELINES,
    artifact_matches_report,
    interpreter_model_name,
    is_build_dir,
    load_report,
)
from edgesparse.cli import render
from edgesparse.cli.progress import BuildProgress, StageLines, SweepProgress
from edgesparse.deploy import DeployOptions
from edgesparse.deploy import deploy as run_deploy
from edgesparse.errors import (
    EXIT_BUDGET,
    EXIT_INTERNAL,
    BudgetExceeded,
    EdgesparseError,
    Interrupted,
    ProfileError,
    VerificationError,
)
from edgesparse.estimate import battery_comparison, check_model, parse_rate
from edgesparse.estimate.calibrate import calibrate_profile
from edgesparse.estimate.speed import check_speed, default_baseline

# The build half; its modules import TensorFlow only inside the functions that train and convert.
from edgesparse.pipeline import build as pipeline_build
from edgesparse.pipeline import sweep as pipeline_sweep
from edgesparse.pipeline.build_checks import GRANULARITIES
from edgesparse.profiles.profile import Profile, available_profiles, display_path, load_profile
from edgesparse.profiles.validate import ProfileValidationError
from edgesparse.report import format as fmt
from edgesparse.report.document import summary_rows
from edgesparse.report.html import write_report_html
from edgesparse.runtime.measure import measure as run_measure

__all__ = ["main"]


class _Group(click.Group):
    """Turns every error into one readable line and an exit code; no tracebacks."""

    def invoke(self, ctx: click.Context) -> Any:
        interrupts.reset()
        interrupts.install_handlers()
        try:
            return super().invoke(ctx)
        except Interrupted as exc:
            render.print_error(exc.message)
            sys.exit(interrupts.exit_code(interrupts.received()))
        except EdgesparseError as exc:
            render.print_error(exc.message)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            signum = interrupts.received() or signal.SIGINT
            render.make_console(stderr=True).print(
                f"[bold red]interrupted:[/] stopped by {interrupts.signal_name(signum)}; "
                "no partial output was written and an earlier output is unchanged.", soft_wrap=True)
            sys.exit(interrupts.exit_code(signum))
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except Exception as exc:  # last line of defence, one readable line
            render.make_console(stderr=True).print(
                f"[bold red]internal error:[/] {type(exc).__name__}: {exc}. "
                "This is a bug in edgesparse; set EDGESPARSE_DEBUG=1 for a traceback.", soft_wrap=True)
            if os.environ.get("EDGESPARSE_DEBUG"):
                raise
            sys.exit(EXIT_INTERNAL)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgesparse")
def main() -> None:
    """Prune, quantize and verify Keras models, and check them against edge devices."""


def _split_names(ctx: click.Context, param: click.Parameter, value: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in value.split(",") if n.strip()) if value else ()


# Physical values that cannot be are usage errors (exit 2, naming the flag) before any work starts;
# the estimator refuses them too (DataError), e.g. a NaN that a click range lets through.
_BATTERY_MAH = click.FloatRange(min=0, min_open=True)
_SLEEP_MW = click.FloatRange(min=0)
_THREADS = click.IntRange(min=1)
# Build and sweep options that cannot be (issue 9 item 10): click names the flag, before TensorFlow loads.
_POSITIVE_INT = click.IntRange(min=1)
_STEP = click.IntRange(min=0)
_FRACTION = click.FloatRange(min=0, max=1)
_SPARSITY = click.FloatRange(min=0, max=1, max_open=True)
_POINTS = click.FloatRange(min=0)
_OPEN_FRACTION = click.FloatRange(min=0, max=1, min_open=True, max_open=True)
_GRANULARITY_HELP = ("What pruning removes. auto: the profile's policy (block shapes where LiteRT's sparse kernels "
                     "read them, element-wise elsewhere); element: single weights everywhere; block: the profile's "
                     "block shape (LiteRT profiles that list one); 2:4: TFMOT sparsity_m_by_n; channel: whole "
                     "channels, then a smaller dense model (faster on every runtime).")


def _check_rate(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """Parse --rate before any work: a bad rate is a DataError naming --rate (exit 2)."""
    if value is not None:
        parse_rate(value)
    return value


# --------------------------------------------------------------------------- build

@main.command()
@click.option("--model", type=click.Path(path_type=Path),
              help="Keras model: .keras, .h5 or a SavedModel directory. Omit for the built-in demo.")
@click.option("--data", type=click.Path(path_type=Path),
              help=".npz with x_train, y_train, x_val, y_val (integer labels), a folder of <label>/ images, "
                   "or a Speech Commands folder of <label>/*.wav; see docs/data.md.")
@click.option("--profile", "profile", default="rpi4", show_default=True,
              help="Device profile name or path to a .toml.")
@click.option("--demo", type=click.Choice(["digits", "kws"]), default="digits", show_default=True,
              help="Built-in demo used when --model is omitted: digits (vision) or kws (keyword spotting).")
@click.option("--out", type=click.Path(path_type=Path), help="Output directory [default: build/<model>-<profile>].")
@click.option("--force", is_flag=True, help="Replace an existing output directory.")
@click.option("--trust-model", is_flag=True,
              help="Allow Lambda layers and custom objects (runs code from the model file).")
@click.option("--schedule", type=click.Choice(["polynomial", "constant"]), default="polynomial",
              show_default=True, help="TFMOT PolynomialDecay or ConstantSparsity.")
@click.option("--initial-sparsity", type=_SPARSITY, default=0.0, show_default=True)
@click.option("--granularity", type=click.Choice(list(GRANULARITIES)), default="auto", show_default=True,
              help=_GRANULARITY_HELP)
@click.option("--final-sparsity", type=_SPARSITY, default=None,
              help="Target sparsity of pruned layers; with --granularity channel, the fraction of prunable "
                   "channels removed [default: 0.8; M/N with --structured; 0.5 with channel].")
@click.option("--optimize", type=click.Choice(["balanced", "speed", "size"]), default="balanced", show_default=True,
              help="LiteRT profiles: which sparse encodings the per-layer policy may choose. balanced = none the "
                   "estimator predicts slower than dense on this profile; speed = only those predicted faster; "
                   "size = the smallest file, even if slower.")
@click.option("--element-sparsity", type=_OPEN_FRACTION, default=None,
              help="With --granularity channel: then prune the remaining weights element-wise to this sparsity "
                   "(TFMOT; flash on microcontrollers via DECODE). [default: off]")
@click.option("--begin-step", type=_STEP, default=0, show_default=True)
@click.option("--end-step", type=_POSITIVE_INT, default=None,
              help="Step at which the final sparsity is reached [default: derived from --epochs and the data size].")
@click.option("--power", type=_POSITIVE_INT, default=3, show_default=True, help="PolynomialDecay exponent.")
@click.option("--frequency", type=_POSITIVE_INT, default=100, show_default=True,
              help="Steps between mask updates (capped for small data sets).")
@click.option("--structured", default=None,
              help="M:N structured sparsity, e.g. 2:4 (TFMOT sparsity_m_by_n); --structured 2:4 = --granularity 2:4.")
@click.option("--skip-layers", callback=_split_names, default="", help="Comma-separated layer names to leave dense.")
@click.option("--prune-output-layer", is_flag=True,
              help="Prune the output layer too (left dense by default: each of its weights costs the most accuracy).")
@click.option("--min-params", type=_STEP, default=1000, show_default=True,
              help="Leave layers with fewer prunable weights than this dense.")
@click.option("--epochs", type=_POSITIVE_INT, default=8, show_default=True, help="Fine-tuning epochs.")
@click.option("--batch-size", type=_POSITIVE_INT, default=32, show_default=True)
@click.option("--quantize", type=click.Choice(["int8", "dynamic", "float16", "none"]), default="int8",
              show_default=True)
@click.option("--max-accuracy-drop", type=_POINTS, default=2.0, show_default=True,
              help="Percentage points allowed from the dense float model to the .tflite.")
@click.option("--min-agreement", type=_FRACTION, default=0.9, show_default=True,
              help="Fail when the .tflite's top-1 agrees with the pruned Keras model on fewer validation inputs.")
@click.option("--tensorboard", type=click.Path(path_type=Path), default=None,
              help="Write TFMOT pruning summaries to this directory.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--mcu-compression", type=click.Choice(["off", "prune", "lut", "auto"]), default=None,
              help="TFLite Micro profiles: store weights for TFLM's DECODE op where the file shrinks and the "
                   "profile's RAM budget holds the decoded tensor; prune = PRUNING only, lut = LUT only, auto = the "
                   "smaller per tensor, off = the plain int8 file. Proven bitwise identical in TFLM. "
                   "[default: auto on TFLite Micro profiles; refused on others]")
@click.option("--cluster", type=int, default=None, metavar="N",
              help="After pruning, fine-tune the pruned layers with TFMOT's sparsity-preserving weight clustering "
                   "to N values per kernel (3..128, zeros kept), so TFLite Micro's LUT decoder stores few-bit "
                   "indices; its accuracy is reported. TFLite Micro profiles with --mcu-compression lut or auto. "
                   "[default: off]")
@click.option("--distribute", type=click.Choice(["mirrored", "multi-worker"]), default=None,
              help="Fine-tune under a tf.distribute strategy: mirrored = every local GPU/CPU device, multi-worker "
                   "= the cluster TF_CONFIG describes (only the chief writes outputs). Pays on several GPUs or many "
                   "cores, not on a small CPU (docs/scale.md). [default: one device]")
def build(**kwargs: Any) -> None:
    """Prune, quantize, verify and check a Keras model for a device profile."""
    console = render.make_console()
    with BuildProgress(console) as progress:
        result = pipeline_build.build(pipeline_build.BuildOptions(**kwargs), progress=progress)
    if not result.published:  # a multi-worker task that is not the chief: exit 0, nothing written
        console.print(f"[green]ok[/] {escape(result.report['distribute'])}: fine-tuned in sync; the chief writes "
                      "the outputs", soft_wrap=True)
        return
    rows = (summary_rows(result.report) + render.npu_rows(result.report.get("npu"))
            + render.compression_rows(result.report.get("compression")) + render.speed_rows(result.report.get("speed")))
    render.print_summary(console, rows, f"edgesparse build -> {result.out_dir}")
    for warning in result.warnings:
        console.print(f"[bold yellow]warning:[/] {escape(warning)}", soft_wrap=True)
    pipeline_build.raise_for_failures(result)
    verified = interpreter_model_name(result.report)
    if verified != ARTIFACT:  # an Ethos-U build: model.tflite is Vela's, the interpreter ran the plain int8 file
        console.print(f"[green]ok[/] wrote {result.out_dir}/: {ARTIFACT} (compiled by Vela for the NPU; its command "
                      f"stream is not run here), {verified} (the int8 model TFLite Micro verified), report.json, "
                      "report.html", soft_wrap=True)
        return
    console.print(f"[green]ok[/] wrote {result.out_dir}/: model.tflite, report.json, report.html")


# --------------------------------------------------------------------------- profiles

@main.group("profiles")
def profiles_group() -> None:
    """List, show and validate device profiles (device_profiles/*.toml or your own file)."""


def _load_each(names: list[str] | tuple[str, ...]) -> tuple[list[tuple[str, Profile | None]], list[str]]:
    """Every profile that loads, None for one that does not validate; and every problem, to report at once."""
    loaded: list[tuple[str, Profile | None]] = []
    problems: list[str] = []
    for name in names:
        try:
            loaded.append((name, load_profile(name)))
        except ProfileValidationError as exc:
            problems += exc.problems
            loaded.append((name, None))
        except ProfileError as exc:
            problems.append(f"{name}: {exc.message}")
    return loaded, problems


@profiles_group.command("list")
def profiles_list() -> None:
    """One line per shipped profile."""
    loaded, problems = _load_each(available_profiles())
    render.print_profiles(render.make_console(), loaded)
    if problems:
        raise ProfileValidationError(problems)


@profiles_group.command("show")
@click.argument("name")
def profiles_show(name: str) -> None:
    """Every value of a profile with its source; assumptions flagged."""
    render.print_profile(render.make_console(), load_profile(name))


@profiles_group.command("validate")
@click.argument("files", nargs=-1, required=True)
def profiles_validate(files: tuple[str, ...]) -> None:
    """Check profile files strictly; exit 0 if all are valid, 2 with every problem otherwise."""
    loaded, problems = _load_each(files)
    console = render.make_console()
    for _, p in loaded:
        if p is not None:
            console.print(f"[green]ok[/] {escape(display_path(p.path))} ({len(p.assumptions())} assumptions)")
    if problems:
        raise ProfileValidationError(problems)


# --------------------------------------------------------------------------- check, measure, battery

@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--profile", "profiles", multiple=True, required=True,
              help="Device profile name or .toml path; repeat for several devices.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per profile.")
@click.option("--rate", default=None, callback=_check_rate,
              help="Inference rate for energy/battery, e.g. 1/s, 10/min, 3/h [default: the profile's].")
@click.option("--battery-mah", type=_BATTERY_MAH, default=None, help="Battery capacity [default: the profile's].")
@click.option("--sleep-mw", type=_SLEEP_MW, default=None,
              help="Power between inferences [default: the profile's rest state].")
@click.option("--threads", type=_THREADS, default=None, help="Interpreter threads [default: the profile's].")
@click.option("--all-ops", is_flag=True, help="List every op in the latency table.")
@click.option("--baseline", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=None,
              help="Dense int8 .tflite to compare speed with: is MODEL expected faster, the same or slower on each "
                   "profile? [default: baselines/dense_int8.tflite beside a build's model.tflite, if there]")
def check(model: Path, profiles: tuple[str, ...], as_json: bool, rate: str | None, battery_mah: float | None,
          sleep_mw: float | None, threads: int | None, all_ops: bool, baseline: Path | None) -> None:
    """Will MODEL.tflite fit each device? Flash, RAM, latency, energy, battery vs the profile's budgets.

    With a dense int8 baseline, also whether it is expected faster than dense on each device (estimated; the
    verdict does not change the exit code). Needs no TensorFlow. Exit 0 if every budget passes, 1 if one fails,
    2 for bad input.
    """
    results = [check_model(model, p, rate=rate, battery_mah=battery_mah, sleep_mw=sleep_mw, threads=threads)
               for p in profiles]
    for r in results:
        r.model = str(model)
    baseline = baseline or default_baseline(model)
    speeds = check_speed(model, baseline, profiles, threads=threads) if baseline is not None else []
    if as_json:
        documents = [r.to_dict() for r in results]
        for document, section in zip(documents, speeds, strict=False):   # speeds: one per profile, or none
            document["speed"] = section
        click.echo(json.dumps(documents, indent=2))
    else:
        console = render.make_console()
        console.width = max(console.width, 120)
        console.print(f"[bold]{escape(str(model))}[/] ({fmt.byte_count(model.stat().st_size)})")
        if len(results) > 1:
            render.print_check_matrix(console, results, all_ops=all_ops)
        else:
            render.print_check(console, results[0], all_ops=all_ops)
        for section in speeds:
            render.print_summary(console, render.speed_rows(section),
                                 f"{section['profile']}: speed vs {escape(str(baseline))}")
        build_npu = _build_npu_section(model)
        if build_npu is not None:
            render.print_summary(console, render.npu_rows(build_npu),
                                 f"the build's NPU figures (report.json beside {escape(model.name)}; "
                                 f"{escape(str(build_npu.get('accelerator')))})")
    if not all(r.fits for r in results):
        sys.exit(EXIT_BUDGET)


def _build_npu_section(model: Path) -> dict[str, Any] | None:
    """The "npu" section of the build `model` is the artifact of, when it is a Vela-compiled build's own model.tflite.

    A compiled file carries no cycle estimate (Vela's performance model ran when it compiled); the build that
    compiled it recorded one, so `check` shows it when report.json beside the file describes exactly this file.
    """
    if model.name != ARTIFACT or not is_build_dir(model.parent):
        return None
    try:
        document = load_report(model.parent)
    except EdgesparseError:
        return None
    section = document.get("npu")
    if not isinstance(section, dict) or not artifact_matches_report(document, model.read_bytes()):
        return None
    return section


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--runtime", type=click.Choice(["litert", "tflm"]), default="litert", show_default=True)
@click.option("--threads", type=_THREADS, default=1, show_default=True)
@click.option("--runs", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--warmup", type=click.IntRange(min=0), default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
def measure(model: Path, runtime: str, threads: int, runs: int, warmup: int, as_json: bool) -> None:
    """Time MODEL.tflite on this machine like benchmark_model: warm-up, then timed invokes.

    Needs only ai-edge-litert (or tflite-runtime) or tflite-micro; no TensorFlow.
    """
    m = run_measure(model, threads=threads, runs=runs, warmup=warmup, runtime=runtime)
    if as_json:
        click.echo(json.dumps(m.to_dict(), indent=2))
    else:
        render.print_measurement(render.make_console(), str(model), m)


@main.command()
@click.argument("build_dir", type=click.Path(path_type=Path))
@click.option("--profile", "profiles", multiple=True, help="Device profile(s) [default: the build's profile].")
@click.option("--rate", default=None, callback=_check_rate,
              help="Inference rate: N/s, N/min or N/h [default: the profile's].")
@click.option("--battery-mah", type=_BATTERY_MAH, default=None,
              help="Battery capacity [default: the profile's battery].")
@click.option("--sleep-mw", type=_SLEEP_MW, default=None,
              help="Power between inferences [default: the profile's rest state].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per profile.")
def battery(build_dir: Path, profiles: tuple[str, ...], rate: str | None, battery_mah: float | None,
            sleep_mw: float | None, as_json: bool) -> None:
    """Energy per inference and battery life of a build, next to its dense float and int8 baselines."""
    document = load_report(build_dir)
    # On an Ethos-U build the artifact is priced from the int8 model Vela compiled (the estimator compiles it for
    # each profile's NPU, as it does the dense baseline); the compiled file alone has no cycle estimate.
    artifact = interpreter_model_name(document)
    variants: dict[str, bytes | str | Path] = {"pruned artifact": build_dir / artifact}
    variants.update({name.replace("_", " "): build_dir / rel for name, rel in BASELINES.items()
                     if (build_dir / rel).is_file() and rel != artifact})
    results = []
    for name in profiles or (document["profile"]["path"],):
        profile = load_profile(name)  # once: every variant is priced on the same validated profile
        rows = battery_comparison(variants, profile, rate=rate, battery_mah=battery_mah, sleep_mw=sleep_mw)
        results.append({"profile": profile.name, "variants": rows})
    if as_json:
        click.echo(json.dumps(results, indent=2))
        return
    console = render.make_console()
    for result in results:
        render.print_battery(console, result)


# --------------------------------------------------------------------------- calibrate, deploy, report

@main.command()
@click.option("--profile", "profile", required=True, help="Profile to start from (name or .toml path).")
@click.option("--measurements", type=click.Path(path_type=Path), required=True,
              help="CSV with columns model_file, latency_ms[, threads]; paths relative to the CSV.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="New profile file [default: <profile>.calibrated.toml beside it].")
@click.option("--force", is_flag=True, help="Replace an existing --out file.")
@click.option("--json", "as_json", is_flag=True, help="Print the fit as JSON.")
def calibrate(profile: str, measurements: Path, out: Path | None, force: bool, as_json: bool) -> None:
    """Fit PROFILE's [latency] coefficients to your own measurements and write a new profile."""
    result = calibrate_profile(profile, measurements, out=out, force=force)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
    else:
        render.print_calibration(render.make_console(), result)


@main.command()
@click.argument("build_dir", type=click.Path(path_type=Path))
@click.option("--target", required=True,
              help="rpi | android | mcu, or a device profile name (rpi4, pixel4, nrf52840, ...).")
@click.option("--host", default=None,
              help="USER@HOST[:PATH]: push the rpi bundle over ssh, install its runtime in a venv there and run it "
                   "once.")
@click.option("--port", type=int, default=22, show_default=True, help="ssh port.")
@click.option("--identity", type=click.Path(path_type=Path), default=None,
              help="ssh private key (its contents are never printed).")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Bundle directory [default: <BUILD_DIR>-<target> beside the build].")
@click.option("--force", is_flag=True,
              help="Replace an existing bundle; deploy a build whose report.json says passed: false.")
@click.option("--sample", type=click.Path(path_type=Path), default=None,
              help="Test input to ship: .wav (keyword spotting) or .npy of one model input "
                   "[default: from the build's data].")
@click.option("--labels", type=click.Path(path_type=Path), default=None,
              help="Class names, one per line [default: from the build].")
@click.option("--profile", default=None,
              help="mcu: the profile that picks the core and sizes the tensor arena [default: the build's].")
@click.option("--runtime", type=click.Choice(["auto", "tflite-runtime", "ai-edge-litert"]), default="auto",
              show_default=True,
              help="rpi: the interpreter requirements.txt installs (auto: tflite-runtime 2.14 on Python <= 3.11, "
                   "else ai-edge-litert).")
@click.option("--remote-python", default="python3", show_default=True, help="Python on the host that creates the venv.")
@click.option("--remote-venv", default=None, help="venv on the host; an existing one is reused [default: PATH/venv].")
@click.option("--fresh-venv", is_flag=True, help="Delete and recreate the host's venv first.")
@click.option("--skip-install", is_flag=True, help="Do not run pip on the host (the venv already has the runtime).")
@click.option("--connect-timeout", type=int, default=10, show_default=True,
              help="Seconds to wait for the ssh connection.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def deploy(build_dir: Path, as_json: bool, **kwargs: Any) -> None:
    """Write a device bundle for a build; with --host, push it over ssh and run it there."""
    console = render.make_console(stderr=as_json)
    result = run_deploy(DeployOptions(build_dir=build_dir, **kwargs), progress=StageLines(console))
    bundle, remote = result.bundle, result.remote
    if as_json:
        document = {"bundle": {k: v for k, v in asdict(bundle).items() if k != "path"} | {"path": str(bundle.path)},
                    "remote": asdict(remote) if remote else None}
        click.echo(json.dumps(document, indent=2, default=str))
    else:
        render.print_deploy(console, bundle, remote)
    if remote is not None and not remote.matches_local:
        expected = bundle.expected or {}
        raise VerificationError("The device's result differs from the build machine's", where=remote.destination,
                                expected=f"label {expected.get('label')} with the same scores",
                                received=f"label {remote.result.get('label')} scores {remote.result.get('scores')}",
                                fix="Compare the interpreter versions; run ./run.sh --kernels builtin on the device")


@main.command("report")
@click.argument("build_dir", type=click.Path(path_type=Path))
def report_cmd(build_dir: Path) -> None:
    """Regenerate BUILD_DIR/report.html from BUILD_DIR/report.json alone (atomic write)."""
    path = write_report_html(build_dir)
    render.make_console().print(f"[green]ok[/] wrote {escape(str(path))} "
                                f"({fmt.byte_count(path.stat().st_size)}, self-contained)")


# --------------------------------------------------------------------------- sweep

@main.command()
@click.option("--model", type=click.Path(path_type=Path),
              help="Keras model (.keras, .h5, SavedModel). Omit for a built-in demo.")
@click.option("--data", type=click.Path(path_type=Path),
              help=".npz, <label>/ image folder or <label>/*.wav folder (as for build).")
@click.option("--demo", type=click.Choice(["digits", "kws"]), default="digits", show_default=True,
              help="Built-in demo used when --model is omitted.")
@click.option("--profile", "profiles", multiple=True, required=True,
              help="Device profile; repeat for several. Points are built for the first profile of each runtime "
                   "family.")
@click.option("--sparsities", default=None,
              help="Comma-separated target sparsities; with --granularity channel, fractions of prunable channels "
                   "removed [default: 0.5,0.7,0.8,0.9,0.95; 0.25,0.5 with channel; 0.5 with 2:4].")
@click.option("--granularity", type=click.Choice(list(GRANULARITIES)), default="auto", show_default=True,
              help="As for build, for every point.")
@click.option("--optimize", type=click.Choice(["balanced", "speed", "size"]), default="balanced", show_default=True,
              help="As for build: which sparse encodings the LiteRT policy may choose (balanced, speed, size).")
@click.option("--element-sparsity", type=_OPEN_FRACTION, default=None,
              help="As for build: with --granularity channel, element-wise pruning of what is left. [default: off]")
@click.option("--quantize", default="int8", show_default=True,
              help="Comma-separated quantization modes: int8, float16, dynamic, none.")
@click.option("--max-accuracy-drop", type=_POINTS, default=None,
              help="Pick the sparsest point within this many accuracy points of the dense model that fits every "
                   "budget, and copy it to --out.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Sweep directory: points/ (the cache), sweep.json/.csv/.html, the chosen build "
                   "[default: build/sweep-<model>].")
@click.option("--epochs", type=_POSITIVE_INT, default=8, show_default=True, help="Fine-tuning epochs per point.")
@click.option("--batch-size", type=_POSITIVE_INT, default=32, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--prune-output-layer", is_flag=True, help="Prune the output layer too (as for build).")
@click.option("--min-params", type=_STEP, default=1000, show_default=True,
              help="Leave layers with fewer prunable weights than this dense.")
@click.option("--min-agreement", type=_FRACTION, default=0.9, show_default=True,
              help="A point whose .tflite agrees with its Keras model on fewer validation inputs is not chosen.")
@click.option("--trust-model", is_flag=True,
              help="Allow Lambda layers and custom objects (runs code from the model file).")
@click.option("--mcu-compression", type=click.Choice(["off", "prune", "lut", "auto"]), default=None,
              help="As for build, for the TFLite Micro profiles' points (others build without DECODE). "
                   "[default: auto on TFLite Micro profiles]")
@click.option("--cluster", type=int, default=None, metavar="N",
              help="As for build: sparsity-preserving weight clustering before conversion, TFLite Micro points "
                   "only. [default: off]")
@click.option("--fresh", is_flag=True, help="Delete the cached points and rebuild every one.")
@click.option("--scheduler", default=None, metavar="ADDRESS|local[:N]",
              help="Build the points as tasks on a Dask cluster: local:N starts N worker processes on this machine, "
                   "an address (tcp://host:8786) uses your running cluster. Needs edgesparse[distributed]. "
                   "[default: one point after another in this process]")
def sweep(profiles: tuple[str, ...], sparsities: str | None, quantize: str, max_accuracy_drop: float | None,
          out: Path | None, fresh: bool, scheduler: str | None, **base: Any) -> None:
    """Build every sparsity x quantization point once, check it on every profile, chart the trade-off.

    An interrupted sweep resumes: rerun the same command and finished points come from the cache.
    Exit 1 when --max-accuracy-drop is given and no point qualifies.
    """
    options = pipeline_sweep.SweepOptions(base=pipeline_build.BuildOptions(**base), profiles=tuple(profiles),
                                          sparsities=sparsities or pipeline_sweep.default_sparsities(
                                              base["granularity"]), quantize=quantize,
                                          max_accuracy_drop=max_accuracy_drop, out=out, fresh=fresh,
                                          scheduler=scheduler)
    console = render.make_console()
    try:
        with SweepProgress(console) as progress:
            result = pipeline_sweep.run_sweep(options, progress=progress)
    except KeyboardInterrupt:
        raise Interrupted(f"The sweep was stopped by {interrupts.signal_name(interrupts.received() or signal.SIGINT)}",
                          where=str(out or "the sweep directory"),
                          received="an interrupt; finished points are cached, the point in progress was discarded",
                          fix="Run the same command again to resume where it stopped") from None
    doc = result.document
    render.print_sweep(console, doc)
    render.print_sweep_outcome(console, doc, str(result.out_dir))
    if result.failed_choice:
        raise BudgetExceeded("No sweep point meets --max-accuracy-drop and every budget", where=str(result.out_dir),
                             received=f"{len(doc['points'])} points on {', '.join(p['name'] for p in doc['profiles'])}",
                             fix="See sweep.html; lower the sparsities, train longer or relax the budget")

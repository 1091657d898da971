"""The `edgesparse` command line. The only module that prints or exits.

Imports of the build half (TensorFlow) happen inside commands, so `--help`
stays fast and the runtime half works without TensorFlow installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from edgesparse import __version__
from edgesparse.errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EdgesparseError


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _fail(exc: EdgesparseError) -> None:
    from rich.markup import escape

    _console(stderr=True).print(f"[bold red]error:[/] {escape(exc.message)}", soft_wrap=True)
    sys.exit(exc.exit_code)


class _Group(click.Group):
    """Turns every error into one readable line and an exit code; no tracebacks."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgesparseError as exc:
            _fail(exc)
        except KeyboardInterrupt:
            _console(stderr=True).print(
                "[bold red]interrupted:[/] stopped by Ctrl-C; no partial output was written.")
            sys.exit(EXIT_INTERRUPTED)
        except (click.exceptions.Exit, click.ClickException, click.Abort, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - last line of defence, one readable line
            _console(stderr=True).print(
                f"[bold red]internal error:[/] {type(exc).__name__}: {exc}. "
                "This is a bug in edgesparse; set EDGESPARSE_DEBUG=1 for a traceback.", soft_wrap=True)
            import os

            if os.environ.get("EDGESPARSE_DEBUG"):
                raise
            sys.exit(EXIT_INTERNAL)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgesparse")
def main() -> None:
    """Prune, quantize and verify Keras models, and check them against edge devices."""


def _split_names(ctx, param, value):
    return tuple(n.strip() for n in value.split(",") if n.strip()) if value else ()


@main.command()
@click.option("--model", type=click.Path(path_type=Path), help="Keras model: .keras, .h5 or a SavedModel directory. Omit for the built-in demo.")
@click.option("--data", type=click.Path(path_type=Path), help=".npz with x_train, y_train, x_val, y_val (integer labels), a folder of <label>/ images, or a Speech Commands folder of <label>/*.wav; see docs/data.md.")
@click.option("--profile", "profile", default="rpi4", show_default=True, help="Device profile name or path to a .toml.")
@click.option("--demo", type=click.Choice(["digits", "kws"]), default="digits", show_default=True, help="Built-in demo used when --model is omitted: digits (vision) or kws (keyword spotting).")
@click.option("--out", type=click.Path(path_type=Path), help="Output directory [default: build/<model>-<profile>].")
@click.option("--force", is_flag=True, help="Replace an existing output directory.")
@click.option("--trust-model", is_flag=True, help="Allow Lambda layers and custom objects (runs code from the model file).")
@click.option("--schedule", type=click.Choice(["polynomial", "constant"]), default="polynomial", show_default=True, help="TFMOT PolynomialDecay or ConstantSparsity.")
@click.option("--initial-sparsity", type=float, default=0.0, show_default=True)
@click.option("--final-sparsity", type=float, default=None, help="Target sparsity of pruned layers [default: 0.8; M/N with --structured].")
@click.option("--begin-step", type=int, default=0, show_default=True)
@click.option("--end-step", type=int, default=None, help="Step at which the final sparsity is reached [default: derived from --epochs and the data size].")
@click.option("--power", type=int, default=3, show_default=True, help="PolynomialDecay exponent.")
@click.option("--frequency", type=int, default=100, show_default=True, help="Steps between mask updates (capped for small data sets).")
@click.option("--structured", default=None, help="M:N structured sparsity, e.g. 2:4 (TFMOT sparsity_m_by_n).")
@click.option("--skip-layers", callback=_split_names, default="", help="Comma-separated layer names to leave dense.")
@click.option("--epochs", type=int, default=8, show_default=True, help="Fine-tuning epochs.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--quantize", type=click.Choice(["int8", "dynamic", "float16", "none"]), default="int8", show_default=True)
@click.option("--max-accuracy-drop", type=float, default=2.0, show_default=True, help="Percentage points allowed from the dense float model to the .tflite.")
@click.option("--tensorboard", type=click.Path(path_type=Path), default=None, help="Write TFMOT pruning summaries here.")
@click.option("--seed", type=int, default=0, show_default=True)
def build(**kwargs) -> None:
    """Prune, quantize, verify and check a Keras model for a device profile."""
    from edgesparse.pipeline.build import BuildOptions, build as run_build, raise_for_failures
    from edgesparse.report.document import summary_rows

    options = BuildOptions(**kwargs)
    console = _console()
    with _BuildProgress(console) as progress:
        result = run_build(options, progress=progress)
    _print_summary(console, summary_rows(result.report), f"edgesparse build -> {result.out_dir}")
    raise_for_failures(result)
    console.print(f"[green]ok[/] wrote {result.out_dir}/: model.tflite, report.json, report.html")


def _print_summary(console, rows, title: str) -> None:
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for label, value in rows:
        table.add_row(label, value)
    console.print(table)


class _BuildProgress:
    """Renders pipeline progress events: a line per stage, a bar for training and fine-tuning."""

    def __init__(self, console) -> None:
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                   TimeElapsedColumn)

        self._progress = Progress(SpinnerColumn(finished_text="[green]✓[/]"), TextColumn("{task.description}"),
                                  BarColumn(bar_width=20), MofNCompleteColumn(), TimeElapsedColumn(),
                                  TextColumn("{task.fields[info]}"), console=console, transient=False)
        self._stages: dict[str, int] = {}
        self._bars: dict[str, int] = {}

    def __enter__(self):
        self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self._progress.__exit__(*exc)

    def __call__(self, event: str, fields: dict) -> None:
        p = self._progress
        if event == "stage":
            self._stages[fields["name"]] = p.add_task(fields["description"], total=1, info="")
        elif event == "stage_done" and fields["name"] in self._stages:
            p.update(self._stages[fields["name"]], completed=1)
        elif event == "demo_data_begin":
            self._bars[event] = p.add_task(f"  generating the {fields['name']} data set with {fields['source']} "
                                           "(cached afterwards)", total=fields["clips"], info="")
        elif event == "demo_data_progress" and "demo_data_begin" in self._bars:
            p.update(self._bars["demo_data_begin"], completed=fields["done"], info="")
        elif event in ("demo_train_begin", "train_begin"):
            label = ("  training the dense demo model (cached afterwards)" if event == "demo_train_begin"
                     else "  fine-tuning with UpdatePruningStep")
            total = fields.get("epochs", 1) * (fields.get("steps_per_epoch", 1) if event == "train_begin" else 1)
            self._bars[event] = p.add_task(label, total=total, info="")
        elif event == "demo_epoch_end" and "demo_train_begin" in self._bars:
            p.update(self._bars["demo_train_begin"], advance=1,
                     info=_metrics(dict(fields, epoch=fields["epoch"] + 1)))  # demo counts from 0
        elif event == "batch_end" and "train_begin" in self._bars:
            p.update(self._bars["train_begin"], advance=1, info=_metrics(fields))
        elif event == "epoch_end" and "train_begin" in self._bars:
            p.update(self._bars["train_begin"], info=_metrics(fields))


def _metrics(fields: dict) -> str:
    parts = []
    if "epoch" in fields:
        parts.append(f"epoch {int(fields['epoch'])}")
    for key, label in (("loss", "loss"), ("accuracy", "acc"), ("val_accuracy", "val_acc"), ("sparsity", "sparsity")):
        if fields.get(key) is not None:
            parts.append(f"{label} {fields[key]:.3f}")
    return "  ".join(parts)


# --------------------------------------------------------------------------- profiles

class _ProfilesGroup(click.Group):
    """Profile errors become one message (markup-escaped: it quotes TOML) and exit 2;
    anything else goes on to main's handler."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgesparseError as exc:
            from rich.markup import escape

            _console(stderr=True).print(f"[bold red]error:[/] {escape(exc.message)}", soft_wrap=True)
            sys.exit(exc.exit_code)


@main.group("profiles", cls=_ProfilesGroup)
def profiles_group() -> None:
    """List, show and validate device profiles (device_profiles/*.toml or your own file)."""


def _size(n) -> str:
    if not isinstance(n, (int, float)) or isinstance(n, bool):
        return "-"
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor:
            return f"{n / factor:.3g} {unit}"
    return f"{n} B"


@profiles_group.command("list")
def profiles_list() -> None:
    """One line per shipped profile."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from edgesparse.profiles.profile import ProfileError, ProfileValidationError, available_profiles, load_profile

    table = Table(title="Device profiles", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("name", "class", "cpu", "clock", "RAM", "flash/storage", "runtime", "fitted",
                   "assumed"):
        table.add_column(column, justify="right" if column in ("clock", "RAM", "flash/storage") else "left",
                         no_wrap=True)
    problems: list[str] = []
    for name in available_profiles():
        try:
            p = load_profile(name)
        except ProfileValidationError as exc:
            problems += exc.problems
            table.add_row(escape(name), "[red]invalid[/]", *[""] * 7)
            continue
        except ProfileError as exc:
            problems.append(f"{name}: {exc.message}")
            continue
        d = p.table("device")
        table.add_row(
            escape(p.name), p.device_class, escape(d["cpu"]), f"{d['clock_mhz']:g} MHz", _size(d["ram_bytes"]),
            _size(d.get("flash_bytes", d.get("storage_bytes"))), f"{p.runtime}/{p.kernels}",
            "yes" if p.latency_fitted else "[yellow]no[/]", str(len(p.assumptions())))
    console = _console()
    console.width = max(console.width, 140)  # one row per profile, even in a pipe
    console.print(table)
    if problems:
        raise ProfileValidationError(problems)


@profiles_group.command("show")
@click.argument("name")
def profiles_show(name: str) -> None:
    """Every value of a profile with its source; assumptions flagged."""
    from rich.markup import escape
    from rich.table import Table

    from edgesparse.profiles.profile import SCHEMA, load_profile

    p = load_profile(name)
    console = _console()
    console.print(f"[bold]{escape(p.name)}[/]: {escape(p.raw['description'])}")
    console.print(f"file {escape(str(p.path))}\nsha256 {p.sha256}")
    assumed = set(p.assumptions())
    for table_name, spec in SCHEMA.items():
        if not table_name or table_name not in p.raw:
            continue
        table = Table(title=f"{table_name}: {spec.doc}", title_justify="left", show_lines=False)
        table.add_column("key", style="bold")
        table.add_column("value")
        table.add_column("source", overflow="fold")
        for dotted, value in p.items():
            if not dotted.startswith(table_name + "."):
                continue
            shown = f"{value} ({_size(value)})" if dotted.endswith("_bytes") else str(value)
            source = p.source(dotted) or ""
            if source.startswith("fitted: ") and not dotted.endswith(".fit_source"):
                source = "fitted (see fit_source)"
            style = "yellow" if dotted in assumed else ""
            table.add_row(dotted.split(".", 1)[1], escape(shown),
                          f"[{style}]{escape(source)}[/]" if style else escape(source))
        console.print(table)
    if not p.latency_fitted:
        console.print("[yellow]latency coefficients: not fitted yet[/]")
    console.print(f"{len(assumed)} values rest on assumptions (yellow): {', '.join(sorted(assumed)) or 'none'}",
                  soft_wrap=True)


@profiles_group.command("validate")
@click.argument("files", nargs=-1, required=True)
def profiles_validate(files: tuple[str, ...]) -> None:
    """Check profile files strictly; exit 0 if all are valid, 2 with every problem otherwise."""
    from rich.markup import escape

    from edgesparse.profiles.profile import ProfileError, ProfileValidationError, display_path, load_profile

    console = _console()
    problems: list[str] = []
    for file in files:
        try:
            p = load_profile(file)
        except ProfileValidationError as exc:
            problems += exc.problems
            continue
        except ProfileError as exc:
            problems.append(f"{file}: {exc.message}")
            continue
        console.print(f"[green]ok[/] {escape(display_path(p.path))} ({len(p.assumptions())} assumptions)")
    if problems:
        raise ProfileValidationError(problems)


# --------------------------------------------------------------------------- check

def _fmt_bytes(n) -> str:
    return "-" if n is None else f"{int(n):,} B"


def _fmt_value(value, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "B":
        return _fmt_bytes(value)
    if unit == "ms":
        return f"{value:.4g} ms"
    if unit == "mJ":
        return f"{value:.4g} mJ"
    if unit in ("h", "d"):
        return f"{value:.4g} {unit}"
    return f"{value:g} {unit}"


def _basis(text: str) -> str:
    from rich.markup import escape

    return f"[yellow]{escape(text)}[/]" if text in ("assumption", "none", "planner+assumption") else escape(text)


def _print_check(console, result, *, all_ops: bool) -> None:
    """One profile's verdict: budgets, estimates with their basis, the per-op latency table."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    unknown = [b.name for b in result.budgets if b.value is None]
    verdict = "[green]fits[/]" if result.fits else "[bold red]does NOT fit[/]"
    if result.fits and unknown:
        verdict = "[yellow]fits the budgets it can check[/] (unknown: " + escape(", ".join(unknown)) + ")"
    console.print(f"\n[bold]{escape(result.profile)}[/] ({escape(result.runtime)}): {verdict}")
    budgets = Table(title="budgets", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("budget", "limit", "value", "margin", ""):
        budgets.add_column(col, justify="right" if col in ("limit", "value", "margin") else "left")
    for b in result.budgets:
        margin = b.margin
        budgets.add_row(b.name, _fmt_value(b.limit, b.unit), _fmt_value(b.value, b.unit),
                        "-" if margin is None else _fmt_value(margin, b.unit),
                        "[yellow]unknown[/]" if b.value is None else "[green]pass[/]" if b.ok else "[bold red]FAIL[/]")
    console.print(budgets)
    est = Table(title="estimates", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("estimate", "value", "basis", "detail"):
        est.add_column(col, justify="right" if col == "value" else "left", overflow="fold")
    f, r, lat, e = result.flash, result.ram, result.latency, result.energy
    est.add_row("flash", _fmt_bytes(f.total_bytes), _basis(f.basis),
                escape(f"model {f.model_bytes:,} B + runtime code {f.runtime_code_bytes:,} B"))
    est.add_row("RAM", _fmt_bytes(r.total_bytes), _basis(r.basis),
                escape(f"planned (non-persistent) {r.planned_bytes:,} B + persistent {r.persistent_bytes:,} B"
                       + (f"; scratch {r.scratch_bytes:,} B in the plan" if r.scratch_bytes else "")))
    est.add_row("latency", _fmt_value(lat.latency_ms, "ms"), _basis(lat.basis),
                escape(f"{lat.threads} thread(s); " + (lat.fit_source or "no fit")))
    est.add_row("energy / inference", _fmt_value(e.energy_mj, "mJ"), _basis(e.basis),
                escape(f"latency x {e.active_mw} mW active" if e.active_mw else "no power figures"))
    if e.rate_per_s is not None:
        from edgesparse.estimate.latency import format_rate

        share = "-" if e.model_share is None else f"{e.model_share:.1%}"
        life = "-" if e.battery_hours is None else f"{e.battery_hours:,.1f} h ({e.battery_days:,.1f} d)"
        est.add_row("battery life", life, _basis(e.basis),
                    escape(f"{format_rate(e.rate_per_s)}, {e.battery_mah:g} mAh x {e.voltage_v:g} V, "
                           f"{e.sleep_mw} mW between inferences; inference share of the drain {share}"
                           if e.battery_mah and e.voltage_v else f"{format_rate(e.rate_per_s)}; no battery"))
    console.print(est)
    if lat.ops and lat.latency_ms is not None:
        ops = sorted(lat.ops, key=lambda o: -o.predicted_us)
        shown = ops if all_ops else ops[:12]
        table = Table(title="latency per op" + ("" if all_ops else " (slowest first)"), title_justify="left",
                      box=box.SIMPLE_HEAD)
        for col in ("#", "op", "type", "dtype", "MACs", "bytes", "pred. us", "share", "flag"):
            table.add_column(col, justify="right" if col in ("#", "MACs", "bytes", "pred. us", "share") else "left")
        for o in shown:
            table.add_row(str(o.index), o.op, o.kind, o.dtype, f"{o.macs_used:,}" + ("*" if o.macs_used != o.macs else ""),
                          f"{o.bytes_moved:,}", f"{o.predicted_us:.2f}", f"{o.share:.1%}",
                          f"[yellow]{escape(o.flag)}[/]" if o.flag else "")
        console.print(table)
        if len(ops) > len(shown):
            console.print(f"  (+{len(ops) - len(shown)} more ops; --all-ops lists every op)")
        if any(o.macs_used != o.macs for o in lat.ops):
            console.print("  * MACs the kernel really executes (sparse weights skipped)")
    for w in result.warnings:
        console.print(f"[bold yellow]warning:[/] {escape(w)}", soft_wrap=True)
    for a in result.assumptions:
        console.print(f"[yellow]assumption:[/] {escape(a)}", soft_wrap=True)


def _print_check_matrix(console, results, *, all_ops: bool) -> None:
    """Several profiles at once: profiles as columns, budgets and estimates as rows."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from edgesparse.estimate.latency import format_rate, iter_budget_keys

    table = Table(title="check: profiles x budgets and estimates", title_justify="left", box=box.SIMPLE_HEAD,
                  show_lines=False)
    table.add_column("", style="bold", no_wrap=True)
    for r in results:
        table.add_column(escape(r.profile), justify="right", overflow="fold")

    def basis(text: str) -> str:  # yellow for anything not measured or fitted on this device
        shaky = any(w in text for w in ("assumption", "transferred", "none"))
        return f"[yellow]{escape(text)}[/]" if shaky else escape(text)

    def short(value, unit: str) -> str:  # a matrix cell must stay narrow: 25.2 MiB, not 26,388,336 B
        return _size(value) if unit == "B" and value is not None else _fmt_value(value, unit)

    def row(label, cells, end_section=False):
        table.add_row(label, *cells, end_section=end_section)

    row("runtime", [escape(r.runtime) for r in results])
    def verdict(r) -> str:
        unknown = [b.name for b in r.budgets if b.value is None]
        if not r.fits:
            return "[bold red]does NOT fit[/]"
        return f"[yellow]{escape(', '.join(unknown))} unknown[/]" if unknown else "[green]fits[/]"

    row("verdict", [verdict(r) for r in results], end_section=True)
    names = [k for k in iter_budget_keys() if any(b.name == k for r in results for b in r.budgets)]
    for name in names:
        cells = []
        for r in results:
            b = next((b for b in r.budgets if b.name == name), None)
            if b is None:
                cells.append("[dim]no budget[/]")
            elif b.value is None:
                cells.append(f"? / {short(b.limit, b.unit)}\n[yellow]unknown[/]")
            else:
                verdict = "[green]pass[/]" if b.ok else "[bold red]FAIL[/]"
                cells.append(f"{short(b.value, b.unit)} / {short(b.limit, b.unit)}\n{verdict}")
        row(f"budget {name}", cells, end_section=name == names[-1])
    row("model file", [_size(r.model_size) for r in results])
    row("flash", [f"{_size(r.flash.total_bytes)}\n{basis(r.flash.basis)}" for r in results])
    row("RAM", [f"{_size(r.ram.total_bytes)}\n{basis(r.ram.basis)}" for r in results])
    row("latency", [f"{_fmt_value(r.latency.latency_ms, 'ms')}\n{basis(r.latency.basis)}" for r in results])
    row("energy / inference", [f"{_fmt_value(r.energy.energy_mj, 'mJ')}\n{basis(r.energy.basis)}" for r in results])
    row("battery life", ["-" if r.energy.battery_hours is None else
                         f"{r.energy.battery_hours:,.1f} h at {format_rate(r.energy.rate_per_s)}" for r in results])
    row("threads", [str(r.latency.threads) for r in results], end_section=True)
    row("warnings", [str(len(r.warnings)) for r in results])
    row("assumptions", [str(len(r.assumptions)) for r in results])
    console.print(table)
    if all_ops:
        for r in results:
            _print_check(console, r, all_ops=True)
        return
    for r in results:
        for w in r.warnings:
            console.print(f"[bold yellow]warning ({escape(r.profile)}):[/] {escape(w)}", soft_wrap=True)
    console.print("[dim]Assumptions and the per-op latency of each profile: --all-ops, or one --profile at a time; "
                  "--json for everything.[/]")


@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--profile", "profiles", multiple=True, required=True,
              help="Device profile name or .toml path; repeat for several devices.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list, one object per profile.")
@click.option("--rate", default=None, help="Inference rate for energy/battery, e.g. 1/s, 10/min, 3/h [default: the profile's].")
@click.option("--battery-mah", type=float, default=None, help="Battery capacity [default: the profile's].")
@click.option("--sleep-mw", type=float, default=None, help="Power between inferences [default: the profile's rest state].")
@click.option("--threads", type=int, default=None, help="Interpreter threads [default: the profile's].")
@click.option("--all-ops", is_flag=True, help="List every op in the latency table.")
def check(model: Path, profiles, as_json: bool, rate, battery_mah, sleep_mw, threads, all_ops: bool) -> None:
    """Will MODEL.tflite fit each device? Flash, RAM, latency, energy, battery vs the profile's budgets.

    Needs no TensorFlow. Exit 0 if every budget passes, 1 if one fails, 2 for bad input.
    """
    import json

    from edgesparse.errors import EXIT_BUDGET
    from edgesparse.estimate.latency import check_model, parse_rate

    if rate is not None:
        parse_rate(rate)  # bad input fails before any work
    data = None
    if not model.is_file():
        from edgesparse.errors import ModelError

        raise ModelError("Model file not found", where=str(model), expected="a .tflite file", received="no such file")
    data = model.read_bytes()
    results = [check_model(data, p, rate=rate, battery_mah=battery_mah, sleep_mw=sleep_mw, threads=threads)
               for p in profiles]
    for r in results:
        r.model = str(model)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        console = _console()
        console.width = max(console.width, 120)
        console.print(f"[bold]{model}[/] ({len(data):,} B)")
        if len(results) > 1:
            _print_check_matrix(console, results, all_ops=all_ops)
        else:
            _print_check(console, results[0], all_ops=all_ops)
    if not all(r.fits for r in results):
        sys.exit(EXIT_BUDGET)


# --------------------------------------------------------------------------- measure

@main.command()
@click.argument("model", type=click.Path(path_type=Path))
@click.option("--runtime", type=click.Choice(["litert", "tflm"]), default="litert", show_default=True)
@click.option("--threads", type=int, default=1, show_default=True)
@click.option("--runs", type=int, default=50, show_default=True)
@click.option("--warmup", type=int, default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the statistics as JSON.")
def measure(model: Path, runtime: str, threads: int, runs: int, warmup: int, as_json: bool) -> None:
    """Time MODEL.tflite on this machine like benchmark_model: warm-up, then timed invokes.

    Needs only ai-edge-litert (or tflite-runtime) or tflite-micro; no TensorFlow.
    """
    import json

    from edgesparse.runtime.measure import measure as run_measure

    m = run_measure(model, threads=threads, runs=runs, warmup=warmup, runtime=runtime)
    if as_json:
        click.echo(json.dumps(m.to_dict(), indent=2))
        return
    from rich.markup import escape

    console = _console()
    console.print(f"[bold]{escape(str(model))}[/] on {escape(m.interpreter)}, {m.threads} thread(s): "
                  f"{m.runs} runs after {m.warmup} warm-up")
    console.print(f"  median {m.median_ms:.4f} ms   p90 {m.p90_ms:.4f} ms   min {m.min_ms:.4f} ms   "
                  f"mean {m.mean_ms:.4f} ms   std {m.std_ms:.4f} ms")
    if m.arena_bytes:
        console.print(f"  TFLM arena used: {m.arena_bytes:,} B")
    for k in m.kernels:
        console.print(f"  kernels: {escape(k)}", soft_wrap=True)


# --------------------------------------------------------------------------- calibrate

@main.command()
@click.option("--profile", "profile", required=True, help="Profile to start from (name or .toml path).")
@click.option("--measurements", type=click.Path(path_type=Path), required=True,
              help="CSV with columns model_file, latency_ms[, threads]; paths relative to the CSV.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="New profile file [default: <profile>.calibrated.toml beside it].")
@click.option("--force", is_flag=True, help="Replace an existing --out file.")
@click.option("--json", "as_json", is_flag=True, help="Print the fit as JSON.")
def calibrate(profile: str, measurements: Path, out, force: bool, as_json: bool) -> None:
    """Fit PROFILE's [latency] coefficients to your own measurements and write a new profile."""
    import json

    from edgesparse.estimate.calibrate import calibrate_profile

    result = calibrate_profile(profile, measurements, out=out, force=force)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    console = _console()
    table = Table(title=f"fit of {result.profile} ({result.mode}, {result.parameters} parameter(s))",
                  title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("model_file", "measured ms", "predicted ms", "error"):
        table.add_column(col, justify="left" if col == "model_file" else "right")
    for row in result.rows:
        table.add_row(escape(row["model_file"]), f"{row['measured_ms']:.4g}", f"{row['predicted_ms']:.4g}",
                      f"{row['error']:+.1%}")
    console.print(table)
    console.print(f"median |error| {result.median_abs_error:.1%}, worst {result.worst_abs_error:.1%} "
                  "(in-sample: measure other models to see the error on unseen ones)")
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    console.print(f"[green]ok[/] wrote {escape(str(result.out))}")


@main.command()
@click.argument("build_dir", type=click.Path(path_type=Path))
@click.option("--target", required=True, help="rpi | android | mcu, or a device profile name (rpi4, pixel4, nrf52840, ...).")
@click.option("--host", default=None, help="USER@HOST[:PATH]: push the rpi bundle over ssh, install its runtime in a venv there and run it once.")
@click.option("--port", type=int, default=22, show_default=True, help="ssh port.")
@click.option("--identity", type=click.Path(path_type=Path), default=None, help="ssh private key (its contents are never printed).")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Bundle directory [default: <BUILD_DIR>-<target> beside the build].")
@click.option("--force", is_flag=True, help="Replace an existing bundle; deploy a build whose report.json says passed: false.")
@click.option("--sample", type=click.Path(path_type=Path), default=None, help="Test input to ship: .wav (keyword spotting) or .npy of one model input [default: from the build's data].")
@click.option("--labels", type=click.Path(path_type=Path), default=None, help="Class names, one per line [default: from the build].")
@click.option("--profile", default=None, help="mcu: the profile that picks the core and sizes the tensor arena [default: the build's].")
@click.option("--runtime", type=click.Choice(["auto", "tflite-runtime", "ai-edge-litert"]), default="auto", show_default=True, help="rpi: the interpreter requirements.txt installs (auto: tflite-runtime 2.14 on Python <= 3.11, else ai-edge-litert).")
@click.option("--remote-python", default="python3", show_default=True, help="Python on the host that creates the venv.")
@click.option("--remote-venv", default=None, help="venv on the host; an existing one is reused [default: PATH/venv].")
@click.option("--fresh-venv", is_flag=True, help="Delete and recreate the host's venv first.")
@click.option("--skip-install", is_flag=True, help="Do not run pip on the host (the venv already has the runtime).")
@click.option("--connect-timeout", type=int, default=10, show_default=True, help="Seconds to wait for the ssh connection.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def deploy(build_dir: Path, as_json: bool, **kwargs) -> None:
    """Write a device bundle for a build; with --host, push it over ssh and run it there."""
    import json as _json
    from dataclasses import asdict

    from edgesparse.deploy.bundle import DeployOptions, deploy as run_deploy
    from edgesparse.errors import VerificationError

    console = _console(stderr=as_json)

    def progress(event: str, fields: dict) -> None:
        if event == "stage":
            console.print(f"[dim]-[/] {fields['description']}")

    result = run_deploy(DeployOptions(build_dir=build_dir, **kwargs), progress=progress)
    bundle, remote = result.bundle, result.remote
    if as_json:
        document = {"bundle": {k: v for k, v in asdict(bundle).items() if k != "path"} | {"path": str(bundle.path)},
                    "remote": asdict(remote) if remote else None}
        click.echo(_json.dumps(document, indent=2, default=str))
    else:
        expected = bundle.expected or {}
        rows = [("bundle", str(bundle.path)), ("files", str(len(bundle.files))),
                ("test input", str(bundle.test_input)),
                ("here", f"{expected.get('label')}  score {expected.get('score', 0):.3f}"
                         + (f"  latency {expected['latency_ms']:.3f} ms" if "latency_ms" in expected else "")
                         + f"  [{expected.get('runtime') or expected.get('interpreter')}]")]
        if bundle.mcu is not None:
            m = bundle.mcu
            rows.append(("tensor arena", f"{bundle.arena_bytes:,} B"))
            rows.append(("model flash", f"{m.flash_bytes:,} B ({m.core}, align {m.alignment})"
                         if m.flash_bytes is not None else f"not compiled: {m.skipped}"))
        if remote is not None:
            r = remote.result
            rows.append(("device", f"{remote.destination}:{remote.path} (venv {remote.venv}, {remote.transfer})"))
            rows.append(("on device", f"{r.get('label')}  score {r.get('score', 0):.3f}  latency "
                                      f"{r.get('latency_ms', 0):.3f} ms  [{r.get('runtime')}, {r.get('kernels')}]"))
            rows.append(("same as here", "yes" if remote.matches_local else "NO"))
        for note in bundle.notes:
            rows.append(("note", note))
        from rich.markup import escape

        _print_summary(console, [(label, escape(value)) for label, value in rows],
                       f"edgesparse deploy --target {bundle.target}")
    if remote is not None and not remote.matches_local:
        raise VerificationError("The device's result differs from the build machine's", where=remote.destination,
                                expected=f"label {bundle.expected.get('label')} with the same scores",
                                received=f"label {remote.result.get('label')} scores {remote.result.get('scores')}",
                                fix="Compare the interpreter versions; run ./run.sh --kernels builtin on the device")



# --------------------------------------------------------------------------- report

@main.command("report")
@click.argument("build_dir", type=click.Path(path_type=Path))
def report_cmd(build_dir: Path) -> None:
    """Regenerate BUILD_DIR/report.html from BUILD_DIR/report.json alone (atomic write)."""
    from rich.markup import escape

    from edgesparse.report.html import write_report_html

    path = write_report_html(build_dir)
    _console().print(f"[green]ok[/] wrote {escape(str(path))} ({path.stat().st_size:,} B, self-contained)")


# --------------------------------------------------------------------------- sweep

@main.command()
@click.option("--model", type=click.Path(path_type=Path), help="Keras model (.keras, .h5, SavedModel). Omit for a built-in demo.")
@click.option("--data", type=click.Path(path_type=Path), help=".npz, <label>/ image folder or <label>/*.wav folder (as for build).")
@click.option("--demo", type=click.Choice(["digits", "kws"]), default="digits", show_default=True, help="Built-in demo used when --model is omitted.")
@click.option("--profile", "profiles", multiple=True, required=True, help="Device profile; repeat for several. Points are built for the first profile of each runtime family.")
@click.option("--sparsities", default="0.5,0.7,0.8,0.9,0.95", show_default=True, help="Comma-separated target sparsities.")
@click.option("--quantize", default="int8", show_default=True, help="Comma-separated quantization modes: int8, float16, dynamic, none.")
@click.option("--max-accuracy-drop", type=float, default=None, help="Pick the sparsest point within this many accuracy points of the dense model that fits every budget, and copy it to --out.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Sweep directory: points/ (the cache), sweep.json/.csv/.html, the chosen build [default: build/sweep-<model>].")
@click.option("--epochs", type=int, default=8, show_default=True, help="Fine-tuning epochs per point.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--trust-model", is_flag=True, help="Allow Lambda layers and custom objects (runs code from the model file).")
@click.option("--fresh", is_flag=True, help="Delete the cached points and rebuild every one.")
def sweep(profiles, sparsities, quantize, max_accuracy_drop, out, fresh, **base) -> None:
    """Build every sparsity x quantization point once, check it on every profile, chart the trade-off.

    An interrupted sweep resumes: rerun the same command and finished points come from the cache.
    Exit 1 when --max-accuracy-drop is given and no point qualifies.
    """
    from rich.markup import escape

    from edgesparse.errors import BudgetExceeded, Interrupted
    from edgesparse.pipeline.build import BuildOptions
    from edgesparse.pipeline.sweep import SweepOptions, run_sweep

    options = SweepOptions(base=BuildOptions(**base), profiles=tuple(profiles), sparsities=sparsities,
                           quantize=quantize, max_accuracy_drop=max_accuracy_drop, out=out, fresh=fresh)
    console = _console()
    try:
        with _SweepProgress(console) as progress:
            result = run_sweep(options, progress=progress)
    except KeyboardInterrupt:
        raise Interrupted("The sweep was stopped by Ctrl-C", where=str(out or "the sweep directory"),
                          received="an interrupt; finished points are cached, the point in progress was discarded",
                          fix="Run the same command again to resume where it stopped") from None
    _print_sweep(console, result.document)
    doc = result.document
    console.print(f"[green]ok[/] {doc['built']} point(s) built, {doc['cached']} from the cache; wrote "
                  f"{escape(str(result.out_dir))}/sweep.json, sweep.csv, sweep.html")
    choice = doc.get("choice")
    if choice:
        style = "green" if choice["point"] else "bold red"
        console.print(f"[{style}]{'chosen' if choice['point'] else 'no choice'}:[/] {escape(choice['explanation'])}",
                      soft_wrap=True)
        for r in choice["rejected"]:
            console.print(f"  [dim]rejected {escape(r['point'])}: {escape('; '.join(r['why']))}[/]", soft_wrap=True)
    if result.failed_choice:
        raise BudgetExceeded("No sweep point meets --max-accuracy-drop and every budget", where=str(result.out_dir),
                             received=f"{len(doc['points'])} points on {', '.join(p['name'] for p in doc['profiles'])}",
                             fix="See sweep.html; lower the sparsities, train longer or relax the budget")


def _print_sweep(console, doc: dict) -> None:
    """Points as rows; per profile PASS/FAIL with the failed budgets and the latency."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    names = [p["name"] for p in doc["profiles"]]
    chosen = (doc.get("choice") or {}).get("point")
    table = Table(title="sweep", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("point", "sparsity", ".tflite acc", "drop", "model"):
        table.add_column(col, justify="left" if col == "point" else "right")
    for name in names:
        table.add_column(name, justify="left")
    for p in doc["points"]:
        first = next((b for b in p["builds"].values() if not b.get("error")), {})
        cells = []
        for name in names:
            c = p["checks"].get(name) or {}
            if c.get("error"):
                cells.append("[dim]n/a[/]")
                continue
            failed = [b["name"] for b in c["budgets"] if not b["ok"] and b["value"] is not None]
            unknown = [b["name"] for b in c["budgets"] if b["value"] is None]
            lat = "-" if c.get("latency_ms") is None else f"{c['latency_ms']:.3g} ms"
            verdict = ("[bold red]FAIL[/] " + escape(",".join(failed)) if failed else
                       "[yellow]unknown[/] " + escape(",".join(unknown)) if unknown else "[green]pass[/]")
            cells.append(f"{verdict} {lat}")
        mark = " [bold green]*[/]" if p["label"] == chosen else ""
        table.add_row(escape(p["label"]) + mark,
                      "-" if not first else f"{first['achieved_sparsity']:.1%}",
                      "-" if not first else f"{first['accuracy']:.2%}",
                      "-" if not first else f"{first['drop_points']:+.2f}",
                      "-" if not first else f"{first['artifact_bytes'] / 1024:,.1f} KiB", *cells)
    console.print(table)


class _SweepProgress(_BuildProgress):
    """Points as an overall bar; the current point's stage and fine-tuning bar below it."""

    def __init__(self, console) -> None:
        super().__init__(console)
        self._points = self._stage = self._train = None

    def __call__(self, event: str, fields: dict) -> None:
        from rich.markup import escape

        p = self._progress
        if event == "sweep_begin":
            self._points = p.add_task(f"sweep: {fields['points']} point(s) x {len(fields['families'])} runtime "
                                      f"famil{'y' if len(fields['families']) == 1 else 'ies'}", total=fields["jobs"],
                                      info=f"{fields['cached']} cached")
        elif event == "point_begin":
            label = f"  {fields['sparsity']:g}/{fields['quantize']} for {fields['profile']}"
            self._stage = p.add_task(escape(label), total=None, info="")
        elif event == "prepare_begin" and self._stage is not None:
            p.update(self._stage, info="loading the dense model and data (once)")
        elif event == "stage" and self._stage is not None:
            p.update(self._stage, info=escape(fields["description"]))
        elif event == "train_begin":
            total = fields.get("epochs", 1) * fields.get("steps_per_epoch", 1)
            self._train = p.add_task("    fine-tuning", total=total, info="")
        elif event == "batch_end" and self._train is not None:
            p.update(self._train, advance=1, info=_metrics(fields))
        elif event == "stage_done" and fields.get("name") == "prune" and self._train is not None:
            p.remove_task(self._train)
            self._train = None
        elif event in ("point_done", "point_skipped"):
            if self._stage is not None:
                p.remove_task(self._stage)
                self._stage = None
            if self._points is not None:
                p.update(self._points, advance=1)
            label = f"{fields['sparsity']:g}/{fields['quantize']} for {fields['profile']}"
            if event == "point_skipped":
                p.console.print(f"  [yellow]skipped[/] {escape(label)}: {escape(fields['reason'])}", soft_wrap=True)
            else:
                how = "[dim]cached[/]" if fields["cached"] else f"{fields['seconds']:.1f} s"
                acc = "" if fields.get("accuracy") is None else f"acc {fields['accuracy']:.2%} (drop {fields['drop_points']:+.2f})"
                size = "" if not fields.get("artifact_bytes") else f"{fields['artifact_bytes'] / 1024:,.1f} KiB"
                p.console.print(f"  [green]✓[/] {escape(label)}  {acc}  {size}  {how}")

@main.command()
@click.argument("build_dir", type=click.Path(path_type=Path))
@click.option("--profile", "profiles", multiple=True, help="Device profile(s) [default: the build's profile].")
@click.option("--rate", default=None, help="Inference rate: N/s, N/min or N/h [default: the profile's].")
@click.option("--battery-mah", type=float, default=None, help="Battery capacity [default: the profile's battery].")
@click.option("--sleep-mw", type=float, default=None, help="Power between inferences [default: the profile's rest state].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per profile.")
def battery(build_dir: Path, profiles, rate, battery_mah, sleep_mw, as_json) -> None:
    """Energy per inference and battery life of a build, next to its dense float and int8 baselines."""
    import json as _json

    from edgesparse.estimate.latency import battery_comparison
    from edgesparse.pipeline.build import ARTIFACT_NAME, BASELINES
    from edgesparse.report.document import load_report

    document = load_report(build_dir)
    variants = {"pruned artifact": build_dir / ARTIFACT_NAME}
    variants.update({name.replace("_", " "): build_dir / rel for name, rel in BASELINES.items()
                     if (build_dir / rel).is_file()})
    from edgesparse.profiles.profile import load_profile

    results = []
    for name in profiles or (document["profile"]["path"],):
        profile = load_profile(name)  # once: every variant is priced on the same validated profile
        rows = battery_comparison(variants, profile, rate=rate, battery_mah=battery_mah, sleep_mw=sleep_mw)
        results.append({"profile": profile.name, "variants": rows})
    if as_json:
        click.echo(_json.dumps(results, indent=2))
        return
    console = _console()
    for result in results:
        _print_battery(console, result)


def _print_battery(console, result: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    rows = result["variants"]
    first = rows[0]
    table = Table(title=f"battery on {result['profile']}: {first['battery_mah']} mAh battery, "
                        f"{first['rate'] or 'no rate'}, rest {first['sleep_mw']} mW", title_justify="left")
    for column in ("build", "size", "latency", "energy / inference", "avg power", "battery life", "inference share"):
        table.add_column(column, justify="left" if column == "build" else "right")

    def fmt(value, pattern, missing="unknown"):
        return missing if value is None else pattern.format(value)

    for row in rows:
        life = "unknown" if row["battery_hours"] is None else (
            f"{row['battery_hours']:,.1f} h" if row["battery_hours"] < 48 else f"{row['battery_days']:,.1f} days")
        table.add_row(row["variant"], f"{row['model_bytes'] / 1024:,.1f} KiB", fmt(row["latency_ms"], "{:.4g} ms"),
                      fmt(row["energy_mj"], "{:.4g} mJ"), fmt(row["average_power_mw"], "{:.4g} mW"), life,
                      fmt(row["model_share"], "{:.1%}"))
    console.print(table)
    base = next((r for r in rows if r["variant"] == "dense float32"), None)
    if base and first["battery_hours"] and base["battery_hours"]:
        gain = first["battery_hours"] / base["battery_hours"] - 1.0
        console.print(f"pruned artifact vs dense float32: {gain:+.1%} battery life, "
                      f"{fmt(first['energy_mj'] and base['energy_mj'] and first['energy_mj'] / base['energy_mj'], '{:.2f}x')} "
                      "the energy per inference")
    int8 = next((r for r in rows if r["variant"] == "dense int8"), None)
    if int8 and int8["model_bytes"] == first["model_bytes"]:
        console.print("the artifact is the dense int8 flatbuffer (this runtime cannot run sparse weights), "
                      "so pruning brings no energy gain here; int8 quantization does")
    basis = {r["latency_basis"] for r in rows} | {r["energy_basis"] for r in rows}
    notes = sorted({a for r in rows for a in r["assumptions"] if a.startswith(("latency", "energy"))})
    if basis - {"fitted"} or notes:
        console.print("[yellow]estimate basis:[/] " + escape(", ".join(sorted(b for b in basis if b))))
        for note in notes:
            console.print(f"  [yellow]assumption:[/] {escape(note)}", soft_wrap=True)


def main_entry() -> None:  # pragma: no cover - console script alias
    main()


if __name__ == "__main__":  # pragma: no cover
    main()

"""The `edgesparse` command line. The only module that prints or exits.

Imports of the build half (TensorFlow) happen inside commands, so `--help`
stays fast and the runtime half works without TensorFlow installed.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import __version__
from .errors import EXIT_INTERNAL, EXIT_INTERRUPTED, EdgesparseError


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def _fail(exc: EdgesparseError) -> None:
    _console(stderr=True).print(f"[bold red]error:[/] {exc.message}", soft_wrap=True)
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
@click.option("--data", type=click.Path(path_type=Path), help=".npz with x_train, y_train, x_val, y_val (integer labels); see docs/data.md.")
@click.option("--profile", "profile", default="rpi4", show_default=True, help="Device profile name or path to a .toml.")
@click.option("--out", type=click.Path(path_type=Path), help="Output directory [default: build/<model>-<profile>].")
@click.option("--force", is_flag=True, help="Replace an existing output directory.")
@click.option("--trust-model", is_flag=True, help="Allow Lambda layers and custom objects (runs code from the model file).")
@click.option("--schedule", type=click.Choice(["polynomial", "constant"]), default="polynomial", show_default=True, help="TFMOT PolynomialDecay or ConstantSparsity.")
@click.option("--initial-sparsity", type=float, default=0.0, show_default=True)
@click.option("--final-sparsity", type=float, default=0.8, show_default=True)
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
    from .pipeline import BuildOptions, build as run_build, raise_for_failures
    from .report import summary_rows

    options = BuildOptions(**kwargs)
    console = _console()
    with _BuildProgress(console) as progress:
        result = run_build(options, progress=progress)
    _print_summary(console, summary_rows(result.report), f"edgesparse build -> {result.out_dir}")
    raise_for_failures(result)
    console.print(f"[green]ok[/] wrote {result.out_dir}/model.tflite and report.json")


def _print_summary(console, rows, title: str) -> None:
    from rich.table import Table

    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for label, value in rows:
        table.add_row(label, value)
    console.print(table)


class _BuildProgress:
    """Renders pipeline progress events: one line per stage, a bar for fine-tuning."""

    def __init__(self, console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                  console=console, transient=False)
        self._stage = None
        self._train = None
        self._demo = None

    def __enter__(self):
        self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self._progress.__exit__(*exc)

    def __call__(self, event: str, fields: dict) -> None:
        p = self._progress
        if event == "stage":
            if self._stage is not None:
                p.update(self._stage, completed=1)
            self._stage = p.add_task(fields["description"], total=1, info="")
        elif event == "demo_train_begin":
            self._demo = p.add_task("  training the dense demo model (cached after this)",
                                    total=fields.get("epochs"), info="")
        elif event == "demo_epoch_end" and self._demo is not None:
            p.update(self._demo, advance=1, info=_metrics(fields))
        elif event == "train_begin":
            total = fields.get("epochs", 1) * fields.get("steps_per_epoch", 1)
            self._train = p.add_task("  fine-tuning with UpdatePruningStep", total=total, info="")
        elif event == "batch_end" and self._train is not None:
            p.update(self._train, advance=1, info=_metrics(fields))
        elif event == "epoch_end" and self._train is not None:
            p.update(self._train, info=_metrics(fields))


def _metrics(fields: dict) -> str:
    parts = []
    if "epoch" in fields:
        parts.append(f"epoch {int(fields['epoch']) + 1}")
    for key, label in (("loss", "loss"), ("accuracy", "acc"), ("val_accuracy", "val_acc"), ("sparsity", "sparsity")):
        if fields.get(key) is not None:
            parts.append(f"{label} {fields[key]:.3f}")
    return "  ".join(parts)


def main_entry() -> None:  # pragma: no cover - console script alias
    main()


if __name__ == "__main__":  # pragma: no cover
    main()

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


def main_entry() -> None:  # pragma: no cover - console script alias
    main()


if __name__ == "__main__":  # pragma: no cover
    main()

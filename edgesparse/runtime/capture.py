"""Capture what C++ code writes to the process's stderr (file descriptor 2), and quote it in errors.

Why: LiteRT, TFLite Micro and the TFLite converter report through C++ logging
(MicroPrintf, absl, INFO lines) that bypasses `sys.stderr`. Library code never
prints, and those messages are the real reason for a failure, so they are
captured and put into the error instead (`first_lines`), next to the
interpreter's version (`dist_version`). TFLM's arena report is read the same way.

Raises nothing of its own; an `OSError` from `os.dup` would mean fd 2 is closed.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version

__all__ = ["Captured", "captured_stderr", "dist_version", "first_lines"]


class Captured:
    """What was written to fd 2 inside the `with` block; `text` is filled when the block exits."""

    text = ""


@contextlib.contextmanager
def captured_stderr() -> Iterator[Captured]:
    """Redirect fd 2 to a temporary file for the block; its text is in the yielded object afterwards."""
    box = Captured()
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield box
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            box.text = tmp.read().decode("utf-8", "replace")


def first_lines(text: str, n: int = 3) -> str:
    """The first `n` meaningful lines an interpreter printed (its INFO chatter left out), joined by '; '."""
    lines = [ln.strip() for ln in text.splitlines()
             if ln.strip() and not ln.startswith("INFO:") and "XNNPACK delegate for CPU" not in ln]
    return "; ".join(lines[:n])


def dist_version(dist: str) -> str:
    """Installed version of a distribution ("2.3.0"), "unknown" when it is not installed."""
    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"

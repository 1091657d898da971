"""Atomic file and directory writes.

A failed or interrupted build must leave no half-written artifact and must not
clobber an earlier build, so every output goes to a temporary sibling first and
is renamed into place only when complete (rename is atomic on one filesystem).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from edgesparse.errors import OutputExistsError


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same directory, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path | str, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def check_output_free(out_dir: Path | str, force: bool) -> None:
    """Fail early, before any work, when `out_dir` holds an earlier build."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not force:
        if out_dir.is_dir() and not any(out_dir.iterdir()):
            return
        raise OutputExistsError(
            "The output directory already exists",
            where=str(out_dir),
            expected="a new or empty directory",
            received="an existing directory with an earlier build" if out_dir.is_dir() else "an existing file",
            fix="Pass --force to replace it, or choose another --out",
        )


@contextlib.contextmanager
def staged_output_dir(out_dir: Path | str, force: bool) -> Iterator[Path]:
    """Yield a temporary directory beside `out_dir`; publish it only on success.

    On success the staged directory replaces `out_dir` (the earlier build is
    moved aside first and deleted only after the new one is in place). On any
    exception, Ctrl-C included, the staged directory is deleted and `out_dir`
    is untouched.
    """
    out_dir = Path(out_dir)
    check_output_free(out_dir, force)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging-", dir=out_dir.parent))
    try:
        yield staging
        check_output_free(out_dir, force)
        if out_dir.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
            os.rmdir(old)
            os.replace(out_dir, old)
            os.replace(staging, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)

"""Atomic file and directory writes, and the checks on an output location before any work starts.

A failed or interrupted build must leave no half-written artifact and must not
clobber an earlier build, so every output goes to a temporary sibling first and
is renamed into place only when complete (rename is atomic on one filesystem).
`--force` replaces only what the caller recognises as its own earlier output
(`ours`): a user's unrelated files at `--out` are never deleted.
Outputs follow the user's umask, like any other tool's (temp files are 0600
and temp directories 0700 by default, which no teammate, CI uploader or
service could read).

Raises `OutputExistsError` (an existing output that needs --force or is not
ours) and `OutputLocationError` (an output location that cannot be written,
and write errors such as a full disk), both exit code 2.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from edgesparse.errors import OutputExistsError, OutputLocationError
from edgesparse.interrupts import deferred, raise_if_interrupted, received

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "check_output_free",
    "check_writable_location",
    "staged_output_dir",
    "umask",
    "write_error",
]

Recogniser = Callable[[Path], bool]


def umask() -> int:
    """The process umask (read without changing it where /proc allows)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_error(path: Path, exc: OSError) -> OutputLocationError:
    """The exit-2 error for an OS write failure: the path and the OS reason (a full disk, a read-only mount)."""
    return OutputLocationError("Could not write the output", where=str(path),
                               expected="a writable location with free space",
                               received=exc.strerror or str(exc),
                               fix="Free some space or choose another --out; nothing earlier was changed")


def atomic_write_bytes(path: Path | str, data: bytes) -> None:
    """Write `data` to `path` via a temp file in the same directory, then rename; mode follows the umask."""
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    except OSError as exc:
        raise write_error(path, exc) from None
    finally:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def atomic_write_text(path: Path | str, text: str) -> None:
    """`atomic_write_bytes` for UTF-8 text."""
    atomic_write_bytes(path, text.encode("utf-8"))


def check_writable_location(out: Path | str) -> None:
    """Fail before any work when `out` could not be created and written.

    Walks up to the nearest existing ancestor: it must be a directory, and a
    directory can really be created in it (this catches read-only file systems,
    which `os.access` does not).
    """
    out = Path(os.path.abspath(out))  # normalised, so `..` is recognised as a parent of the current directory
    cwd = Path(os.path.abspath(Path.cwd()))
    if out == cwd or out in cwd.parents:
        raise OutputExistsError("The output location is the current directory or one of its parents",
                                where=str(out), expected="a new directory for the output",
                                received=str(out), fix="Choose another --out, e.g. build/<name>")
    ancestor = out.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputLocationError("The output location is below a regular file", where=str(out),
                                  expected="a path whose parents are directories",
                                  received=f"{ancestor} is a file", fix="Choose another --out")
    try:
        probe = tempfile.mkdtemp(prefix=".edgesparse-probe-", dir=ancestor)
        os.rmdir(probe)
    except OSError as exc:
        raise OutputLocationError("The output location is not writable", where=str(out),
                                  expected=f"a directory you can write in ({ancestor})",
                                  received=exc.strerror or str(exc),
                                  fix="Choose another --out, or fix the permissions") from None


def check_output_free(out_dir: Path | str, force: bool, *, ours: Recogniser,
                      kind: str = "edgesparse build") -> None:
    """Fail early, before any work, unless `out_dir` is new, empty, or (with --force) our own earlier output."""
    out_dir = Path(out_dir)
    check_writable_location(out_dir)
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    if out_dir.is_dir() and not out_dir.is_symlink() and not any(out_dir.iterdir()):
        return
    if out_dir.is_dir() and not out_dir.is_symlink() and ours(out_dir):
        if force:
            return
        raise OutputExistsError("The output directory already exists", where=str(out_dir),
                                expected="a new or empty directory", received=f"an earlier {kind}",
                                fix="Pass --force to replace it, or choose another --out")
    what = "a directory that is not an earlier " + kind if out_dir.is_dir() else "an existing file"
    raise OutputExistsError("The output location holds something edgesparse did not write", where=str(out_dir),
                            expected=f"a new or empty directory, or an earlier {kind} (with --force)",
                            received=what, fix="Choose another --out; --force never replaces your own files")


def _make_staging(out_dir: Path) -> Path:
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.staging-", dir=out_dir.parent))
    os.chmod(staging, 0o777 & ~umask())
    return staging


def _publish(staging: Path, out_dir: Path) -> None:
    """Swap the staged directory into place; a signal before the swap keeps the earlier output."""
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.old-", dir=out_dir.parent))
    os.rmdir(old)
    os.replace(out_dir, old)
    if received() is not None:  # arrived while swapping: put the earlier output back
        os.replace(old, out_dir)
        return
    os.replace(staging, out_dir)
    shutil.rmtree(old)


@contextlib.contextmanager
def staged_output_dir(out_dir: Path | str, force: bool, *, ours: Recogniser,
                      kind: str = "edgesparse build") -> Iterator[Path]:
    """Yield a temporary directory beside `out_dir`; publish it only on success.

    On success the staged directory replaces `out_dir` (the earlier output is
    moved aside first and deleted only after the new one is in place). On any
    exception or signal the staged directory is deleted and `out_dir` is untouched.
    """
    out_dir = Path(out_dir)
    check_output_free(out_dir, force, ours=ours, kind=kind)
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_error(out_dir.parent, exc) from None
    with deferred():
        staging = _make_staging(out_dir)
    try:
        yield staging
        raise_if_interrupted()
        check_output_free(out_dir, force, ours=ours, kind=kind)
        with deferred():
            if received() is None:
                try:
                    _publish(staging, out_dir)
                except OSError as exc:
                    raise write_error(out_dir, exc) from None
    finally:
        with deferred():
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

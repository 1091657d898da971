"""Run interpreter work in a child process, so a crash or a hang on a user's file becomes a clear error.

Why: TFLite Micro verifies nothing, and a file that passes every check
(`tflite.validate`, LiteRT's loader) can still make native code segfault,
abort, divide by zero or spin; in-process that is exit 139 with no message,
or a command that never returns. Each new batch of fuzzed files found a crash
class no check covered yet, so the checks are heuristics and this is the
guarantee: `run_isolated(work, *args)` runs `work(*args, progress)` in a
child and gives back its return value or its error.

How: on Linux the child is an `os.fork()` (about 10 ms: numpy, LiteRT and
TFLM are already imported in the parent); elsewhere (macOS: Accelerate is not
fork-safe) a spawned interpreter (about 1 s). Results come back as
length-prefixed pickles over a pipe (`multiprocessing` connections):
`("progress", stage)` any number of times, then `("ok", value)`,
`("error", class, fields)` or `("internal", type, traceback)`. Each progress
message restarts the idle deadline, so a long but live measurement is never
killed and a hang is reported with the stage it hung in. The child ignores
SIGINT and SIGTERM (the parent decides: Ctrl-C kills and reaps the child, then
re-raises), gets no core dumps, and has its data memory capped (RLIMIT_DATA:
private writable memory; an address-space cap would also count the large
PROT_NONE reservations native allocators make, and crash them), so an
allocation bomb is a MemoryError and not the OOM killer on a Raspberry Pi.
Its fds 1 and 2 (TFLM's MicroPrintf, LiteRT's logging) go to a file whose
tail is quoted when it crashes.

Raises (in the parent): the child's `EdgesparseError`, rebuilt with its class
(so its exit code) and fields; `ModelError` when the child crashes on a signal,
stops responding, or exits without a result (exit 2: the file is bad input);
`IsolatedInternalError` (exit 3, with the child's traceback) when the child
raised anything else, a bug in edgesparse.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import gc
import multiprocessing
import os
import re
import resource
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import IO, Any

from edgesparse import errors
from edgesparse.errors import EdgesparseError, ModelError

__all__ = ["DEFAULT_IDLE_TIMEOUT", "DEFAULT_MEMORY_LIMIT", "IsolatedInternalError", "run_isolated"]

DEFAULT_IDLE_TIMEOUT = 60.0      # seconds without progress before the child counts as hung
DEFAULT_MEMORY_LIMIT = 4 << 30   # data memory the child may add to what the parent already holds
_FIELDS = ("where", "expected", "received", "fix")
_PROGRESS_EVERY = 0.25           # seconds between progress messages of the same stage
_TAIL_BYTES = 4096
_PR_SET_PDEATHSIG = 1


class IsolatedInternalError(RuntimeError):
    """The child raised something that is not an EdgesparseError: a bug in edgesparse (exit 3)."""


def run_isolated(work: Callable[..., Any], *args: Any, label: str, where: str | None,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT, memory_limit: int | None = DEFAULT_MEMORY_LIMIT,
                 method: str | None = None) -> Any:
    """`work(*args, progress)` in a child process; its return value, or its error raised here.

    `label` names the interpreter in messages ("TFLite Micro"); `where` is the
    file. `progress(stage)` restarts the `idle_timeout` clock. `method` is
    "fork" (the default on Linux) or "spawn" (the default elsewhere; `work`
    and `args` must then be picklable).
    """
    method = method or ("fork" if sys.platform.startswith("linux") else "spawn")
    with tempfile.NamedTemporaryFile(prefix="edgesparse-child-", suffix=".log") as log:
        child = _Child.start(method, work, args, log, memory_limit)
        try:
            outcome, stage = _collect(child, idle_timeout)
            if outcome is None:
                raise ModelError(f"{label} stopped responding on this file", where=where,
                                 expected=f"progress at least every {idle_timeout:g} s",
                                 received=f"no progress for {idle_timeout:g} s while {stage}",
                                 fix=f"The interpreter loops on this model, or one step takes longer than "
                                     f"{idle_timeout:g} s here. If the file was copied or edited it may be corrupt: "
                                     "re-export it with the TFLite converter; otherwise try the other runtime")
            status = child.wait()
        finally:  # a hang, Ctrl-C, SIGTERM: never leave the child behind (a no-op once it was reaped)
            child.kill()
        tail = _tail(log)
    return _result(outcome, status, stage, tail, label, where)


def _result(outcome: tuple[Any, ...], status: int, stage: str, tail: list[str], label: str,
            where: str | None) -> Any:
    """The child's value, or the error its outcome and exit status mean."""
    kind = outcome[0]
    if kind == "ok":
        return outcome[1]
    if kind == "error":
        raise _rebuild(outcome[1], outcome[2])
    if kind == "internal":
        raise IsolatedInternalError(f"{outcome[1]} (in the {label} child process, whose traceback follows)\n"
                                    f"{outcome[2]}")
    printed = f"; it printed: {' | '.join(tail)}" if tail else ""
    if status < 0:
        number = -status
        name = _signal_name(number)
        memory = " (out of memory)" if number == signal.SIGKILL or "bad_alloc" in printed else ""
        raise ModelError(f"{label} crashed on this file (signal {number}, {name}){memory}", where=where,
                         expected="a model the interpreter can load and run",
                         received=f"{name} while {stage}{printed}",
                         fix=f"Either the file is corrupt (re-export it with the TFLite converter) or {label} cannot "
                             "handle one of its ops, types or sizes (`edgesparse check` lists them): try the other "
                             "runtime, and report it with the file if it should run")
    raise ModelError(f"{label} exited unexpectedly on this file (status {status})", where=where,
                     expected="a model the interpreter can load and run", received=f"while {stage}{printed}",
                     fix="If the file was copied or edited it may be corrupt: re-export it with the TFLite converter")


def _collect(child: _Child, idle_timeout: float) -> tuple[tuple[Any, ...] | None, str]:
    """(the child's final message, or None when it went quiet for idle_timeout; the last stage it named)."""
    stage = "starting"
    deadline = time.monotonic() + idle_timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None, stage
        if not child.conn.poll(remaining):
            continue
        try:
            message = child.conn.recv()
        except (EOFError, OSError):  # the child died before (or while) sending a result
            return ("died",), stage
        except Exception as exc:  # a result this process cannot unpickle
            return ("internal", f"cannot read the child's result ({type(exc).__name__}: {exc})", ""), stage
        if message[0] == "progress":
            stage = message[1]
            deadline = time.monotonic() + idle_timeout
            continue
        return message, stage


def _rebuild(cls: Any, fields: dict[str, Any]) -> EdgesparseError:
    """The child's EdgesparseError as the same class with the same fields (its exit code kept)."""
    if not (isinstance(cls, type) and issubclass(cls, EdgesparseError)):
        cls = getattr(errors, str(cls), ModelError)
    what = fields.pop("what")
    try:
        return cls(what, **fields)
    except TypeError:  # a subclass with its own constructor: keep the message and the exit code
        error = ModelError(what, **fields)
        error.exit_code = cls.exit_code
        return error


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _tail(log: IO[bytes]) -> list[str]:
    """The last lines the child printed (C++ logs), its INFO chatter left out."""
    log.seek(0, os.SEEK_END)
    log.seek(max(0, log.tell() - _TAIL_BYTES))
    text = log.read().decode("utf-8", "replace")
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("INFO:")]
    return [re.sub(r"\s+", " ", ln)[:200] for ln in lines[-3:]]


# --------------------------------------------------------------------------- the child


class _Child:
    """A started child: the connection its messages arrive on, and how to reap or kill it."""

    def __init__(self, conn: Connection, pid: int | None = None, process: Any = None) -> None:
        self.conn, self.pid, self.process = conn, pid, process

    @classmethod
    def start(cls, method: str, work: Callable[..., Any], args: tuple[Any, ...], log: IO[bytes],
              memory_limit: int | None) -> _Child:
        if method == "spawn":
            context = multiprocessing.get_context("spawn")
            reader, writer = context.Pipe(duplex=False)
            process = context.Process(target=_spawned, args=(writer, work, args, log.name), daemon=True)
            process.start()
            writer.close()
            return cls(reader, process=process)
        if method != "fork":
            raise ValueError(f"unknown start method {method!r}")
        reader, writer = multiprocessing.Pipe(duplex=False)
        limit = None if memory_limit is None else _data_bytes() + memory_limit
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        # The child must never collect the parent's garbage: finalizers of objects a library (TensorFlow
        # after a conversion) left behind touch native state the child does not have, and segfault.
        gc.freeze()
        try:
            pid = os.fork()
        except BaseException:
            gc.unfreeze()
            raise
        if pid == 0:  # the child: never returns
            try:
                reader.close()
                _prepare_child(log.fileno(), limit)
                _serve(writer, work, args, limit)
            finally:
                os._exit(0)
        gc.unfreeze()
        writer.close()
        return cls(reader, pid=pid)

    def wait(self) -> int:
        """Reap the child: its exit code, or minus the signal that killed it."""
        self.conn.close()
        if self.process is not None:
            self.process.join()
            code = int(self.process.exitcode)
            self.process = None
            return code
        assert self.pid is not None
        _, status = os.waitpid(self.pid, 0)
        self.pid = None
        return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)

    def kill(self) -> None:
        """SIGKILL and reap, unless it was reaped already (idempotent)."""
        with contextlib.suppress(OSError):
            self.conn.close()
        if self.process is not None:
            with contextlib.suppress(Exception):
                self.process.kill()
                self.process.join()
            self.process = None
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(self.pid, 0)
            self.pid = None


def _data_bytes() -> int:
    """The private writable memory this process maps now (VmData: a parent with TensorFlow holds gigabytes)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmData:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _prepare_child(log_fd: int, limit: int | None) -> None:
    """Signals to the parent, output to the log, no core dumps, capped memory, die with the parent."""
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    faulthandler.disable()  # a crash is the parent's to report, not a Python traceback in the log
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if limit is not None:
        hard = resource.getrlimit(resource.RLIMIT_DATA)[1]
        resource.setrlimit(resource.RLIMIT_DATA, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def _spawned(conn: Connection, work: Callable[..., Any], args: tuple[Any, ...], log_path: str) -> None:
    """The spawned child's entry point (off Linux, where RLIMIT_DATA is not enforced: no memory cap)."""
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND)
    _prepare_child(log_fd, None)
    _serve(conn, work, args, None)


def _serve(conn: Connection, work: Callable[..., Any], args: tuple[Any, ...], limit: int | None) -> None:
    """Run the work and send its one outcome; every failure is reported, none escapes."""
    last_kind, last_time = [""], [0.0]

    def progress(stage: str) -> None:
        """Send the stage when it is a new kind of stage ("invoke #/#"), else at most every 0.25 s."""
        kind = re.sub(r"\d+", "#", str(stage))
        now = time.monotonic()
        if kind != last_kind[0] or now - last_time[0] >= _PROGRESS_EVERY:
            conn.send(("progress", str(stage)))
            last_kind[0], last_time[0] = kind, now

    try:
        outcome: tuple[Any, ...] = ("ok", work(*args, progress))
    except EdgesparseError as exc:
        outcome = ("error", type(exc), {"what": exc.what, **{k: getattr(exc, k) for k in _FIELDS}})
    except MemoryError:
        outcome = ("error", "ModelError", {
            "what": "The model needs more memory than edgesparse allows an interpreter", "where": None,
            "expected": f"at most {limit} bytes of data memory" if limit else "less memory",
            "received": "MemoryError", "fix": "The file is probably corrupt (a tensor shape far too large): "
                                              "re-export it with the TFLite converter"})
    except BaseException as exc:  # reported to the parent, never swallowed
        outcome = ("internal", f"{type(exc).__name__}: {exc}"[:500], traceback.format_exc()[-3000:])
    try:
        conn.send(outcome)
    except Exception as exc:  # an unpicklable value or error field
        if outcome[0] == "error":
            fields = dict(outcome[2], received=None if outcome[2]["received"] is None else str(outcome[2]["received"]))
            conn.send(("error", outcome[1], fields))
        else:
            conn.send(("internal", type(exc).__name__, f"cannot send the child's result: {exc}"))

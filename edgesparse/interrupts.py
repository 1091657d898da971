"""SIGINT and SIGTERM: stop at any moment, never publish after a signal, exit 130 or 143.

Why a module of its own: Python turns SIGINT into KeyboardInterrupt at the next
bytecode, and if that bytecode is in a `__del__`, a weakref callback or library
code that catches BaseException, the interrupt is swallowed ("Exception
ignored in ...") and the build runs on. So the handler also records the signal,
and every stage boundary (progress events, the publish step) re-raises it:
once a signal arrived, nothing is ever published. SIGTERM (a CI timeout,
`systemctl stop`) is handled the same way instead of killing the process with
a half-written staging directory.

Raises `SignalInterrupt`, a KeyboardInterrupt, so `except Exception` blocks
never swallow it.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any

__all__ = [
    "SignalInterrupt",
    "deferred",
    "exit_code",
    "install_handlers",
    "raise_if_interrupted",
    "received",
    "reset",
    "signal_name",
]

_HANDLED = (signal.SIGINT, signal.SIGTERM)
_state: dict[str, object] = {"signum": None, "deferring": 0}


class SignalInterrupt(KeyboardInterrupt):
    """The process received SIGINT or SIGTERM; `signum` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal_name(signum))
        self.signum = signum


def signal_name(signum: int) -> str:
    """'SIGINT', 'SIGTERM', ... for messages."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_code(signum: int | None) -> int:
    """The shell convention: 128 + the signal number (130 for SIGINT, 143 for SIGTERM)."""
    return 128 + int(signum or signal.SIGINT)


def received() -> int | None:
    """The first signal received since `reset()`, or None."""
    value = _state["signum"]
    return value if isinstance(value, int) else None


def reset() -> None:
    """Forget an earlier signal (a new command in the same process, tests)."""
    _state["signum"] = None


def _handler(signum: int, frame: FrameType | None) -> None:
    if _state["signum"] is None:
        _state["signum"] = signum
    if not _state["deferring"]:
        raise SignalInterrupt(received() or signum)


def _quiet_unraisable(unraisable: Any) -> None:
    """A SignalInterrupt raised inside a finalizer, weakref callback or at-fork hook is not lost (the handler
    recorded it; the next stage boundary raises it again), so Python's "Exception ignored" traceback for it
    is noise on the user's terminal. Every other unraisable exception is reported as before."""
    if isinstance(unraisable.exc_value, SignalInterrupt):
        return
    _state["previous_unraisablehook"](unraisable)  # type: ignore[operator]


def install_handlers() -> None:
    """Route SIGINT and SIGTERM to `SignalInterrupt` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in _HANDLED:
        signal.signal(signum, _handler)
    if sys.unraisablehook is not _quiet_unraisable:
        _state["previous_unraisablehook"] = sys.unraisablehook
        sys.unraisablehook = _quiet_unraisable


def raise_if_interrupted() -> None:
    """Raise `SignalInterrupt` if a signal arrived, even one some library swallowed."""
    signum = received()
    if signum is not None and not _state["deferring"]:
        raise SignalInterrupt(signum)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Hold signals while a short critical section (publish, clean-up) runs, then raise them.

    A second Ctrl-C during clean-up must not leave a staging directory behind.
    """
    _state["deferring"] = int(_state["deferring"]) + 1  # type: ignore[call-overload]
    try:
        yield
    finally:
        _state["deferring"] = int(_state["deferring"]) - 1  # type: ignore[call-overload]
    raise_if_interrupted()

"""A signal that lands inside a finalizer is not printed as a traceback, and is still raised afterwards."""

from __future__ import annotations

import subprocess
import sys

CODE = """
import gc, os, signal, weakref
from edgesparse import interrupts

interrupts.install_handlers()

class Thing:
    pass

def callback(_ref):
    os.kill(os.getpid(), signal.SIGINT)   # the signal arrives while Python runs a weakref callback
    for _ in range(1000):
        pass

thing = Thing()
ref = weakref.ref(thing, callback)
del thing
gc.collect()
try:
    interrupts.raise_if_interrupted()     # the next stage boundary
except interrupts.SignalInterrupt as exc:
    print("raised", exc.signum)
"""


def test_a_signal_inside_a_weakref_callback_is_quiet_and_raised_at_the_next_boundary():
    proc = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "raised 2" in proc.stdout
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr


def test_other_unraisable_exceptions_are_still_reported():
    code = ("from edgesparse import interrupts\ninterrupts.install_handlers()\n"
            "class Bad:\n    def __del__(self):\n        raise ValueError('boom')\n"
            "b = Bad()\ndel b\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "ValueError: boom" in proc.stderr

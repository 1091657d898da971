"""A Dask worker preload for the sweep's failure tests: `dask worker ADDRESS --preload support.dask_faults`.

Dask calls its `dask_setup` once in the worker process at start (importing the module changes nothing, so a test
can read its constants); from then on that process's builds fail the way real ones do, by the point's sparsity:
at RAISE_AT the build raises a plain RuntimeError (not an EdgesparseError: a bug, or a library's error), at
DIE_AT it kills its own worker process with SIGKILL (what the kernel's OOM killer does). Any other point builds
normally. Only our build is replaced; the worker, the scheduler and Dask's retry rules are the real ones.

The scheduler may start the two points in either order, and a death fails every task the worker holds, the queued
one too. So the dying build first leaves its thread (`secede`, letting the worker run the other point) and waits
until the scheduler has recorded an erred task: the death then fails only its own point, whatever the order.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from edgesparse.pipeline import build as pipeline_build

__all__ = ["DIE_AT", "RAISE_AT", "RAISED", "dask_setup"]

RAISE_AT = 0.5
DIE_AT = 0.9
RAISED = "injected failure in the build of this point"
WAIT_FOR_THE_RAISED_POINT_S = 120.0


def _scheduler_has_an_erred_task() -> bool:
    """Asked of the scheduler itself, so the raised point's error is on record before this worker dies."""
    from distributed import get_client

    states = get_client().run_on_scheduler(
        lambda dask_scheduler: [task.state for task in dask_scheduler.tasks.values()])
    return "erred" in states


def _die_after_the_raised_point() -> None:
    from distributed import secede

    secede()
    deadline = time.monotonic() + WAIT_FOR_THE_RAISED_POINT_S
    while not _scheduler_has_an_erred_task() and time.monotonic() < deadline:
        time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGKILL)


def dask_setup(worker: Any) -> None:
    """Dask's preload hook: replace this worker process's build with one that fails at RAISE_AT and DIE_AT."""
    real_build = pipeline_build.build

    def faulty_build(options: Any, *args: Any, **kwargs: Any) -> Any:
        if options.final_sparsity == RAISE_AT:
            raise RuntimeError(RAISED)
        if options.final_sparsity == DIE_AT:
            _die_after_the_raised_point()
        return real_build(options, *args, **kwargs)

    pipeline_build.build = faulty_build

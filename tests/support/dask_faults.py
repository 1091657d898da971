"""A Dask worker preload for the sweep's failure tests: `dask worker ADDRESS --preload support.dask_faults`.

Dask calls its `dask_setup` once in the worker process at start (importing the module changes nothing, so a test
can read its constants); from then on that process's builds fail the way real ones do, by the point's sparsity:
at RAISE_AT the build raises a plain RuntimeError (not an EdgesparseError: a bug, or a library's error), at
DIE_AT it kills its own worker process with SIGKILL (what the kernel's OOM killer does). Any other point builds
normally. Only our build is replaced; the worker, the scheduler and Dask's retry rules are the real ones.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from edgesparse.pipeline import build as pipeline_build

__all__ = ["DIE_AT", "RAISE_AT", "RAISED", "dask_setup"]

RAISE_AT = 0.5
DIE_AT = 0.9
RAISED = "injected failure in the build of this point"


def dask_setup(worker: Any) -> None:
    """Dask's preload hook: replace this worker process's build with one that fails at RAISE_AT and DIE_AT."""
    real_build = pipeline_build.build

    def faulty_build(options: Any, *args: Any, **kwargs: Any) -> Any:
        if options.final_sparsity == RAISE_AT:
            raise RuntimeError(RAISED)
        if options.final_sparsity == DIE_AT:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_build(options, *args, **kwargs)

    pipeline_build.build = faulty_build

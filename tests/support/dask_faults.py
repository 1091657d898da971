"""A Dask worker preload for the sweep's failure tests: `dask worker ADDRESS --preload support.dask_faults`.

Imported once by the worker process at start, it makes that process's builds fail the way real ones do, by the
point's sparsity: at RAISE_AT the build raises a plain RuntimeError (not an EdgesparseError: a bug, or a library's
error), at DIE_AT it kills its own worker process with SIGKILL (what the kernel's OOM killer does). Any other point
builds normally. Only our build is replaced; the worker, the scheduler and Dask's retry rules are the real ones.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from edgesparse.pipeline import build as pipeline_build

__all__ = ["DIE_AT", "RAISE_AT", "RAISED"]

RAISE_AT = 0.5
DIE_AT = 0.9
RAISED = "injected failure in the build of this point"

_real_build = pipeline_build.build


def _faulty_build(options: Any, *args: Any, **kwargs: Any) -> Any:
    if options.final_sparsity == RAISE_AT:
        raise RuntimeError(RAISED)
    if options.final_sparsity == DIE_AT:
        os.kill(os.getpid(), signal.SIGKILL)
    return _real_build(options, *args, **kwargs)


pipeline_build.build = _faulty_build

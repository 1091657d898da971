"""`make bench`: run every benchmark and write docs/benchmarks.md.

Each benchmark script exposes `run() -> str` returning its Markdown section;
the sections are written in one go so the file always reflects one run.
"""

from __future__ import annotations

import datetime as _dt
import importlib.util
import platform
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from edgesparse.fsutil import atomic_write_text  # noqa: E402

__all__ = ["BENCHMARKS", "main"]

BENCHMARKS = ["build_demo.py", "estimation.py", "decode_compression.py", "channel_pruning.py"]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), HERE / name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # registered before it runs, as an import would: dataclasses look it up
    spec.loader.exec_module(module)
    return module


def main() -> int:
    sections = []
    for name in BENCHMARKS:
        if not (HERE / name).is_file():
            continue
        print(f"== {name}", flush=True)
        section = _load(name).run()
        print(section, flush=True)
        sections.append(section)
    header = (
        "# Benchmarks\n\n"
        f"Written by `make bench` on {_dt.date.today().isoformat()} "
        f"({platform.machine()}, {platform.python_version()}, "
        f"{_cpu_count()} CPU cores). All figures in one file come from one run.\n\n"
    )
    atomic_write_text(REPO / "docs" / "benchmarks.md", header + "\n\n".join(sections) + "\n")
    return 0


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


if __name__ == "__main__":
    sys.exit(main())

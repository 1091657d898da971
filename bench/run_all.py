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

BENCHMARKS = ["build_demo.py", "estimation.py", "decode_compression.py", "channel_pruning.py", "npu.py", "scale.py"]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name.removesuffix(".py"), HERE / name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # registered before it runs, as an import would: dataclasses look it up
    spec.loader.exec_module(module)
    return module


def _stamp() -> str:
    return (f"{_dt.date.today().isoformat()}, {platform.machine()}, Python {platform.python_version()}, "
            f"{_cpu_count()} CPU cores")


def _sections(text: str) -> list[str]:
    """The '## ' sections of docs/benchmarks.md, each with its heading (the file's own header dropped)."""
    parts = text.split("\n## ")
    return ["## " + part.rstrip() for part in parts[1:]]


def main(argv: list[str] | None = None) -> int:
    """`make bench` runs every benchmark; `python bench/run_all.py NAME ...` reruns only those sections.

    Each section is one run of its benchmark (its ratios are measured side by side in that run) and says
    when it ran; a partial run replaces its own sections and keeps the others as they were.
    """
    names = [n if n.endswith(".py") else f"{n}.py" for n in (sys.argv[1:] if argv is None else argv)]
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    target = REPO / "docs" / "benchmarks.md"
    kept = _sections(target.read_text()) if names and target.is_file() else []
    fresh = {}
    for name in names or BENCHMARKS:
        if not (HERE / name).is_file():
            continue
        print(f"== {name}", flush=True)
        section = _load(name).run().strip()
        heading, _, body = section.partition("\n")
        fresh[heading] = f"{heading}\n\n_Run {_stamp()}._\n{body}"
        print(fresh[heading], flush=True)
    sections = [fresh.pop(s.partition("\n")[0], s) for s in kept] + list(fresh.values())
    header = ("# Benchmarks\n\n"
              "Written by `make bench` (every section) or `python bench/run_all.py NAME ...` (those sections). Each "
              "section comes from one run of its benchmark and says when it ran; ratios are always measured side "
              "by side in that run.\n\n")
    atomic_write_text(target, header + "\n\n".join(sections) + "\n")
    return 0


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


if __name__ == "__main__":
    sys.exit(main())

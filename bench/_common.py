"""Helpers shared by the benchmark scripts (run as `python bench/NAME.py` or through bench/run_all.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

__all__ = ["build_or_reuse", "reusable_report"]

REPO = Path(__file__).resolve().parent.parent


def reusable_report(out: Path, wanted: dict[str, Any], files: Iterable[str], section: str) -> dict[str, Any] | None:
    """The build's report.json when it was made with these options, has `files` and its `section`; else None."""
    if not all((out / f).is_file() for f in ("report.json", *files)):
        return None
    try:
        report = json.loads((out / "report.json").read_text())
    except (OSError, ValueError):
        return None
    options = report.get("options") or {}
    same = all(options.get(k) == v for k, v in wanted.items())
    return report if same and report.get(section) else None


def build_or_reuse(out: Path, args: list[str], reusable: Callable[[], dict[str, Any] | None]
                   ) -> tuple[dict[str, Any], float | None]:
    """(report, build seconds): `edgesparse build ARGS --out OUT` unless `reusable()` already gives a report
    (seconds None); the build's own output goes to stderr so a benchmark's section stays alone on stdout.

    Exit 1 (built, a gate failed) still counts as built: the report says which gate."""
    report = reusable()
    if report is not None:
        print(f"reusing {out} (built {report.get('created_utc')})", file=sys.stderr, flush=True)
        return report, None
    cmd = [sys.executable, "-m", "edgesparse", "build", *args, "--out", str(out)]
    if out.exists():
        cmd.append("--force")
    print("$", " ".join(cmd), file=sys.stderr, flush=True)
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO, stdout=sys.stderr, check=False)
    seconds = time.perf_counter() - started
    report = reusable()
    if done.returncode not in (0, 1) or report is None:
        raise SystemExit(f"edgesparse build failed (exit {done.returncode}): {out}")
    return report, seconds

"""Helpers shared by the benchmark scripts (run as `python bench/NAME.py` or through bench/run_all.py)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["reusable_report"]


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

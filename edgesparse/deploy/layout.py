"""What every bundle shares: the `Bundle` record, the demo templates under demos/, and small writers.

Why its own module: the three target writers (rpi, android, mcu), the ssh push
and the bundle dispatcher all use these, and none of them should import
another target's module to get them.

Raises `DeployError` (the templates are missing) and `EdgesparseError` (a
template left a placeholder unfilled: a bug, exit 2 with the placeholder named).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgesparse.deploy.source import BuildInfo, DeployError
from edgesparse.errors import EdgesparseError
from edgesparse.fsutil import atomic_write_text

if TYPE_CHECKING:
    from edgesparse.deploy.mcu import McuCompile

__all__ = [
    "DEMOS_DIR",
    "PACKAGE_DIR",
    "Bundle",
    "demos_dir",
    "device_dir_name",
    "fill_template",
    "slug",
    "template",
    "write_json",
]

PACKAGE_DIR = Path(__file__).resolve().parents[1]
# demos/ lives at the repository's top level (DESIGN.md); see demos_dir() for installed wheels.
DEMOS_DIR = PACKAGE_DIR.parent / "demos"


@dataclass
class Bundle:
    """A written bundle: where, for which target, its files, and what its test input gives here."""

    path: Path
    target: str
    kind: str                            # "kws" | "vision"
    files: list[str]
    test_input: str | None
    expected: dict[str, Any] | None      # what the app printed here for the test input
    mcu: McuCompile | None = None
    arena_bytes: int | None = None
    notes: list[str] = field(default_factory=list)


def demos_dir() -> Path:
    """demos/ of a source checkout; in a wheel, the same files mapped to the package `edgesparse._demos`."""
    for candidate in (DEMOS_DIR, PACKAGE_DIR / "_demos"):
        if (candidate / "rpi").is_dir():
            return candidate
    raise DeployError("The demo app templates are missing", where=str(DEMOS_DIR),
                      expected="demos/rpi, demos/mcu, demos/android beside the edgesparse package",
                      received="no such directory",
                      fix="Run edgesparse from a source checkout (pip install -e .), or reinstall it")


def template(*parts: str) -> str:
    """The text of a demo template, e.g. template("rpi", "run.sh")."""
    return demos_dir().joinpath(*parts).read_text("utf-8")


def fill_template(text: str, values: dict[str, Any]) -> str:
    """Replace @KEY@ placeholders; a placeholder left over is a bug in the template."""
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    left = re.findall(r"@[A-Z_]+@", text)
    if left:
        raise EdgesparseError("A demo template has unfilled placeholders", received=", ".join(sorted(set(left))))
    return text


def write_json(path: Path, document: dict[str, Any]) -> None:
    """A bundle's JSON file (expected.json, config.json, bundle.json), atomically, indented."""
    atomic_write_text(path, json.dumps(document, indent=2) + "\n")


def slug(text: str) -> str:
    """A file-name-safe form of a model name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", text).strip("-") or "model"


def device_dir_name(info: BuildInfo) -> str:
    """The bundle's directory name on a device (~/edgesparse-<model>) unless --host names one."""
    return f"edgesparse-{slug(info.name)}"

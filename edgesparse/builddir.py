"""The build directory's contract: what `edgesparse build` writes, and how every reader checks it.

One owner for the file names, report.json reading and writing, the artifact's
sha256 check, and the sample/labels files that let `deploy` pick a test input
without regenerating the data set. Readers (deploy, sweep, report, battery)
use these names and functions, never string literals of their own.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from edgesparse.errors import EdgesparseError, ModelError
from edgesparse.fsutil import atomic_write_text

__all__ = [
    "ARTIFACT",
    "BASELINES",
    "LABELS",
    "PRUNED_MODEL",
    "REPORT_HTML",
    "REPORT_JSON",
    "SAMPLE",
    "artifact_matches_report",
    "is_build_dir",
    "load_report",
    "read_verified_artifact",
    "write_report",
]

ARTIFACT = "model.tflite"
PRUNED_MODEL = "pruned_model.keras"
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"
# A few held-out inputs and their labels (npz: x, y), so deploy can pick a test input.
SAMPLE = "sample.npz"
# One class name a line, in output order.
LABELS = "labels.txt"
# The dense references the artifact is compared against (sizes, battery gain from pruning).
BASELINES = {"dense_float32": "baselines/dense_float32.tflite", "dense_int8": "baselines/dense_int8.tflite"}


def write_report(out_dir: Path, document: dict[str, Any]) -> Path:
    """Write report.json atomically."""
    path = Path(out_dir) / REPORT_JSON
    atomic_write_text(path, json.dumps(document, indent=2, sort_keys=False) + "\n")
    return path


def load_report(build_dir: Path) -> dict[str, Any]:
    """Read a build's report.json; a missing or unreadable one is bad input, not a bug."""
    path = Path(build_dir) / REPORT_JSON
    if not path.is_file():
        raise EdgesparseError("No report.json in the build directory", where=str(build_dir),
                              expected="a directory written by `edgesparse build`", received="no report.json")
    try:
        document = json.loads(path.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EdgesparseError("report.json is not valid JSON", where=str(path),
                              expected="the report written by `edgesparse build`", received=str(exc)) from None
    if not isinstance(document, dict):
        raise EdgesparseError("report.json is not an edgesparse report", where=str(path),
                              expected="a JSON object", received=type(document).__name__)
    return document


def artifact_matches_report(report: dict[str, Any], artifact: bytes) -> bool:
    """True when the artifact's sha256 is the one report.json records (or none is recorded)."""
    recorded = ((report.get("files") or {}).get(ARTIFACT) or {}).get("sha256")
    return not recorded or recorded == hashlib.sha256(artifact).hexdigest()


def read_verified_artifact(build_dir: Path, report: dict[str, Any]) -> bytes:
    """The build's model.tflite, refused when it is not the file report.json describes."""
    path = Path(build_dir) / ARTIFACT
    if not path.is_file():
        raise ModelError(f"No {ARTIFACT} in the build directory", where=str(build_dir),
                         expected=f"{ARTIFACT} and {REPORT_JSON} from `edgesparse build`", received=f"no {ARTIFACT}")
    data = path.read_bytes()
    if not artifact_matches_report(report, data):
        recorded = report["files"][ARTIFACT]["sha256"]
        raise ModelError(f"{ARTIFACT} is not the file {REPORT_JSON} describes", where=str(path),
                         expected=f"sha256 {recorded}", received=f"sha256 {hashlib.sha256(data).hexdigest()}",
                         fix="Rebuild with `edgesparse build`, or restore the original model.tflite")
    return data


def is_build_dir(path: Path) -> bool:
    """An earlier edgesparse build: report.json naming our tool, and model.tflite beside it.

    `--force` may replace only such a directory; anything else at --out is the user's.
    """
    path = Path(path)
    if not (path.is_dir() and (path / REPORT_JSON).is_file() and (path / ARTIFACT).is_file()):
        return False
    try:
        document = json.loads((path / REPORT_JSON).read_text("utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    return isinstance(document, dict) and "schema_version" in document

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
    "REPORT_SECTIONS",
    "artifact_matches_report",
    "check_report_shape",
    "interpreter_model_name",
    "is_build_dir",
    "load_report",
    "read_interpreter_model",
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
# pruned_int8: on TFLite Micro builds whose model.tflite is DECODE-compressed, the same model before compression;
# on Arm Ethos-U builds, whose model.tflite is Vela's compilation, the plain int8 model Vela compiled (the file the
# build verified in TFLite Micro: `interpreter_model_name`).
BASELINES = {"dense_float32": "baselines/dense_float32.tflite", "dense_int8": "baselines/dense_int8.tflite",
             "pruned_int8": "baselines/pruned_int8.tflite"}


# The JSON type of each top-level section of report.json, as `edgesparse build` writes it.
REPORT_SECTIONS: dict[str, type | tuple[type, ...]] = {
    "schema_version": int, "tool": dict, "versions": dict, "created_utc": str, "options": dict, "profile": dict,
    "model": dict, "data": dict, "pruning": dict, "sparsity": dict, "conversion": dict, "sizes": dict,
    "accuracy": dict, "verification": dict, "check": dict, "passed": bool, "failures": list, "warnings": list,
    "timings_s": dict,
    "files": dict, "compression": dict, "speed": dict, "channels": dict, "npu": dict, "distribute": dict,
}


def check_report_shape(document: Any, where: str) -> dict[str, Any]:
    """A report.json read from disk is input: its sections must have the types this version writes."""
    if not isinstance(document, dict) or "schema_version" not in document:
        raise EdgesparseError("Not an edgesparse report", where=where,
                              expected="the JSON object `edgesparse build` writes (with schema_version)",
                              received=type(document).__name__ if not isinstance(document, dict) else
                              "an object without schema_version", fix="Rebuild with `edgesparse build`")
    wrong = [f"{key} is {type(document[key]).__name__}" for key, kind in REPORT_SECTIONS.items()
             if document.get(key) is not None and not isinstance(document[key], kind)]
    if wrong:
        raise EdgesparseError("report.json has fields of the wrong type", where=where,
                              expected="the types `edgesparse build` writes (sections are objects)",
                              received="; ".join(wrong[:5]),
                              fix="Rebuild with `edgesparse build`, or restore the original report.json")
    return document


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
    return check_report_shape(document, str(path))


def artifact_matches_report(report: dict[str, Any], artifact: bytes, name: str = ARTIFACT) -> bool:
    """True when the file's sha256 is the one report.json records for `name` (or none is recorded)."""
    recorded = ((report.get("files") or {}).get(name) or {}).get("sha256")
    return not recorded or recorded == hashlib.sha256(artifact).hexdigest()


def read_verified_artifact(build_dir: Path, report: dict[str, Any], name: str = ARTIFACT) -> bytes:
    """The build's model.tflite (or another file it records), refused when it is not the file report.json
    describes."""
    path = Path(build_dir) / name
    if not path.is_file():
        expected = (f"{ARTIFACT} and {REPORT_JSON} from `edgesparse build`" if name == ARTIFACT
                    else f"the plain int8 model {REPORT_JSON} says the build verified")
        raise ModelError(f"No {name} in the build directory", where=str(build_dir), expected=expected,
                         received=f"no {name}", fix=None if name == ARTIFACT else "Rebuild with `edgesparse build`")
    data = path.read_bytes()
    if not artifact_matches_report(report, data, name):
        recorded = report["files"][name]["sha256"]
        raise ModelError(f"{name} is not the file {REPORT_JSON} describes", where=str(path),
                         expected=f"sha256 {recorded}", received=f"sha256 {hashlib.sha256(data).hexdigest()}",
                         fix=f"Rebuild with `edgesparse build`, or restore the original {name}")
    return data


def interpreter_model_name(report: dict[str, Any]) -> str:
    """The build's file an interpreter on this machine runs: model.tflite, or what report.json's verification names.

    On an Ethos-U build model.tflite holds Vela's NPU command stream, which neither TFLite Micro nor LiteRT can
    run here; the build verified the plain int8 model Vela compiled (BASELINES["pruned_int8"]) and says so in
    `verification.model_file`.
    """
    name = (report.get("verification") or {}).get("model_file") or ARTIFACT
    if name != ARTIFACT and name not in BASELINES.values():
        raise EdgesparseError("report.json names an unknown verified file", where="verification.model_file",
                              expected=f"{ARTIFACT} or one of {', '.join(BASELINES.values())}", received=repr(name),
                              fix="Rebuild with `edgesparse build`, or restore the original report.json")
    return str(name)


def read_interpreter_model(build_dir: Path, report: dict[str, Any]) -> tuple[str, bytes]:
    """(name, bytes) of `interpreter_model_name`, refused when it is missing or not the file report.json records."""
    name = interpreter_model_name(report)
    return name, read_verified_artifact(build_dir, report, name)


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

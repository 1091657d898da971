"""report.json: everything needed to trust and reproduce a build.

The JSON carries `schema_version`, the tool and library versions, every option,
the profile and its sha256, per-layer sparsity and policy, sizes raw and
gzipped, accuracies and the device check. Scripts read these keys, so renaming
one is a schema change (bump SCHEMA_VERSION).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import gzip
import hashlib
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from edgesparse import __version__
from edgesparse.fsutil import atomic_write_text

SCHEMA_VERSION = 1
_LIBRARIES = ("tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert",
              "tflite-micro", "tflite-runtime", "numpy")


def library_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in _LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def gzip_size(data: bytes) -> int:
    """Bytes after gzip -9 with a fixed mtime: what an OTA update would carry."""
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def size_entry(data: bytes | None) -> tuple[int | None, int | None]:
    return (len(data), gzip_size(data)) if data is not None else (None, None)


def _plain(value: Any) -> Any:
    """Dataclasses, tuples, numpy scalars and paths -> JSON-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not f.name.startswith("_") and f.name not in ("model",)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy scalars and arrays
        return value.tolist()
    return value


def size_breakdowns(conversion) -> dict[str, dict[str, int] | None]:
    """Weight values / sparse indices / graph overhead of each build: where pruning saved bytes."""
    from edgesparse.tflite.graph import load_graph

    return {name: load_graph(data).size.as_dict() if data else None
            for name, data in (("dense_float32", conversion.dense_float32),
                               ("dense_int8", conversion.dense_int8), ("artifact", conversion.artifact))}


def build_report(*, options, profile, model_info, dataset, policies, pruned, conversion,
                 verification, accuracies, drop_points, check, failures, timings) -> dict[str, Any]:
    f32, f32_gz = size_entry(conversion.dense_float32)
    i8, i8_gz = size_entry(conversion.dense_int8)
    art, art_gz = size_entry(conversion.artifact)
    layers = _plain(pruned.layers)
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "edgesparse", "version": __version__},
        "versions": library_versions(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "options": options,
        "profile": {"name": profile.name, "path": str(profile.path), "sha256": profile.sha256,
                    "class": profile.device_class, "runtime": profile.runtime,
                    "assumptions": {key: profile.source(key) for key in profile.assumptions()}},
        "model": _plain(model_info),
        "data": {"source": dataset.source, "n_train": int(len(dataset.x_train)),
                 "n_val": int(len(dataset.x_val)), "num_classes": int(dataset.num_classes)},
        "pruning": {"end_step": int(pruned.end_step),
                    "schedule": pruned.schedule.as_dict() if pruned.schedule is not None else None,
                    "policy": _plain(policies)},
        "sparsity": {"overall": float(pruned.overall_sparsity), "layers": layers},
        "conversion": {"quantize": options["quantize"], "has_densify": bool(conversion.has_densify),
                       "tensors": _plain(conversion.tensors), "notes": list(conversion.notes)},
        "sizes": {
            "dense_float32_bytes": f32, "dense_float32_gzip_bytes": f32_gz,
            "dense_int8_bytes": i8, "dense_int8_gzip_bytes": i8_gz,
            "artifact_bytes": art, "artifact_gzip_bytes": art_gz,
            "ratio_dense_float32_to_artifact": round(f32 / art, 3) if f32 and art else None,
            "ratio_dense_int8_to_artifact": round(i8 / art, 3) if i8 and art else None,
            "breakdown": size_breakdowns(conversion),
        },
        "accuracy": {
            "dense_float": accuracies["dense_float"],
            "pruned_keras": accuracies["pruned_keras"],
            "tflite": float(verification.accuracy),
            "drop_points": drop_points,
            "agreement_pruned_keras_vs_tflite": float(verification.agreement),
            "max_drop_points": options["max_accuracy_drop"],
            "n_samples": int(len(dataset.x_val)),
            "test": accuracies.get("test"),
            "unit": "fraction of the validation set; drop_points in percentage points",
        },
        "verification": _plain({k: v for k, v in dataclasses.asdict(verification).items()
                                if k not in ("accuracy", "agreement", "predictions")}),
        "check": check,
        "passed": not failures,
        "failures": list(failures),
        "timings_s": timings,
        "files": {"model.tflite": {"bytes": art, "sha256": hashlib.sha256(conversion.artifact).hexdigest()}},
    }


def write_report(out_dir: Path, document: dict[str, Any]) -> Path:
    path = Path(out_dir) / "report.json"
    atomic_write_text(path, json.dumps(document, indent=2, sort_keys=False) + "\n")
    return path


def write_html(out_dir: Path, document: dict[str, Any]) -> Path:
    """report.html beside report.json, for people (rendered by html_report.py)."""
    from edgesparse.report.html import write_report_html

    return write_report_html(out_dir, document)


def load_report(build_dir: Path) -> dict[str, Any]:
    path = Path(build_dir) / "report.json"
    from edgesparse.errors import EdgesparseError

    if not path.is_file():
        raise EdgesparseError("No report.json in the build directory", where=str(build_dir),
                              expected="a directory written by `edgesparse build`", received="no report.json")
    try:
        return json.loads(path.read_text("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EdgesparseError("report.json is not valid JSON", where=str(path), received=str(exc)) from None


def summary_rows(document: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs for the terminal summary table."""
    sizes, acc, sp = document["sizes"], document["accuracy"], document["sparsity"]
    rows = [
        ("profile", f"{document['profile']['name']} ({document['profile']['runtime']})"),
        ("sparsity (pruned weights)", f"{sp['overall']:.1%}"),
        ("dense float32 .tflite", _kb(sizes["dense_float32_bytes"], sizes["dense_float32_gzip_bytes"])),
        ("dense int8 .tflite", _kb(sizes["dense_int8_bytes"], sizes["dense_int8_gzip_bytes"])),
        ("artifact", _kb(sizes["artifact_bytes"], sizes["artifact_gzip_bytes"])),
        ("size ratio float32 / artifact", f"{sizes['ratio_dense_float32_to_artifact']}x"),
        ("size ratio int8 / artifact", f"{sizes['ratio_dense_int8_to_artifact']}x"),
        ("accuracy dense float", f"{acc['dense_float']:.2%}"),
        ("accuracy pruned Keras", f"{acc['pruned_keras']:.2%}"),
        ("accuracy .tflite", f"{acc['tflite']:.2%}  (drop {acc['drop_points']:.2f} points)"),
        ("agreement Keras vs .tflite", f"{acc['agreement_pruned_keras_vs_tflite']:.2%}"),
    ]
    if acc.get("test"):
        test = acc["test"]
        rows.append(("test accuracy dense -> .tflite", f"{test['dense_float']:.2%} -> {test['tflite']:.2%}  "
                     f"(drop {test['drop_points']:.2f} points, {test['n_samples']} held-out samples)"))
    rows += [
        ("interpreter", document["verification"].get("interpreter", "?")),
    ]
    for note in document["verification"].get("kernels", []) or []:
        rows.append(("kernels", str(note)))
    check = document.get("check") or {}
    for key, label, fmt in (("flash_bytes", "flash", "{:,} B"), ("ram_bytes", "RAM", "{:,} B"),
                            ("latency_ms", "latency", "{:.3f} ms"), ("energy_mj", "energy / inference", "{:.4f} mJ"),
                            ("battery_hours", "battery life", "{:,.1f} h")):
        if check.get(key) is not None:
            rows.append((label, fmt.format(check[key])))
    return rows


def _kb(raw: int | None, gz: int | None) -> str:
    if raw is None:
        return "n/a"
    return f"{raw / 1024:,.1f} KiB  (gzip {gz / 1024:,.1f} KiB)"

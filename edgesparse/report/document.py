"""report.json: everything needed to trust and reproduce a build.

The JSON carries `schema_version`, the tool and library versions, every option,
the profile and its sha256, per-layer sparsity and policy, sizes raw and
gzipped, accuracies and the device check. Scripts read these keys, so renaming
one is a schema change (bump SCHEMA_VERSION). This module builds the document
and its terminal summary; reading and writing report.json belong to
`edgesparse.builddir`, the page to `edgesparse.report.html`. Raises nothing of
its own (`load_graph` may raise ModelError for a malformed artifact).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import gzip
import hashlib
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from edgesparse import __version__
from edgesparse.builddir import ARTIFACT, load_report, write_report
from edgesparse.report import format as fmt
from edgesparse.report.channels import channels_view
from edgesparse.report.html import write_report_html
from edgesparse.tflite.graph import load_graph

__all__ = [
    "SCHEMA_VERSION",
    "build_report",
    "channel_rows",
    "channels_section",
    "gzip_size",
    "library_versions",
    "load_report",
    "size_breakdowns",
    "size_entry",
    "summary_rows",
    "write_html",
    "write_report",
]

# Kept for callers not yet moved to edgesparse.builddir / edgesparse.report.html; not owned here.
write_html = write_report_html

SCHEMA_VERSION = 1
_LIBRARIES = ("tensorflow", "tf-keras", "tensorflow-model-optimization", "ai-edge-litert",
              "tflite-micro", "tflite-runtime", "numpy")


def library_versions() -> dict[str, str | None]:
    """Python and every library that shapes the artifact; None when one is not installed."""
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
    """(raw, gzipped) bytes of one build, or (None, None) when it was not made."""
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
    return {name: load_graph(data).size.as_dict() if data else None
            for name, data in (("dense_float32", conversion.dense_float32),
                               ("dense_int8", conversion.dense_int8), ("artifact", conversion.artifact))}


def channels_section(channels: dict[str, Any] | None, conversion) -> dict[str, Any] | None:
    """report.json's "channels" (a --granularity channel build): the pruning's own figures, plus the MACs the
    TFLite graphs count (tflite.ir, as the estimator does) of the dense int8 baseline (the original model) and
    of the artifact."""
    if channels is None:
        return None
    section = dict(channels)
    before = conversion.dense_int8 or conversion.dense_float32
    section["tflite_macs_before"] = load_graph(before).total_macs if before else None
    section["tflite_macs_after"] = load_graph(conversion.artifact).total_macs
    return section


def build_report(*, options, profile, model_info, dataset, policies, pruned, conversion,
                 verification, accuracies, drop_points, check, failures, timings,
                 compression=None, channels=None, npu=None) -> dict[str, Any]:
    """The report.json document of one build (see the module docstring for what it carries).

    `compression`: the DECODE section of a TFLite Micro build (pipeline.mcu_compress), None on other builds.
    `channels`: a channel build's section (prune.channel_finetune.ChannelPruneResult.as_dict()), None otherwise;
    its "final_sparsity_means" says that --final-sparsity was the fraction of prunable channels removed.
    `npu`: an Arm Ethos-U build's section (report.npu.npu_section), None otherwise.
    """
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
                    "class": profile.device_class, "runtime": profile.runtime, "runtime_name": profile.runtime_name,
                    "assumptions": {key: profile.source(key) for key in profile.assumptions()}},
        "model": _plain(model_info),
        "data": {"source": dataset.source, "n_train": len(dataset.x_train),
                 "n_val": len(dataset.x_val), "num_classes": int(dataset.num_classes)},
        "pruning": {"end_step": int(pruned.end_step),
                    "schedule": pruned.schedule.as_dict() if pruned.schedule is not None else None,
                    "policy": _plain(policies)},
        "sparsity": {"overall": float(pruned.overall_sparsity), "layers": layers},
        "granularity": options.get("granularity", "auto"),
        "channels": channels_section(channels, conversion),
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
        "compression": compression,
        "npu": npu,
        "accuracy": {
            "dense_float": accuracies["dense_float"],
            "pruned_keras": accuracies["pruned_keras"],
            "clustered_keras": accuracies.get("clustered_keras"),   # --cluster: the model that was converted
            "tflite": float(verification.accuracy),
            "drop_points": drop_points,
            "agreement_pruned_keras_vs_tflite": float(verification.agreement),
            "max_drop_points": options["max_accuracy_drop"],
            "n_samples": len(dataset.x_val),
            "test": accuracies.get("test"),
            "unit": "fraction of the validation set; drop_points in percentage points",
        },
        "verification": _plain({k: v for k, v in dataclasses.asdict(verification).items()
                                if k not in ("accuracy", "agreement", "predictions")}),
        "check": check,
        "passed": not failures,
        "failures": list(failures),
        "timings_s": timings,
        "files": {ARTIFACT: {"bytes": art, "sha256": hashlib.sha256(conversion.artifact).hexdigest()}},
    }


def summary_rows(document: dict[str, Any]) -> list[tuple[str, str]]:
    """(label, value) pairs for the terminal summary table (the sections with rows of their own, compression,
    speed and npu, are rendered by cli.render)."""
    sizes, acc, sp = document["sizes"], document["accuracy"], document["sparsity"]
    rows = [
        ("profile", f"{document['profile']['name']} "
                    f"({document['profile'].get('runtime_name') or document['profile']['runtime']})"),
        ("sparsity (pruned weights)", fmt.percent(sp["overall"], 1)),
        *channel_rows(document.get("channels")),
        ("dense float32 .tflite", _sizes(sizes["dense_float32_bytes"], sizes["dense_float32_gzip_bytes"])),
        ("dense int8 .tflite", _sizes(sizes["dense_int8_bytes"], sizes["dense_int8_gzip_bytes"])),
        ("artifact", _sizes(sizes["artifact_bytes"], sizes["artifact_gzip_bytes"])),
        ("size ratio float32 / artifact", f"{sizes['ratio_dense_float32_to_artifact']}x"),
        ("size ratio int8 / artifact", f"{sizes['ratio_dense_int8_to_artifact']}x"),
        ("accuracy dense float", fmt.percent(acc["dense_float"])),
        ("accuracy pruned Keras", fmt.percent(acc["pruned_keras"])),
        *([("accuracy clustered Keras", fmt.percent(acc["clustered_keras"]))]
          if acc.get("clustered_keras") is not None else []),
        ("accuracy .tflite", f"{fmt.percent(acc['tflite'])}  (drop {acc['drop_points']:.2f} points)"),
        ("agreement Keras vs .tflite", fmt.percent(acc["agreement_pruned_keras_vs_tflite"])),
    ]
    if acc.get("test"):
        test = acc["test"]
        rows.append(("test accuracy dense -> .tflite", f"{fmt.percent(test['dense_float'])} -> "
                     f"{fmt.percent(test['tflite'])}  "
                     f"(drop {test['drop_points']:.2f} points, {test['n_samples']} held-out samples)"))
    rows += [
        ("interpreter", document["verification"].get("interpreter", "?")),
    ]
    for note in document["verification"].get("kernels", []) or []:
        rows.append(("kernels", str(note)))
    check = document.get("check") or {}
    for key, label, unit in (("flash_bytes", "flash", "B"), ("ram_bytes", "RAM", "B"), ("latency_ms", "latency", "ms"),
                             ("energy_mj", "energy / inference", "mJ"), ("battery_hours", "battery life", "h")):
        if check.get(key) is not None:
            rows.append((label, fmt.quantity(check[key], unit)))
    return rows


def channel_rows(channels: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The terminal summary's lines for a channel build: channels, MACs and parameters before -> after.

    Read through report.channels (the card's reader), so a partial or hand-edited section shows "unknown".
    """
    c = channels_view(channels)
    if c is None:
        return []
    rows = [("channels removed", f"{fmt.percent(c['removed_fraction'], 1)} of the prunable channels "
                                 f"({fmt.integer(c['prunable_channels_before'])} -> "
                                 f"{fmt.integer(c['prunable_channels_after'])}; "
                                 f"target {fmt.percent(c['target_fraction'], 1)})"),
            ("MACs (Keras)", f"{fmt.integer(c['macs_before'])} -> {fmt.integer(c['macs_after'])}"),
            ("parameters", f"{fmt.integer(c['params_before'])} -> {fmt.integer(c['params_after'])}")]
    if c["tflite_macs_before"] is not None:
        rows.append(("MACs (.tflite graphs)",
                     f"{fmt.integer(c['tflite_macs_before'])} -> {fmt.integer(c['tflite_macs_after'])}"))
    difference = fmt.UNKNOWN if c["max_abs_difference"] is None else f"{c['max_abs_difference']:.2g}"
    rows.append(("accuracy masked -> small", f"{fmt.percent(c['accuracy_masked'])} -> "
                                             f"{fmt.percent(c['accuracy_small'])} "
                                             f"({c['accuracy_split'] or fmt.UNKNOWN}; max |diff| {difference})"))
    unprunable = c["unprunable"]
    if unprunable:
        rows.append(("groups kept whole", f"{len(unprunable)}: " + "; ".join(
            f"{'+'.join(g['layers'][:3])}{'...' if len(g['layers']) > 3 else ''} ({g['reason']})"
            for g in unprunable[:4]) + (" ..." if len(unprunable) > 4 else "")))
    return rows


def _sizes(raw: int | None, gz: int | None) -> str:
    return "n/a" if raw is None else f"{fmt.byte_size(raw)}  (gzip {fmt.byte_size(gz)})"

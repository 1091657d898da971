"""A sweep's output files: sweep.json, sweep.csv (one row per point and profile) and sweep.html.

Why its own module: what the files hold is read by users and spreadsheets and changes apart
from how points are built and cached (`pipeline.sweep`, which re-exports these names).
Raises OutputLocationError (a file cannot be written).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from edgesparse.fsutil import atomic_write_text
from edgesparse.report.html import render_sweep

__all__ = ["CSV_COLUMNS", "SWEEP_CSV", "SWEEP_HTML", "SWEEP_JSON", "csv_text", "write_outputs"]

SWEEP_JSON, SWEEP_CSV, SWEEP_HTML = "sweep.json", "sweep.csv", "sweep.html"

CSV_COLUMNS = ("point", "sparsity", "quantize", "profile", "build", "achieved_sparsity", "accuracy", "drop_points",
               "model_bytes", "uncompressed_bytes", "compression_ratio", "flash_bytes", "ram_bytes", "latency_ms",
               "energy_mj", "battery_hours", "fits", "failed_budgets", "unknown_budgets", "pareto_latency",
               "pareto_size", "pareto_energy", "chosen", "error")


def csv_text(document: dict) -> str:
    """One row per (point, profile): what a spreadsheet or pandas wants."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    chosen = (document.get("choice") or {}).get("point")
    for p in document["points"]:
        for name, c in p["checks"].items():
            build = p["builds"].get(c.get("build") or "", {})
            compression = build.get("compression") or {}
            front = document["pareto"].get(name, {})
            writer.writerow({
                "point": p["label"], "sparsity": p["sparsity"], "quantize": p["quantize"], "profile": name,
                "build": c.get("build", ""), "achieved_sparsity": build.get("achieved_sparsity"),
                "accuracy": c.get("accuracy"), "drop_points": c.get("drop_points"), "model_bytes": c.get("model_bytes"),
                "uncompressed_bytes": compression.get("uncompressed_bytes"),
                "compression_ratio": compression.get("ratio_vs_dense_int8"),
                "flash_bytes": c.get("flash_bytes"), "ram_bytes": c.get("ram_bytes"), "latency_ms": c.get("latency_ms"),
                "energy_mj": c.get("energy_mj"), "battery_hours": c.get("battery_hours"), "fits": c.get("fits"),
                "failed_budgets": ";".join(b["name"] for b in c.get("budgets", [])
                                           if b.get("ok") is False and b.get("value") is not None),
                "unknown_budgets": ";".join(b["name"] for b in c.get("budgets", []) if b.get("value") is None),
                "pareto_latency": p["label"] in front.get("latency_ms", []),
                "pareto_size": p["label"] in front.get("model_bytes", []),
                "pareto_energy": p["label"] in front.get("energy_mj", []),
                "chosen": p["label"] == chosen, "error": c.get("error", "")})
    return buf.getvalue()


def write_outputs(out_dir: Path, document: dict) -> None:
    """sweep.json, sweep.csv and sweep.html, each written atomically."""
    atomic_write_text(out_dir / SWEEP_JSON, json.dumps(document, indent=2) + "\n")
    atomic_write_text(out_dir / SWEEP_CSV, csv_text(document))
    atomic_write_text(out_dir / SWEEP_HTML, render_sweep(document))

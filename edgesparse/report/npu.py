"""report.json's "npu" section (an Arm Ethos-U build), and the one reader every view uses.

Why a module of its own: report.html's NPU card, the build's terminal summary and `check`'s terminal
view show the same figures (per-op placement, Vela's SRAM and flash, encoded weights against raw
int8, cycles and latency with their basis, energy, battery life), and the same statement of what
was and was not verified; writing the section once (`npu_section`, from `estimate.npu.NpuEstimate`)
and reading it once (`npu_view`, where an older or partial section reads as missing values) keeps
them from disagreeing. Raises nothing.
"""

from __future__ import annotations

from typing import Any

from edgesparse._types import is_assumption
from edgesparse.estimate.npu import NpuEstimate

__all__ = ["NOT_VERIFIED", "npu_section", "npu_view"]

#: Said wherever NPU figures are shown: what this machine could run, and what it could not.
NOT_VERIFIED = ("NPU execution is not verified here: the plain int8 model was verified in TFLite Micro; "
                "the Vela command stream cannot run on this machine (no Ethos-U, no simulator)")

# The figures compared dense against pruned, in display order: (key, label, unit, smaller is better).
_COMPARED = (("encoded_weight_bytes", "encoded weights (Vela)", "B"),
             ("raw_weight_bytes", "raw int8 weights", "B"),
             ("vela_flash_bytes", "flash (Vela: weights + command stream)", "B"),
             ("sram_bytes", "SRAM (Vela)", "B"),
             ("total_cycles", "NPU cycles (Vela)", "cycles"),
             ("latency_ms", "latency", "ms"),
             ("energy_mj", "energy / inference", "mJ"))


def _brief(estimate: NpuEstimate) -> dict[str, Any]:
    """The dense baseline's figures that the card sets beside the artifact's."""
    full = estimate.to_dict()
    keep = [key for key, _, _ in _COMPARED] + ["npu_cycles", "npu_ms", "cpu_ms", "weight_compression",
                                               "compiled_model_bytes", "npu_ops", "cpu_ops", "latency_basis"]
    return {key: full.get(key) for key in keep}


def _ratio(before: Any, after: Any) -> float | None:
    if not isinstance(before, (int, float)) or not isinstance(after, (int, float)) or not after:
        return None
    return round(float(before) / float(after), 4)


def npu_section(estimate: NpuEstimate, *, dense: NpuEstimate | None = None,
                verified: str | None = None) -> dict[str, Any]:
    """report.json's "npu": the artifact's NPU estimate, the dense int8 baseline's (when compiled too) and
    "dense / artifact" ratios (> 1: the artifact is smaller or faster), and what was verified."""
    section = estimate.to_dict()
    section["not_verified"] = NOT_VERIFIED
    section["verified"] = verified
    section["dense"] = _brief(dense) if dense is not None else None
    section["dense_over_artifact"] = ({key: _ratio(section["dense"].get(key), section.get(key))
                                       for key, _, _ in _COMPARED} if dense is not None else None)
    return section


# --------------------------------------------------------------------------- reading


def _number(value: Any) -> float | int | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _ops(value: Any) -> list[dict[str, Any]]:
    rows = []
    for op in value if isinstance(value, list) else []:
        if isinstance(op, dict):
            rows.append({"index": _number(op.get("index")), "op_type": _text(op.get("op_type")) or "?",
                         "placement": op.get("placement") if op.get("placement") in ("npu", "cpu") else "?",
                         "reason": _text(op.get("reason"))})
    return rows


def _comparison(section: dict[str, Any]) -> list[dict[str, Any]] | None:
    dense = section.get("dense")
    if not isinstance(dense, dict):
        return None
    rows = []
    for key, label, unit in _COMPARED:
        before, after = _number(dense.get(key)), _number(section.get(key))
        rows.append({"key": key, "label": label, "unit": unit, "dense": before, "artifact": after,
                     "ratio": _ratio(before, after)})
    return rows


def npu_view(section: Any) -> dict[str, Any] | None:
    """The npu section's figures, each present or None; None for a build without one (not an Ethos-U build).

    A Vela-compiled file described by `check` (no estimate) reads with "compiled_file" True and no cycles.
    """
    if not isinstance(section, dict):
        return None
    numbers = ("npu_clock_mhz", "cpu_clock_mhz", "npu_ops", "npu_cycles", "total_cycles", "npu_ms", "cpu_ms",
               "latency_ms", "energy_mj", "battery_hours", "rate_per_s", "sram_bytes", "sram_limit_bytes",
               "arena_bytes", "vela_flash_bytes", "command_stream_bytes", "compiled_model_bytes",
               "int8_model_bytes", "encoded_weight_bytes", "raw_weight_bytes", "weight_compression")
    view: dict[str, Any] = {key: _number(section.get(key)) for key in numbers}
    cpu = section.get("cpu_ops")
    ops = _ops(section.get("ops"))
    view.update({
        "accelerator": _text(section.get("accelerator")) or None, "memory_mode": _text(section.get("memory_mode")),
        "compiler": _text(section.get("compiler")), "system_config": _text(section.get("system_config")),
        "system_config_basis": _text(section.get("system_config_basis")),
        "latency_basis": _text(section.get("latency_basis")) or "none",
        "latency_basis_detail": _text(section.get("latency_basis_detail")),
        "energy_basis": _text(section.get("energy_basis")) or "none",
        "ops": ops, "cpu_ops": (len(cpu) if isinstance(cpu, list) else _number(cpu)),
        "cpu_op_rows": [op for op in ops if op["placement"] == "cpu"],
        "cpu_op_names": ([str(c) for c in cpu] if isinstance(cpu, list) else
                         [op["op_type"] for op in ops if op["placement"] == "cpu"]),
        "compiled_file": bool(section.get("compiled_file")),
        "not_verified": _text(section.get("not_verified")), "verified": _text(section.get("verified")),
        "not_estimated": _text(section.get("not_estimated")),
        "notes": [str(n) for n in section.get("notes") or [] if isinstance(n, str)],
        "warnings": [str(n) for n in section.get("warnings") or [] if isinstance(n, str)],
        "vela_warnings": [str(n) for n in section.get("vela_warnings") or [] if isinstance(n, str)],
        "comparison": _comparison(section),
    })
    if view["vela_flash_bytes"] is None:  # a compiled file described by `check`: EthosUModel.as_dict's name
        view["vela_flash_bytes"] = _number(section.get("flash_bytes"))
    if view["weight_compression"] is None:
        view["weight_compression"] = _ratio(view["raw_weight_bytes"], view["encoded_weight_bytes"])
    view["latency_assumed"] = is_assumption(view["latency_basis"])
    view["energy_assumed"] = is_assumption(view["energy_basis"])
    limit, used = view["sram_limit_bytes"], view["sram_bytes"]
    view["sram_fits"] = None if limit is None or used is None else used <= limit
    return view

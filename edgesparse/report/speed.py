"""report.json's "speed" section (the artifact against dense int8 on the build's profile), as every view reads it.

Why a module of its own: report.html's Speed card and the build's terminal
summary show the same verdicts (estimated on the profile, measured on the host),
the same basis words and the same "size only" call; deriving them once keeps
the two from disagreeing. The section is written by `estimate.speed.speed_claim`
(the build stores it); this module only reads it, and an older or partial
section reads as missing values (None), so any report.json still renders.
Raises nothing.
"""

from __future__ import annotations

from typing import Any

from edgesparse._types import is_assumption

__all__ = ["speed_summary"]

_VERDICTS = ("faster", "same", "slower")


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | int | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _verdict(value: Any) -> str:
    return value if value in _VERDICTS else "unknown"


def speed_summary(section: Any) -> dict[str, Any] | None:
    """The speed section's figures, each present or None; None for a build without one (older, no baseline)."""
    if not isinstance(section, dict):
        return None
    est, host = _dict(section.get("estimated")), section.get("host")
    basis = str(est.get("basis") or "none")
    out = {
        "profile": section.get("profile"), "runtime": section.get("runtime"),
        "artifact_bytes": _number(section.get("artifact_bytes")),
        "dense_int8_bytes": _number(section.get("dense_int8_bytes")),
        "file_ratio": _number(section.get("file_ratio")), "band": _number(section.get("band")),
        "size_only": bool(section.get("size_only")), "claim": section.get("claim") or "",
        "estimated": {
            "dense_int8_ms": _number(est.get("dense_int8_ms")), "artifact_ms": _number(est.get("artifact_ms")),
            "ratio": _number(est.get("ratio")), "verdict": _verdict(est.get("verdict")), "basis": basis,
            "assumed": is_assumption(basis), "notes": [str(n) for n in est.get("notes") or []],
            "kernels": [k for k in est.get("kernels") or [] if isinstance(k, dict)]},
        "host": None,
    }
    if isinstance(host, dict):
        out["host"] = {"runtime": host.get("runtime"), "interpreter": host.get("interpreter"),
                       "threads": _number(host.get("threads")), "dense_int8_ms": _number(host.get("dense_int8_ms")),
                       "artifact_ms": _number(host.get("artifact_ms")), "ratio": _number(host.get("ratio")),
                       "verdict": _verdict(host.get("verdict")), "band": _number(host.get("band")),
                       "rounds": _number(host.get("rounds")), "runs_per_round": _number(host.get("runs_per_round")),
                       "kernels": [str(k) for k in host.get("artifact_kernels") or []]}
    return out

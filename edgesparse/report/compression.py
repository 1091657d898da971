"""report.json's "compression" section (TFLite Micro builds with DECODE), as every view reads it.

Why a module of its own: report.html's card, the build's terminal summary and the
sweep's columns show the same figures (the file before and after DECODE, the
ratio to dense int8, the arena added, the decode time and its basis, the tensors
kept dense for RAM). Deriving them once keeps the three views from disagreeing.
The section is written by the build (`pipeline.build`); this module only reads
it, and an older or partial section reads as missing values (None), so a
report.json from any edgesparse version still renders. Raises nothing.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "compression_summary",
    "compression_view",
]

# The method of a candidate tensor that stays an ordinary constant (tflite.decode_compress spells it so).
_DENSE = "dense"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _number(value: Any) -> float | int | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _ratio(section: dict[str, Any]) -> float | None:
    """The recorded ratio to dense int8, or the one its two sizes give (a section that lacks it)."""
    recorded = _number(section.get("ratio_vs_dense_int8"))
    if recorded is not None:
        return recorded
    dense, compressed = _number(section.get("dense_int8_bytes")), _number(section.get("compressed_bytes"))
    return round(dense / compressed, 3) if dense and compressed else None


def _tensors(section: dict[str, Any]) -> list[dict[str, Any]]:
    return [t for t in section.get("tensors") or [] if isinstance(t, dict)]


def compression_summary(section: Any) -> dict[str, Any] | None:
    """The headline figures of a compression section; None for a build without one (not TFLM, or older)."""
    if not isinstance(section, dict):
        return None
    tensors = _tensors(section)
    compressed = [t for t in tensors if t.get("method") not in (None, _DENSE)]
    methods: dict[str, int] = {}
    for t in compressed:
        methods[str(t["method"])] = methods.get(str(t["method"]), 0) + 1
    arena, ram, verification = (_dict(section.get(k)) for k in ("arena", "ram_budget", "verification"))
    return {
        "mode": section.get("mode"),
        "applied": bool(section.get("applied")),
        "uncompressed_bytes": _number(section.get("uncompressed_bytes")),
        "compressed_bytes": _number(section.get("compressed_bytes")),
        "saved_bytes": _number(section.get("saved_bytes")),
        "dense_int8_bytes": _number(section.get("dense_int8_bytes")),
        "ratio_vs_dense_int8": _ratio(section),
        "arena_added_bytes": _number(arena.get("added_bytes")),
        "arena_uncompressed_bytes": _number(arena.get("uncompressed_measured_bytes")),
        "arena_compressed_bytes": _number(arena.get("compressed_measured_bytes")),
        "decoded_elements_per_invoke": _number(section.get("decoded_elements_per_invoke")),
        "decode_ms": _number(section.get("decode_ms")),
        "decode_basis": section.get("decode_basis"),
        "tensors": len(tensors),
        "compressed_tensors": len(compressed),
        "methods": methods,
        "kept_dense_for_ram": [str(n) for n in ram.get("kept_dense_for_ram") or []],
        "ram_reason": ram.get("reason"),
        "bitwise_identical": verification.get("bitwise_identical"),
    }


def compression_view(section: Any) -> dict[str, Any] | None:
    """What report.html's compression card shows: the summary, each tensor's row, and the sub-tables."""
    summary = compression_summary(section)
    if summary is None:
        return None
    kept_for_ram = set(summary["kept_dense_for_ram"])
    rows = [dict(t, kept_for_ram=str(t.get("name")) in kept_for_ram, compressed=t.get("method") not in (None, _DENSE))
            for t in _tensors(section)]
    uncompressed, saved = summary["uncompressed_bytes"], summary["saved_bytes"]
    basis = summary["decode_basis"]
    return dict(
        summary,
        rows=rows,
        saved_fraction=saved / uncompressed if saved is not None and uncompressed else None,
        decode_basis_word=str(basis).split(":", 1)[0].strip() if basis else None,
        arena=_dict(section.get("arena")),
        alt_decompression=_dict(section.get("alt_decompression")),
        ram_budget=_dict(section.get("ram_budget")),
        overhead=_dict(section.get("overhead")),
        overhead_items=[i for i in _dict(section.get("overhead")).get("items") or [] if isinstance(i, dict)],
        cluster=_dict(section.get("cluster")) or None,
        verification=_dict(section.get("verification")),
    )

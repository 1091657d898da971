"""report.json's "channels" section (a `--granularity channel` build), as every view reads it.

Why a module of its own: report.html's Channel pruning card and the build's
terminal summary show the same figures (what --final-sparsity meant, the
channels, MACs and parameters before and after, the masked against the small
model, the surgery's proof). Deriving them once keeps the views from
disagreeing. The section is written by the build
(`prune.channel_finetune.ChannelPruneResult.as_dict()`, plus the .tflite MACs
`report.document.channels_section` adds); this module only reads it. A partial,
older or hand-edited section reads as missing values (None, empty lists), so
any report.json still renders. Raises nothing.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "MAX_MASK_UPDATES_SHOWN",
    "channels_summary",
    "channels_view",
]

#: The card lists at most this many mask updates (the first, the last and evenly spaced ones between).
MAX_MASK_UPDATES_SHOWN = 12

# How a member's role reads on the page (channels.ChannelMember.role spells them "produce" and "consume"; a
# "produce" member that is not among the group's producers carries the channels through: BatchNormalization,
# a depthwise convolution).
_MAKES, _CARRIES, _READS = "makes", "carries", "reads"


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _number(value: Any) -> float | int | None:
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _text(value: Any) -> str | None:
    return str(value) if value not in (None, "") else None


def _ratio(before: Any, after: Any) -> float | None:
    """before / after (how many times fewer), when both are known and after is not zero."""
    b, a = _number(before), _number(after)
    return b / a if b is not None and a else None


def _fraction_removed(before: Any, after: Any) -> float | None:
    b, a = _number(before), _number(after)
    return (b - a) / b if b and a is not None else None


def _prunable(group: dict[str, Any]) -> bool | None:
    value = group.get("prunable")
    return value if isinstance(value, bool) else None


def _channel_totals(section: dict[str, Any], groups: list[dict[str, Any]]) -> tuple[Any, Any]:
    """The prunable channels before and after: recorded, or summed over the prunable groups (a section that
    lacks them)."""
    before, after = _number(section.get("prunable_channels_before")), _number(section.get("prunable_channels_after"))
    if before is not None and after is not None:
        return before, after
    prunable = [g for g in groups if _prunable(g)]
    counts = [(_number(g.get("channels_before")), _number(g.get("channels_after"))) for g in prunable]
    if not prunable or any(b is None or a is None for b, a in counts):
        return before, after
    return sum(b for b, _ in counts if b is not None), sum(a for _, a in counts if a is not None)


def channels_summary(section: Any) -> dict[str, Any] | None:
    """The headline figures of a channels section; None for a build without one (not channel, or older)."""
    if not isinstance(section, dict):
        return None
    groups = _dicts(section.get("groups"))
    channels_before, channels_after = _channel_totals(section, groups)
    equivalence = _dict(section.get("equivalence"))
    masked, small = _number(section.get("accuracy_masked")), _number(section.get("accuracy_small"))
    tflite_before, tflite_after = _number(section.get("tflite_macs_before")), _number(section.get("tflite_macs_after"))
    return {
        "final_sparsity_means": _text(section.get("final_sparsity_means")),
        "criterion": _text(section.get("criterion")),
        "target_fraction": _number(section.get("target_fraction")),
        "removed_fraction": _number(section.get("removed_fraction")),
        "prunable_channels_before": channels_before,
        "prunable_channels_after": channels_after,
        "macs_before": _number(section.get("macs_before")), "macs_after": _number(section.get("macs_after")),
        "macs_ratio": _ratio(section.get("macs_before"), section.get("macs_after")),
        "tflite_macs_before": tflite_before, "tflite_macs_after": tflite_after,
        "tflite_macs_ratio": _ratio(tflite_before, tflite_after),
        "params_before": _number(section.get("params_before")), "params_after": _number(section.get("params_after")),
        "params_ratio": _ratio(section.get("params_before"), section.get("params_after")),
        "accuracy_masked": masked, "accuracy_small": small,
        "accuracy_change_points": (small - masked) * 100 if masked is not None and small is not None else None,
        "accuracy_split": _text(section.get("accuracy_split")),
        "max_abs_difference": _number(equivalence.get("max_abs_difference")),
        "equivalence_samples": _number(equivalence.get("samples")),
        "equivalence_compared": _text(equivalence.get("compared")),
        "groups": len(groups),
        "prunable_groups": sum(1 for g in groups if _prunable(g)),
        "unprunable_groups": len(_unprunable(section, groups)),
        "mask_updates": len(_dicts(section.get("mask_updates"))),
    }


def _member_row(member: dict[str, Any], producers: list[str]) -> dict[str, Any]:
    layer, role = _text(member.get("layer")) or "?", _text(member.get("role"))
    if role == "consume":
        words = _READS
    elif role == "produce":
        words = _MAKES if layer in producers or not producers else _CARRIES
    else:
        words = role or "?"
    return {"layer": layer, "role": role, "role_words": words, "offset": _number(member.get("offset")) or 0}


def _group_row(group: dict[str, Any]) -> dict[str, Any]:
    before, after = _number(group.get("channels_before")), _number(group.get("channels_after"))
    recorded = group.get("producers")
    producers = [str(p) for p in recorded] if isinstance(recorded, list) else []
    return {"id": group.get("id"), "channels_before": before, "channels_after": after,
            "removed_fraction": _fraction_removed(before, after), "prunable": _prunable(group),
            "reason": _text(group.get("reason")) or "", "producers": producers,
            "members": [_member_row(m, producers) for m in _dicts(group.get("members"))]}


def _unprunable(section: dict[str, Any], groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each group kept whole, with its layers and reason: from the groups, else the section's own list."""
    from_groups = [{"id": g.get("id"), "layers": [m["layer"] for m in _group_row(g)["members"]],
                    "reason": _text(g.get("reason")) or ""} for g in groups if _prunable(g) is False]
    if from_groups or groups:
        return from_groups
    return [{"id": u.get("id"), "layers": [str(n) for n in u.get("layers") or [] if n is not None]
             if isinstance(u.get("layers"), list) else [], "reason": _text(u.get("reason")) or ""}
            for u in _dicts(section.get("unprunable"))]


def _mask_update_rows(section: dict[str, Any]) -> list[dict[str, Any]]:
    """Every mask update, or MAX_MASK_UPDATES_SHOWN of them (first and last kept, the rest evenly spaced)."""
    updates = [{"step": _number(u.get("step")), "target_fraction": _number(u.get("target_fraction")),
                "masked_fraction": _number(u.get("masked_fraction"))} for u in _dicts(section.get("mask_updates"))]
    if len(updates) <= MAX_MASK_UPDATES_SHOWN:
        return updates
    last = len(updates) - 1
    picks = sorted({round(i * last / (MAX_MASK_UPDATES_SHOWN - 1)) for i in range(MAX_MASK_UPDATES_SHOWN)})
    return [updates[i] for i in picks]


def _schedule(value: Any) -> dict[str, Any] | None:
    """The schedule the masks followed (ResolvedSchedule.as_dict()), numbers only; None when not recorded."""
    schedule = _dict(value)
    if not schedule:
        return None
    return {"kind": _text(schedule.get("kind")),
            **{key: _number(schedule.get(key)) for key in ("initial_sparsity", "final_sparsity", "begin_step",
                                                            "end_step", "total_steps", "frequency")}}


def channels_view(section: Any, *, element_sparsity: Any = None) -> dict[str, Any] | None:
    """What report.html's Channel pruning card shows: the summary, every group, the kept-whole groups, the
    schedule and the mask updates. `element_sparsity`: the build's --element-sparsity (None without it)."""
    summary = channels_summary(section)
    if summary is None or not isinstance(section, dict):
        return None
    groups = _dicts(section.get("groups"))
    return dict(
        summary,
        group_rows=[_group_row(g) for g in groups],
        unprunable=_unprunable(section, groups),
        schedule=_schedule(section.get("schedule")),
        mask_update_rows=_mask_update_rows(section),
        channels_removed_fraction=_fraction_removed(summary["prunable_channels_before"],
                                                    summary["prunable_channels_after"]),
        element_sparsity=_number(element_sparsity),
    )

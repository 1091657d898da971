"""Choosing among a sweep's points: Pareto fronts, and the sparsest point that keeps accuracy and fits everywhere.

Why its own module: the rule that picks the build a user deploys is pure
(points in, a choice and the reasons out) and reads best on its own, apart from
the building and caching in `pipeline.sweep`, which re-exports both functions.
Raises nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["choose", "pareto"]


def pareto(rows: Sequence[dict], metric: str, accuracy: str = "accuracy") -> list[int]:
    """Indices of rows no other row beats: higher or equal accuracy at lower or equal metric, one strictly."""
    valid = [i for i, r in enumerate(rows) if r.get(metric) is not None and r.get(accuracy) is not None]
    front = []
    for i in valid:
        a, m = rows[i][accuracy], rows[i][metric]
        dominated = any(rows[j][accuracy] >= a and rows[j][metric] <= m and
                        (rows[j][accuracy] > a or rows[j][metric] < m) for j in valid if j != i)
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: rows[i][metric])


def _efficiency(point: dict, first: str) -> tuple:
    """Energy per inference, then latency, then model size on the first profile (unknown last)."""
    c = point["checks"].get(first) or {}
    return tuple(math.inf if c.get(k) is None else c[k] for k in ("energy_mj", "latency_ms", "model_bytes"))


def _problems(point: dict, profiles: Sequence[str], max_drop: float) -> list[str]:
    """Why a point cannot be chosen; [] when it keeps accuracy and fits every budget everywhere."""
    out = []
    for name in profiles:
        c = point["checks"].get(name)
        if c is None or c.get("error"):
            out.append(f"not buildable for {name}: {c.get('error') if c else 'no build'}")
            continue
        if c.get("untrusted"):
            out.append(f"{name}'s .tflite cannot be trusted: " + "; ".join(c["untrusted"]))
        if c.get("drop_points") is None:
            out.append(f"no accuracy for {name}'s build")
        elif c["drop_points"] > max_drop:
            out.append(f"accuracy drop {c['drop_points']:.2f} points > {max_drop:g} on {name}'s build")
        failed = [b["name"] for b in c["budgets"] if b.get("ok") is False and b.get("value") is not None]
        unknown = [b["name"] for b in c["budgets"] if b.get("value") is None]
        if failed:
            out.append(f"does not fit {name}: " + ", ".join(failed))
        if unknown:
            out.append(f"{name}: " + ", ".join(unknown) + " unknown (no estimate), so not shown to fit")
    return list(dict.fromkeys(out))


def choose(points: Sequence[dict], profiles: Sequence[str], max_drop: float) -> tuple[dict | None, str, list[dict]]:
    """The sparsest point that keeps accuracy within `max_drop` and fits every budget; then the most efficient.

    Efficiency, for points of equal sparsity, is judged on the first profile: the
    least energy per inference, then the lowest latency, then the smallest model
    (every qualifying point already fits the flash budget; energy is what a
    battery-powered device spends on every inference).
    """
    ranked = sorted(points, key=lambda p: (-p["sparsity"], _efficiency(p, profiles[0])))
    rejected = []
    for p in ranked:
        problems = _problems(p, profiles, max_drop)
        if not problems:
            same = [q for q in ranked if q["sparsity"] == p["sparsity"] and q is not p
                    and not _problems(q, profiles, max_drop)]
            c = p["checks"][profiles[0]]
            why = (f"{p['label']} is the sparsest of the {len(points)} points whose .tflite stays within "
                   f"{max_drop:g} accuracy points of the dense model and fits every budget on "
                   f"{', '.join(profiles)}: accuracy {c['accuracy']:.2%} (drop {c['drop_points']:.2f} points), "
                   f"{c['model_bytes']:,} B model, latency "
                   + ("unknown" if c.get("latency_ms") is None else f"{c['latency_ms']:.4g} ms") + f" on {profiles[0]}")
            if same:
                why += (f"; of the {len(same) + 1} qualifying points at sparsity {p['sparsity']:g} it needs the least "
                        f"energy per inference on {profiles[0]} (then latency, then model size)")
            sparser = [r for r in rejected if r["sparsity"] > p["sparsity"]]
            if sparser:
                why += "; sparser points were rejected (see rejected)"
            return p, why + ".", rejected
        rejected.append({"point": p["label"], "sparsity": p["sparsity"], "quantize": p["quantize"], "why": problems})
    return None, (f"No point keeps the .tflite within {max_drop:g} accuracy points of the dense model and fits "
                  f"every budget on {', '.join(profiles)}: lower the sparsity, train longer (--epochs) or "
                  "relax --max-accuracy-drop or the budgets."), rejected

"""report.html and sweep.html: self-contained pages that let a person trust (or distrust) a build.

report.json is for scripts; this page is for the engineer deciding whether to
ship. It is rendered from report.json alone (so `edgesparse report BUILD_DIR`
can regenerate it years later) and it is ONE file: CSS inline, plots inline
SVG from matplotlib's SVG backend, no scripts, fonts or images fetched, so it
opens offline, from a CI artifact store or an e-mail attachment. Numbers are
formatted by `edgesparse.report.format`, the vocabulary the terminal uses too.
Imports no TensorFlow (the runtime half must render reports on a Pi).

Raises EdgesparseError for a document that is not an edgesparse report, and
whatever `edgesparse.builddir.load_report` raises for a missing or broken report.json.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from edgesparse._types import is_assumption
from edgesparse.builddir import REPORT_HTML, REPORT_JSON, check_report_shape, load_report
from edgesparse.errors import EdgesparseError
from edgesparse.estimate import energy_and_battery
from edgesparse.fsutil import atomic_write_text
from edgesparse.profiles.profile import load_profile
from edgesparse.report import format as fmt
from edgesparse.report.channels import channels_view
from edgesparse.report.compression import compression_view
from edgesparse.report.npu import npu_view
from edgesparse.report.speed import speed_summary

__all__ = [
    "BLUE",
    "BUDGET_LABELS",
    "GREEN",
    "GREY",
    "ORANGE",
    "PURPLE",
    "RED",
    "SERIES",
    "SKY",
    "YELLOW",
    "accuracy_figure",
    "battery_curve",
    "battery_figure",
    "gauge",
    "latency_figure",
    "new_figure",
    "op_is_assumed",
    "render_report",
    "render_sweep",
    "report_context",
    "size_figure",
    "size_rows",
    "sparsity_figure",
    "svg",
    "sweep_figure",
    "template_env",
    "write_report_html",
]

# One palette for every page: colour-blind-safe (Okabe-Ito) hues.
BLUE, ORANGE, GREEN, RED, GREY, SKY, PURPLE, YELLOW = (
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#8c8c8c", "#56B4E9", "#CC79A7", "#F0E442")
SERIES = (BLUE, ORANGE, GREEN, PURPLE, SKY, RED, YELLOW, GREY)


# --------------------------------------------------------------------------- SVG plots

_SVG_HEAD = re.compile(r"^.*?(<svg\b)", re.S)


def _rc(name: str) -> Any:  # a dict of rcParams (matplotlib's stubs want Literal keys)
    return {"svg.fonttype": "none", "svg.hashsalt": f"edgesparse-{name}",
            "font.family": "sans-serif", "font.size": 9.5, "axes.titlesize": 10.5,
            "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
            "grid.color": "#e4e4e4", "grid.linewidth": 0.7, "axes.axisbelow": True,
            "axes.edgecolor": "#888888", "legend.frameon": False}


def new_figure(name: str, width: float, height: float):
    """A matplotlib Figure not tied to pyplot (no global state, no GUI backend)."""
    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: no backend switch in the caller's process

    with matplotlib.rc_context(_rc(name)):
        fig = Figure(figsize=(width, height), layout="constrained")
    fig.set_label(name)  # the salt that keeps ids unique across the page's SVGs
    return fig


def svg(fig, name: str | None = None) -> str:
    """Figure -> inline <svg> (no XML prolog, no date): several can share one page."""
    import matplotlib

    name = name or fig.get_label() or "figure"
    buf = io.StringIO()
    with matplotlib.rc_context(_rc(name)):
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None}, bbox_inches=None)
    text = _SVG_HEAD.sub(r"\1", buf.getvalue(), count=1)
    # matplotlib numbers its ids per figure (figure_1, patch_1, ...): prefix them so several
    # SVGs can share one page, and rewrite the internal references to match.
    prefix = re.sub(r"[^A-Za-z0-9_-]", "-", name)
    text = re.sub(r'(\sid=")([^"]+)"', rf'\1{prefix}-\2"', text)
    text = re.sub(r'(href="#|url\(#)([^")]+)', rf'\1{prefix}-\2', text)
    # Scale with the page: keep the viewBox, drop the fixed pt size.
    text = re.sub(r'<svg\b([^>]*?)\swidth="[^"]*"\s+height="[^"]*"',
                  rf'<svg\1 class="plot" role="img" aria-label="{name}"', text, count=1)
    return text


def _subplot(fig, **kw):
    import matplotlib

    with matplotlib.rc_context(_rc(fig.get_label() or "figure")):
        return fig.add_subplot(**kw)


def sparsity_figure(layers: Sequence[dict]) -> str | None:
    if not layers:
        return None
    fig = new_figure("sparsity-per-layer", 7.2, 0.55 + 0.42 * len(layers))
    ax = _subplot(fig)
    names = [str(layer.get("name")) for layer in layers][::-1]
    target = [float(layer.get("target") or 0.0) * 100 for layer in layers][::-1]
    achieved = [float(layer.get("achieved") or 0.0) * 100 for layer in layers][::-1]
    ys = range(len(names))
    ax.barh([y + 0.19 for y in ys], target, height=0.36, color=SKY, label="target")
    ax.barh([y - 0.19 for y in ys], achieved, height=0.36, color=BLUE, label="achieved")
    for y, layer in zip(ys, layers[::-1]):
        ax.text(101.5, y, str(layer.get("pattern") or ""), va="center", fontsize=8.5, color="#444444")
    ax.set_yticks(list(ys), names)
    ax.set_xlim(0, 130)
    ax.set_xticks([0, 20, 40, 60, 80, 100])
    ax.set_xlabel("zero weights (%)")
    ax.grid(axis="y", visible=False)
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncols=2, fontsize=8.5)
    return svg(fig)


SIZE_PARTS = (("weight_bytes", "weight values", BLUE), ("sparse_index_bytes", "sparse indices", ORANGE),
              ("overhead_bytes", "graph overhead", GREY))
BUILD_LABELS = (("dense_float32", "dense float32"), ("dense_int8", "dense int8"), ("artifact", "artifact"))


def size_rows(sizes: dict) -> list[dict]:
    """One row per build with its breakdown (None parts when report.json predates breakdowns)."""
    breakdown = sizes.get("breakdown") or {}
    rows = []
    for key, label in BUILD_LABELS:
        total = sizes.get(f"{key}_bytes")
        if not total:
            continue
        parts = breakdown.get(key) or {}
        rows.append({"key": key, "label": label, "total": total, "gzip": sizes.get(f"{key}_gzip_bytes"),
                     **{p: parts.get(p) for p, _, _ in SIZE_PARTS}})
    return rows


def size_figure(rows: Sequence[dict]) -> str | None:
    if not rows:
        return None
    fig = new_figure("size-breakdown", 7.2, 0.7 + 0.5 * len(rows))
    ax = _subplot(fig)
    ys = list(range(len(rows)))[::-1]
    biggest = max(r["total"] for r in rows) / 1024
    for part, label, colour in SIZE_PARTS:
        lefts = [sum((r.get(p) or 0) for p, _, _ in SIZE_PARTS[:[x[0] for x in SIZE_PARTS].index(part)]) / 1024
                 for r in rows]
        widths = [(r.get(part) or 0) / 1024 for r in rows]
        ax.barh(ys, widths, left=lefts, height=0.55, color=colour, label=label)
    for y, r in zip(ys, rows):
        known = r.get("weight_bytes") is not None
        if not known:  # an old report.json without breakdowns: the total alone
            ax.barh([y], [r["total"] / 1024], height=0.55, color="none", edgecolor=GREY, hatch="//")
        gz = f", gzip {fmt.byte_size(r['gzip'])}" if r.get("gzip") else ""
        ax.text(r["total"] / 1024 + biggest * 0.01, y, f"{fmt.byte_size(r['total'])}{gz}", va="center", fontsize=8.5)
    ax.set_yticks(ys, [r["label"] for r in rows])
    ax.set_xlim(0, biggest * 1.42)
    ax.set_xlabel("KiB in the .tflite file")
    ax.grid(axis="y", visible=False)
    ax.legend(loc="lower right", fontsize=8.5)
    return svg(fig)


def accuracy_figure(acc: dict) -> str | None:
    recorded = [("dense float (Keras)", acc.get("dense_float")), ("pruned (Keras)", acc.get("pruned_keras")),
                (".tflite (interpreter)", acc.get("tflite"))]
    stages = [(label, float(v) * 100) for label, v in recorded if v is not None]
    if not stages:
        return None
    fig = new_figure("accuracy", 7.2, 1.9)
    ax = _subplot(fig)
    ys = list(range(len(stages)))[::-1]
    values = [v for _, v in stages]
    ax.hlines(ys, 0, values, color="#d0d0d0", linewidth=2)
    ax.plot(values, ys, "o", color=BLUE, markersize=8, label="validation")
    test = acc.get("test") or {}
    if test.get("dense_float") is not None and test.get("tflite") is not None:
        ax.plot([float(test["dense_float"]) * 100, float(test["tflite"]) * 100], [ys[0], ys[-1]], "D",
                color=ORANGE, markersize=6, label="held-out test")
        values += [float(test["dense_float"]) * 100, float(test["tflite"]) * 100]
    floor: float | None = None
    if acc.get("dense_float") is not None and acc.get("max_drop_points") is not None:
        floor = float(acc["dense_float"]) * 100 - float(acc["max_drop_points"])
        ax.axvline(floor, color=RED, linestyle="--", linewidth=1)
        ax.text(floor, ys[0] + 0.45, f" lowest allowed (drop ≤ {float(acc['max_drop_points']):g} points)",
                color=RED, fontsize=8, va="bottom")
    for y, v in zip(ys, [v for _, v in stages]):
        ax.text(v, y - 0.32, f"{v:.2f} %", ha="center", va="top", fontsize=8.5)
    lo = min(values + ([floor] if floor is not None else []))
    hi = max(values)
    pad = max(0.6, (hi - lo) * 0.25)
    ax.set_xlim(max(0.0, lo - pad), min(100.0, hi + pad) if hi + pad <= 100 else hi + pad * 0.3)
    ax.set_ylim(-0.8, len(stages) - 0.2)
    ax.set_yticks(ys, [label for label, _ in stages])
    ax.set_xlabel("top-1 accuracy (%)")
    ax.grid(axis="y", visible=False)
    if test:
        ax.legend(loc="lower left", fontsize=8.5)
    return svg(fig)


def op_is_assumed(op: dict) -> bool:
    return bool(op.get("flag"))


def latency_figure(ops: Sequence[dict], limit: int = 30) -> str | None:
    """Per-op predicted time; ops priced with assumed or borrowed coefficients are hatched orange."""
    priced = [o for o in ops if (o.get("predicted_us") or 0) > 0]
    if not priced:
        return None
    shown = sorted(priced, key=lambda o: -o["predicted_us"])[:limit]
    shown.sort(key=lambda o: o.get("index", 0))
    fig = new_figure("latency-per-op", 7.2, 0.6 + 0.3 * len(shown))
    ax = _subplot(fig)
    ys = list(range(len(shown)))[::-1]
    colours = [ORANGE if op_is_assumed(o) else BLUE for o in shown]
    bars = ax.barh(ys, [o["predicted_us"] for o in shown], height=0.62, color=colours)
    for bar, o in zip(bars, shown):
        if op_is_assumed(o):
            bar.set_hatch("///")
            bar.set_edgecolor("white")
    top = max(o["predicted_us"] for o in shown)
    for y, o in zip(ys, shown):
        ax.text(o["predicted_us"] + top * 0.01, y, f"{o['predicted_us']:.3g} µs  ({o.get('share', 0) * 100:.1f} %)",
                va="center", fontsize=8)
    ax.set_yticks(ys, [f"#{o.get('index')} {o.get('op')} {o.get('dtype', '')}" for o in shown], fontsize=8.5)
    ax.set_xlim(0, top * 1.3)
    ax.set_xlabel("predicted time per inference (µs)")
    ax.grid(axis="y", visible=False)
    from matplotlib.patches import Patch

    handles = []
    if not all(op_is_assumed(o) for o in shown):
        handles.append(Patch(color=BLUE, label="own fitted coefficient"))
    if any(op_is_assumed(o) for o in shown):
        handles.append(Patch(facecolor=ORANGE, hatch="///", edgecolor="white", label="flagged (see table)"))
    unpriced = len(ops) - len(priced)
    if unpriced:
        handles.append(Patch(color="none", label=f"+{unpriced} op(s) at 0 µs not shown"))
    ax.legend(handles=handles, loc="lower right", fontsize=8.5)
    return svg(fig)


def battery_curve(check: dict, rates_per_s: Iterable[float]) -> list[float | None]:
    """Battery hours at each rate, by the estimator's own formula (estimate.energy_and_battery)."""
    energy = check.get("energy") or {}
    out = []
    for rate in rates_per_s:
        _, _, hours, _, _ = energy_and_battery(
            check.get("latency_ms"), active_mw=energy.get("active_mw"), sleep_mw=energy.get("sleep_mw"),
            rate_per_s=rate, battery_mah=energy.get("battery_mah"), voltage_v=energy.get("voltage_v"))
        out.append(hours)
    return out


_RATE_TICKS = ((1 / 86400, "1/day"), (1 / 3600, "1/h"), (1 / 60, "1/min"), (1.0, "1/s"),
               (10.0, "10/s"), (100.0, "100/s"), (1e3, "1k/s"), (1e4, "10k/s"), (1e5, "100k/s"), (1e6, "1M/s"))
_HOUR_TICKS = ((1 / 60, "1 min"), (10 / 60, "10 min"), (1, "1 h"), (3, "3 h"), (6, "6 h"), (12, "12 h"), (24, "1 day"),
               (72, "3 days"), (168, "1 week"), (720, "1 month"), (2190, "3 months"), (8760, "1 year"),
               (43800, "5 years"), (87600, "10 years"), (876000, "100 years"))


def _human_log_axes(ax, rates: Sequence[float], hours: Sequence[float]) -> None:
    """Log-log axes labelled in rates and durations a person reads at a glance (1/min, 3 days)."""
    from matplotlib.ticker import NullFormatter, NullLocator

    lo, hi = min(hours), max(hours)
    if hi / lo < 4:  # a nearly flat curve: give it room rather than magnify noise
        mid = math.sqrt(lo * hi)
        lo, hi = min(lo, mid / 2.2), max(hi, mid * 2.2)
    ax.set_ylim(lo / 1.15, hi * 1.3)
    ticks = [(v, t) for v, t in _HOUR_TICKS if lo / 1.15 <= v <= hi * 1.3]
    if len(ticks) >= 2:
        ax.set_yticks([v for v, _ in ticks], [t for _, t in ticks])
        ax.yaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_minor_formatter(NullFormatter())
    xt = [(v * 3600, t) for v, t in _RATE_TICKS if min(rates) <= v <= max(rates)]
    ax.set_xticks([v for v, _ in xt], [t for _, t in xt])
    ax.xaxis.set_minor_locator(NullLocator())


def battery_figure(check: dict) -> tuple[str | None, str]:
    """(svg or None, a sentence saying what the curve shows or why there is none)."""
    energy = check.get("energy") or {}
    needed = (("a latency estimate", check.get("latency_ms")), ("[power] active_mw", energy.get("active_mw")),
              ("[battery] capacity_mah", energy.get("battery_mah")), ("[battery] voltage_v", energy.get("voltage_v")))
    missing = [label for label, v in needed if v is None]
    if missing:
        return None, "No battery curve: the check has no " + ", ".join(missing) + "."
    latency_ms = float(check["latency_ms"])
    default = energy.get("rate_per_s")
    saturate = 1000.0 / latency_ms if latency_ms > 0 else 1e6
    lo = 1.0 / 86400.0 / 7.0                         # once a week
    hi = max(10.0 * (default or 1.0), min(saturate * 3.0, 1e5), 10.0)
    n = 240
    rates = [10 ** (math.log10(lo) + (math.log10(hi) - math.log10(lo)) * i / (n - 1)) for i in range(n)]
    hours = battery_curve(check, rates)
    pts = [(r, h) for r, h in zip(rates, hours) if h]
    if not pts:
        return None, "No battery curve: the estimator returned no battery life at any rate."
    fig = new_figure("battery-vs-rate", 7.2, 3.3)
    ax = _subplot(fig)
    ax.loglog([p[0] * 3600 for p in pts], [p[1] for p in pts], color=BLUE, linewidth=2, label="battery life")
    budget = next((b for b in check.get("budgets", []) if b.get("name") == "battery_hours"), None)
    if budget is None:
        days = next((b for b in check.get("budgets", []) if b.get("name") == "battery_days"), None)
        if days is not None:
            budget = dict(days, limit=days["limit"] * 24)
    if budget is not None:
        ax.axhline(budget["limit"], color=RED, linestyle="--", linewidth=1,
                   label=f"budget ≥ {fmt.hours(budget['limit'])}")
    if saturate * 3600 <= hi * 3600:
        ax.axvline(saturate * 3600, color=GREY, linestyle=":", linewidth=1,
                   label=f"100 % busy ({fmt.number(saturate, 3)}/s)")
    if default:
        h = battery_curve(check, [default])[0]
        if h:
            ax.plot([default * 3600], [h], "o", color=RED, markersize=7, zorder=5,
                    label=f"profile default {fmt.rate(default)}: {fmt.hours(h)}")
            ax.annotate(f"{fmt.rate(default)}\n{fmt.hours(h)}", (default * 3600, h), textcoords="offset points",
                        xytext=(8, 8), fontsize=8.5, color=RED)
    _human_log_axes(ax, [p[0] for p in pts], [p[1] for p in pts] + ([budget["limit"]] if budget else []))
    ax.set_xlabel("inference rate")
    ax.set_ylabel("battery life")
    ax.grid(True, which="major")
    ax.legend(loc="lower left", fontsize=8.5)
    sleep = energy.get("sleep_mw")
    text = (f"{energy.get('battery_mah'):g} mAh × {energy.get('voltage_v'):g} V; {energy.get('active_mw'):g} mW "
            f"for {fmt.number(latency_ms, 3, 'ms')} per inference, {sleep if sleep is not None else 0:g} mW between "
            "inferences (estimate.energy_and_battery). At low rates the rest-state power sets the life; "
            "at high rates the inferences do.")
    return svg(fig), text


# --------------------------------------------------------------------------- page

def template_env():
    """The Jinja environment for edgesparse's pages (autoescaped; formatting filters)."""
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
                             autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.ChainableUndefined,
                             trim_blocks=True, lstrip_blocks=True)
    def known(formatter):  # a key missing from an older report.json renders as "unknown"
        return lambda x, *a: formatter(None if isinstance(x, jinja2.Undefined) else x, *a)

    env.filters["assumed"] = is_assumption
    env.filters.update({name: known(f) for name, f in (
        ("bytes", fmt.byte_size), ("byte_count", fmt.byte_count), ("integer", fmt.integer), ("num", fmt.number),
        ("pct", fmt.percent), ("hours", fmt.hours), ("budget", fmt.quantity), ("rate", fmt.rate),
        ("ratio", fmt.ratio))})
    return env


BUDGET_LABELS = {"flash_bytes": "flash", "ram_bytes": "RAM", "latency_ms": "latency", "energy_mj": "energy",
                 "battery_hours": "battery life", "battery_days": "battery life"}


def gauge(budget: dict) -> dict:
    """Geometry and wording of one budget gauge; an unknown value is neither pass nor fail."""
    limit, value, kind = float(budget["limit"]), budget.get("value"), budget.get("kind", "max")
    status = "unknown" if value is None else ("pass" if budget.get("ok") else "fail")
    scale = max(limit, float(value or 0.0)) * 1.25 or 1.0
    frac = 0.0 if value is None else min(1.0, float(value) / scale)
    tick = limit / scale

    def point(f: float, r: float) -> tuple[float, float]:
        a = math.pi * (1.0 - f)
        return 60 + r * math.cos(a), 60 - r * math.sin(a)

    def arc(f: float) -> str:
        x0, y0 = point(0.0, 48)
        x1, y1 = point(max(f, 1e-4), 48)
        return f"M {x0:.2f} {y0:.2f} A 48 48 0 0 1 {x1:.2f} {y1:.2f}"

    tx0, ty0 = point(tick, 38)
    tx1, ty1 = point(tick, 58)
    used = None if value is None else (float(value) / limit if limit else None)
    if value is None:
        headroom = "no estimate: cannot be checked"
    elif kind == "max":
        headroom = f"{used * 100:.3g} % of the limit used" if used is not None else ""
    else:
        headroom = f"{used:.3g}× the minimum" if used is not None else ""
    return {"name": budget["name"], "label": BUDGET_LABELS.get(budget["name"], budget["name"].replace("_", " ")),
            "status": status,
            "limit": budget["limit"], "value": value, "unit": budget.get("unit", ""), "kind": kind,
            "margin": budget.get("margin"), "track": arc(1.0), "fill": arc(frac) if value is not None else "",
            "tick": (round(tx0, 2), round(ty0, 2), round(tx1, 2), round(ty1, 2)), "headroom": headroom,
            "relation": "≤" if kind == "max" else "≥"}


def _policy_by_layer(document: dict) -> dict[str, dict]:
    return {p.get("name"): p for p in (document.get("pruning") or {}).get("policy") or []}


def _profile_assumptions(document: dict) -> list[tuple[str, str]]:
    """The profile's assumed values with their sources: from report.json, or the profile file if unchanged."""
    profile = document.get("profile") or {}
    recorded = profile.get("assumptions")
    if isinstance(recorded, dict):
        return sorted((k, str(v or "")) for k, v in recorded.items())
    try:  # an older report.json: read the profile if it is still the same file
        p = load_profile(str(profile.get("path")))
        if p.sha256 == profile.get("sha256"):
            return [(k, p.source(k) or "") for k in p.assumptions()]
    except (EdgesparseError, OSError, TypeError):
        pass
    return []


def _flatten(prefix: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        out = []
        for k, v in value.items():
            out += _flatten(f"{prefix}.{k}" if prefix else str(k), v)
        return out
    return [(prefix, value)]


def report_context(document: dict) -> dict[str, Any]:
    """Everything the template shows, computed once; missing sections are None, not errors."""
    check = document.get("check") or {}
    latency = check.get("latency") or {}
    ops = latency.get("ops") or check.get("ops") or []
    sizes = document.get("sizes") or {}
    acc = document.get("accuracy") or {}
    sparsity = document.get("sparsity") or {}
    layers = sparsity.get("layers") or []
    policy = _policy_by_layer(document)
    layer_rows = [dict(layer, layer_type=(policy.get(layer.get("name")) or {}).get("layer_type", ""),
                       block=(policy.get(layer.get("name")) or {}).get("block_size")) for layer in layers]
    rows = size_rows(sizes)
    battery_svg, battery_text = battery_figure(check) if check else (None, "No device check in this report.")
    basis = check.get("basis") or {}
    assumed_ops = [o for o in ops if op_is_assumed(o)]
    model = document.get("model") or {}
    options = document.get("options") or {}
    schedule = (document.get("pruning") or {}).get("schedule") or {}
    return {
        "doc": document, "check": check, "latency": latency, "ops": ops, "assumed_ops": assumed_ops,
        "title": f"{model.get('name') or 'model'} on {(document.get('profile') or {}).get('name', '?')}",
        "model": model, "profile": document.get("profile") or {}, "acc": acc, "sparsity": sparsity,
        "layers": layer_rows, "sizes": sizes, "size_rows": rows, "basis": basis,
        "gauges": [gauge(b) for b in check.get("budgets") or []],
        "figures": {"sparsity": sparsity_figure(layers), "size": size_figure(rows), "accuracy": accuracy_figure(acc),
                    "latency": latency_figure(ops), "battery": battery_svg},
        "battery_text": battery_text,
        "energy": check.get("energy") or {}, "flash": check.get("flash") or {}, "ram": check.get("ram") or {},
        "profile_assumptions": _profile_assumptions(document),
        "options": sorted(options.items()), "schedule": schedule,
        "versions": sorted((document.get("versions") or {}).items()),
        "timings": list((document.get("timings_s") or {}).items()),
        "model_items": [(k, v) for k, v in _flatten("", model) if k not in ("labels",)],
        "conversion": document.get("conversion") or {}, "verification": document.get("verification") or {},
        "failures": document.get("failures") or [], "warnings": document.get("warnings") or [],
        "passed": document.get("passed"),
        "files": document.get("files") or {},
        "compression": compression_view(document.get("compression")),
        "channels": channels_view(document.get("channels"), element_sparsity=options.get("element_sparsity")),
        "speed": speed_summary(document.get("speed")),
        "npu": npu_view(document.get("npu")),
    }


def render_report(document: dict) -> str:
    """report.json (as a dict) -> the complete HTML page."""
    check_report_shape(document, REPORT_JSON)
    return template_env().get_template("report.html.j2").render(**report_context(document))


def write_report_html(build_dir: Path | str, document: dict | None = None) -> Path:
    """Write BUILD_DIR/report.html atomically, from `document` or BUILD_DIR/report.json."""
    build_dir = Path(build_dir)
    path = build_dir / REPORT_HTML
    if document is not None:
        atomic_write_text(path, render_report(document))
        return path
    document = load_report(build_dir)
    try:
        page = render_report(document)
    except (AttributeError, TypeError, KeyError, ValueError) as exc:  # a hand-edited field deeper down
        raise EdgesparseError("report.json has a field this version cannot read", where=str(build_dir / REPORT_JSON),
                              expected="report.json as `edgesparse build` wrote it",
                              received=f"{type(exc).__name__}: {exc}"[:200],
                              fix="Rebuild with `edgesparse build`, or restore the original report.json") from None
    atomic_write_text(path, page)
    return path


# --------------------------------------------------------------------------- sweep.html

_QUANT_MARKERS = {"int8": "o", "float16": "s", "dynamic": "^", "none": "D"}


def sweep_figure(document: dict, metric: str, xlabel: str) -> str | None:
    """Accuracy against one cost for every point and profile; a Pareto front (step line) per profile."""
    profiles = [p["name"] for p in document.get("profiles", [])]
    points = document.get("points", [])
    if not any((p["checks"].get(n) or {}).get(metric) is not None for p in points for n in profiles):
        return None
    from matplotlib.lines import Line2D

    fig = new_figure(f"sweep-{metric}", 7.4, 3.9)
    scale = 1024.0 if metric == "model_bytes" else 1.0  # plot sizes in KiB
    ax = _subplot(fig)
    chosen = (document.get("choice") or {}).get("point")
    handles = []
    # Profiles of one runtime family share the artifact: on the size plot they are one series.
    series = [(", ".join(f["profiles"]), [n for n in f["profiles"] if n in profiles])
              for f in document.get("families", [])] if metric == "model_bytes" else []
    series = [(label, names) for label, names in series if names] or [(n, [n]) for n in profiles]
    for label, names in series:
        colour = SERIES[profiles.index(names[0]) % len(SERIES)]
        labels: dict[tuple, list[str]] = {}
        for p in points:
            c = p["checks"].get(names[0]) or {}
            x, acc = c.get(metric), c.get("accuracy")
            if x is None or acc is None:
                continue
            checks = [p["checks"].get(n) or {} for n in names]
            fits = all(ch.get("fits") and all(b.get("value") is not None for b in ch.get("budgets", []))
                       for ch in checks)
            x = x / scale
            ax.plot([x], [acc * 100], marker=_QUANT_MARKERS.get(p["quantize"], "o"), markersize=7, linestyle="none",
                    markeredgecolor=colour, markerfacecolor=colour if fits else "white", markeredgewidth=1.6,
                    zorder=3)
            labels.setdefault((x, round(acc * 100, 3)), []).append(f"{p['sparsity']:g}")
            if p["label"] == chosen:
                ax.plot([x], [acc * 100], marker="*", markersize=17, linestyle="none", markerfacecolor="none",
                        markeredgecolor="black", markeredgewidth=1.2, zorder=4)
        for (x, y), text in labels.items():  # coincident points (same file, same accuracy) share one label
            ax.annotate(", ".join(dict.fromkeys(text)), (x, y), textcoords="offset points", xytext=(4, 4),
                        fontsize=7.5, color=colour)
        front = [(p["checks"][names[0]][metric] / scale, p["checks"][names[0]]["accuracy"] * 100) for key in
                 (document.get("pareto", {}).get(names[0], {}).get(metric) or [])
                 for p in points if p["label"] == key]
        if front:
            front.sort()
            ax.step([f[0] for f in front], [f[1] for f in front], where="post", color=colour, alpha=0.55,
                    linewidth=1.5, zorder=2)
        if labels:
            handles.append(Line2D([], [], color=colour, marker="o", label=label))
    dense = document.get("dense_accuracy")
    if dense is not None:
        ax.axhline(dense * 100, color=GREY, linestyle=":", linewidth=1)
        handles.append(Line2D([], [], color=GREY, linestyle=":", label="dense float model"))
        drop = (document.get("choice") or {}).get("max_accuracy_drop")
        if drop is not None:
            ax.axhline(dense * 100 - drop, color=RED, linestyle="--", linewidth=1)
            handles.append(Line2D([], [], color=RED, linestyle="--", label=f"max drop {drop:g} points"))
    quants = sorted({p["quantize"] for p in points})
    for q in quants:
        handles.append(Line2D([], [], color="#444444", marker=_QUANT_MARKERS.get(q, "o"), linestyle="none", label=q))
    handles.append(Line2D([], [], color="#444444", marker="o", markerfacecolor="white", linestyle="none",
                          label="misses a budget (or unknown)"))
    if chosen:
        handles.append(Line2D([], [], color="black", marker="*", markerfacecolor="none", markersize=12,
                              linestyle="none", label=f"chosen {chosen}"))
    ax.set_xscale("log")
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel + " (log)")
    ax.set_ylabel("top-1 accuracy of the .tflite (%)")
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8)
    return svg(fig)


def _cell(c: dict | None) -> dict:
    if not c or c.get("error"):
        return {"status": "na", "text": (c or {}).get("error", "no build")}
    failed = [b["name"] for b in c.get("budgets", []) if b.get("ok") is False and b.get("value") is not None]
    unknown = [b["name"] for b in c.get("budgets", []) if b.get("value") is None]
    status = "fail" if failed else ("unknown" if unknown else "pass")
    return {"status": status, "failed": failed, "unknown": unknown, **c}


def render_sweep(document: dict) -> str:
    """sweep.json (as a dict) -> sweep.html: Pareto plots, the pass/fail matrix, the choice."""
    profiles = [p["name"] for p in document.get("profiles", [])]
    matrix = [{"point": p, "cells": [_cell(p["checks"].get(n)) for n in profiles]} for p in document.get("points", [])]
    figures = [(label, sweep_figure(document, metric, label)) for metric, label in
               (("latency_ms", "latency per inference (ms)"), ("model_bytes", "model file (KiB)"),
                ("energy_mj", "energy per inference (mJ)"))]
    # Microcontroller builds carry their DECODE compression: their file's size before it, and the ratio.
    compressed = any(b.get("compression") for p in document.get("points", []) for b in p["builds"].values())
    return template_env().get_template("sweep.html.j2").render(
        doc=document, profiles=document.get("profiles", []), names=profiles, matrix=matrix,
        figures=[(label, f) for label, f in figures], choice=document.get("choice"),
        options=document.get("options", {}), families=document.get("families", []), compressed=compressed)

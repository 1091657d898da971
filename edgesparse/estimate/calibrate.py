"""Fit a profile's [latency] coefficients to measured latencies.

Why: a cost model is only as good as its coefficients, and a coefficient
nobody measured is a guess. `calibrate` takes a user's own timings (CSV:
model_file, latency_ms[, threads]), fits the per-op-class rates by
non-negative least squares on relative error, and writes a new profile whose
[latency] table records what it was fitted to (fit_source, fit_rows), with
the fit error per row. It fits only as many parameters as the rows can
support: with few rows it rescales the existing coefficients instead.

A device with no measurement of its own gets coefficients TRANSFERRED from a fitted device of
the same core family and runtime: its MAC rates are the source's divided by a stated
`transfer_factor` (cycles per source cycle) and its overheads the source's times an
`overhead_factor` (a time ratio). The profile then says `basis = "transferred"`,
`transferred_from`, the factors and, per coefficient, a [sources] entry starting
"assumption: transferred from ...", and `check` never reports such a latency as fitted.
The profile is written by `edgesparse.profiles.write_latency`, which bench/estimation.py
uses too when it refits the shipped profiles.

Raises `DataError` (a missing or malformed measurements CSV, rows that cannot be
fitted), `OutputExistsError` (the output profile exists and force is off),
`ProfileError` / `ProfileValidationError` (a profile without a clock, or a
calibrated profile that would be invalid) and `ValueError` (a bad `loss` or
transfer factor: a caller's bug).
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tomllib

from edgesparse.errors import DataError, OutputExistsError, ProfileError
from edgesparse.estimate import latency as estimate
from edgesparse.profiles import Profile, load_profile, set_sources, set_table, write_latency
from edgesparse.tflite.graph import load_graph

__all__ = [
    "BYTES",
    "ELEMENTWISE",
    "EXTRA_CSV",
    "FIXED",
    "OPS",
    "Calibration",
    "Fit",
    "Sample",
    "calibrate_profile",
    "fit_latency",
    "fit_scale",
    "model_features",
    "nnls",
    "read_extra_rows",
    "read_measurements",
    "render_table",
    "replace_table",
    "set_latency_sources",
    "transfer_macs_per_cycle",
    "transfer_overhead_us",
    "weighted_nnls",
]

# Columns of the design matrix besides one per MAC class.
ELEMENTWISE = "elementwise"
BYTES = "bytes"
OPS = "ops"
FIXED = "fixed"
_TRANSFER_KEYS = ("basis", "transferred_from", "transfer_factor", "overhead_from", "overhead_factor")


def nnls(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """x >= 0 minimising |a x - b| (Lawson-Hanson, `scipy.optimize.nnls`)."""
    from scipy.optimize import nnls as scipy_nnls

    return scipy_nnls(np.asarray(a, dtype=float), np.asarray(b, dtype=float))[0]


@dataclass
class Sample:
    """One measured model: its cost features (summed over ops) and its latency."""

    name: str
    features: dict[str, float]
    latency_ms: float
    threads: int = 1


def model_features(graph: Any, profile: Any) -> dict[str, float]:
    """Sum of op features for one model: MACs per class key, elementwise ops, bytes, op count, 1."""
    out: dict[str, float] = {}
    for f in estimate.op_features(graph, profile):
        if f.macs_used:
            out[f.coef_key] = out.get(f.coef_key, 0.0) + f.macs_used
        if f.elementwise_ops and f.coef_key != "once":
            out[f.coef_key] = out.get(f.coef_key, 0.0) + f.elementwise_ops
        out[BYTES] = out.get(BYTES, 0.0) + f.bytes_moved
        if f.coef_key != "once" and f.dispatched:
            out[OPS] = out.get(OPS, 0.0) + 1
    out[FIXED] = 1.0
    return out


@dataclass
class Fit:
    """Fitted coefficients in time units (µs per MAC, per op...) and as a profile [latency] table."""

    coef_us: dict[str, float]
    table: dict[str, Any]
    predictions_ms: list[float]
    errors: list[float]             # relative, signed: predicted / measured - 1
    names: list[str]
    mode: str                        # "full" | "scale+fixed" | "scale"
    parameters: int
    dropped: list[str] = field(default_factory=list)  # rows left out of the final fit as outliers

    @property
    def median_abs_error(self) -> float:
        return float(np.median(np.abs(self.errors))) if self.errors else float("nan")

    @property
    def worst_abs_error(self) -> float:
        return float(np.max(np.abs(self.errors))) if self.errors else float("nan")


def _table_from_coefs(coef_us: Mapping[str, float], clock_mhz: float, keys: Sequence[str]) -> dict[str, Any]:
    """µs-per-unit coefficients -> the profile's per-cycle [latency] entries."""
    mpc = {}
    for key in keys:
        c = coef_us.get(key, 0.0)
        if c > 0:
            mpc[key] = 1.0 / (c * clock_mhz)
    table: dict[str, Any] = {"macs_per_cycle": mpc}
    e = coef_us.get(ELEMENTWISE, 0.0)
    if e > 0:
        table["elementwise_per_cycle"] = 1.0 / (e * clock_mhz)
    bb = coef_us.get(BYTES, 0.0)
    if bb > 0:
        table["bytes_per_cycle"] = 1.0 / (bb * clock_mhz)
    table["overhead_us_per_op"] = coef_us.get(OPS, 0.0)
    table["fixed_overhead_us"] = coef_us.get(FIXED, 0.0)
    return table


def fit_latency(samples: Sequence[Sample], keys: Sequence[str], clock_mhz: float, *,
                columns: Sequence[str] = (ELEMENTWISE, BYTES, OPS, FIXED), robust: bool = False,
                loss: str = "relative") -> Fit:
    """Non-negative least squares of latency on features, each row weighted for a relative error.

    `keys` are the MAC classes to fit (those absent from every sample are dropped);
    `columns` the other terms. `loss`: "relative" weights each row by 1/measured (least squares of
    predicted/measured - 1, which favours predicting too fast: an underestimate costs at most 100%);
    "log" reweights iteratively by 1/sqrt(predicted x measured), which approximates least squares of
    log(predicted/measured), symmetric in too fast and too slow. `robust` refits once without gross
    outliers (listed in `Fit.dropped`). Returns the coefficients and the in-sample errors.
    """
    if not samples:
        raise DataError("Nothing to fit", expected="at least one measured model", received="0 rows")
    if loss not in ("relative", "log"):
        raise ValueError(f"loss must be 'relative' or 'log', not {loss!r}")
    keys = [k for k in keys if any(s.features.get(k, 0) > 0 for s in samples)]
    cols = list(keys) + [c for c in columns if any(s.features.get(c, 0) > 0 for s in samples)]
    a = np.array([[s.features.get(c, 0.0) for c in cols] for s in samples], dtype=float)
    y = np.array([s.latency_ms * 1000.0 for s in samples], dtype=float)  # µs
    keep = np.ones(len(y), dtype=bool)

    def solve(rows: np.ndarray) -> np.ndarray:
        aa, yy = a[rows], y[rows]
        x = weighted_nnls(aa, yy, 1.0 / yy)
        if loss == "log":
            for _ in range(50):
                pred = np.maximum(aa @ x, 1e-3 * yy)
                x_new = weighted_nnls(aa, yy, 1.0 / np.sqrt(pred * yy))
                done = np.allclose(x_new, x, rtol=1e-6, atol=1e-15)
                x = x_new
                if done:
                    break
        return x

    x = solve(keep)
    if robust and len(y) >= 10:
        # Refit once without gross outliers (a timing disturbed by other processes), at most 10% of rows.
        rel = np.abs(a @ x / y - 1.0)
        limit = max(3.0 * float(np.median(rel)), 0.5)
        worst = np.argsort(-rel)[: max(1, len(y) // 10)]
        drop = [i for i in worst if rel[i] > limit]
        if drop:
            keep[drop] = False
            x = solve(keep)
    coef = dict(zip(cols, x))
    pred = a @ x / 1000.0
    errors = [float(p / s.latency_ms - 1.0) for p, s in zip(pred, samples)]
    return Fit(coef_us=coef, table=_table_from_coefs(coef, clock_mhz, keys), predictions_ms=list(pred),
               errors=errors, names=[s.name for s in samples], mode="full", parameters=len(cols),
               dropped=[samples[int(i)].name for i in np.flatnonzero(~keep)])


def weighted_nnls(a: np.ndarray, y: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """x >= 0 minimising |weight * (a x - y)|, columns rescaled for conditioning (weight 1/y: relative error)."""
    aw = a * weight[:, None]
    scale = np.maximum(np.abs(aw).max(axis=0), 1e-30)
    return nnls(aw / scale, y * weight) / scale


def fit_scale(samples: Sequence[Sample], coefs: estimate.LatencyCoefficients, graphs_features: Sequence[
        Sequence[estimate.OpCost]], *, with_fixed: bool) -> tuple[float, float, list[float]]:
    """Few rows: keep the profile's relative op costs, fit one scale (and a fixed overhead)."""
    base = np.array([sum(us for us, _ in estimate.predict_ops_us(f, coefs)) for f in graphs_features])
    y = np.array([s.latency_ms * 1000.0 for s in samples])
    if np.any(base <= 0):
        raise ProfileError("The profile's latency coefficients price these models at zero",
                           expected="a [latency] table with macs_per_cycle for the op classes measured",
                           received="zero predicted time",
                           fix="Measure more models (>= 2 per parameter) for a full fit")
    w = 1.0 / y
    cols = [base] + ([np.ones_like(base)] if with_fixed else [])
    a = np.stack(cols, axis=1) * w[:, None]
    x = nnls(a, np.ones_like(y))
    scale = float(x[0])
    fixed = float(x[1]) if with_fixed else 0.0
    pred = (base * scale + fixed) / 1000.0
    return scale, fixed, list(pred)




# --------------------------------------------------------------------------- calibrate command


@dataclass
class Calibration:
    """What `calibrate_profile` wrote: the fit per row, its mode and error, the new [latency] table."""

    profile: str
    out: Path
    rows: list[dict[str, Any]]
    mode: str
    parameters: int
    median_abs_error: float
    worst_abs_error: float
    table: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"profile": self.profile, "out": str(self.out), "rows": self.rows, "mode": self.mode,
                "parameters": self.parameters, "median_abs_error": self.median_abs_error,
                "worst_abs_error": self.worst_abs_error, "latency": self.table, "notes": list(self.notes)}


def _parse_measurement_rows(path: Path) -> tuple[list[tuple[Path, float, int | None]], list[str]]:
    """The CSV's good rows and a line-numbered problem for each bad one."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        missing = {"model_file", "latency_ms"} - set(fields)
        if missing:
            raise DataError("Measurements CSV lacks columns", where=str(path),
                            expected="a header with model_file, latency_ms[, threads]",
                            received=f"columns {fields}",
                            fix="Add the missing column(s): " + ", ".join(sorted(missing)))
        rows = []
        problems = []
        for n, row in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in row.items()}
            model = row.get("model_file", "")
            try:
                latency = float(row.get("latency_ms", ""))
                if not latency > 0:
                    raise ValueError
            except ValueError:
                problems.append(f"line {n}: latency_ms {row.get('latency_ms')!r} is not a positive number")
                continue
            threads = None
            if row.get("threads"):
                try:
                    threads = int(row["threads"])
                except ValueError:
                    problems.append(f"line {n}: threads {row['threads']!r} is not an integer")
                    continue
            model_path = Path(model)
            if not model_path.is_absolute():
                model_path = path.parent / model_path
            if not model_path.is_file():
                problems.append(f"line {n}: model_file {model!r} not found (looked at {model_path})")
                continue
            rows.append((model_path, latency, threads))
    return rows, problems


def read_measurements(path: Path | str) -> list[tuple[Path, float, int | None]]:
    """Rows of a measurements CSV: (model file, latency_ms, threads or None). Paths relative to the CSV."""
    path = Path(path)
    if not path.is_file():
        raise DataError("Measurements file not found", where=str(path),
                        expected="a CSV with columns model_file, latency_ms[, threads]", received="no such file")
    try:
        rows, problems = _parse_measurement_rows(path)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError("The measurements file is not a readable CSV", where=str(path),
                        expected="UTF-8 text: a header with model_file, latency_ms[, threads], then one row per model",
                        received=f"{type(exc).__name__}: {exc}"[:200]) from None
    if problems:
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        raise DataError("Bad rows in the measurements CSV", where=str(path),
                        expected="readable model files and positive latencies",
                        received="; ".join(problems[:5]) + more)
    if not rows:
        raise DataError("The measurements CSV has no rows", where=str(path), expected="at least one measured model",
                        received="a header only")
    return rows


def calibrate_profile(profile: Profile | str, measurements: Path | str, *, out: Path | str | None = None,
                      force: bool = False) -> Calibration:
    """Fit `profile`'s [latency] to the CSV's measurements and write the new profile atomically."""
    prof = profile if isinstance(profile, Profile) else load_profile(str(profile))
    measurements = Path(measurements)
    out_path = Path(out) if out is not None else prof.path.with_name(f"{prof.path.stem}.calibrated.toml")
    if out_path.exists() and not force:
        raise OutputExistsError("The output profile already exists", where=str(out_path),
                                expected="a new file", received="an existing file",
                                fix="Pass --force to replace it, or choose another --out")
    rows = read_measurements(measurements)
    lat = dict(prof.table("latency"))
    clock = float(lat.get("clock_mhz") or prof.clock_mhz or 0)
    if clock <= 0:
        raise ProfileError("The profile has no clock", where=f"{prof.path}: device.clock_mhz",
                           expected="a positive clock in MHz", received=clock, fix="Add clock_mhz to [device]")
    samples, feats, notes = _samples_at_profile_threads(prof, rows, measurements)
    table, preds, mode, params = _fit_table(prof, samples, feats, clock, measurements, notes)
    errors = [p / s.latency_ms - 1.0 for p, s in zip(preds, samples)]
    row_report = [{"model_file": s.name, "measured_ms": s.latency_ms, "predicted_ms": round(p, 5),
                   "error": round(e, 4)} for s, p, e in zip(samples, preds, errors)]
    new_lat = {k: v for k, v in lat.items()
               if k not in table and k not in ("elementwise_per_cycle", "bytes_per_cycle", *_TRANSFER_KEYS)}
    new_lat.update({"fitted": True, "basis": "fitted",
                    "fit_source": f"edgesparse calibrate: fit to {measurements.name} rows "
                                  + ", ".join(s.name for s in samples),
                    "fit_rows": [s.name for s in samples], "fit_threads": samples[0].threads})
    new_lat.update(table)
    new_lat["notes"] = (f"{mode} fit, {params} parameter(s), {len(samples)} rows; median |error| "
                        f"{np.median(np.abs(errors)):.1%}, worst {np.max(np.abs(errors)):.1%}")
    # Every coefficient is now fitted to the user's rows: no per-coefficient [sources] entry is left.
    write_latency(prof.path, new_lat, {}, out=out_path)
    return Calibration(profile=prof.name, out=out_path, rows=row_report, mode=mode, parameters=params,
                       median_abs_error=float(np.median(np.abs(errors))),
                       worst_abs_error=float(np.max(np.abs(errors))), table=new_lat, notes=notes)


def _samples_at_profile_threads(prof: Profile, rows: Sequence[tuple[Path, float, int | None]],
                                measurements: Path) -> tuple[list[Sample], list[list[estimate.OpCost]], list[str]]:
    """One sample (and its op features) per measured row, keeping only the rows at the profile's thread count."""
    samples, feats = [], []
    for model_path, latency, threads in rows:
        graph = load_graph(model_path)  # a path, so a bad file's error names the file the CSV row points at
        feats.append(estimate.op_features(graph, prof))
        samples.append(Sample(model_path.name, model_features(graph, prof), latency, threads or prof.threads))
    notes: list[str] = []
    thread_counts = sorted({s.threads for s in samples})
    if len(thread_counts) > 1:
        notes.append(f"rows at {len(thread_counts)} thread counts {thread_counts}: only rows at "
                     f"{prof.threads} thread(s) (the profile's) are fitted")
        keep = [i for i, s in enumerate(samples) if s.threads == prof.threads]
        if not keep:
            raise DataError("No measurement at the profile's thread count", where=str(measurements),
                            expected=f"rows with threads = {prof.threads}", received=f"threads {thread_counts}",
                            fix="Measure at the profile's [runtime] threads, or edit it")
        samples = [samples[i] for i in keep]
        feats = [feats[i] for i in keep]
    return samples, feats, notes


def _fit_table(prof: Profile, samples: Sequence[Sample], feats: Sequence[Sequence[estimate.OpCost]],
               clock: float, measurements: Path, notes: list[str]) -> tuple[dict[str, Any], list[float], str, int]:
    """The new [latency] coefficients, the predictions, the mode and the parameter count; appends notes.

    A full fit needs two rows per parameter (or a profile without coefficients to keep); with fewer
    rows the profile's relative op costs are kept and only scaled (plus a fixed overhead from 3 rows).
    """
    keys = sorted({k for s in samples for k in s.features if k not in (ELEMENTWISE, BYTES, OPS, FIXED)})
    full_params = len(keys) + 4
    existing = estimate.latency_coefficients(prof)
    if len(samples) >= 2 * full_params or existing is None or not existing.macs_per_cycle:
        fit = fit_latency(samples, keys, clock)
        if len(samples) < 2 * full_params:
            notes.append(f"only {len(samples)} rows for {fit.parameters} parameters: the fit is underdetermined; "
                         "measure more models")
        return fit.table, fit.predictions_ms, "full", fit.parameters
    with_fixed = len(samples) >= 3
    scale, fixed, preds = fit_scale(samples, existing, feats, with_fixed=with_fixed)
    mode, params = ("scale+fixed" if with_fixed else "scale"), (2 if with_fixed else 1)
    if scale <= 0:
        raise DataError("The measurements cannot be fitted", where=str(measurements),
                        expected="latencies that grow with model size", received="a zero scale")
    table: dict[str, Any] = {"macs_per_cycle": {k: v / scale for k, v in existing.macs_per_cycle.items()}}
    if existing.elementwise_per_cycle:
        table["elementwise_per_cycle"] = existing.elementwise_per_cycle / scale
    if existing.bytes_per_cycle:
        table["bytes_per_cycle"] = existing.bytes_per_cycle / scale
    table["overhead_us_per_op"] = existing.overhead_us_per_op * scale
    table["fixed_overhead_us"] = existing.fixed_overhead_us * scale + fixed
    fixed_note = f", plus {fixed:.1f} us fixed overhead" if with_fixed else ""
    notes.append(f"{len(samples)} rows support only {params} parameter(s): the profile's relative op costs "
                 f"were kept and scaled by {scale:.4g}" + fixed_note)
    return table, preds, mode, params


# --------------------------------------------------------------------------- transfers, extra rows

EXTRA_CSV = Path(__file__).resolve().with_name("calibration_extra.csv")


def read_extra_rows(path: Path | str | None = None) -> list[dict[str, str]]:
    """Rows of calibration_extra.csv: published measurements beyond ../shared/calibration, each with its
    source, the profile it calibrates ('' for none) and its use (fit, test, overhead, ratio, threads, cpu,
    check). `line` is the CSV line number (header = line 1)."""
    path = Path(path) if path is not None else EXTRA_CSV
    with path.open(newline="", encoding="utf-8") as handle:
        return [{**row, "line": str(n)} for n, row in enumerate(csv.DictReader(handle), start=2)]


def transfer_macs_per_cycle(source_mpc: Mapping[str, float], transfer_factor: float) -> dict[str, float]:
    """The target's macs_per_cycle: the source's divided by `transfer_factor` (target cycles per source cycle).

    Time then scales with the target's own clock: latency = MACs / macs_per_cycle / clock.
    """
    if not transfer_factor > 0:
        raise ValueError(f"transfer_factor must be > 0, received {transfer_factor!r}")
    return {k: float(v) / float(transfer_factor) for k, v in source_mpc.items()}


def transfer_overhead_us(source_us: float, overhead_factor: float) -> float:
    """The target's per-op or per-inference overhead in µs: the source's times `overhead_factor` (time ratio)."""
    if not overhead_factor > 0:
        raise ValueError(f"overhead_factor must be > 0, received {overhead_factor!r}")
    return float(source_us) * float(overhead_factor)



# --------------------------------------------------------------------------- profile text (kept for callers)
# Text in, text out, through the one tomlkit writer (`edgesparse.profiles.set_table` / `set_sources`),
# for callers that build profile variants as text (tests/test_estimate.py).


def render_table(name: str, values: Mapping[str, Any]) -> str:
    """One TOML table, written as the profile writer writes it."""
    return set_table("", name, values)


def replace_table(text: str, name: str, table: str | Mapping[str, Any]) -> str:
    """`text` with its [name] table replaced by `table` (as `render_table` text, or values)."""
    values = tomllib.loads(table)[name] if isinstance(table, str) else table
    return set_table(text, name, values)


def set_latency_sources(text: str, entries: Mapping[str, str]) -> str:
    """`text` with every [sources] "latency.*" entry replaced by `entries` (keys without the 'latency.')."""
    return set_sources(text, "latency", entries)

"""edgesparse sweep: accuracy against latency, size and energy over sparsity x quantization.

Why: one build answers "does 80 % sparsity fit this device"; a sweep answers "how
sparse can I go, and what does each step buy on each device". The dense model is
loaded or trained once (pipeline.prepare_inputs) and reused for every point.

Runtime families. An artifact is specific to the runtime that will load it: LiteRT with sparse kernels
gets a sparse (DENSIFY / block-sparse FULLY_CONNECTED) file, TFLite Micro an int8 file whose pruned
constants are compressed with DECODE (that file is what is checked, sized and charted; its uncompressed
size and ratio come from the build's report.json), and the pruning policy itself (block shapes) follows
the runtime. So profiles are grouped into families by (runtime, sparse_weights, block_sparsity,
block_sparsity_int8), each Ethos-U profile a family of its own (Vela compiles per accelerator configuration;
sweep_families.py); each point is built once per family, for the family's first profile, and that
artifact is checked with estimate.check_model against every profile of the family. A point a family
cannot run (float16 or dynamic on TFLM) is recorded as not buildable there.

Resume. Every finished build is published atomically under OUT/points/ and listed
in OUT/points/index.json, keyed by a hash of the model and data (file contents, or
the demo's name), the build profile (sha256) and every build option. A sweep that
was interrupted (Ctrl-C) and run again rebuilds only what is missing.

Outputs: OUT/sweep.json, sweep.csv, sweep.html; with max_accuracy_drop, the
chosen point's build (model.tflite, report.json, report.html) copied to OUT
(other families' builds of that point to OUT/for-<profile>/); the rule that
chooses is `pipeline.sweep_choice`.

Granularity. Every point of a sweep uses the base options' `--granularity`;
with `channel` the swept fraction is the share of prunable channels removed
(default points 0.25 and 0.5, `default_sparsities`), and a point's achieved
value is report.json's `channels.removed_fraction`.

Scale-out. With `scheduler` ("local[:N]" or a Dask scheduler address) each point to build is a
Dask task (`pipeline.sweep_dask`) and this process publishes each returned build into the same
points/ cache and index, so a distributed sweep resumes like a local one and a mixed run is one
sweep. Without it, every point is built here, one after another, as before.

Output location. --out must be new, empty, or a sweep directory (`is_sweep_dir`:
sweep.json written by edgesparse, or a points/ cache); it is checked, with the
options, before anything is loaded. The sweep writes only its own names there.

Raises DataError (bad options), OutputExistsError (an --out that is not a sweep
directory), OutputLocationError (one that cannot be written) and whatever a
build raises for the model and data. A failed point's pruning, conversion or
verification is recorded and the sweep goes on; when every point failed, the
sweep raises the first point's error with the distinct causes (exit code as a
single build's: the sweep produced nothing a build would not have).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edgesparse import __version__, builddir
from edgesparse._types import QUANTIZE_MODES, Progress, no_progress
from edgesparse.errors import (
    DataError,
    EdgesparseError,
    OutputExistsError,
)
from edgesparse.estimate import check_model
from edgesparse.fsutil import atomic_write_bytes, atomic_write_text, check_writable_location, staged_output_dir
from edgesparse.pipeline import build as pipeline_build
from edgesparse.pipeline import sweep_dask
from edgesparse.pipeline.build import DEMOS, BuildOptions, model_name, parse_structured
from edgesparse.pipeline.build_checks import check_granularity, check_options, untrusted_in_report
from edgesparse.pipeline.sweep_choice import choose, pareto
from edgesparse.pipeline.sweep_families import (
    Family,
    check_family_options,
    families,
    family_options,
    unbuildable_reason,
)
from edgesparse.pipeline.sweep_outputs import CSV_COLUMNS, SWEEP_CSV, SWEEP_HTML, SWEEP_JSON, csv_text, write_outputs
from edgesparse.profiles.profile import Profile, load_profile
from edgesparse.report.compression import compression_summary

__all__ = [
    "CHOSEN_FILES",
    "CSV_COLUMNS",
    "INDEX_NAME",
    "METRICS",
    "POINTS_DIR",
    "SCHEMA_VERSION",
    "SWEEP_CSV",
    "SWEEP_HTML",
    "SWEEP_JSON",
    "Family",
    "SweepOptions",
    "SweepResult",
    "achieved_sparsity",
    "choose",
    "csv_text",
    "default_sparsities",
    "families",
    "inputs_key",
    "is_sweep_dir",
    "parse_quantize",
    "parse_sparsities",
    "pareto",
    "point_key",
    "run_sweep",
    "unbuildable_reason",
    "write_outputs",
]

SCHEMA_VERSION = 1
POINTS_DIR = "points"
INDEX_NAME = "index.json"
# The chosen point's build, copied beside sweep.json (deployable as it is).
CHOSEN_FILES = (builddir.ARTIFACT, builddir.REPORT_JSON, builddir.REPORT_HTML, builddir.PRUNED_MODEL,
                builddir.SAMPLE, builddir.LABELS)
METRICS = (("latency_ms", "latency (ms)"), ("model_bytes", "model size (bytes)"),
           ("energy_mj", "energy per inference (mJ)"))
# Options that change a build's artifact or accuracy; they key the cache.
_KEYED_OPTIONS = ("schedule", "initial_sparsity", "begin_step", "end_step", "power", "frequency", "structured",
                  "skip_layers", "prune_output_layer", "min_params", "epochs", "batch_size", "seed", "trust_model",
                  "demo", "mcu_compression", "cluster", "granularity", "element_sparsity", "optimize")


_PER_POINT = ("profile", "final_sparsity", "quantize", "out", "force", "max_accuracy_drop")  # set by the sweep


@dataclass
class SweepOptions:
    """What to sweep; `base` carries the model, data and training options shared by every point."""

    base: BuildOptions
    profiles: tuple[str, ...] = ("rpi4",)
    sparsities: tuple[float, ...] | str | None = None   # None: default_sparsities(base.granularity)
    quantize: tuple[str, ...] = ("int8",)
    max_accuracy_drop: float | None = None
    out: Path | None = None
    fresh: bool = False
    scheduler: str | None = None   # None: in this process; "local[:N]" or a Dask scheduler address

    def to_dict(self) -> dict[str, Any]:
        return {"profiles": list(self.profiles), "sparsities": list(self.sparsities or ()),
                "quantize": list(self.quantize),
                "max_accuracy_drop": self.max_accuracy_drop, "out": None if self.out is None else str(self.out),
                "fresh": self.fresh, "scheduler": self.scheduler,
                "build": {k: v for k, v in self.base.to_dict().items() if k not in _PER_POINT}}


@dataclass
class SweepResult:
    out_dir: Path
    document: dict[str, Any]
    chosen: dict[str, Any] | None
    built: int
    cached: int

    @property
    def failed_choice(self) -> bool:
        """A --max-accuracy-drop was given and no point met it."""
        return self.document["options"]["max_accuracy_drop"] is not None and self.chosen is None


# --------------------------------------------------------------------------- planning

def default_sparsities(granularity: str) -> tuple[float, ...]:
    """The points a sweep builds when --sparsities is not given: channel fractions are far lower than weight ones."""
    if granularity == "channel":
        return (0.25, 0.5)
    if granularity == "2:4":
        return (0.5,)
    return (0.5, 0.7, 0.8, 0.9, 0.95)


def parse_sparsities(text: str | Sequence[float]) -> tuple[float, ...]:
    """'0.5,0.8,0.9' -> (0.5, 0.8, 0.9); each strictly between 0 and 1, no repeats."""
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        values = tuple(float(str(v).strip()) for v in items if str(v).strip())
    except ValueError:
        values = ()
    if not values or any(not 0.0 < v < 1.0 for v in values) or len(set(values)) != len(values):
        raise DataError("Bad --sparsities", expected="comma-separated distinct fractions in (0, 1), e.g. 0.5,0.8,0.9",
                        received=repr(text), fix="Write target sparsities as fractions: 0.9 means 90 % zeros")
    return values


def parse_quantize(text: str | Sequence[str]) -> tuple[str, ...]:
    """'int8,float16' -> ('int8', 'float16'): distinct modes of _types.QUANTIZE_MODES."""
    items = [q.strip() for q in (text.split(",") if isinstance(text, str) else text) if q.strip()]
    bad = [q for q in items if q not in QUANTIZE_MODES]
    if not items or bad or len(set(items)) != len(items):
        raise DataError("Bad --quantize", expected="comma-separated distinct modes from " + ", ".join(QUANTIZE_MODES),
                        received=repr(text), fix="e.g. --quantize int8,float16")
    return tuple(items)


def _file_digest(path: Path) -> str:
    """sha256 of a file, or of every file under a directory (SavedModel), by relative path."""
    digest = hashlib.sha256()
    path = Path(path)
    if path.is_dir():
        for f in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(f.relative_to(path)).encode() + b"\0")
            digest.update(hashlib.sha256(f.read_bytes()).digest())
    elif path.is_file():
        digest.update(path.read_bytes())
    else:
        raise DataError("Input not found", where=str(path), expected="an existing file or directory",
                        received="nothing there", fix="Check the --model / --data path")
    return digest.hexdigest()


def inputs_key(base) -> dict[str, Any]:
    """What the dense model and data are, by content: a changed file invalidates the cache."""
    if base.model is None:
        return {"demo": base.demo, "edgesparse": __version__}
    return {"model_sha256": _file_digest(base.model), "data_sha256": _file_digest(base.data) if base.data else None,
            "edgesparse": __version__}


def point_key(inputs: dict, base, profile, sparsity: float, quantize: str) -> str:
    opts = base.to_dict()
    keyed = {k: opts.get(k) for k in _KEYED_OPTIONS}
    blob = json.dumps({"inputs": inputs, "options": keyed, "profile": [profile.name, profile.sha256],
                       "final_sparsity": sparsity, "quantize": quantize}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _check_granularity(base: BuildOptions, sparsities: tuple[float, ...]) -> None:
    """--granularity against the other options before any build (block is judged per family: unbuildable_reason)."""
    structured = parse_structured(base.structured)
    check_granularity(base.granularity, structured=structured, element_sparsity=base.element_sparsity,
                      cluster=base.cluster, tensorboard=base.tensorboard)
    m, n = structured or (2, 4)
    if (base.granularity == "2:4" or structured is not None) and sparsities != (m / n,):
        raise DataError(f"{m}:{n} pruning always zeroes exactly {m} of every {n} weights, so a sweep has one point",
                        where="--sparsities", expected=f"--sparsities {m / n:g} (or omit it) with {m}:{n}",
                        received=",".join(f"{v:g}" for v in sparsities))


# --------------------------------------------------------------------------- cache

def _read_index(points_dir: Path) -> dict[str, Any]:
    path = points_dir / INDEX_NAME
    try:
        data = json.loads(path.read_text("utf-8"))
        return data if isinstance(data, dict) and isinstance(data.get("points"), dict) else {"points": {}}
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {"points": {}}


def _write_index(points_dir: Path, index: dict[str, Any]) -> None:
    atomic_write_text(points_dir / INDEX_NAME, json.dumps(index, indent=2, sort_keys=True) + "\n")


def _cached_report(point_dir: Path) -> dict[str, Any] | None:
    """The point's report.json if the build is complete and its artifact is the one reported."""
    try:
        report = builddir.load_report(point_dir)
        builddir.read_verified_artifact(point_dir, report)
    except (OSError, EdgesparseError):
        return None
    return report


# --------------------------------------------------------------------------- the sweep

def _default_out(base: BuildOptions) -> Path:
    return Path("build") / f"sweep-{model_name(base)}"


@dataclass
class _Plan:
    """A sweep's parsed options, profiles and jobs: one job per (sparsity, quantize, family)."""

    options: SweepOptions
    profiles: list[Profile]
    families: list[Family]
    out_dir: Path
    inputs: dict[str, Any]
    index: dict[str, Any]
    jobs: list[dict[str, Any]]
    cached: dict[str, dict[str, Any]]
    prepared: Any = None   # the dense model and data (pipeline.build.PreparedInputs), loaded on the first build

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.profiles]

    @property
    def points_dir(self) -> Path:
        return self.out_dir / POINTS_DIR


def _plan(options: SweepOptions) -> _Plan:
    """Check the options, load the profiles, and list every job with its cache state."""
    if not options.profiles:
        raise DataError("No profile to sweep for", expected="at least one --profile", received="none")
    base = options.base
    sparsities = parse_sparsities(options.sparsities if options.sparsities is not None
                                  else default_sparsities(base.granularity))
    quantizes = parse_quantize(options.quantize)
    if options.max_accuracy_drop is not None and options.max_accuracy_drop < 0:
        raise DataError("Bad --max-accuracy-drop", expected="percentage points >= 0",
                        received=options.max_accuracy_drop)
    if base.demo not in DEMOS:
        raise DataError("Unknown demo", expected=" or ".join(DEMOS), received=repr(base.demo))
    check_options(tensorboard=base.tensorboard, min_agreement=base.min_agreement, epochs=base.epochs,
                  batch_size=base.batch_size, min_params=base.min_params)
    _check_granularity(base, sparsities)
    loaded = [load_profile(p) for p in options.profiles]
    names = [p.name for p in loaded]
    if len(set(names)) != len(names):
        raise DataError("A profile was given twice", where="--profile", received=", ".join(names))
    options = dataclasses.replace(options, sparsities=sparsities, quantize=quantizes)  # recorded parsed
    fams = families(loaded)
    check_family_options(base, fams)
    out_dir = Path(options.out) if options.out else _default_out(base)
    points_dir = out_dir / POINTS_DIR
    _check_sweep_dir(out_dir)
    if options.fresh and points_dir.exists():
        shutil.rmtree(points_dir)
    points_dir.mkdir(parents=True, exist_ok=True)
    index = _read_index(points_dir)
    inputs = inputs_key(base)
    jobs = []
    for s in sparsities:
        for q in quantizes:
            for fam in fams:
                key = point_key(inputs, family_options(base, fam), fam.build_profile, s, q)
                jobs.append({"sparsity": s, "quantize": q, "family": fam, "key": key,
                             "profile": options.profiles[names.index(fam.name)],
                             "dir": points_dir / f"{fam.name}-s{s:g}-{q}-{key}",
                             "skip": unbuildable_reason(fam, q, base.granularity)})
    cached = {j["key"]: rep for j in jobs if not j["skip"] and j["key"] in index["points"]
              for rep in [_cached_report(j["dir"])] if rep is not None}
    return _Plan(options, loaded, fams, out_dir, inputs, index, jobs, cached)


def run_sweep(options: SweepOptions, progress: Progress | None = None) -> SweepResult:
    """Build and check every point (resuming from the cache), analyse, write sweep.json/csv/html.

    Raises EdgesparseError for bad input; KeyboardInterrupt leaves finished points cached.
    """
    progress = progress or no_progress
    started = time.perf_counter()
    plan = _plan(options)
    options = plan.options
    todo = [j for j in plan.jobs if not j["skip"] and j["key"] not in plan.cached]
    progress("sweep_begin", {"points": len(options.sparsities) * len(options.quantize), "jobs": len(plan.jobs),
                             "cached": len(plan.cached), "to_build": len(todo), "profiles": plan.names,
                             "families": [f.to_dict() for f in plan.families], "out": str(plan.out_dir)})
    built = _run_jobs(plan, progress)
    points = _assemble(plan.jobs, options.sparsities, options.quantize, plan.out_dir, options.base.min_agreement)
    chosen = None
    explanation = None
    rejected: list[dict] = []
    if options.max_accuracy_drop is not None:
        chosen, explanation, rejected = choose(points, plan.names, options.max_accuracy_drop)
    document = _document(plan, points, built, round(time.perf_counter() - started, 3))
    document["choice"] = None if options.max_accuracy_drop is None else {
        "max_accuracy_drop": options.max_accuracy_drop, "point": chosen["label"] if chosen else None,
        "sparsity": chosen["sparsity"] if chosen else None, "quantize": chosen["quantize"] if chosen else None,
        "explanation": explanation, "rejected": rejected, "copied_to": str(plan.out_dir) if chosen else None}
    _publish_choice(plan.out_dir, chosen, plan.families)
    write_outputs(plan.out_dir, document)
    _raise_if_nothing_built(plan)
    progress("sweep_done", {"out": str(plan.out_dir), "built": built, "cached": len(plan.cached),
                            "chosen": chosen["label"] if chosen else None})
    return SweepResult(plan.out_dir, document, chosen, built, len(plan.cached))


def _run_jobs(plan: _Plan, progress: Progress) -> int:
    """Build every job not cached, here or on a Dask cluster (--scheduler); returns how many were built."""
    todo = []
    for n, job in enumerate(plan.jobs, 1):
        fields = {"index": n, "jobs": len(plan.jobs), "sparsity": job["sparsity"], "quantize": job["quantize"],
                  "profile": job["family"].name, "key": job["key"]}
        if job["skip"]:
            job["report"] = None
            progress("point_skipped", dict(fields, reason=job["skip"]))
        elif job["key"] in plan.cached:
            job["report"] = plan.cached[job["key"]]
            progress("point_done", dict(fields, cached=True, seconds=0.0, **_headline(job["report"])))
        else:
            todo.append((job, fields))
    if not todo:
        return 0
    if plan.options.scheduler is not None:
        return _run_on_cluster(plan, todo, progress)
    return sum(_build_here(plan, job, fields, progress) for job, fields in todo)


def _point_options(plan: _Plan, job: dict) -> BuildOptions:
    """One job's build options (the same for a local and a remote build, so the same artifact)."""
    max_drop = plan.options.max_accuracy_drop
    return dataclasses.replace(
        family_options(plan.options.base, job["family"]), profile=job["profile"], final_sparsity=job["sparsity"],
        quantize=job["quantize"], out=job["dir"], force=True,
        max_accuracy_drop=max_drop if max_drop is not None else 100.0)


def _build_here(plan: _Plan, job: dict, fields: dict, progress: Progress) -> int:
    """One point in this process (the dense inputs prepared once, on the first build); 1 if built."""
    progress("point_begin", fields)
    t0 = time.perf_counter()
    prepared = _prepare_once(plan, progress)
    _remove_incomplete_point(job["dir"], plan.points_dir)
    try:
        result = pipeline_build.build(_point_options(plan, job), progress=progress, prepared=prepared)
    except sweep_dask.POINT_ERRORS as exc:  # this point only: record, go on (the same classes on a Dask worker)
        _record_failure(job, exc, fields, progress)
        return 0
    _record_built(plan, job, result.report, round(time.perf_counter() - t0, 3), fields, progress)
    return 1


def _prepare_once(plan: _Plan, progress: Progress) -> Any:
    """The dense model and data, loaded once per sweep (kept on the plan)."""
    if plan.prepared is None:
        t0 = time.perf_counter()
        progress("prepare_begin", {})
        plan.prepared = pipeline_build.prepare_inputs(plan.options.base, progress)
        progress("prepare_done", {"seconds": round(time.perf_counter() - t0, 3)})
    return plan.prepared


def _record_failure(job: dict, exc: EdgesparseError, fields: dict, progress: Progress, **extra: Any) -> None:
    job["skip"] = f"build failed: {exc.message}"
    job["error"] = exc
    job["report"] = None
    progress("point_skipped", dict(fields, reason=job["skip"], **extra))


def _record_built(plan: _Plan, job: dict, report: dict, seconds: float, fields: dict, progress: Progress,
                  worker: str | None = None, details: dict | None = None) -> None:
    """A finished build in the index (written atomically) and its "point_done"; `worker`: where a remote one ran."""
    job["report"] = report
    plan.index["points"][job["key"]] = {
        "dir": job["dir"].name, "sparsity": job["sparsity"], "quantize": job["quantize"],
        "profile": job["family"].name, "seconds": seconds, "worker": worker, **(details or {}),
        "finished_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    _write_index(plan.points_dir, plan.index)
    progress("point_done", dict(fields, cached=False, seconds=seconds, worker=worker, **_headline(report)))


def _run_on_cluster(plan: _Plan, todo: list[tuple[dict, dict]], progress: Progress) -> int:
    """Every point to build as one Dask task; each result published into points/ by this process as it arrives."""
    spec = sweep_dask.parse_scheduler(str(plan.options.scheduler))
    built = 0
    with sweep_dask.connect(spec, progress) as client:   # an unreachable scheduler fails here, before any work
        prepared = _prepare_once(plan, progress)
        tasks = {id(fields): job for job, fields in todo}
        points = [sweep_dask.PointTask(_point_options(plan, job), job["family"].build_profile.path.read_bytes(),
                                       fields) for job, fields in todo]
        for outcome in sweep_dask.run_points(client, prepared, points, progress):
            job, fields = tasks[id(outcome.task.fields)], outcome.task.fields
            if outcome.error is not None or outcome.files is None or outcome.report is None:
                if outcome.fatal:
                    raise outcome.error   # about the inputs, not this point: stops the sweep as it would here
                _record_failure(job, outcome.error, fields, progress, worker=outcome.worker)
                continue
            t0 = time.perf_counter()
            _remove_incomplete_point(job["dir"], plan.points_dir)
            report = sweep_dask.publish_point(job["dir"], outcome.files, outcome.report, profile=job["profile"],
                                              profile_path=job["family"].build_profile.path)
            details = dict(outcome.details, publish_seconds=round(time.perf_counter() - t0, 3))
            _record_built(plan, job, report, outcome.seconds, fields, progress, outcome.worker, details)
            built += 1
    return built


def _document(plan: _Plan, points: list[dict], built: int, seconds: float) -> dict[str, Any]:
    """sweep.json without its "choice" (the caller adds it)."""
    rows = [dict(r, point=p["label"]) for p in points for r in _rows_of(p, plan.names)]
    fronts = {name: {metric: [rows[i]["point"] for i in
                              pareto([r if r["profile"] == name else {} for r in rows], metric)]
                     for metric, _ in METRICS} for name in plan.names}
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "edgesparse", "version": __version__},
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "options": plan.options.to_dict(),
        "inputs": plan.inputs,
        "dense_accuracy": _dense_accuracy(points),
        "profiles": [{"name": p.name, "path": str(p.path), "sha256": p.sha256, "runtime": p.runtime,
                      "class": p.device_class, "family": next(f.name for f in plan.families if p in f.profiles),
                      "budgets": dict(p.table("budget"))} for p in plan.profiles],
        "families": [f.to_dict() for f in plan.families],
        "family_rule": ("each point is built once per runtime family (runtime, sparse_weights, block_sparsity, "
                        "block_sparsity_int8; an Ethos-U profile is a family of its own, Vela compiling per "
                        "profile) for the family's first profile and checked with estimate.check_model on "
                        "every profile of that family"),
        "points": points,
        "pareto": fronts,
        "choice": None,
        "built": built, "cached": len(plan.cached),
        "seconds": seconds,
    }


def _remove_incomplete_point(point_dir: Path, points_dir: Path) -> None:
    """A point directory that is not a complete build (its artifact deleted) is debris of the sweep's own cache."""
    if point_dir.parent == points_dir and point_dir.is_dir() and not builddir.is_build_dir(point_dir):
        shutil.rmtree(point_dir)


def _raise_if_nothing_built(plan: _Plan) -> None:
    """Every point failed or cannot run: the sweep produced nothing, so it fails like one of its builds would."""
    if any(j.get("report") is not None for j in plan.jobs):
        return
    errors = [j["error"] for j in plan.jobs if j.get("error") is not None]
    causes = list(dict.fromkeys([e.message.rstrip(".") for e in errors]
                                or [str(j["skip"]) for j in plan.jobs if j["skip"]]))
    shown = " | ".join(causes[:3]) + (f" | and {len(causes) - 3} other cause(s)" if len(causes) > 3 else "")
    error_cls = type(errors[0]) if errors else DataError
    raise error_cls(f"Every point of the sweep failed ({len(plan.jobs)} of {len(plan.jobs)})", where=str(plan.out_dir),
                    received=shown, fix=f"Fix the cause above and run the same command again; {SWEEP_JSON} lists "
                                        "each point's error")


def is_sweep_dir(path: Path) -> bool:
    """A directory an earlier sweep wrote (its sweep.json, or its points/ cache): reused without --force."""
    path = Path(path)
    if not path.is_dir():
        return False
    with contextlib.suppress(OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        if json.loads((path / SWEEP_JSON).read_text("utf-8")).get("tool", {}).get("name") == "edgesparse":
            return True
    return (path / POINTS_DIR).is_dir() and not (path / POINTS_DIR).is_symlink()


def _check_sweep_dir(out_dir: Path) -> None:
    """Refuse a directory that holds something else: the sweep replaces the chosen build's files in it."""
    check_writable_location(out_dir)
    if not out_dir.exists() and not out_dir.is_symlink():
        return
    empty = out_dir.is_dir() and not out_dir.is_symlink() and not any(out_dir.iterdir())
    if not empty and not is_sweep_dir(out_dir):
        raise OutputExistsError(
            "The sweep directory holds something that is not a sweep", where=str(out_dir),
            expected="a new or empty directory, or one an earlier `edgesparse sweep` wrote (points/, sweep.json)",
            received="a file" if not out_dir.is_dir() else "files no sweep wrote (no sweep.json or points/)",
            fix="Choose another --out: the sweep copies its chosen build over model.tflite and report.json there")


def _headline(report: dict) -> dict[str, Any]:
    acc = report.get("accuracy") or {}
    return {"accuracy": acc.get("tflite"), "drop_points": acc.get("drop_points"),
            "artifact_bytes": (report.get("sizes") or {}).get("artifact_bytes"),
            "achieved": achieved_sparsity(report)}


def achieved_sparsity(report: dict) -> float | None:
    """What a point reached on the swept axis: channels removed in a channel build, else the weights' sparsity."""
    channels = report.get("channels")
    if channels:
        return channels.get("removed_fraction")
    return (report.get("sparsity") or {}).get("overall")


def _point_label(s: float, q: str) -> str:
    return f"{s:g}/{q}"


def _assemble(jobs: list[dict], sparsities: Sequence[float], quantizes: Sequence[str], out_dir: Path,
              min_agreement: float) -> list[dict]:
    """One entry per (sparsity, quantize): each family's build, each profile's check."""
    points = []
    for s in sparsities:
        for q in quantizes:
            point = {"label": _point_label(s, q), "sparsity": s, "quantize": q, "builds": {}, "checks": {}}
            for job in (j for j in jobs if j["sparsity"] == s and j["quantize"] == q):
                fam, report = job["family"], job.get("report")
                if report is None:
                    point["builds"][fam.name] = {"error": job["skip"]}
                    for p in fam.profiles:
                        point["checks"][p.name] = {"profile": p.name, "error": job["skip"], "budgets": []}
                    continue
                artifact = (job["dir"] / builddir.ARTIFACT).read_bytes()
                acc = report["accuracy"]
                untrusted = untrusted_in_report(report, min_agreement)
                point["builds"][fam.name] = {
                    "dir": str(job["dir"].relative_to(out_dir)), "key": job["key"],
                    "achieved_sparsity": achieved_sparsity(report), "accuracy_dense": acc["dense_float"],
                    "accuracy_pruned": acc["pruned_keras"], "accuracy": acc["tflite"],
                    "drop_points": acc["drop_points"], "test": acc.get("test"),
                    "artifact_bytes": report["sizes"]["artifact_bytes"],
                    "artifact_gzip_bytes": report["sizes"]["artifact_gzip_bytes"],
                    "has_densify": report["conversion"]["has_densify"],
                    "compression": compression_summary(report.get("compression"))}
                for p in fam.profiles:
                    # An Ethos-U family is its build profile alone: the build priced Vela's compilation of the plain
                    # int8 file; the compiled model.tflite alone has no cycles to price.
                    c = report["check"] if p.npu is not None else check_model(artifact, p).to_dict()
                    point["checks"][p.name] = {
                        "profile": p.name, "build": fam.name, "accuracy": acc["tflite"],
                        "drop_points": acc["drop_points"], "model_bytes": len(artifact),
                        "flash_bytes": c["flash_bytes"], "ram_bytes": c["ram_bytes"], "latency_ms": c["latency_ms"],
                        "energy_mj": c["energy_mj"], "battery_hours": c["battery_hours"], "fits": c["fits"],
                        "basis": c["basis"], "budgets": c["budgets"], "warnings": c["warnings"],
                        "untrusted": untrusted}
            points.append(point)
    return points


def _rows_of(point: dict, profiles: Sequence[str]) -> list[dict]:
    return [dict(point["checks"].get(name) or {"profile": name, "error": "no build"}, sparsity=point["sparsity"],
                 quantize=point["quantize"]) for name in profiles]


def _dense_accuracy(points: Sequence[dict]) -> float | None:
    for p in points:
        for b in p["builds"].values():
            if b.get("accuracy_dense") is not None:
                return b["accuracy_dense"]
    return None


def _publish_choice(out_dir: Path, chosen: dict | None, fams: Sequence[Family]) -> None:
    """Copy the chosen point's builds beside sweep.json; remove an earlier sweep's choice first."""
    for name in CHOSEN_FILES:
        (out_dir / name).unlink(missing_ok=True)
    for old in out_dir.glob("for-*"):
        if old.is_dir() and not old.is_symlink() and builddir.is_build_dir(old):
            shutil.rmtree(old)
    if chosen is None:
        return
    for i, fam in enumerate(fams):
        build = chosen["builds"].get(fam.name) or {}
        if not build.get("dir"):
            continue
        src = out_dir / build["dir"]
        if i == 0:
            for name in CHOSEN_FILES:
                if (src / name).is_file():
                    atomic_write_bytes(out_dir / name, (src / name).read_bytes())
        else:
            with staged_output_dir(out_dir / f"for-{fam.name}", force=True, ours=builddir.is_build_dir) as staging:
                for name in CHOSEN_FILES:
                    if (src / name).is_file():
                        atomic_write_bytes(staging / name, (src / name).read_bytes())

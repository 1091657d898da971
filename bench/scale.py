"""Benchmark of issue 13: the same 4-point sweep, sequential against `--scheduler local:2`, in one run.

Run by `make bench` (through bench/run_all.py) or standalone:

    .venv/bin/python bench/scale.py [--epochs 2] [--workers 2] [--out DIR]

Both sweeps are the digits demo (its dense model trained once and cached beforehand, so neither
mode pays for it) at sparsities 0.5, 0.7, 0.8, 0.9, int8, profile rpi4, each into a fresh
directory, each in its own child process (`python bench/scale.py --child MODE OUT`, which calls
`pipeline.sweep.run_sweep` and writes its progress events, timed, to OUT/events.json). Measured:

- wall time of each child (start to exit);
- peak memory: the parent samples the resident set of the driver (the child) and of each of its
  descendants (the LocalCluster's nannies and workers) every SAMPLE_SECONDS with psutil; the peak
  of the driver, and the peak of the largest worker, are reported;
- per-point overhead of the distributed run, from its events and its points/index.json: cluster
  start, packing and scattering the inputs (bytes), per point the task's seconds on its worker
  against the build's own `timings_s.total` (the difference is the worker's unpacking of the
  inputs, TensorFlow's import on a worker's first point, and reading the build back), and the
  driver's publishing (point_done of a point after its task returned is not observable from
  outside: it is inside the task-to-point_done gap the events give).

The same run projects a 100-point sweep against the number of workers (`projection`); its
assumptions are printed with it and in docs/scale.md. The Markdown section goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

__all__ = ["SPARSITIES", "main", "measure", "projection", "render", "run"]

SPARSITIES = (0.5, 0.7, 0.8, 0.9)
SAMPLE_SECONDS = 0.2
OUT = REPO / "build" / "bench-scale"
EPOCHS = 2
WORKERS = 2


def _child(mode: str, out: Path, epochs: int) -> int:
    """Run one sweep in this process (the driver); write its timed progress events beside it."""
    from edgesparse.pipeline import sweep
    from edgesparse.pipeline.build import BuildOptions

    events: list[tuple[float, str, dict[str, Any]]] = []
    t0 = time.perf_counter()

    def progress(event: str, fields: dict[str, Any]) -> None:
        if event in ("cluster_ready", "prepare_done", "inputs_scattered", "point_begin", "point_moved",
                     "point_done", "point_skipped", "sweep_done"):
            events.append((round(time.perf_counter() - t0, 3), event, fields))

    options = sweep.SweepOptions(base=BuildOptions(epochs=epochs), profiles=("rpi4",), sparsities=SPARSITIES,
                                 out=out, scheduler=None if mode == "sequential" else mode)
    result = sweep.run_sweep(options, progress)
    (out / "events.json").write_text(json.dumps({"events": events, "built": result.built}, default=str))
    return 0


def _tree_rss(psutil: Any, proc: Any) -> tuple[int, int]:
    """(driver RSS, largest descendant RSS) in bytes, now."""
    driver = proc.memory_info().rss
    largest = 0
    for child in proc.children(recursive=True):
        try:
            largest = max(largest, child.memory_info().rss)
        except psutil.Error:
            continue
    return driver, largest


def _run_child(mode: str, out: Path, epochs: int) -> dict[str, Any]:
    """One sweep in a child process: wall seconds, peak driver and worker RSS, its events."""
    import psutil

    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, "--child", mode, str(out), "--epochs", str(epochs)],
                            stdout=sys.stderr, stderr=sys.stderr)
    watched = psutil.Process(proc.pid)
    peak_driver = peak_worker = 0
    while proc.poll() is None:
        try:
            driver, worker = _tree_rss(psutil, watched)
        except psutil.Error:
            break
        peak_driver, peak_worker = max(peak_driver, driver), max(peak_worker, worker)
        time.sleep(SAMPLE_SECONDS)
    if proc.wait() != 0:
        raise RuntimeError(f"the {mode} sweep failed (exit {proc.returncode})")
    wall = time.perf_counter() - started
    data = json.loads((out / "events.json").read_text())
    index = json.loads((out / "points" / "index.json").read_text())["points"]
    points = []
    for key, entry in index.items():
        report = json.loads((out / "points" / entry["dir"] / "report.json").read_text())
        points.append({"build_seconds": report["timings_s"]["total"], **entry, "key": key})
    return {"mode": mode, "wall": wall, "peak_driver": peak_driver, "peak_worker": peak_worker,
            "events": data["events"], "points": sorted(points, key=lambda p: p["sparsity"])}


def measure(epochs: int = EPOCHS, workers: int = WORKERS, out: Path = OUT) -> dict[str, Any]:
    """Both sweeps, one after the other, after the demo model is cached (neither pays for training it)."""
    from edgesparse.pipeline.demos import digits

    digits.demo_model()
    load_before = os.getloadavg()[0]
    sequential = _run_child("sequential", out / "sequential", epochs)
    distributed = _run_child(f"local:{workers}", out / f"local{workers}", epochs)
    return {"epochs": epochs, "workers": workers, "sequential": sequential, "distributed": distributed,
            "load": (load_before, os.getloadavg()[0]),
            "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()}


def _event_time(run: dict[str, Any], name: str) -> float | None:
    return next((t for t, e, _ in run["events"] if e == name), None)


def _event_field(run: dict[str, Any], name: str, field: str) -> Any:
    return next((f.get(field) for _, e, f in run["events"] if e == name), None)


def projection(m: dict[str, Any], points: int = 100, worker_counts: tuple[int, ...] = (1, 2, 4, 8, 16, 32)
               ) -> list[tuple[int, float]]:
    """Wall seconds of a `points`-point sweep on W workers, from this run's measured figures.

    T(W) = fixed + max(ceil(points / W) * (build + task_overhead), points * publish), where build is the
    sequential run's median point, task_overhead the distributed run's median time outside build() on a
    worker after its first point, publish the driver's median publishing time (serial: one driver),
    and fixed = cluster start + preparing and scattering the inputs + the largest first-point extra
    (TensorFlow's import and the unpacking, paid once per worker, in parallel).
    """
    seq, dist = m["sequential"], m["distributed"]
    build = _median([p["seconds"] for p in seq["points"]])
    finished = [f["key"] for _, e, f in dist["events"] if e == "point_done"]
    by_key = {p["key"]: p for p in dist["points"]}
    first_by_worker: dict[str, float] = {}
    later = []
    for key in finished:   # a worker's first point pays TensorFlow's import and the unpacking
        point = by_key[key]
        outside = point["seconds"] - point["build_seconds"]
        if point["worker"] in first_by_worker:
            later.append(outside)
        else:
            first_by_worker[point["worker"]] = outside
    task_overhead = _median(later) if later else min(first_by_worker.values())
    publish = _median([p.get("publish_seconds", 0.0) for p in dist["points"]])
    fixed = (_event_time(dist, "cluster_ready") or 0.0) + (_event_field(dist, "prepare_done", "seconds") or 0.0) \
        + (_event_field(dist, "inputs_scattered", "seconds") or 0.0) + max(first_by_worker.values()) - task_overhead
    return [(w, fixed + max(math.ceil(points / w) * (build + task_overhead), points * publish))
            for w in worker_counts]


def _overhead(point: dict[str, Any]) -> float:
    """What a distributed point costs beyond its build: the task's time outside build() on its worker
    (environment, unpacking the inputs, TensorFlow's import on a worker's first point, reading the
    build back) and the driver's publishing of the files."""
    return point["seconds"] - point["build_seconds"] + point.get("publish_seconds", 0.0)


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def render(m: dict[str, Any]) -> str:
    seq, dist = m["sequential"], m["distributed"]
    mib = 1 << 20
    lines = [
        "## Scale-out: a 4-point sweep, sequential against --scheduler local:2",
        "",
        f"The digits demo, sparsities {', '.join(f'{s:g}' for s in SPARSITIES)}, int8, rpi4, --epochs "
        f"{m['epochs']}, on {m['cores']} cores; each sweep in its own process into a fresh directory "
        "(`bench/scale.py`). Memory is resident set size sampled every 0.2 s.",
        "",
        f"| | sequential | local:{m['workers']} |",
        "|---|---:|---:|",
        f"| wall time | {seq['wall']:.1f} s | {dist['wall']:.1f} s |",
        f"| speed-up | 1.00x | {seq['wall'] / dist['wall']:.2f}x |",
        f"| peak memory, driver | {seq['peak_driver'] / mib:.0f} MiB | {dist['peak_driver'] / mib:.0f} MiB |",
        f"| peak memory, largest worker | - | {dist['peak_worker'] / mib:.0f} MiB |",
        f"| cluster start (to cluster_ready) | - | {(_event_time(dist, 'cluster_ready') or 0):.1f} s |",
        f"| dense inputs prepared (driver, once) | {(_event_field(seq, 'prepare_done', 'seconds') or 0):.1f} s | "
        f"{(_event_field(dist, 'prepare_done', 'seconds') or 0):.1f} s |",
        f"| inputs packed and scattered (once) | - | {(_event_field(dist, 'inputs_scattered', 'seconds') or 0):.2f} s"
        f" ({(_event_field(dist, 'inputs_scattered', 'bytes') or 0) / 1024:.0f} KiB) |",
        "",
        "Per point (seconds): the sequential point (index.json `seconds`: build() in the driver), the same "
        "build() on its worker, the task's unpacking of the inputs (with TensorFlow's import: a worker's first "
        "point only), the driver's publishing of the returned files, and the overhead (task time outside build() "
        f"plus publishing). Load average (1 min) before and after the runs: {m['load'][0]:.1f}, {m['load'][1]:.1f} "
        f"on {m['cores']} cores (other work on the machine slows both runs, unevenly).",
        "",
        "| sparsity | sequential point | local:N build() | unpack (TF import) | publish | overhead | worker |",
        "|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s_point, d_point in zip(seq["points"], dist["points"]):
        lines.append(f"| {s_point['sparsity']:g} | {s_point['seconds']:.1f} | {d_point['build_seconds']:.1f} | "
                     f"{d_point.get('unpack_seconds', 0):.1f} | {d_point.get('publish_seconds', 0):.2f} | "
                     f"{_overhead(d_point):.1f} | {d_point.get('worker')} |")
    lines += ["", "Projected wall time of a 100-point sweep (the model in docs/scale.md):", "",
              "| workers | projected wall time |", "|---:|---:|"]
    lines += [f"| {w} | {t / 60:.1f} min |" for w, t in projection(m)]
    return "\n".join(lines) + "\n"


def run() -> str:
    """bench/run_all.py's entry: the Markdown section of one run."""
    return render(measure())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("MODE", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--workers", type=int, default=WORKERS)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--render", action="store_true", help="re-render OUT/measured.json (no new run)")
    args = parser.parse_args(argv)
    if args.child:
        return _child(args.child[0], Path(args.child[1]), args.epochs)
    if args.render:
        print(render(json.loads((args.out / "measured.json").read_text())))
        return 0
    measured = measure(args.epochs, args.workers, args.out)
    (args.out / "measured.json").write_text(json.dumps(measured, indent=1, default=str))
    print(render(measured))
    return 0


if __name__ == "__main__":
    sys.exit(main())

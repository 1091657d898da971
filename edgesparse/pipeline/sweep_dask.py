"""A sweep's points as Dask tasks: `edgesparse sweep --scheduler ADDRESS|local[:N]`.

Why Dask: a sweep point is a full fine-tune, convert and verify; many points outgrow one
machine, and Dask runs unchanged on the clusters users have (Kubernetes, SLURM/PBS through
dask-jobqueue, YARN, the clouds). This module only turns points into tasks; what a point is,
its cache key and where its build is published stay in `pipeline.sweep`, so a distributed
sweep writes the same points/ cache as a local one (a resumed or mixed run is the same sweep).

- One point is one task (`build_point`). The dense model and data are prepared once on the
  driver, packed as bytes (`pack_inputs`: the model as .keras, the arrays as .npz) and
  scattered once; each worker unpacks them once per process and keeps them for its next points.
- A task sets the TensorFlow environment from its worker's resources BEFORE TensorFlow is
  imported in that process (`tf_env.prepare_process`), and returns the build's files as bytes
  with its report, never a Keras model (a model with pruning wrappers does not pickle).
- Failures: a point whose build raises Conversion/Pruning/VerificationError, or any exception
  that is not an EdgesparseError, comes back as a failed point with the worker's error; an
  EdgesparseError about the inputs (DataError, ModelError, MissingDependency...) stops the sweep
  as it would locally. A worker that dies mid-point: the scheduler reschedules the task; after
  Dask's allowed failures (`distributed.scheduler.allowed-failures`) the point fails, saying so.
- `local:N` starts a LocalCluster of N worker processes bound to 127.0.0.1, dashboard off,
  each worker recycled after WORKER_LIFETIME (TF workers grow, about 35 MiB a point).

Raises MissingDependency (dask[distributed] not installed: edgesparse[distributed]) and
DataError (a bad --scheduler, or a scheduler that cannot be reached: exit 2, naming it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgesparse import builddir, errors
from edgesparse._types import Progress
from edgesparse.data import Dataset
from edgesparse.errors import DataError, EdgesparseError, MissingDependency, UnexpectedError
from edgesparse.fsutil import atomic_write_bytes, staged_output_dir
from edgesparse.pipeline import build as pipeline_build
from edgesparse.pipeline.build import BuildOptions, PreparedInputs
from edgesparse.pipeline.tf_env import import_tf, prepare_process
from edgesparse.report.html import write_report_html

__all__ = [
    "LOCAL_HOST",
    "POINT_ERRORS",
    "WORKER_LIFETIME",
    "PointOutcome",
    "PointTask",
    "SchedulerSpec",
    "build_point",
    "connect",
    "pack_inputs",
    "parse_scheduler",
    "publish_point",
    "run_points",
    "unpack_inputs",
]

LOCAL_HOST = "127.0.0.1"          # local:N binds here only: no routable address, no traffic elsewhere
WORKER_LIFETIME = ("1 hour", "5 minutes")   # (lifetime, stagger) of a local:N worker before Dask restarts it
POLL_SECONDS = 0.5                 # how often the driver asks the scheduler which worker runs what
# A point whose task the scheduler cancels (seen as "already forgotten" right after a worker died) is submitted
# again this many times before it fails: a point is idempotent, and its inputs are scattered again with it.
RESUBMITS = 2
# A build error about this point only: recorded as a failed point, the sweep goes on (as sweep.py does locally).
POINT_ERRORS = (errors.ConversionError, errors.PruningError, errors.VerificationError)
_INSTALL_HINT = "Install it with: pip install 'edgesparse[distributed]'"


@dataclass(frozen=True)
class SchedulerSpec:
    """--scheduler parsed: `workers` local processes (address None), or a running scheduler's address."""

    address: str | None
    workers: int | None = None

    @property
    def local(self) -> bool:
        return self.address is None

    def describe(self) -> str:
        return f"local:{self.workers}" if self.local else str(self.address)


def parse_scheduler(text: str) -> SchedulerSpec:
    """'local' / 'local:N' / 'tcp://host:port' (or any Dask protocol) -> SchedulerSpec. Raises DataError."""
    text = text.strip()
    if text == "local" or text.startswith("local:"):
        count = text.partition(":")[2] or str(_usable_cores())
        if not count.isdigit() or int(count) < 1:
            raise DataError("Bad --scheduler", expected="local, local:N with N >= 1, or a Dask scheduler address "
                            "such as tcp://10.0.0.5:8786", received=repr(text))
        return SchedulerSpec(None, int(count))
    _, _, hostport = text.rpartition("://")
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise DataError("Bad --scheduler", expected="local[:N] or a Dask scheduler address with its port, "
                        "e.g. tcp://10.0.0.5:8786", received=repr(text))
    return SchedulerSpec(text if "://" in text else f"tcp://{text}")


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise MissingDependency("Dask distributed is needed for --scheduler and is not installed",
                                where="--scheduler", received=str(exc), fix=_INSTALL_HINT) from None
    return distributed


@contextlib.contextmanager
def connect(spec: SchedulerSpec, progress: Progress) -> Iterator[Any]:
    """A Client of a started LocalCluster (closed on exit) or of the user's scheduler (left running)."""
    distributed = _import_distributed()
    cluster = None
    try:
        if spec.local:
            cores = _usable_cores()
            n = int(spec.workers or 1)
            lifetime, stagger = WORKER_LIFETIME
            # One task at a time per worker; TF's threads are the worker's share of the cores ("cpus").
            cluster = distributed.LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, host=LOCAL_HOST, dashboard_address=None,
                resources={"cpus": max(1, cores // n)}, lifetime=lifetime, lifetime_stagger=stagger,
                lifetime_restart=True, silence_logs=40)
            client = distributed.Client(cluster)
        else:
            client = distributed.Client(spec.address)
    except (OSError, TimeoutError, RuntimeError) as exc:   # RuntimeError: a LocalCluster's worker did not start
        if cluster is not None:
            cluster.close()
        if spec.local:
            raise DataError("Could not start the local Dask cluster", where=spec.describe(),
                            received=f"{type(exc).__name__}: {exc}",
                            fix="Run edgesparse as a command (its entry point guards __main__), or use fewer "
                                "workers") from None
        raise DataError("Cannot reach the Dask scheduler", where=spec.describe(),
                        expected="a running Dask scheduler at that address (dask scheduler; dask worker ADDRESS)",
                        received=f"{type(exc).__name__}: {exc}",
                        fix="Start the scheduler and its workers, check the address and port, or use "
                            "--scheduler local:N") from None
    try:
        workers = sorted(client.scheduler_info().get("workers", {}))
        progress("cluster_ready", {"scheduler": spec.describe(), "address": client.scheduler.address,
                                   "workers": workers})
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


# --------------------------------------------------------------------------- the inputs, as bytes

def pack_inputs(prepared: PreparedInputs) -> bytes:
    """The dense model (.keras), the data set and the test split (.npz) and their facts (JSON), in one zip."""
    arrays = {"x_train": prepared.dataset.x_train, "y_train": prepared.dataset.y_train,
              "x_val": prepared.dataset.x_val, "y_val": prepared.dataset.y_val}
    if prepared.test is not None:
        arrays.update(x_test=prepared.test[0], y_test=prepared.test[1])
    npz = io.BytesIO()
    np.savez(npz, **arrays)
    meta = {"num_classes": prepared.dataset.num_classes, "source": prepared.dataset.source,
            "labels": prepared.dataset.labels, "model_info": prepared.model_info,
            "dense_accuracy": prepared.dense_accuracy, "dense_test_accuracy": prepared.dense_test_accuracy,
            "warnings": list(prepared.warnings)}
    with tempfile.TemporaryDirectory(prefix="edgesparse-inputs-") as tmp:
        path = Path(tmp) / "dense.keras"
        prepared.model.save(path)
        model = path.read_bytes()
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        z.writestr("dense.keras", model)
        z.writestr("data.npz", npz.getvalue())
        z.writestr("meta.json", json.dumps(meta))
    return out.getvalue()


def unpack_inputs(blob: bytes, trust_model: bool = False) -> PreparedInputs:
    """pack_inputs' bytes -> PreparedInputs (the model is loaded with tf_keras, as the driver had it)."""
    keras = import_tf()[1]
    with zipfile.ZipFile(io.BytesIO(blob)) as z:
        meta = json.loads(z.read("meta.json"))
        arrays = dict(np.load(io.BytesIO(z.read("data.npz"))))
        with tempfile.TemporaryDirectory(prefix="edgesparse-inputs-") as tmp:
            path = Path(tmp) / "dense.keras"
            path.write_bytes(z.read("dense.keras"))
            model = keras.models.load_model(path, compile=False, safe_mode=not trust_model)
    dataset = Dataset(arrays["x_train"], arrays["y_train"], arrays["x_val"], arrays["y_val"],
                      meta["num_classes"], meta["source"], meta["labels"])
    test = (arrays["x_test"], arrays["y_test"]) if "x_test" in arrays else None
    return PreparedInputs(model, dataset, meta["model_info"], meta["dense_accuracy"], test,
                          meta["dense_test_accuracy"], meta["warnings"])


# --------------------------------------------------------------------------- the task (runs on a worker)

_INPUTS: dict[str, PreparedInputs] = {}   # this worker process's unpacked inputs, by digest (one sweep at a time)


def _current_worker() -> Any | None:
    """The Dask worker running this task, probed once per task; None when called outside a worker."""
    with contextlib.suppress(ImportError, ValueError):
        from distributed import get_worker

        return get_worker()
    return None


def _worker_cpus(worker: Any | None) -> int:
    """This worker's share of cores: its declared "cpus" resource, else its task threads."""
    if worker is None:
        return _usable_cores()
    cpus = (worker.state.total_resources or {}).get("cpus")
    return max(1, int(cpus if cpus else worker.state.nthreads))


def _topic(digest: str) -> str:
    """The scheduler event topic a sweep's tasks announce themselves on (one per sweep inputs)."""
    return f"edgesparse-sweep-{digest[:16]}"


def _announce(worker: Any | None, digest: str, key: str) -> str:
    """Tell the driver (through the scheduler's event log) that this worker now runs this point; its name."""
    if worker is None:
        return f"pid {os.getpid()}"
    address = str(worker.address)
    worker.log_event(_topic(digest), {"key": key, "worker": address, "pid": os.getpid()})
    return address


def build_point(inputs: bytes, digest: str, options: BuildOptions, profile_toml: bytes, key: str) -> dict[str, Any]:
    """Build one point in this worker; return its files (bytes), report and timings, or its error.

    The TensorFlow environment is set before this process first imports TensorFlow; the build
    runs in a temporary directory that is read back and removed.
    """
    started = time.perf_counter()
    this_worker = _current_worker()
    threads = prepare_process(_worker_cpus(this_worker))
    worker = _announce(this_worker, digest, key)
    if digest not in _INPUTS:
        _INPUTS.clear()
        _INPUTS[digest] = unpack_inputs(inputs, options.trust_model)
    unpacked = round(time.perf_counter() - started, 3)
    with tempfile.TemporaryDirectory(prefix="edgesparse-point-") as tmp:
        profile = Path(tmp) / "profile.toml"
        profile.write_bytes(profile_toml)
        out = Path(tmp) / "point"
        point_options = dataclasses.replace(options, profile=str(profile), out=out, force=True)
        build_started = time.perf_counter()
        try:
            result = pipeline_build.build(point_options, prepared=_INPUTS[digest])
        except EdgesparseError as exc:
            return {"error": {"class": type(exc).__name__, "what": exc.what, "where": exc.where,
                              "expected": exc.expected, "fix": exc.fix,
                              "received": None if exc.received is None else str(exc.received)},
                    "worker": worker, "pid": os.getpid(), "threads": threads}
        build_seconds = round(time.perf_counter() - build_started, 3)
        files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    return {"files": files, "report": result.report, "worker": worker, "pid": os.getpid(), "threads": threads,
            "seconds": round(time.perf_counter() - started, 3), "unpack_seconds": unpacked,
            "build_seconds": build_seconds}


# --------------------------------------------------------------------------- the driver

def publish_point(point_dir: Path, files: dict[str, bytes], report: dict[str, Any], *, profile: str,
                  profile_path: Path) -> dict[str, Any]:
    """A worker's build written to `point_dir` atomically (staged, then renamed), its report as a local build's.

    report.json and report.html are written here: the worker built under its own temporary paths,
    and a point built remotely must read as one built by the driver (its out and profile path).
    """
    report["options"]["out"] = str(point_dir)
    report["options"]["profile"] = profile
    report["profile"]["path"] = str(profile_path)
    with staged_output_dir(point_dir, True, ours=builddir.is_build_dir) as staging:
        for name, data in files.items():
            if name not in (builddir.REPORT_JSON, builddir.REPORT_HTML):
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                atomic_write_bytes(staging / name, data)
        builddir.write_report(staging, report)
        write_report_html(staging, report)
    return report


@dataclass
class PointTask:
    """One point to build: its options (profile and out set by the worker), its profile file, its progress fields."""

    options: BuildOptions
    profile_toml: bytes
    fields: dict[str, Any]


@dataclass
class PointOutcome:
    """A finished task: `files` and `report` when it was built, else `error` (and `fatal` if it stops the sweep)."""

    task: PointTask
    worker: str | None
    files: dict[str, bytes] | None = None
    report: dict[str, Any] | None = None
    error: EdgesparseError | None = None
    fatal: bool = False
    seconds: float = 0.0
    details: dict[str, Any] = dataclasses.field(default_factory=dict)


def _rebuilt_error(fields: dict[str, Any], worker: str) -> EdgesparseError:
    """The worker's EdgesparseError, as its own class, with the worker named in `where`."""
    cls = getattr(errors, fields["class"], EdgesparseError)
    if not (isinstance(cls, type) and issubclass(cls, EdgesparseError)):
        cls = EdgesparseError
    where = f"{fields['where']}, on worker {worker}" if fields.get("where") else f"on worker {worker}"
    return cls(fields["what"], where=where, expected=fields.get("expected"), received=fields.get("received"),
               fix=fields.get("fix"))


def _failed_task(distributed: Any, future: Any, worker: str | None) -> EdgesparseError:
    """Why a task ended in error: a worker that kept dying, or the exception the point raised."""
    if future.status == "cancelled":
        return EdgesparseError("The Dask scheduler cancelled this point", where=f"on {worker or 'the cluster'}",
                               received="the task was cancelled (the scheduler or the connection to it was lost)",
                               fix="Check the scheduler, then run the same command again: finished points are "
                                   "cached")
    exc = future.exception()
    if isinstance(exc, distributed.KilledWorker):
        return EdgesparseError("The worker building this point died", where=f"last on {worker or 'a worker'}",
                               received=f"its workers died more times than the scheduler allows "
                                        f"(distributed.scheduler.allowed-failures: "
                                        f"{_scheduler_setting(distributed, 'allowed-failures')}): {exc}",
                               fix="Look for an out-of-memory kill in the worker's log; give workers more memory "
                                   "or fewer threads, then run the same command again")
    return UnexpectedError("The point raised on its worker", where=f"on worker {worker or '?'}",
                           received=f"{type(exc).__name__}: {exc}",
                           fix="An unexpected exception, not a problem with this point's options: please report it "
                               "with the command and this message")


def _scheduler_setting(distributed: Any, key: str) -> str:
    """A `distributed.scheduler.*` setting as the scheduler itself has it (a remote one has its own config), for
    messages; "unknown" when the scheduler cannot be asked."""
    try:
        return str(distributed.default_client().run_on_scheduler(_read_scheduler_setting, key))
    except (OSError, TimeoutError, ValueError):
        return "unknown"


def _read_scheduler_setting(key: str, dask_scheduler: Any = None) -> Any:
    """Run on the scheduler by Client.run_on_scheduler (which passes `dask_scheduler`)."""
    import dask

    return dask.config.get(f"distributed.scheduler.{key}")


def run_points(client: Any, prepared: PreparedInputs, tasks: Sequence[PointTask],
               progress: Progress) -> Iterator[PointOutcome]:
    """Scatter the inputs once, submit one task per point, yield each outcome as it finishes.

    Progress: "inputs_scattered"; "point_begin" when a worker starts a point (fields + "worker",
    "pid"); "point_moved" when a point starts again on another worker (its first worker died).
    Pending tasks are cancelled when the caller stops iterating (an error, Ctrl-C).
    """
    distributed = _import_distributed()
    t0 = time.perf_counter()
    blob = pack_inputs(prepared)
    digest = hashlib.sha256(blob).hexdigest()
    scattered = [client.scatter(blob, broadcast=True, hash=False)]
    progress("inputs_scattered", {"bytes": len(blob), "seconds": round(time.perf_counter() - t0, 3)})
    futures: dict[Any, PointTask] = {}
    submitted: dict[int, int] = {}   # id(task) -> submissions

    def submit(i: int, task: PointTask) -> Any:
        submitted[id(task)] = submitted.get(id(task), 0) + 1
        key = f"edgesparse-point-{task.fields['key']}-{digest[:8]}-{i}-{submitted[id(task)]}"
        future = client.submit(build_point, scattered[-1], digest, task.options, task.profile_toml, key, key=key,
                               pure=False, retries=0)
        futures[future] = task
        return future

    pending = {submit(i, task) for i, task in enumerate(tasks)}
    placed: dict[str, str] = {}
    seen = 0
    try:
        while pending:
            done, pending = _wait(distributed, pending)
            # Finished results first: a result is safe only once gathered here (a worker that dies
            # holding it makes Dask compute the point again).
            for future in done:
                task = futures[future]
                if future.status == "cancelled" and submitted[id(task)] <= RESUBMITS:
                    scattered.append(client.scatter(blob, broadcast=True, hash=False))
                    pending.add(submit(tasks.index(task), task))
                    continue
                yield _outcome(distributed, future, task, placed.get(task.fields["key"]))
            seen = _report_placement(client, digest, futures, placed, seen, progress)
    finally:
        for future in pending:
            future.cancel()
        client.cancel(scattered)


def _wait(distributed: Any, pending: set) -> tuple[set, set]:
    """(done, still pending); a cancelled task counts as done (its status says so) instead of raising."""
    try:
        result = distributed.wait(pending, timeout=POLL_SECONDS, return_when="FIRST_COMPLETED")
    except TimeoutError:
        return set(), pending
    except distributed.client.FuturesCancelledError:
        return {f for f in pending if f.status != "pending"}, {f for f in pending if f.status == "pending"}
    return set(result.done), set(result.not_done)


def _report_placement(client: Any, digest: str, futures: dict, placed: dict[str, str], seen: int,
                      progress: Progress) -> int:
    """Which worker started which point, from the tasks' announcements; returns how many were read.

    `placed` is keyed by the point (a resubmitted point's task has a new Dask key but is the same point)."""
    by_key = {f.key: t for f, t in futures.items()}
    try:
        events = client.get_events(_topic(digest))
    except (OSError, TimeoutError):
        return seen
    for _, event in list(events)[seen:]:
        task_key, worker = event.get("key"), event.get("worker")
        if task_key not in by_key:
            continue
        point = by_key[task_key].fields["key"]
        if placed.get(point) == worker:
            continue
        fields = dict(by_key[task_key].fields, worker=worker, pid=event.get("pid"))
        if point in placed:
            progress("point_moved", dict(fields, previous_worker=placed[point]))
        else:
            progress("point_begin", fields)
        placed[point] = worker
    return len(events)


def _outcome(distributed: Any, future: Any, task: PointTask, worker: str | None) -> PointOutcome:
    if future.status != "finished":
        error = _failed_task(distributed, future, worker)
        return PointOutcome(task, worker, error=error, fatal=future.status == "cancelled")
    value = future.result()
    future.release()
    worker = value.get("worker", worker)
    if "error" in value:
        error = _rebuilt_error(value["error"], worker)
        return PointOutcome(task, worker, error=error, fatal=not isinstance(error, POINT_ERRORS),
                            details={k: value[k] for k in ("pid", "threads")})
    return PointOutcome(task, worker, files=value["files"], report=value["report"], seconds=value["seconds"],
                        details={k: value[k] for k in ("pid", "threads", "unpack_seconds", "build_seconds")})


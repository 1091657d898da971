"""edgesparse sweep --scheduler: a real Dask scheduler and two workers on 127.0.0.1, one killed mid-point.

One distributed run does everything (the machine has two cores, and each point fine-tunes): a
3-point sweep of a tiny model on an external scheduler with two single-thread workers. Two points
start on the two workers; when the third starts (on the worker that finished first) that worker
is killed by PID. The point must start again on the other worker, and the sweep must give the
same choice, accuracies and file bytes as the sequential run of the same options.

What "the same" is: model.tflite, baselines/*.tflite, sample.npz and labels.txt byte for byte,
report.json's accuracy section and achieved sparsity equal; not report.json/report.html as a
whole (they hold wall times and dates) nor pruned.keras (the .keras zip stores its save date).
Bitwise equality holds although the workers run TensorFlow with one intra-op thread and the
driver with the machine's default: the fine-tuning is seeded (keras.utils.set_random_seed) and
this model's kernels reduce in the same order at any thread count.

The failure paths run on one worker started with the `support.dask_faults` preload (a point's build raises a
RuntimeError, another's kills its worker) and allowed-failures 0: no point is fine-tuned there.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from support.dask_faults import DIE_AT, RAISE_AT, RAISED
from support.models import projection_data

from edgesparse.cli.commands import main
from edgesparse.errors import EXIT_INTERNAL
from edgesparse.pipeline import sweep as sweep_mod
from edgesparse.pipeline.build import BuildOptions

pytestmark = [pytest.mark.network, pytest.mark.tensorflow]
TESTS = Path(__file__).resolve().parents[1]

LOOPBACK = "127.0.0.1"
SPARSITIES = (0.5, 0.7, 0.9)
COMPARED_FILES = ("model.tflite", "baselines/dense_float32.tflite", "baselines/dense_int8.tflite", "sample.npz",
                  "labels.txt")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with {proc.returncode} before listening on {port}")
        with socket.socket() as s:
            if s.connect_ex((LOOPBACK, port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listened on {LOOPBACK}:{port} after {seconds} s")


def _spawn(module_args: list[str], log: Path, env: dict) -> subprocess.Popen:
    """`python -m MODULE ARGS...`, its stderr kept in `log` (the file stays open in the child only)."""
    with open(log, "wb") as err:
        return subprocess.Popen([sys.executable, "-m", *module_args], env=env, stdout=subprocess.DEVNULL, stderr=err)


@contextlib.contextmanager
def _cluster(tmp_path: Path, workers: int, allowed_failures: int, preload: str | None = None):
    """(scheduler address, {worker address: Popen}): every listener on 127.0.0.1, dashboards off, no nannies.

    Every process started here is stopped by PID on exit."""
    started: list[subprocess.Popen] = []
    env = dict(os.environ, DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=str(allowed_failures),
               PYTHONPATH=os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH")) if p))
    try:
        port = _free_port()
        scheduler = _spawn(["distributed.cli.dask_scheduler", "--host", LOOPBACK, "--port", str(port),
                            "--no-dashboard"], tmp_path / "scheduler.log", env)
        started.append(scheduler)
        _wait_for_port(port, scheduler)
        address = f"tcp://{LOOPBACK}:{port}"
        procs = {}
        for i in range(workers):
            wport = _free_port()
            worker = _spawn(["distributed.cli.dask_worker", address, "--host", LOOPBACK, "--worker-port", str(wport),
                             "--nthreads", "1", "--no-nanny", "--no-dashboard", "--name", f"w{i}",
                             *(["--preload", preload] if preload else [])], tmp_path / f"worker{i}.log", env)
            started.append(worker)
            _wait_for_port(wport, worker)
            procs[f"tcp://{LOOPBACK}:{wport}"] = worker
        yield address, procs
    finally:
        for proc in reversed(started):
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGTERM)
        for proc in reversed(started):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture()
def dask_cluster(tmp_path):
    """Two workers; a point is retried after up to three worker deaths."""
    with _cluster(tmp_path, workers=2, allowed_failures=3) as cluster:
        yield cluster


@pytest.fixture()
def faulty_dask_cluster(tmp_path):
    """One worker whose builds fail by sparsity (support.dask_faults); a worker death is not retried."""
    with _cluster(tmp_path, workers=1, allowed_failures=0, preload="support.dask_faults") as cluster:
        yield cluster


def _tiny_model(tmp_path: Path) -> tuple[Path, Path]:
    """Flatten -> Dense(32) -> Dense(4) on 8x8 inputs: the smallest model here with a layer pruning takes."""
    from edgesparse.pipeline.tf_env import import_tf

    keras = import_tf()[1]
    data = projection_data(n=128, shape=(8, 8, 1), num_classes=4, n_val=32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(32, activation="relu", name="fc"), keras.layers.Dense(4, name="head"),
                              keras.layers.Softmax()])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(data.x_train, data.y_train, epochs=5, verbose=0)
    model.save(tmp_path / "m.keras")
    np.savez(tmp_path / "d.npz", x_train=data.x_train, y_train=data.y_train, x_val=data.x_val, y_val=data.y_val)
    return tmp_path / "m.keras", tmp_path / "d.npz"


def _options(model: Path, data: Path, out: Path, scheduler: str | None = None) -> sweep_mod.SweepOptions:
    return sweep_mod.SweepOptions(base=BuildOptions(model=model, data=data, epochs=1, batch_size=32),
                                  profiles=("rpi4",), sparsities=SPARSITIES, max_accuracy_drop=50.0, out=out,
                                  scheduler=scheduler)


def _facts(result: sweep_mod.SweepResult) -> dict:
    """What must not depend on where the points ran: the choice, each point's accuracies and file bytes."""
    points = {}
    for p in result.document["points"]:
        build = p["builds"]["rpi4"]
        point_dir = result.out_dir / build["dir"]
        points[p["label"]] = {
            "accuracies": {k: build[k] for k in ("accuracy_dense", "accuracy_pruned", "accuracy", "drop_points",
                                                 "achieved_sparsity", "artifact_bytes")},
            "files": {name: hashlib.sha256((point_dir / name).read_bytes()).hexdigest() for name in COMPARED_FILES}}
    return {"choice": result.document["choice"]["point"], "points": points}


@pytest.mark.slow
def test_a_distributed_sweep_equals_the_sequential_one_and_survives_a_killed_worker(tmp_path, dask_cluster):
    address, workers = dask_cluster
    model, data = _tiny_model(tmp_path)
    sequential = sweep_mod.run_sweep(_options(model, data, tmp_path / "sequential"))

    events: list[tuple[str, dict]] = []
    killed: dict[str, object] = {}

    def progress(event: str, fields: dict) -> None:
        """Kill the worker of the third point once its first point is gathered (else Dask recomputes that too)."""
        events.append((event, dict(fields)))
        begun = [f for e, f in events if e == "point_begin"]
        if len(begun) < 3 or killed:
            return
        third = begun[2]
        done_there = [f for e, f in events if e == "point_done" and f.get("worker") == third["worker"]]
        if done_there and not any(e == "point_done" and f["key"] == third["key"] for e, f in events):
            assert third["worker"] in workers and workers[third["worker"]].pid == third["pid"]
            os.kill(third["pid"], signal.SIGKILL)
            killed.update(worker=third["worker"], key=third["key"])

    distributed = sweep_mod.run_sweep(_options(model, data, tmp_path / "distributed", address), progress)

    assert killed, "the third point never started"
    assert workers[str(killed["worker"])].wait(timeout=10) == -signal.SIGKILL
    moved = [f for e, f in events if e == "point_moved"]
    assert [(f["key"], f["previous_worker"]) for f in moved] == [(killed["key"], killed["worker"])]
    assert moved[0]["worker"] != killed["worker"]              # rescheduled on the surviving worker
    assert _facts(distributed) == _facts(sequential)
    assert distributed.built == len(SPARSITIES)

    index = json.loads((tmp_path / "distributed" / "points" / "index.json").read_text())["points"]
    assert {entry["worker"] for entry in index.values()} == set(workers)   # both workers built points
    doc = json.loads((tmp_path / "distributed" / "sweep.json").read_text())
    assert doc["options"]["scheduler"] == address
    for p in doc["points"]:                                     # a remote build reads as a local one
        report = json.loads((tmp_path / "distributed" / p["builds"]["rpi4"]["dir"] / "report.json").read_text())
        assert report["options"]["out"] == str(tmp_path / "distributed" / p["builds"]["rpi4"]["dir"])
        assert report["profile"]["path"] == str(sweep_mod.load_profile("rpi4").path)

    # The same sweep again, here: everything comes from the cache the distributed run wrote.
    again = sweep_mod.run_sweep(_options(model, data, tmp_path / "distributed"))
    assert (again.built, again.cached) == (0, len(SPARSITIES))


def test_a_point_that_raises_or_kills_its_worker_is_a_failed_point_naming_why(tmp_path, faulty_dask_cluster):
    """The first point's build raises a RuntimeError on the worker: a failed point carrying the worker's error, and
    the sweep goes on to the next point, whose build kills the worker: failed, since Dask allows no death here,
    saying the worker died and how many deaths the scheduler allows. Every point failed, so the sweep raises the first
    point's error (sweep.py's rule) naming both causes: an unexpected exception, exit 3 as the same RuntimeError raised
    in this process would give."""
    address, workers = faulty_dask_cluster
    [(worker, proc)] = workers.items()
    model, data = _tiny_model(tmp_path)
    out = tmp_path / "sweep"
    result = CliRunner().invoke(main, ["sweep", "--model", str(model), "--data", str(data), "--profile", "rpi4",
                                       "--sparsities", f"{RAISE_AT},{DIE_AT}", "--epochs", "1", "--scheduler", address,
                                       "--out", str(out)])
    output = " ".join(result.output.split())
    assert result.exit_code == EXIT_INTERNAL, output
    assert "Every point of the sweep failed (2 of 2)" in output and "Traceback" not in output
    assert "The point raised on its worker" in output and "The worker building this point died" in output
    assert proc.wait(timeout=10) == -signal.SIGKILL             # a real worker process died
    errors = {p["sparsity"]: p["builds"]["rpi4"]["error"]
              for p in json.loads((out / "sweep.json").read_text())["points"]}
    assert f"RuntimeError: {RAISED}" in errors[RAISE_AT] and f"on worker {worker}" in errors[RAISE_AT]
    assert "allowed-failures: 0)" in errors[DIE_AT] and worker in errors[DIE_AT]   # the scheduler's own setting

"""Fuzz: 1,000 mutated .tflite files (byte flips, truncations, spliced tables; seeded) through `check` and
`measure --runtime litert|tflm`: no crash, no hang over 10 s, no exit 3 or internal error; only success or an
EdgesparseError with exit 1 or 2. Plus the crashes the fuzz study found (docs/graph.md "Validation"), rebuilt
from (seed, index) and rejected by validation, and end-to-end CLI runs on corrupt files.

The harness: each of 2 workers is a forked child that runs its share of the mutants through the four calls and
reports each mutant before and after, so a crash of edgesparse's own process (a regression) is a readable
failure naming the mutant, not a dead pytest. edgesparse forks again inside, for the interpreters.
EDGESPARSE_FUZZ_N, EDGESPARSE_FUZZ_SEED and EDGESPARSE_FUZZ_SOURCES (kws,tiny,ad01) widen the search.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import subprocess
import sys
import time
from collections import Counter
from multiprocessing.connection import Connection, wait
from pathlib import Path

import pytest
from tflite_mutants import MASTER_SEED, Mutant, Mutator, study_sources

from edgesparse.errors import EdgesparseError, ModelError
from edgesparse.estimate import check_model
from edgesparse.profiles.profile import load_profile
from edgesparse.runtime import isolate, litert, tflm
from edgesparse.runtime.measure import measure
from edgesparse.tflite.graph import load_graph

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the fork runner is Linux's")

REPO = Path(__file__).resolve().parents[2]
N = int(os.environ.get("EDGESPARSE_FUZZ_N", "1000"))
SEED = int(os.environ.get("EDGESPARSE_FUZZ_SEED", str(MASTER_SEED)))
SOURCES = tuple(os.environ.get("EDGESPARSE_FUZZ_SOURCES", "kws,tiny").split(","))
WORKERS = 2
CALL_SECONDS = 10.0      # the promise: no call runs longer (a hang is stopped before, as exit 2)
PRODUCT_TIMEOUT = 8.0    # measure's idle timeout here, inside that promise
MUTANT_SECONDS = 60.0    # a worker silent this long on one mutant has hung: killed, reported
VWW = "visual_wake_words/vww_96_int8.tflite"


@pytest.fixture(scope="module")
def mutator(mlperf_dir):
    return Mutator(study_sources(mlperf_dir))


# --------------------------------------------------------------------------- the four calls, in a worker


def _calls(data: bytes, profiles: dict) -> list[tuple[str, str, float]]:
    """(call, outcome, seconds) of each public entry point on one file; outcome "ok", "exit N" or "internal ..."."""
    calls = [(f"check {name}", lambda p=profile: check_model(data, p)) for name, profile in profiles.items()]
    calls += [(f"measure {rt}", lambda rt=rt: measure(data, runtime=rt, runs=1, warmup=0, timeout=PRODUCT_TIMEOUT))
              for rt in ("litert", "tflm")]
    done = []
    for name, call in calls:
        start = time.perf_counter()
        try:
            call()
            outcome = "ok"
        except EdgesparseError as exc:
            outcome = f"exit {exc.exit_code}" + ("" if exc.exit_code in (1, 2) else f": {exc}"[:300])
        except Exception as exc:  # the finding: an internal error
            outcome = f"internal {type(exc).__name__}: {exc}"[:300]
        done.append((name, outcome, time.perf_counter() - start))
    return done


def _worker(conn: Connection, mutator: Mutator, indices: list[int], profiles: dict) -> None:
    """A forked harness child: ("start", i), then ("done", i, calls) for each mutant; never returns."""
    try:
        for i in indices:
            conn.send(("start", i))
            conn.send(("done", i, _calls(mutator.mutant(i, SEED).data, profiles)))
    finally:
        os._exit(0)


class _Workers:
    """WORKERS forked harness children over the mutants; a dead or silent one is replaced after its mutant."""

    def __init__(self, mutator: Mutator, indices: list[int], profiles: dict) -> None:
        self.mutator, self.profiles = mutator, profiles
        self.todo = {w: indices[w::WORKERS] for w in range(WORKERS)}
        self.running: dict[Connection, tuple[int, int, int | None, float]] = {}  # conn -> (worker, pid, i, t)
        self.results: dict[int, list[tuple[str, str, float]]] = {}
        self.failures: list[tuple[int, str]] = []

    def _start(self, w: int) -> None:
        if not self.todo[w]:
            return
        reader, writer = multiprocessing.Pipe(duplex=False)
        pid = os.fork()
        if pid == 0:
            reader.close()
            _worker(writer, self.mutator, self.todo[w], self.profiles)
        writer.close()
        self.running[reader] = (w, pid, None, time.monotonic())

    def _end(self, conn: Connection, why: str | None) -> None:
        w, pid, current, _ = self.running.pop(conn)
        conn.close()
        if why is not None:
            os.kill(pid, 9)
        _, status = os.waitpid(pid, 0)
        if current is not None:  # the worker died or hung on this mutant
            self.failures.append((current, why or f"the harness child died (status {status}): a crash"))
            self.todo[w] = self.todo[w][self.todo[w].index(current) + 1:]
            self._start(w)

    def run(self) -> None:
        for w in range(WORKERS):
            self._start(w)
        while self.running:
            for conn in wait(list(self.running), timeout=1.0):
                try:
                    message = conn.recv()
                except EOFError:
                    self._end(conn, None)
                    continue
                w, pid, _, _ = self.running[conn]
                if message[0] == "start":
                    self.running[conn] = (w, pid, message[1], time.monotonic())
                else:
                    self.results[message[1]] = message[2]
                    self.running[conn] = (w, pid, None, time.monotonic())
            for conn, (_, _, current, since) in list(self.running.items()):
                if current is not None and time.monotonic() - since > MUTANT_SECONDS:
                    self._end(conn, f"no answer in {MUTANT_SECONDS:.0f} s: a hang")


def _indices(mutator: Mutator) -> list[int]:
    """The first N mutant indices whose source is one of SOURCES (the mutator cycles through all three)."""
    names = list(mutator.paths)
    return [i for i in range(N * len(names)) if names[i % len(names)] in SOURCES][:N]


def _cpu_seconds() -> float:
    """CPU time of this process and of its reaped children (the workers, and theirs)."""
    return sum(resource.getrusage(who).ru_utime + resource.getrusage(who).ru_stime
               for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))


def test_fuzzed_files_never_crash_hang_or_fail_internally(mutator, capsys):
    profiles = {name: load_profile(name) for name in ("host", "nrf52840")}
    litert.interpreter_module()  # imported once here, so no worker or interpreter child pays for it
    tflm.tflm_module()
    for name in mutator.paths:
        mutator.source(name)
    indices = _indices(mutator)
    start, load, cpu = time.monotonic(), os.getloadavg()[0], _cpu_seconds()
    workers = _Workers(mutator, indices, profiles)
    workers.run()
    seconds, cpu = time.monotonic() - start, _cpu_seconds() - cpu

    counts: Counter = Counter()
    failures = list(workers.failures)
    for i, calls in workers.results.items():
        for name, outcome, took in calls:
            counts[(name, outcome.split(":")[0])] += 1
            if outcome.startswith("internal") or (outcome.startswith("exit") and outcome[5] not in "12"):
                failures.append((i, f"{name}: {outcome}"))
            elif took > CALL_SECONDS:
                failures.append((i, f"{name}: took {took:.1f} s ({outcome})"))
    with capsys.disabled():
        print(f"\nfuzz: {len(indices)} mutants of {'+'.join(SOURCES)} (seed {SEED}) x 4 calls in {seconds:.1f} s, "
              f"{cpu:.1f} s CPU (load {load:.1f} -> {os.getloadavg()[0]:.1f}): "
              + ", ".join(f"{k[0]} {k[1]} {v}" for k, v in sorted(counts.items())))
    assert len(workers.results) + len(workers.failures) == len(indices)
    assert not failures, "\n".join(f"{mutator.mutant(i, SEED).describe()}\n    {what}" for i, what in failures[:20])


# --------------------------------------------------------------------------- the study's crashes, rebuilt

# (seed, index) of the mutants that crashed TFLite Micro (SIGSEGV, SIGABRT, SIGFPE), hung, or made measure fail
# with an internal error before validation existed; every one passes load_graph's structural checks.
STUDY_CASES = [(20261130, i) for i in (20, 26, 199, 205, 215, 323, 336, 350, 368, 440, 514, 577, 608, 705, 800,
                                       820, 896, 909, 960, 1081, 1189, 1238, 1245, 1259, 1475)]
STUDY_CASES += [(7, 132), (7, 173), (7, 369), (7, 809), (99, 53)]


def _rejected(data: bytes) -> str:
    """Validation's message for a file an interpreter must not see ("" when it would be accepted)."""
    try:
        load_graph(data, validate=True)
        litert.check_structure(data, where="<mutant>")
    except ModelError as exc:
        return str(exc)
    return ""


@pytest.mark.parametrize("seed, index", STUDY_CASES, ids=[f"{s}-{i}" for s, i in STUDY_CASES])
def test_the_studys_crashing_files_are_rejected_before_any_interpreter(mutator, seed, index):
    m: Mutant = mutator.mutant(index, seed)
    assert _rejected(m.data), m.describe()


def _raw_tflm(data: bytes, progress) -> str:
    """TFLite Micro on a file, with no validation in front: what measure did before validation existed."""
    progress("preparing")
    interpreter = tflm.open_interpreter(data)
    progress("invoking")
    interpreter.invoke()
    return "ran"


@pytest.mark.parametrize("seed, index", [(20261130, 20), (20261130, 608), (20261130, 800)])
def test_without_validation_the_child_turns_a_tflm_crash_into_exit_2(mutator, seed, index):
    pytest.importorskip("tflite_micro")
    with pytest.raises(ModelError) as info:
        isolate.run_isolated(_raw_tflm, mutator.mutant(index, seed).data, label="TFLite Micro", where="m.tflite",
                             idle_timeout=PRODUCT_TIMEOUT)
    assert "TFLite Micro crashed on this file (signal" in info.value.what and info.value.exit_code == 2


@pytest.mark.parametrize("offset", [23, 27, 28, 41, 49])
def test_vww_byte_flips_the_user_reported_are_rejected(mlperf_dir, offset):
    data = bytearray((mlperf_dir / VWW).read_bytes())
    data[offset] ^= 0xFF
    assert _rejected(bytes(data))


# --------------------------------------------------------------------------- the command line, end to end


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgesparse", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("case", ["vww byte 23", "mutant 20", "mutant 1475", "vww byte 28"])
def test_measure_tflm_on_a_corrupt_file_exits_2_with_one_message(mlperf_dir, mutator, tmp_path, case):
    if case.startswith("vww"):
        data = bytearray((mlperf_dir / VWW).read_bytes())
        data[int(case.split()[-1])] ^= 0xFF
    else:
        data = bytearray(mutator.mutant(int(case.split()[-1]), MASTER_SEED).data)
    path = tmp_path / "corrupt.tflite"
    path.write_bytes(bytes(data))
    start = time.monotonic()
    done = _cli("measure", str(path), "--runtime", "tflm", "--runs", "1", "--warmup", "0")
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr)  # not -11 (SIGSEGV), not 3
    output = done.stdout + done.stderr
    assert "corrupt" in output and str(path) in output and "internal error" not in output
    assert "Traceback" not in output
    assert time.monotonic() - start < 60

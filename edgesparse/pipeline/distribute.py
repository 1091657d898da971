"""Fine-tuning under tf.distribute: `build --distribute mirrored|multi-worker`.

Why a module of its own: a strategy is process-wide state that must exist
before TensorFlow initialises its devices (logical CPU devices can only be
declared then, and MultiWorkerMirroredStrategy configures the process's
collective ops at startup), and before any model is built or cloned (TFMOT's
wrappers and their masks must be created in its scope). So the build calls
`start(kind)` first, before loading anything; the fine-tunings then take the
same kind and find the started strategy with `active(kind)`.

- mirrored: one replica per local GPU (MirroredStrategy's default). On a machine without a GPU the CPU is split
  into CPU_REPLICAS logical devices (tf.config.set_logical_device_configuration): the same code path and the same
  synchronised all-reduce, but the replicas share the cores, so it is slower there, never faster (docs/scale.md).
- multi-worker: MultiWorkerMirroredStrategy over the cluster TF_CONFIG describes, read as TensorFlow documents it
  ({"cluster": {"chief": [...], "worker": [...]}, "task": {"type": ..., "index": ...}}); the chief is task
  chief:0, or worker:0 when the cluster has no chief. Every task fine-tunes in lockstep; only the chief writes.

After fine-tuning, `check_replicas_agree` gathers every replica's copy of the pruning masks (on every worker) and
fails loudly unless they are identical; `local_copy` hands the rest of the pipeline a plain single-device model,
so converting, verifying and measuring run locally on each task, without collectives. A peer that dies makes the
collectives fail within HEARTBEAT_TIMEOUT_SECONDS (TensorFlow's coordination-service heartbeat) or a collective
within COLLECTIVE_TIMEOUT_SECONDS; `cluster_failures` turns that into one readable DistributeError.

Imports TensorFlow only inside functions (tf_env); the TF_CONFIG checks import nothing heavy, so the build can
refuse a bad cluster before any work.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgesparse.errors import EXIT_INTERNAL, EdgesparseError
from edgesparse.pipeline.tf_env import import_tf

__all__ = [
    "COLLECTIVE_TIMEOUT_SECONDS",
    "CPU_REPLICAS",
    "HEARTBEAT_TIMEOUT_SECONDS",
    "KINDS",
    "REGISTER_TIMEOUT_SECONDS",
    "ClusterConfig",
    "DistributeError",
    "Distribution",
    "ReplicaMismatchError",
    "active",
    "check_distribute",
    "check_replicas_agree",
    "cluster_failures",
    "is_chief",
    "local_copy",
    "read_tf_config",
    "scope",
    "start",
]

KINDS = ("mirrored", "multi-worker")
#: Logical CPU devices `mirrored` splits the CPU into when the machine has no GPU (two: enough to run the replicated
#: path and prove the masks agree; more only divides the same cores further).
CPU_REPLICAS = 2
#: A task whose heartbeat stops for this long is declared dead and every collective fails (TensorFlow's
#: coordination service; its own default is 10 s).
HEARTBEAT_TIMEOUT_SECONDS = 10
#: Passed to TensorFlow as the coordination service's registration timeout; measured here, TensorFlow 2.21 does
#: not honour it while a task waits for a peer that never started (see _multi_worker).
REGISTER_TIMEOUT_SECONDS = 120
#: A single all-reduce or gather that has not finished in this long fails (a hung peer that still heartbeats).
COLLECTIVE_TIMEOUT_SECONDS = 600
_JOBS = ("chief", "worker")
_TF_CONFIG_SHAPE = ('{"cluster": {"worker": ["host1:port", "host2:port"]}, "task": {"type": "worker", "index": 0}} '
                    '(a "chief" job of one address is optional; without it worker 0 is the chief)')


class DistributeError(EdgesparseError):
    """--distribute cannot run: a missing or malformed TF_CONFIG, an unsupported combination, a lost peer."""


class ReplicaMismatchError(EdgesparseError):
    """The replicas ended fine-tuning with different pruning masks: a bug (TensorFlow's or ours), exit 3."""

    exit_code = EXIT_INTERNAL


@dataclass(frozen=True)
class ClusterConfig:
    """TF_CONFIG, checked: the cluster's jobs and this task."""

    jobs: Mapping[str, tuple[str, ...]]   # "chief" / "worker" -> host:port addresses
    task_type: str
    task_index: int

    @property
    def is_chief(self) -> bool:
        """TensorFlow's rule (multi_worker_util.is_chief): chief:0, or worker:0 in a cluster without a chief."""
        if self.task_type == "chief":
            return True
        return self.task_type == "worker" and self.task_index == 0 and "chief" not in self.jobs

    @property
    def task(self) -> str:
        return f"{self.task_type}:{self.task_index}"

    @property
    def num_tasks(self) -> int:
        return sum(len(addresses) for addresses in self.jobs.values())


@dataclass(frozen=True)
class Distribution:
    """A started strategy and what a build needs to know about it."""

    kind: str
    strategy: Any                   # tf.distribute.MirroredStrategy | MultiWorkerMirroredStrategy
    devices: tuple[str, ...]        # this task's replica devices
    cluster: ClusterConfig | None   # multi-worker only

    @property
    def is_chief(self) -> bool:
        return self.cluster is None or self.cluster.is_chief

    @property
    def replicas(self) -> int:
        return int(self.strategy.num_replicas_in_sync)

    def describe(self) -> str:
        where = f"task {self.cluster.task} of {self.cluster.num_tasks}" if self.cluster else "this machine"
        return f"{self.kind}: {self.replicas} replicas in sync ({where}; devices {', '.join(self.devices)})"


_started: Distribution | None = None


def _bad_config(what: str, received: object, fix: str | None = None) -> DistributeError:
    return DistributeError(what, where="TF_CONFIG (--distribute multi-worker)", expected=_TF_CONFIG_SHAPE,
                           received=received, fix=fix or "Set TF_CONFIG in every task's environment as TensorFlow "
                                                         "documents it (docs/scale.md)")


def _addresses(job: str, value: Any) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, Sequence) or not value:
        raise _bad_config(f"TF_CONFIG's {job!r} job is not a list of addresses", repr(value))
    for address in value:
        host, _, port = str(address).rpartition(":") if isinstance(address, str) else ("", "", "")
        if not host or not port.isdigit():
            raise _bad_config(f"TF_CONFIG's {job!r} job has an address that is not host:port", repr(address))
    return tuple(value)


def read_tf_config(environ: Mapping[str, str] | None = None) -> ClusterConfig:
    """TF_CONFIG from the environment, checked; DistributeError (exit 2) naming what is missing or malformed."""
    text = (os.environ if environ is None else environ).get("TF_CONFIG", "").strip()
    if not text:
        raise _bad_config("--distribute multi-worker needs TF_CONFIG, and it is not set", "no TF_CONFIG")
    try:
        config = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _bad_config("TF_CONFIG is not JSON", f"{exc.msg} at character {exc.pos}") from None
    if not isinstance(config, dict) or not isinstance(config.get("cluster"), dict) or not config["cluster"]:
        raise _bad_config("TF_CONFIG has no \"cluster\" object", repr(text[:200]))
    stray = sorted(set(config["cluster"]) - set(_JOBS))
    if stray:
        raise _bad_config("TF_CONFIG names jobs MultiWorkerMirroredStrategy does not run", ", ".join(stray),
                          fix="Keep only \"chief\" and \"worker\" jobs: parameter servers and evaluators are "
                              "not part of a synchronous multi-worker build")
    jobs = {job: _addresses(job, addresses) for job, addresses in config["cluster"].items()}
    if len(jobs.get("chief", ())) > 1:
        raise _bad_config("TF_CONFIG has more than one chief", repr(list(jobs["chief"])))
    task = config.get("task")
    if not isinstance(task, dict) or task.get("type") not in jobs:
        raise _bad_config("TF_CONFIG's \"task\" does not name one of the cluster's jobs",
                          f"task {task!r}, jobs {', '.join(jobs)}")
    index = task.get("index", 0)
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(jobs[task["type"]]):
        raise _bad_config("TF_CONFIG's task index is not one of its job's addresses",
                          f"index {index!r} for {len(jobs[task['type']])} {task['type']} address(es)")
    return ClusterConfig(jobs=jobs, task_type=task["type"], task_index=index)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise DistributeError("Unknown --distribute", where="--distribute", expected=" | ".join(KINDS),
                              received=repr(kind))


def check_distribute(kind: str | None, *, granularity: str = "auto",
                     cluster: int | None = None) -> ClusterConfig | None:
    """Refuse what --distribute cannot do before any work (DistributeError, exit 2); imports no TensorFlow.

    Channel pruning and --cluster fine-tune outside TFMOT's pruning wrappers (numpy masks chosen in a callback;
    TFMOT's clustering wrappers), so neither runs under a strategy: they are refused rather than run on one device
    behind the user's back. Returns the checked TF_CONFIG for multi-worker (read here, once), else None.
    """
    if kind is None:
        return None
    _check_kind(kind)
    refused = ("--granularity channel" if granularity == "channel"
               else f"--cluster {cluster}" if cluster is not None else None)
    if refused:
        raise DistributeError(f"--distribute does not support {refused}", where="--distribute",
                              expected="element-wise, block or 2:4 pruning (TFMOT's pruning wrappers)",
                              received=f"--distribute {kind} with {refused}",
                              fix=f"Drop --distribute (one device), or drop {refused}")
    return read_tf_config() if kind == "multi-worker" else None


def _cpu_devices(tf: Any, replicas: int) -> tuple[str, ...]:
    """Split the CPU into `replicas` logical devices; only possible before TensorFlow initialises its devices."""
    cpu = tf.config.list_physical_devices("CPU")[0]
    configured = tf.config.get_logical_device_configuration(cpu) or []
    if len(configured) < replicas:
        try:
            tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * replicas)
        except RuntimeError:
            raise DistributeError(
                "--distribute mirrored must start before TensorFlow initialises its devices", where="mirrored",
                expected=f"{replicas} logical CPU devices (this machine has no GPU)",
                received="TensorFlow already initialised one CPU device in this process",
                fix="Call edgesparse.pipeline.distribute.start('mirrored') before building or loading any "
                    "model (the CLI does)") from None
    return tuple(d.name for d in tf.config.list_logical_devices("CPU")[:replicas])


def _multi_worker(tf: Any, cluster: ClusterConfig) -> Any:
    """MultiWorkerMirroredStrategy with bounded waits once the cluster is up: the heartbeat and each collective.

    The heartbeat is set through the eager context's coordination-service configuration, which
    MultiWorkerMirroredStrategy keeps when it finds one (collective_all_reduce_strategy.py). Not bounded: waiting
    for a task that never starts. TensorFlow waits inside its C++ runtime holding the GIL (measured here: still
    waiting after 2 minutes with cluster_register_timeout_in_ms at 8 s), so no Python watchdog can end it; bound
    it from outside (the job scheduler, or `timeout`), as docs/scale.md says.
    """
    from tensorflow.compiler.xla.tsl.protobuf import coordination_config_pb2
    from tensorflow.python.eager import context

    leader = "/job:chief/replica:0/task:0" if "chief" in cluster.jobs else "/job:worker/replica:0/task:0"
    context.context().configure_coordination_service(
        service_type="standalone", service_leader=leader,
        cluster_register_timeout_in_ms=REGISTER_TIMEOUT_SECONDS * 1000,
        heartbeat_timeout_in_ms=HEARTBEAT_TIMEOUT_SECONDS * 1000,
        shutdown_barrier_timeout_in_ms=HEARTBEAT_TIMEOUT_SECONDS * 1000,
        coordinated_jobs=[coordination_config_pb2.CoordinatedJob(name=job, num_tasks=len(addresses))
                          for job, addresses in cluster.jobs.items()])
    options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=COLLECTIVE_TIMEOUT_SECONDS)
    return tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)


def start(kind: str | None, *, cpu_replicas: int = CPU_REPLICAS) -> Distribution | None:
    """Create the strategy for `kind` once per process (None: one device, nothing to do); later calls return it.

    Must run before TensorFlow initialises its devices (before any model is loaded or built): DistributeError
    otherwise. Multi-worker reads TF_CONFIG once, on the first call, and blocks until every task of it has started
    (TensorFlow's wait; see _multi_worker).
    """
    global _started
    if kind is None:
        return None
    if _started is None:
        _started = _create(kind, check_distribute(kind), cpu_replicas)
    elif _started.kind != kind:
        _check_kind(kind)
        raise DistributeError("A different tf.distribute strategy is already running in this process",
                              where="--distribute", expected=_started.kind, received=kind)
    return _started


def _create(kind: str, cluster: ClusterConfig | None, cpu_replicas: int) -> Distribution:
    tf, _ = import_tf()
    if cluster is None:   # mirrored
        devices = None if tf.config.list_physical_devices("GPU") else _cpu_devices(tf, cpu_replicas)
        strategy = tf.distribute.MirroredStrategy(devices=list(devices) if devices else None)
    else:
        with cluster_failures(cluster, starting=True):
            strategy = _multi_worker(tf, cluster)
    return Distribution(kind=kind, strategy=strategy, devices=tuple(strategy.extended.worker_devices),
                        cluster=cluster)


def active(kind: str | None) -> Distribution | None:
    """The strategy a fine-tuning runs under: None for one device, else the one `start` created (or starts now)."""
    return start(kind)


def is_chief(kind: str | None) -> bool:
    """Whether this process writes the build's outputs: always, except on a multi-worker task that is not chief."""
    if kind != "multi-worker":
        return True
    return _started.is_chief if _started is not None else read_tf_config().is_chief


def scope(distribution: Distribution | None) -> Any:
    """The strategy's scope (where models, wrappers, masks and the optimizer must be created), or a no-op."""
    return distribution.strategy.scope() if distribution is not None else nullcontext()


@contextmanager
def cluster_failures(where: Distribution | ClusterConfig | None, *, starting: bool = False) -> Iterator[None]:
    """Turn TensorFlow's errors for a lost or unreachable peer into one DistributeError (exit 2)."""
    if where is None:
        yield
        return
    tf, _ = import_tf()
    cluster = where.cluster if isinstance(where, Distribution) else where
    lost = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
            tf.errors.CancelledError)
    try:
        yield
    except (*lost, tf.errors.InternalError) as exc:
        message = re.sub(r"\{\{[^}]*\}\}\s*", "", str(exc.message or exc)).strip()
        if not isinstance(exc, lost) and not re.search(r"heartbeat|barrier|collective|unavailable", message, re.I):
            raise  # an internal error that is not about the cluster
        task = cluster.task if cluster is not None else "this process"
        what = ("The multi-worker cluster did not come up" if starting
                else "A task of the multi-worker cluster stopped responding during fine-tuning")
        raise DistributeError(what, where=f"task {task} of {cluster.num_tasks if cluster else '?'}",
                              expected=f"every TF_CONFIG task running and reachable (heartbeat timeout "
                                       f"{HEARTBEAT_TIMEOUT_SECONDS} s)",
                              received=f"{type(exc).__name__}: {(message.splitlines() or [''])[0][:300]}",
                              fix="Nothing was written. Restart every task of the cluster (a synchronous "
                                  "strategy cannot continue without one)") from None


def check_replicas_agree(distribution: Distribution | None, variables: Sequence[Any], *,
                         what: str = "pruning masks") -> int:
    """ReplicaMismatchError unless every replica, on every worker, holds the same values of `variables`.

    Gathers each replica's own copy (read in replica context) to this task, one variable at a time; every task
    must call it in the same order (a collective). Returns how many replicas were compared.
    """
    if distribution is None or not variables:
        return 1
    tf, _ = import_tf()
    strategy = distribution.strategy
    differing = []
    for variable in variables:
        local = strategy.run(lambda v=variable: tf.reshape(tf.cast(tf.identity(v), tf.float32), [1, -1]))
        copies = np.asarray(strategy.gather(local, axis=0))
        mismatched = int(np.count_nonzero((copies != copies[:1]).any(axis=0)))
        if mismatched:
            differing.append(f"{variable.name}: {mismatched} of {copies.shape[1]} entries")
    if differing:
        raise ReplicaMismatchError(f"The replicas' {what} differ after distributed fine-tuning",
                                   where="; ".join(differing[:5]) + ("; ..." if len(differing) > 5 else ""),
                                   expected=f"identical {what} on all {strategy.num_replicas_in_sync} replicas",
                                   received=f"{len(differing)} of {len(variables)} variable(s) differ",
                                   fix="Nothing was written. Build without --distribute and report this")
    return int(strategy.num_replicas_in_sync)


def local_copy(model: Any) -> Any:
    """The same model with plain single-device variables, built outside any strategy scope.

    Why: predicting with a strategy's model under MultiWorkerMirroredStrategy gathers across workers; the
    pipeline after fine-tuning (clustering, conversion, verification) must run locally on each task.
    """
    _, keras = import_tf()
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy

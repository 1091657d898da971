"""Fine-tuning under tf.distribute against one device: the digits demo, rpi4 plan, 80 %, same seed and epochs.

    .venv/bin/python bench/distribute_finetune.py [EPOCHS]      # one device, mirrored, multi-worker (2 tasks)

Each run is its own process (a strategy must start before TensorFlow sets up its devices); multi-worker runs a
chief and a worker on 127.0.0.1 with free ports. Prints one Markdown table (docs/scale.md quotes it). Not part of
`make bench`: it says when --distribute pays, which on a 2-core machine it does not.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

__all__ = ["main"]

# One fine-tuning in this process: the strategy first, then TensorFlow's model and data.
_RUN = """
import json, sys, time
from edgesparse.pipeline import distribute
kind = None if sys.argv[1] == "none" else sys.argv[1]
t0 = time.perf_counter()
distribute.start(kind)
start_s = time.perf_counter() - t0
from edgesparse.pipeline.demos import digits
from edgesparse.pipeline.prune import ScheduleOptions, plan_policy, prune_and_finetune
from edgesparse.profiles import load_profile
model, data = digits.demo_model()
schedule = ScheduleOptions(final_sparsity=0.8)
policies = plan_policy(model, load_profile("rpi4"), schedule)
t = time.perf_counter()
r = prune_and_finetune(model, data, policies, schedule, epochs=int(sys.argv[2]), batch_size=32, seed=0,
                       distribute=kind)
print("RESULT " + json.dumps({"start_s": start_s, "finetune_s": time.perf_counter() - t,
                              "sparsity": r.overall_sparsity, "replicas": r.replicas,
                              "val_accuracy": r.history.get("val_accuracy", [0])[-1]}), flush=True)
"""


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _result(output: str) -> dict:
    line = next(x for x in output.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def _run(kind: str, epochs: int) -> tuple[dict, float]:
    """(the chief's or single process's figures, wall seconds of the whole run)."""
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    cmd = [sys.executable, "-c", _RUN, kind, str(epochs)]
    started = time.perf_counter()
    if kind != "multi-worker":
        done = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, check=True)
        return _result(done.stdout), time.perf_counter() - started
    chief, worker = (f"127.0.0.1:{p}" for p in _free_ports(2))
    cluster = {"chief": [chief], "worker": [worker]}
    procs = [subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=dict(env, TF_CONFIG=json.dumps({"cluster": cluster, "task": task})))
             for task in ({"type": "chief", "index": 0}, {"type": "worker", "index": 0})]
    try:
        outputs = [p.communicate(timeout=1800)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    return _result(outputs[0]), time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    epochs = int((argv if argv is not None else sys.argv[1:] or ["4"])[0])
    print(f"Digits demo, rpi4 plan, 80 %, {epochs} epochs, batch 32, seed 0; {os.cpu_count()} CPU cores.\n")
    print("| run | fine-tuning | strategy start | process wall | replicas | final sparsity / val accuracy |")
    print("|---|---:|---:|---:|---:|---|")
    for kind, label in (("none", "one device"), ("mirrored", "mirrored"), ("multi-worker", "multi-worker, 2 tasks")):
        r, wall = _run(kind, epochs)
        print(f"| {label} | {r['finetune_s']:.1f} s | {r['start_s']:.1f} s | {wall:.1f} s | {r['replicas']} | "
              f"{r['sparsity']:.3f} / {100 * r['val_accuracy']:.1f} % |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""One process of the tf.distribute tests: `python -m support.tfdist_task KIND OUT.npz` (run from tests/).

A strategy must be started before TensorFlow initialises its devices, so every distributed fine-tuning runs in a
fresh process: this one. KIND is "mirrored" (the prune under MirroredStrategy on two logical CPU devices, then the
same prune on one device, and a deliberately diverged variable that check_replicas_agree must refuse) or
"multi-worker" (this task of the TF_CONFIG cluster). It writes OUT.npz with the pruned weights and what was
checked; an EdgesparseError prints its message and exits with its code. "started" is printed (flushed) once the
strategy is up, so a test can kill a task at a known point.
"""

from __future__ import annotations

import sys

import numpy as np

from edgesparse.errors import EdgesparseError
from edgesparse.pipeline import distribute
from edgesparse.pipeline.prune import ScheduleOptions, plan_policy, prune_and_finetune
from edgesparse.pipeline.tf_env import import_tf
from edgesparse.profiles.profile import load_profile
from support.models import projection_data

__all__ = ["SHAPE", "TARGET", "main", "tiny_model"]

SHAPE = (8, 8, 1)
TARGET = 0.75


def tiny_model():
    """Conv (72 weights, left dense), fc 512x32 (pruned), out 32x4 (pruned, 128 weights)."""
    _, keras = import_tf()
    keras.utils.set_random_seed(1)
    inputs = keras.Input(SHAPE)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(32, activation="relu", name="fc")(x)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax", name="out")(x), name="tiny")


def _prune(model, kind):
    data = projection_data(128, SHAPE, 4, 32, 0)
    schedule = ScheduleOptions(final_sparsity=TARGET, frequency=1)
    policies = plan_policy(model, load_profile("rpi4"), schedule, min_params=100, prune_output_layer=True)
    return prune_and_finetune(model, data, policies, schedule, epochs=1, batch_size=32, seed=0, distribute=kind)


def _diverged_refused(started) -> str:
    """A variable made in the strategy's scope, one replica's copy changed: the check must refuse it."""
    tf, _ = import_tf()
    with distribute.scope(started):
        variable = tf.Variable(tf.ones([6]), aggregation=tf.VariableAggregation.MEAN)
    started.strategy.experimental_local_results(variable)[1].assign(tf.constant([1.0, 0, 1, 1, 1, 1]))
    try:
        distribute.check_replicas_agree(started, [variable])
    except distribute.ReplicaMismatchError as exc:
        return exc.message
    return ""


def main(kind: str, out: str) -> int:
    try:
        started = distribute.start(kind)
        print("started", started.describe(), flush=True)
        model = tiny_model()
        result = _prune(model, kind)
        found = {"replicas": result.replicas, "overall": result.overall_sparsity, "chief": started.is_chief,
                 **{f"weight{i}": w for i, w in enumerate(result.model.get_weights())}}
        if kind == "mirrored":
            single = _prune(model, None).model.get_weights()
            found.update({f"single{i}": w for i, w in enumerate(single)}, refused=_diverged_refused(started))
    except EdgesparseError as exc:
        print(f"error: {exc.message}", flush=True)
        return exc.exit_code
    np.savez(out, **found)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))

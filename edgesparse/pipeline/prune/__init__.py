"""TFMOT pruning: the schedule, the per-layer policy, and fine-tuning to it.

`schedule` checks and resolves what the user asked for into steps, `policy`
decides each layer's pattern for the target runtime (and says why), and
`finetune` trains, strips and measures; `cluster` fine-tunes the pruned
layers with sparsity-preserving weight clustering (few values per kernel,
for TFLite Micro's LUT decoder). Everything imports TensorFlow lazily
(edgesparse.pipeline.tf_env), never prints and never exits.
"""

from __future__ import annotations

from edgesparse.pipeline.prune.cluster import (
    MAX_CLUSTERS,
    MIN_CLUSTERS,
    ClusteredLayer,
    ClusterResult,
    check_clusters,
    cluster_and_finetune,
)
from edgesparse.pipeline.prune.finetune import (
    TOLERANCE,
    LayerSparsity,
    PruneResult,
    measure_sparsity,
    prune_and_finetune,
)
from edgesparse.pipeline.prune.policy import MIN_PARAMS, MIN_SHARE, LayerPolicy, plan_policy
from edgesparse.pipeline.prune.schedule import (
    DEFAULT_FINAL_SPARSITY,
    DEFAULT_FREQUENCY,
    MIN_MASK_UPDATES,
    SETTLE_FRACTION,
    ResolvedSchedule,
    ScheduleOptions,
    derive_end_step,
    resolve_schedule,
    steps_per_epoch,
)

__all__ = [
    "DEFAULT_FINAL_SPARSITY",
    "DEFAULT_FREQUENCY",
    "MAX_CLUSTERS",
    "MIN_CLUSTERS",
    "MIN_MASK_UPDATES",
    "MIN_PARAMS",
    "MIN_SHARE",
    "SETTLE_FRACTION",
    "TOLERANCE",
    "ClusterResult",
    "ClusteredLayer",
    "LayerPolicy",
    "LayerSparsity",
    "PruneResult",
    "ResolvedSchedule",
    "ScheduleOptions",
    "check_clusters",
    "cluster_and_finetune",
    "derive_end_step",
    "measure_sparsity",
    "plan_policy",
    "prune_and_finetune",
    "resolve_schedule",
    "steps_per_epoch",
]

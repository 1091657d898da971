"""TFMOT pruning: the schedule, the per-layer policy, and fine-tuning to it.

`schedule` checks and resolves what the user asked for into steps, `policy`
decides each layer's pattern for the target runtime (and says why), and
`finetune` trains, strips and measures (depthwise kernels, which TFMOT's registry leaves out, through
`depthwise`'s PrunableLayer stand-in, plain layers again afterwards); `cluster` fine-tunes the pruned
layers with sparsity-preserving weight clustering (few values per kernel,
for TFLite Micro's LUT decoder); `channels` finds the channels that must be
removed together, `surgery` masks them and rebuilds the smaller dense model,
and `channel_finetune` masks them on the schedule while fine-tuning, then
shrinks the model (channel_prune_and_finetune -> ChannelPruneResult, whose
as_dict() is report.json's "channels"). Everything imports TensorFlow lazily
(edgesparse.pipeline.tf_env), never prints and never exits.
"""

from __future__ import annotations

from edgesparse.pipeline.prune.channel_finetune import (
    CRITERION,
    DEFAULT_CHANNEL_FRACTION,
    EQUIVALENCE_SAMPLES,
    ChannelPruneResult,
    GroupOutcome,
    MaskUpdate,
    channel_prune_and_finetune,
    keras_macs,
)
from edgesparse.pipeline.prune.channels import (
    EQUIVALENCE_ATOL,
    ChannelGroup,
    ChannelMember,
    apply_channel_masks,
    channel_masker,
    channel_scores,
    check_equivalent,
    find_channel_groups,
    select_channels,
    shrink_model,
)
from edgesparse.pipeline.prune.cluster import (
    MAX_CLUSTERS,
    MIN_CLUSTERS,
    ClusteredLayer,
    ClusterResult,
    check_clusters,
    cluster_and_finetune,
)
from edgesparse.pipeline.prune.depthwise import (
    DEPTHWISE_LAYERS,
    depthwise_stand_in,
    is_plain_depthwise,
    restore_plain_layers,
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
    "CRITERION",
    "DEFAULT_CHANNEL_FRACTION",
    "DEFAULT_FINAL_SPARSITY",
    "DEFAULT_FREQUENCY",
    "DEPTHWISE_LAYERS",
    "EQUIVALENCE_ATOL",
    "EQUIVALENCE_SAMPLES",
    "MAX_CLUSTERS",
    "MIN_CLUSTERS",
    "MIN_MASK_UPDATES",
    "MIN_PARAMS",
    "MIN_SHARE",
    "SETTLE_FRACTION",
    "TOLERANCE",
    "ChannelGroup",
    "ChannelMember",
    "ChannelPruneResult",
    "ClusterResult",
    "ClusteredLayer",
    "GroupOutcome",
    "LayerPolicy",
    "LayerSparsity",
    "MaskUpdate",
    "PruneResult",
    "ResolvedSchedule",
    "ScheduleOptions",
    "apply_channel_masks",
    "channel_masker",
    "channel_prune_and_finetune",
    "channel_scores",
    "check_clusters",
    "check_equivalent",
    "cluster_and_finetune",
    "depthwise_stand_in",
    "derive_end_step",
    "find_channel_groups",
    "is_plain_depthwise",
    "keras_macs",
    "measure_sparsity",
    "plan_policy",
    "prune_and_finetune",
    "resolve_schedule",
    "restore_plain_layers",
    "select_channels",
    "shrink_model",
    "steps_per_epoch",
]

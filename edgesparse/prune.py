"""TFMOT pruning: schedule, per-layer policy, fine-tuning, strip_pruning.

CONTRACT:
    ScheduleOptions(kind="polynomial"|"constant", initial_sparsity=0.0, final_sparsity=0.8,
                    begin_step=0, end_step=None, power=3, frequency=100,
                    structured=None | (2, 4))
    LayerPolicy(name, layer_type, params, prune, target_sparsity, block_size, pattern, reason)
    plan_policy(model, profile, schedule, *, skip_layers=frozenset(), min_params=...) -> list[LayerPolicy]
    prune_and_finetune(model, dataset, policies, schedule, *, epochs, batch_size,
                       tensorboard_dir=None, progress=None) -> PruneResult
    PruneResult: model (stripped tf_keras.Model), layers (list[LayerSparsity]),
                 overall_sparsity (float, over pruned weights), end_step (int), history (dict)
    LayerSparsity: name, pattern, target, achieved, params, reason
    progress(event: str, fields: dict) events: "train_begin" {epochs, steps_per_epoch},
        "batch_end" {epoch, step, loss, accuracy, sparsity}, "epoch_end" {epoch, loss,
        accuracy, val_accuracy, sparsity}
"""

"""Live progress: clustering's and channel pruning's fine-tuning drawn like pruning's (a bar on a terminal, a line per
epoch in a log), each pass labelled apart."""

from __future__ import annotations

import io

from rich.console import Console

from edgesparse.cli.progress import BuildProgress, SweepProgress, clustering_label, plain_line, pruning_label

_BEGIN = {"clusters": 4, "epochs": 2, "steps_per_epoch": 3, "total_steps": 6, "clustered_layers": ["conv2", "fc1"]}


def _clustering_events() -> list[tuple[str, dict]]:
    events: list[tuple[str, dict]] = [("stage", {"name": "cluster", "description": "Clustering the pruned weights"}),
                                      ("cluster_begin", dict(_BEGIN))]
    step = 0
    for epoch in (1, 2):
        for _ in range(3):
            step += 1
            events.append(("cluster_batch_end", {"epoch": epoch, "step": step, "loss": 1.0 / step,
                                                 "accuracy": 0.5 + step / 100}))
        events.append(("cluster_epoch_end", {"epoch": epoch, "loss": 0.25 * epoch, "accuracy": 0.9,
                                             "val_loss": 0.3, "val_accuracy": 0.875 + epoch / 100}))
    return [*events, ("stage_done", {"name": "cluster"})]


def _console(interactive: bool) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(file=out, width=160, color_system=None, force_terminal=interactive,
                   force_interactive=interactive), out


def _render(renderer_class: type, interactive: bool) -> str:
    console, out = _console(interactive)
    with renderer_class(console) as progress:
        for event, fields in _clustering_events():
            progress(event, fields)
    return out.getvalue()


def test_clustering_label_names_the_number_of_clusters():
    assert clustering_label(_BEGIN) == "fine-tuning with weight clustering (4 clusters)"


def test_a_log_gets_the_label_and_one_line_per_epoch_counted_from_one():
    assert plain_line("cluster_begin", _BEGIN) == "  fine-tuning with weight clustering (4 clusters)"
    assert plain_line("cluster_batch_end", {"epoch": 1, "step": 1, "loss": 0.5, "accuracy": 0.5}) is None
    lines = _render(BuildProgress, interactive=False).splitlines()
    assert lines == ["Clustering the pruned weights", "  fine-tuning with weight clustering (4 clusters)",
                     "    epoch 1  loss 0.250  acc 0.900  val_acc 0.885",
                     "    epoch 2  loss 0.500  acc 0.900  val_acc 0.895"]


def test_a_terminal_gets_a_bar_over_every_batch_of_every_epoch():
    text = _render(BuildProgress, interactive=True)
    final = text.split("fine-tuning with weight clustering (4 clusters)")[-1].splitlines()[0]
    assert "6/6" in final and "epoch 2  loss 0.500  acc 0.900  val_acc 0.895" in final, final
    assert "0/6" in text   # drawn from the start, not only at the end


def test_a_sweep_draws_the_clustering_bar_under_its_point_and_removes_it_when_the_stage_ends():
    console, out = _console(interactive=True)
    with SweepProgress(console) as progress:
        progress("point_begin", {"sparsity": 0.8, "quantize": "int8", "profile": "nrf52840"})
        for event, fields in _clustering_events():
            progress(event, fields)
    text = out.getvalue()
    assert "    fine-tuning with weight clustering (4 clusters)" in text and "0/6" in text
    last_frame = text.rsplit("0.8/int8 for nrf52840", 1)[-1]   # drawn when the live display stops
    assert "weight clustering" not in last_frame


# --------------------------------------------------------------------------- channel pruning

_CHANNEL_BEGIN = {"granularity": "channel", "epochs": 1, "steps_per_epoch": 2, "total_steps": 2, "end_step": 2,
                  "frequency": 1, "pruned_layers": ["conv1", "conv2"]}
_ELEMENT_BEGIN = {"epochs": 1, "steps_per_epoch": 3, "total_steps": 3, "end_step": 3, "frequency": 1,
                  "pruned_layers": ["conv1"]}


def _channel_then_element_events() -> list[tuple[str, dict]]:
    """Channel masks, then (--element-sparsity) element-wise pruning of the small model, in one "prune" stage."""
    events: list[tuple[str, dict]] = [("stage", {"name": "prune", "description": "Pruning channels"}),
                                      ("train_begin", dict(_CHANNEL_BEGIN))]
    events += [("batch_end", {"epoch": 1, "step": s, "loss": 0.5, "accuracy": 0.75, "sparsity": 0.25 * s})
               for s in (1, 2)]
    events += [("epoch_end", {"epoch": 1, "loss": 0.5, "accuracy": 0.75, "val_loss": 0.6, "val_accuracy": 0.625,
                              "sparsity": 0.5}), ("train_begin", dict(_ELEMENT_BEGIN))]
    events += [("batch_end", {"epoch": 1, "step": s, "loss": 0.4, "accuracy": 0.8, "sparsity": 0.2 * s})
               for s in (1, 2, 3)]
    events += [("epoch_end", {"epoch": 1, "loss": 0.4, "accuracy": 0.8, "val_loss": 0.5, "val_accuracy": 0.75,
                              "sparsity": 0.6}), ("stage_done", {"name": "prune"})]
    return events


def test_channel_fine_tuning_is_labelled_apart_from_the_element_wise_pass_that_follows():
    assert pruning_label(_CHANNEL_BEGIN) == "fine-tuning with channel masks"
    assert pruning_label(_ELEMENT_BEGIN) == "fine-tuning with UpdatePruningStep"
    assert plain_line("train_begin", _CHANNEL_BEGIN) == "  fine-tuning with channel masks"
    console, out = _console(interactive=False)
    with BuildProgress(console) as progress:
        for event, fields in _channel_then_element_events():
            progress(event, fields)
    assert out.getvalue().splitlines() == [
        "Pruning channels", "  fine-tuning with channel masks",
        "    epoch 1  loss 0.500  acc 0.750  val_acc 0.625  channels masked 0.500",
        "  fine-tuning with UpdatePruningStep", "    epoch 1  loss 0.400  acc 0.800  val_acc 0.750  sparsity 0.600"]


def test_a_terminal_draws_a_bar_for_each_pass_and_a_sweep_keeps_only_the_running_one():
    console, out = _console(interactive=True)
    with BuildProgress(console) as progress:
        for event, fields in _channel_then_element_events():
            progress(event, fields)
    text = out.getvalue()
    channel = text.split("fine-tuning with channel masks")[-1].splitlines()[0]
    element = text.split("fine-tuning with UpdatePruningStep")[-1].splitlines()[0]
    assert "2/2" in channel and "channels masked 0.500" in channel, channel
    assert "3/3" in element and "sparsity 0.600" in element, element

    console, out = _console(interactive=True)
    with SweepProgress(console) as progress:
        progress("point_begin", {"sparsity": 0.5, "quantize": "int8", "profile": "rpi4"})
        events = _channel_then_element_events()
        for event, fields in events[:5]:
            progress(event, fields)
        assert "    fine-tuning with channel masks" in out.getvalue()
        for event, fields in events[5:]:
            progress(event, fields)
    last_frame = out.getvalue().rsplit("0.5/int8 for rpi4", 1)[-1]
    assert "fine-tuning" not in last_frame and "UpdatePruningStep" in out.getvalue()

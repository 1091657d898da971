"""Live progress for long commands: the CLI's renderers of the library's progress events.

Library code never prints; it calls an `edgesparse._types.Progress` callback
with (event, fields). These classes are such callbacks, drawing rich progress
bars and lines, so `build`, `sweep` and `deploy` show where they are. Events a
renderer does not know are ignored (the library may add some). Raises nothing.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from edgesparse.interrupts import raise_if_interrupted
from edgesparse.report import format as fmt

__all__ = ["BuildProgress", "StageLines", "SweepProgress", "clustering_label", "plain_line", "pruning_label",
           "training_metrics"]


def training_metrics(fields: dict[str, Any]) -> str:
    """'epoch 3  loss 0.412  acc 0.901  sparsity 0.800' from a training event's fields.

    "channels_masked" (channel pruning's `sparsity`, renamed by the renderers) reads 'channels masked 0.500'.
    """
    parts = []
    if "epoch" in fields:
        parts.append(f"epoch {int(fields['epoch'])}")
    for key, label in (("loss", "loss"), ("accuracy", "acc"), ("val_accuracy", "val_acc"), ("sparsity", "sparsity"),
                       ("channels_masked", "channels masked")):
        if fields.get(key) is not None:
            parts.append(f"{label} {fields[key]:.3f}")
    return "  ".join(parts)


def clustering_label(fields: dict[str, Any]) -> str:
    """'fine-tuning with weight clustering (4 clusters)' from a "cluster_begin" event's fields.

    Clustering is a second fine-tuning after pruning's: the label tells the two bars (and log lines) apart.
    """
    return f"fine-tuning with weight clustering ({int(fields['clusters'])} clusters)"


def pruning_label(fields: dict[str, Any]) -> str:
    """The label of a pruning fine-tuning from its "train_begin" fields: channel masks or UpdatePruningStep.

    Channel pruning reuses pruning's events (`sparsity` is then the fraction of channels masked) and says so
    with granularity "channel"; with --element-sparsity an element-wise pass (plain "train_begin") follows in
    the same stage, so the two bars and log lines must read differently.
    """
    if fields.get("granularity") == "channel":
        return "fine-tuning with channel masks"
    return "fine-tuning with UpdatePruningStep"


def plain_line(event: str, fields: dict[str, Any]) -> str | None:
    """The line a non-interactive console (a CI log, a pipe) gets for an event, as it happens; None for none.

    Live bars are drawn only on a terminal; elsewhere rich would print them once at the end, so a log
    would show nothing while a long build runs.
    """
    if event == "stage":
        return str(fields["description"])
    if event == "warning":
        return f"warning: {fields['message']}"
    if event == "sweep_begin":
        return f"sweep: {fields['points']} point(s), {fields['jobs']} to build, {fields['cached']} cached"
    if event == "point_begin":
        where = f" on {fields['worker']}" if fields.get("worker") else ""
        return f"  {fields['sparsity']:g}/{fields['quantize']} for {fields['profile']}{where}"
    if event == "point_moved":
        return (f"  {fields['sparsity']:g}/{fields['quantize']} for {fields['profile']} moved to {fields['worker']} "
                f"({fields['previous_worker']} died)")
    if event == "cluster_ready":
        return f"Dask scheduler {fields['scheduler']}: {len(fields['workers'])} worker(s)"
    if event == "demo_data_begin":
        return f"  generating the {fields['name']} data set with {fields['source']} (cached afterwards)"
    if event == "demo_train_begin":
        return "  training the dense demo model (cached afterwards)"
    if event == "train_begin":
        return "  " + pruning_label(fields)
    if event == "demo_epoch_end":
        return "    " + training_metrics(dict(fields, epoch=fields["epoch"] + 1))  # the demo counts from 0
    if event == "cluster_begin":
        return "  " + clustering_label(fields)
    if event in ("epoch_end", "cluster_epoch_end"):
        return "    " + training_metrics(fields)
    return None


class BuildProgress:
    """`build`'s events: a line per stage, a bar for the demo data, demo training, fine-tuning and clustering.

    On a terminal these are live bars; in a log or a pipe, one plain line per stage and epoch as it happens.
    """

    def __init__(self, console: Console) -> None:
        self._plain = not console.is_interactive
        self._progress = Progress(SpinnerColumn(finished_text="[green]✓[/]"), TextColumn("{task.description}"),
                                  BarColumn(bar_width=20), MofNCompleteColumn(), TimeElapsedColumn(),
                                  TextColumn("{task.fields[info]}"), console=console, transient=False,
                                  disable=self._plain)
        self._stages: dict[str, TaskID] = {}
        self._bars: dict[str, TaskID] = {}
        self._channel_masks = False  # the running pruning fine-tuning masks channels (its sparsity is channels)

    def _relabel(self, event: str, fields: dict[str, Any]) -> dict[str, Any]:
        """Channel pruning's `sparsity` is the fraction of channels masked: show it as "channels masked"."""
        if event == "train_begin":
            self._channel_masks = fields.get("granularity") == "channel"
        elif event in ("batch_end", "epoch_end") and self._channel_masks and "sparsity" in fields:
            fields = {k: v for k, v in fields.items() if k != "sparsity"} | {"channels_masked": fields["sparsity"]}
        return fields

    def _print_plain(self, event: str, fields: dict[str, Any]) -> None:
        line = plain_line(event, fields)
        if line is not None:
            self._progress.console.print(escape(line), soft_wrap=True)
            self._progress.console.file.flush()

    def __enter__(self) -> BuildProgress:
        self._progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.__exit__(*exc)

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        raise_if_interrupted()  # a signal some library swallowed still stops the command here
        fields = self._relabel(event, fields)
        if self._plain:
            self._print_plain(event, fields)
            return
        p = self._progress
        if event == "stage":
            self._stages[fields["name"]] = p.add_task(fields["description"], total=1, info="")
        elif event == "stage_done" and fields["name"] in self._stages:
            p.update(self._stages[fields["name"]], completed=1)
        elif event == "demo_data_begin":
            self._bars[event] = p.add_task(f"  generating the {fields['name']} data set with {fields['source']} "
                                           "(cached afterwards)", total=fields["clips"], info="")
        elif event == "demo_data_progress" and "demo_data_begin" in self._bars:
            p.update(self._bars["demo_data_begin"], completed=fields["done"], info="")
        elif event in ("demo_train_begin", "train_begin"):
            label = ("  training the dense demo model (cached afterwards)" if event == "demo_train_begin"
                     else "  " + pruning_label(fields))
            total = fields.get("epochs", 1) * (fields.get("steps_per_epoch", 1) if event == "train_begin" else 1)
            self._bars[event] = p.add_task(label, total=total, info="")
        elif event == "demo_epoch_end" and "demo_train_begin" in self._bars:
            p.update(self._bars["demo_train_begin"], advance=1,
                     info=training_metrics(dict(fields, epoch=fields["epoch"] + 1)))  # demo counts from 0
        elif event == "batch_end" and "train_begin" in self._bars:
            p.update(self._bars["train_begin"], advance=1, info=training_metrics(fields))
        elif event == "epoch_end" and "train_begin" in self._bars:
            p.update(self._bars["train_begin"], info=training_metrics(fields))
        elif event == "cluster_begin":
            self._bars[event] = p.add_task("  " + clustering_label(fields), total=_total_steps(fields), info="")
        elif event == "cluster_batch_end" and "cluster_begin" in self._bars:
            p.update(self._bars["cluster_begin"], advance=1, info=training_metrics(fields))
        elif event == "cluster_epoch_end" and "cluster_begin" in self._bars:
            p.update(self._bars["cluster_begin"], info=training_metrics(fields))


def _total_steps(fields: dict[str, Any]) -> int:
    """A fine-tuning's batches over all epochs: its "total_steps", else epochs x steps per epoch."""
    return int(fields.get("total_steps") or fields.get("epochs", 1) * fields.get("steps_per_epoch", 1))


class SweepProgress(BuildProgress):
    """`sweep`'s events: points as an overall bar; the current point's stage and fine-tuning bars below it."""

    def __init__(self, console: Console) -> None:
        super().__init__(console)
        self._points: TaskID | None = None
        self._stage: TaskID | None = None
        self._train: TaskID | None = None
        self._cluster: TaskID | None = None
        self._remote: dict[str, TaskID] = {}   # points running on Dask workers, by key (several at once)

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        raise_if_interrupted()  # a signal some library swallowed still stops the command here
        fields = self._relabel(event, fields)
        if self._plain and event not in ("point_done", "point_skipped"):
            self._print_plain(event, fields)
            return
        p = self._progress
        if event == "sweep_begin":
            families = len(fields["families"])
            self._points = p.add_task(f"sweep: {fields['points']} point(s) x {families} runtime "
                                      f"famil{'y' if families == 1 else 'ies'}", total=fields["jobs"],
                                      info=f"{fields['cached']} cached")
        elif event == "point_begin" and fields.get("worker"):    # --scheduler: one line per running point
            label = f"  {fields['sparsity']:g}/{fields['quantize']} for {fields['profile']}"
            self._remote[fields["key"]] = p.add_task(escape(label), total=None, info=escape(f"on {fields['worker']}"))
        elif event == "point_moved" and fields["key"] in self._remote:
            p.update(self._remote[fields["key"]],
                     info=escape(f"on {fields['worker']} (moved: {fields['previous_worker']} died)"))
        elif event == "cluster_ready":
            p.console.print(escape(f"  {plain_line(event, fields)}"))
        elif event == "point_begin":
            label = f"  {fields['sparsity']:g}/{fields['quantize']} for {fields['profile']}"
            self._stage = p.add_task(escape(label), total=None, info="")
        elif event == "prepare_begin" and self._stage is not None:
            p.update(self._stage, info="loading the dense model and data (once)")
        elif event == "stage" and self._stage is not None:
            p.update(self._stage, info=escape(fields["description"]))
        elif event == "train_begin":
            if self._train is not None:  # channel masks done; element-wise pruning of the small model follows
                p.remove_task(self._train)
            total = fields.get("epochs", 1) * fields.get("steps_per_epoch", 1)
            self._train = p.add_task("    " + pruning_label(fields), total=total, info="")
        elif event == "batch_end" and self._train is not None:
            p.update(self._train, advance=1, info=training_metrics(fields))
        elif event == "stage_done" and fields.get("name") == "prune" and self._train is not None:
            p.remove_task(self._train)
            self._train = None
        elif event == "cluster_begin":
            self._cluster = p.add_task("    " + clustering_label(fields), total=_total_steps(fields), info="")
        elif event == "cluster_batch_end" and self._cluster is not None:
            p.update(self._cluster, advance=1, info=training_metrics(fields))
        elif event == "stage_done" and fields.get("name") == "cluster" and self._cluster is not None:
            p.remove_task(self._cluster)
            self._cluster = None
        elif event in ("point_done", "point_skipped"):
            self._point_finished(event, fields)
        elif event == "warning":
            p.console.print(f"  [bold yellow]warning:[/] {escape(fields['message'])}", soft_wrap=True)

    def _point_finished(self, event: str, fields: dict[str, Any]) -> None:
        p = self._progress
        if fields.get("key") in self._remote:
            p.remove_task(self._remote.pop(fields["key"]))
        elif self._stage is not None:
            p.remove_task(self._stage)
            self._stage = None
        if self._points is not None:
            p.update(self._points, advance=1)
        label = f"{fields['sparsity']:g}/{fields['quantize']} for {fields['profile']}"
        if fields.get("worker"):
            label += f" on {fields['worker']}"
        if event == "point_skipped":
            p.console.print(f"  [yellow]skipped[/] {escape(label)}: {escape(fields['reason'])}", soft_wrap=True)
            return
        how = "[dim]cached[/]" if fields["cached"] else f"{fields['seconds']:.1f} s"
        acc = ("" if fields.get("accuracy") is None else
               f"acc {fmt.percent(fields['accuracy'])} (drop {fields['drop_points']:+.2f})")
        size = "" if not fields.get("artifact_bytes") else fmt.byte_size(fields["artifact_bytes"])
        p.console.print(f"  [green]✓[/] {escape(label)}  {acc}  {size}  {how}")


class StageLines:
    """`deploy`'s events: one dim line per stage (its steps are short; no bars)."""

    def __init__(self, console: Console) -> None:
        self._console = console

    def __call__(self, event: str, fields: dict[str, Any]) -> None:
        raise_if_interrupted()  # a signal some library swallowed still stops the command here
        if event == "stage":
            self._console.print(f"[dim]-[/] {fields['description']}")

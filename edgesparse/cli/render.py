"""Terminal rendering of command results: rich tables and lines, nothing computed here.

Why its own module: the commands parse options and call the library; how a
result looks in a terminal (the check verdict and matrix, the sweep and battery
tables, profile listings) is a separate concern, and half of the old cli.py.
Numbers go through `edgesparse.report.format`, the vocabulary report.html uses,
and "is this basis an assumption" through `edgesparse._types.is_assumption`,
so the terminal and the page agree. Raises nothing.
"""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from edgesparse._types import is_assumption
from edgesparse.estimate import iter_budget_keys
from edgesparse.profiles.profile import Profile
from edgesparse.profiles.schema import SCHEMA
from edgesparse.report import format as fmt
from edgesparse.report.compression import compression_summary
from edgesparse.report.npu import npu_view
from edgesparse.report.speed import speed_summary

__all__ = [
    "basis_markup",
    "compression_rows",
    "make_console",
    "npu_rows",
    "print_battery",
    "print_calibration",
    "print_check",
    "print_check_matrix",
    "print_deploy",
    "print_error",
    "print_measurement",
    "print_profile",
    "print_profiles",
    "print_summary",
    "print_sweep",
    "print_sweep_outcome",
    "speed_rows",
]


def make_console(stderr: bool = False) -> Console:
    """A console that prints what it is given: no guessing of numbers or paths to highlight."""
    return Console(stderr=stderr, highlight=False)


def print_error(message: str) -> None:
    """The one error line on stderr (markup-escaped: messages quote TOML and paths)."""
    make_console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)


def basis_markup(basis: str) -> str:
    """An estimate's basis, yellow when it is an assumption (the rule report.html uses)."""
    return f"[yellow]{escape(basis)}[/]" if is_assumption(basis) else escape(basis)


def print_summary(console: Console, rows: list[tuple[str, str]], title: str) -> None:
    """A two-column label/value table (build and deploy summaries); values are rich markup."""
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    for label, value in rows:
        table.add_row(label, value)
    console.print(table)


def compression_rows(section: Any) -> list[tuple[str, str]]:
    """The build summary's lines for report.json's compression section (TFLM builds); [] without one.

    Values are rich markup: a decode time whose basis is an assumption is yellow, as everywhere.
    """
    c = compression_summary(section)
    if c is None:
        return []
    methods = ", ".join(f"{n} {m}" for m, n in c["methods"].items())
    rows = [("mcu compression", escape(f"{c['mode'] or fmt.UNKNOWN}: {c['compressed_tensors']} of {c['tensors']} "
                                       f"tensors compressed" + (f" ({methods})" if methods else "")))]
    if not c["applied"]:
        return rows
    rows += [
        ("model file before -> after", escape(
            f"{fmt.byte_count(c['uncompressed_bytes'])} -> {fmt.byte_count(c['compressed_bytes'])}  "
            f"({fmt.ratio(c['ratio_vs_dense_int8'])} smaller than dense int8)")),
        ("arena added by DECODE", escape(
            f"{fmt.byte_count(c['arena_added_bytes'])}  (measured in TFLM: "
            f"{fmt.byte_count(c['arena_uncompressed_bytes'])} -> {fmt.byte_count(c['arena_compressed_bytes'])})")),
        ("decode per invoke", escape(f"{fmt.quantity(c['decode_ms'], 'ms')} for "
                                     f"{fmt.integer(c['decoded_elements_per_invoke'])} elements; basis ")
         + basis_markup(str(c["decode_basis"] or "none"))),
    ]
    if c["kept_dense_for_ram"]:
        why = f": {c['ram_reason']}" if c["ram_reason"] else ""
        rows.append(("kept dense for RAM", f"[yellow]{escape(', '.join(c['kept_dense_for_ram']) + why)}[/]"))
    if c["bitwise_identical"] is False:
        rows.append(("TFLM outputs", "[bold red]NOT bitwise identical to the uncompressed int8 file[/]"))
    return rows


_VERDICT_STYLE = {"faster": "green", "same": "", "slower": "bold red", "unknown": "yellow"}


def _verdict_markup(verdict: str, ratio: Any) -> str:
    style = _VERDICT_STYLE.get(verdict, "")
    text = escape(f"{verdict} (x{fmt.number(ratio, 3)} of dense int8)")
    return f"[{style}]{text}[/]" if style else text


def speed_rows(section: Any) -> list[tuple[str, str]]:
    """The build summary's (and `check --baseline`'s) lines for a speed section; [] without one.

    The estimated verdict with its basis (yellow when it rests on a transfer or an assumption, with the
    notes that say which kernel and from where), the host measurement when there is one, and "size only".
    """
    s = speed_summary(section)
    if s is None:
        return []
    e = s["estimated"]
    rows = [(f"speed on {escape(str(s['profile']))}",
             _verdict_markup(e["verdict"], e["ratio"]) + escape(
                 f"  {fmt.quantity(e['artifact_ms'], 'ms')} vs {fmt.quantity(e['dense_int8_ms'], 'ms')}; basis ")
             + basis_markup(e["basis"]))]
    for note in e["notes"]:
        rows.append(("", f"[yellow]{escape(note)}[/]" if "transfer" in note.lower() else escape(note)))
    host = s["host"]
    if host:
        rows.append(("speed on this host", _verdict_markup(host["verdict"], host["ratio"]) + escape(
            f"  {fmt.quantity(host['artifact_ms'], 'ms')} vs {fmt.quantity(host['dense_int8_ms'], 'ms')} measured in "
            f"{host['runtime']}, {fmt.integer(host['rounds'])} interleaved rounds")))
    if s["size_only"]:
        rows.append(("pruning gain", f"[yellow]size only[/]: the file is {escape(fmt.ratio(s['file_ratio']))} of "
                                     "dense int8, not expected faster"))
    return rows


def npu_rows(section: Any) -> list[tuple[str, str]]:
    """An Ethos-U section's lines (the build summary's and `check`'s) as markup: escaped, an assumed basis and
    what was not verified or cannot be known in yellow; [] without a section."""
    rows = []
    for label, value in _npu_text_rows(section):
        text = escape(value)
        if label.startswith(("NPU not verified", "not known")) or (
                "basis " in value and is_assumption(value.rsplit("basis ", 1)[1])):
            text = f"[yellow]{text}[/]"
        rows.append((escape(label), text))
    return rows


def _npu_text_rows(section: Any) -> list[tuple[str, str]]:
    """An npu section's lines as plain text (read through report.npu): placement, Vela's figures, dense against
    the artifact when the dense baseline was compiled too, and what was not verified; [] without a section."""
    n = npu_view(section)
    if n is None:
        return []
    if n["compiled_file"]:
        return [("NPU (compiled file)", f"{fmt.integer(n['npu_ops'])} ethos-u op(s); CPU ops: "
                                        f"{', '.join(n['cpu_op_names']) or 'none'}"),
                ("NPU flash in the file", f"{fmt.byte_count(n['vela_flash_bytes'])} (command stream "
                                          f"{fmt.byte_count(n['command_stream_bytes'])})"),
                ("arena Vela asked for", fmt.byte_count(n["arena_bytes"])),
                ("not known from the file", n["not_estimated"] or fmt.UNKNOWN)]
    rows = [("NPU", f"{n['accelerator'] or fmt.UNKNOWN} @ {fmt.number(n['npu_clock_mhz'], 4, 'MHz')}: "
                    f"{fmt.integer(n['npu_ops'])} op(s) on the NPU, {fmt.integer(n['cpu_ops'])} on the CPU")]
    rows += [("  CPU fallback", f"op {op['index']} {op['op_type']}: {op['reason'] or 'no reason given'}")
             for op in n["cpu_op_rows"]]
    rows += [
        ("NPU latency", f"{fmt.quantity(n['latency_ms'], 'ms')} (NPU {fmt.quantity(n['npu_ms'], 'ms')}, "
                        f"{fmt.integer(n['total_cycles'])} cycles; CPU {fmt.quantity(n['cpu_ms'], 'ms')}); "
                        f"basis {n['latency_basis']}"),
        ("NPU energy / inference", f"{fmt.quantity(n['energy_mj'], 'mJ')}; battery {fmt.hours(n['battery_hours'])}"
                                   f"; basis {n['energy_basis']}"),
        ("encoded weights (Vela)", f"{fmt.byte_count(n['encoded_weight_bytes'])} from "
                                   f"{fmt.byte_count(n['raw_weight_bytes'])} raw int8 "
                                   f"({fmt.ratio(n['weight_compression'])})"),
        ("SRAM / flash (Vela)", f"{fmt.byte_count(n['sram_bytes'])} of {fmt.byte_count(n['sram_limit_bytes'])} / "
                                f"{fmt.byte_count(n['vela_flash_bytes'])}"),
    ]
    for row in n["comparison"] or []:
        if row["key"] in ("encoded_weight_bytes", "total_cycles", "latency_ms"):
            unit = row["unit"]
            shown = [fmt.byte_count(v) if unit == "B" else fmt.integer(v) if unit == "cycles" else
                     fmt.quantity(v, unit) for v in (row["dense"], row["artifact"])]
            rows.append((f"dense -> artifact: {row['label']}",
                         f"{shown[0]} -> {shown[1]} ({fmt.ratio(row['ratio'])} dense / artifact)"))
    if n["not_verified"]:
        rows.append(("NPU not verified", n["not_verified"]))
    return rows


# --------------------------------------------------------------------------- profiles

def print_profiles(console: Console, entries: list[tuple[str, Profile | None]]) -> None:
    """One row per profile; None marks a file that did not validate."""
    table = Table(title="Device profiles", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("name", "class", "cpu", "clock", "RAM", "flash/storage", "runtime", "fitted", "assumed"):
        table.add_column(column, justify="right" if column in ("clock", "RAM", "flash/storage") else "left",
                         no_wrap=True)
    for name, p in entries:
        if p is None:
            table.add_row(escape(name), "[red]invalid[/]", *[""] * 7)
            continue
        d = p.table("device")
        table.add_row(
            escape(p.name), p.device_class, escape(d["cpu"]), f"{d['clock_mhz']:g} MHz",
            fmt.byte_size(d["ram_bytes"], "-"), fmt.byte_size(d.get("flash_bytes", d.get("storage_bytes")), "-"),
            f"{p.runtime}+{p.npu.accelerator}" if p.npu is not None else f"{p.runtime}/{p.kernels}",
            "yes" if p.latency_fitted else "[yellow]no[/]", str(len(p.assumptions())))
    console.width = max(console.width, 140)  # one row per profile, even in a pipe
    console.print(table)


def print_profile(console: Console, p: Profile) -> None:
    """Every value of a profile with its source; assumed values in yellow."""
    console.print(f"[bold]{escape(p.name)}[/]: {escape(p.raw['description'])}")
    console.print(f"file {escape(str(p.path))}\nsha256 {p.sha256}")
    assumed = set(p.assumptions())
    for table_name, spec in SCHEMA.items():
        if not table_name or table_name not in p.raw:
            continue
        table = Table(title=f"{table_name}: {spec.doc}", title_justify="left", show_lines=False)
        table.add_column("key", style="bold")
        table.add_column("value")
        table.add_column("source", overflow="fold")
        for dotted, value in p.items():
            if not dotted.startswith(table_name + "."):
                continue
            shown = f"{value} ({fmt.byte_size(value, '-')})" if dotted.endswith("_bytes") else str(value)
            source = p.source(dotted) or ""
            if source.startswith("fitted: ") and not dotted.endswith(".fit_source"):
                source = "fitted (see fit_source)"
            table.add_row(dotted.split(".", 1)[1], escape(shown),
                          f"[yellow]{escape(source)}[/]" if dotted in assumed else escape(source))
        console.print(table)
    if not p.latency_fitted:
        console.print("[yellow]latency coefficients: not fitted yet[/]")
    console.print(f"{len(assumed)} values rest on assumptions (yellow): {', '.join(sorted(assumed)) or 'none'}",
                  soft_wrap=True)


# --------------------------------------------------------------------------- check, one profile

def _budget_status(b: Any) -> str:
    return "[yellow]unknown[/]" if b.value is None else "[green]pass[/]" if b.ok else "[bold red]FAIL[/]"


def _budgets_table(result: Any) -> Table:
    table = Table(title="budgets", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("budget", "limit", "value", "margin", ""):
        table.add_column(col, justify="right" if col in ("limit", "value", "margin") else "left")
    for b in result.budgets:
        table.add_row(b.name, fmt.quantity(b.limit, b.unit, "-"), fmt.quantity(b.value, b.unit, "-"),
                      fmt.quantity(b.margin, b.unit, "-"), _budget_status(b))
    return table


def _estimates_table(result: Any) -> Table:
    table = Table(title="estimates", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("estimate", "value", "basis", "detail"):
        table.add_column(col, justify="right" if col == "value" else "left", overflow="fold")
    f, r, lat, e = result.flash, result.ram, result.latency, result.energy
    table.add_row("flash", fmt.byte_size(f.total_bytes, "-"), basis_markup(f.basis),
                  escape(f"model {fmt.byte_count(f.model_bytes)} + "
                         f"runtime code {fmt.byte_count(f.runtime_code_bytes)}"))
    table.add_row("RAM", fmt.byte_size(r.total_bytes, "-"), basis_markup(r.basis),
                  escape(f"planned (non-persistent) {fmt.byte_count(r.planned_bytes)} + persistent "
                         f"{fmt.byte_count(r.persistent_bytes)}"
                         + (f"; scratch {fmt.byte_count(r.scratch_bytes)} in the plan" if r.scratch_bytes else "")))
    table.add_row("latency", fmt.quantity(lat.latency_ms, "ms", "-"), basis_markup(lat.basis),
                  escape(f"{lat.threads} thread(s); " + (lat.fit_source or "no fit")))
    table.add_row("energy / inference", fmt.quantity(e.energy_mj, "mJ", "-"), basis_markup(e.basis),
                  escape(f"latency x {e.active_mw:.4g} mW active" if e.active_mw else "no power figures"))
    if e.rate_per_s is not None:
        battery = (f"{fmt.rate(e.rate_per_s)}, {e.battery_mah:g} mAh x {e.voltage_v:g} V, {e.sleep_mw} mW between "
                   f"inferences; inference share of the drain {fmt.percent(e.model_share, 1, missing='-')}"
                   if e.battery_mah and e.voltage_v else f"{fmt.rate(e.rate_per_s)}; no battery")
        table.add_row("battery life", fmt.hours(e.battery_hours, "-"), basis_markup(e.basis), escape(battery))
    return table


def _print_ops(console: Console, latency: Any, *, all_ops: bool) -> None:
    ops = sorted(latency.ops, key=lambda o: -o.predicted_us)
    shown = ops if all_ops else ops[:12]
    table = Table(title="latency per op" + ("" if all_ops else " (slowest first)"), title_justify="left",
                  box=box.SIMPLE_HEAD)
    for col in ("#", "op", "type", "dtype", "MACs", "bytes", "pred. us", "share", "flag"):
        table.add_column(col, justify="right" if col in ("#", "MACs", "bytes", "pred. us", "share") else "left")
    for o in shown:
        table.add_row(str(o.index), o.op, o.kind, o.dtype, f"{o.macs_used:,}" + ("*" if o.macs_used != o.macs else ""),
                      f"{o.bytes_moved:,}", f"{o.predicted_us:.2f}", fmt.percent(o.share, 1),
                      f"[yellow]{escape(o.flag)}[/]" if o.flag else "")
    console.print(table)
    if len(ops) > len(shown):
        console.print(f"  (+{len(ops) - len(shown)} more ops; --all-ops lists every op)")
    if any(o.macs_used != o.macs for o in latency.ops):
        console.print("  * MACs the kernel really executes (sparse weights skipped)")


def print_check(console: Console, result: Any, *, all_ops: bool) -> None:
    """One profile's verdict: budgets, estimates with their basis, the per-op latency table."""
    unknown = [b.name for b in result.budgets if b.value is None]
    verdict = "[green]fits[/]" if result.fits else "[bold red]does NOT fit[/]"
    if result.fits and unknown:
        verdict = "[yellow]fits the budgets it can check[/] (unknown: " + escape(", ".join(unknown)) + ")"
    console.print(f"\n[bold]{escape(result.profile)}[/] ({escape(result.runtime)}): {verdict}")
    console.print(_budgets_table(result))
    console.print(_estimates_table(result))
    npu = npu_rows(result.npu_dict()) if hasattr(result, "npu_dict") else []
    if npu:
        print_summary(console, npu, "Arm Ethos-U NPU (Vela)")
    if result.latency.ops and result.latency.latency_ms is not None:
        _print_ops(console, result.latency, all_ops=all_ops)
    for w in result.warnings:
        console.print(f"[bold yellow]warning:[/] {escape(w)}", soft_wrap=True)
    for a in result.assumptions:
        console.print(f"[yellow]assumption:[/] {escape(a)}", soft_wrap=True)


# --------------------------------------------------------------------------- check, several profiles

def _matrix_verdict(r: Any) -> str:
    unknown = [b.name for b in r.budgets if b.value is None]
    if not r.fits:
        return "[bold red]does NOT fit[/]"
    return f"[yellow]{escape(', '.join(unknown))} unknown[/]" if unknown else "[green]fits[/]"


def _matrix_budget_cell(r: Any, name: str) -> str:
    b = next((b for b in r.budgets if b.name == name), None)
    if b is None:
        return "[dim]no budget[/]"
    limit = fmt.quantity(b.limit, b.unit, "-")  # B as 25.2 MiB, not 26,388,336 B: a cell must stay narrow
    if b.value is None:
        return f"? / {limit}\n[yellow]unknown[/]"
    return f"{fmt.quantity(b.value, b.unit)} / {limit}\n{_budget_status(b)}"


def _with_basis(value: str, basis: str) -> str:
    return f"{value}\n{basis_markup(basis)}"


def _matrix_rows(results: list[Any]) -> list[tuple[str, list[str], bool]]:
    """(label, one cell per profile, ends a section) for the check matrix."""
    rows = [("runtime", [escape(r.runtime) for r in results], False),
            ("verdict", [_matrix_verdict(r) for r in results], True)]
    names = [k for k in iter_budget_keys() if any(b.name == k for r in results for b in r.budgets)]
    rows += [(f"budget {name}", [_matrix_budget_cell(r, name) for r in results], name == names[-1]) for name in names]
    rows += [
        ("model file", [fmt.byte_size(r.model_size, "-") for r in results], False),
        ("flash", [_with_basis(fmt.byte_size(r.flash.total_bytes, "-"), r.flash.basis) for r in results], False),
        ("RAM", [_with_basis(fmt.byte_size(r.ram.total_bytes, "-"), r.ram.basis) for r in results], False),
        ("latency", [_with_basis(fmt.quantity(r.latency.latency_ms, "ms", "-"), r.latency.basis)
                     for r in results], False),
        ("energy / inference", [_with_basis(fmt.quantity(r.energy.energy_mj, "mJ", "-"), r.energy.basis)
                                for r in results], False),
        ("battery life", ["-" if r.energy.battery_hours is None else
                          f"{fmt.hours(r.energy.battery_hours)} at {fmt.rate(r.energy.rate_per_s)}" for r in results],
         False),
        ("threads", [str(r.latency.threads) for r in results], True),
        ("warnings", [str(len(r.warnings)) for r in results], False),
        ("assumptions", [str(len(r.assumptions)) for r in results], False),
    ]
    return rows


def print_check_matrix(console: Console, results: list[Any], *, all_ops: bool) -> None:
    """Several profiles at once: profiles as columns, budgets and estimates as rows."""
    table = Table(title="check: profiles x budgets and estimates", title_justify="left", box=box.SIMPLE_HEAD,
                  show_lines=False)
    table.add_column("", style="bold", no_wrap=True)
    for r in results:
        table.add_column(escape(r.profile), justify="right", overflow="fold")
    for label, cells, end_section in _matrix_rows(results):
        table.add_row(label, *cells, end_section=end_section)
    console.print(table)
    if all_ops:
        for r in results:
            print_check(console, r, all_ops=True)
        return
    for r in results:
        for w in r.warnings:
            console.print(f"[bold yellow]warning ({escape(r.profile)}):[/] {escape(w)}", soft_wrap=True)
    console.print("[dim]Assumptions and the per-op latency of each profile: --all-ops, or one --profile at a time; "
                  "--json for everything.[/]")


# --------------------------------------------------------------------------- measure, calibrate, deploy

def print_measurement(console: Console, model: str, m: Any) -> None:
    """`measure`'s statistics, like benchmark_model's summary."""
    console.print(f"[bold]{escape(model)}[/] on {escape(m.interpreter)}, {m.threads} thread(s): "
                  f"{m.runs} runs after {m.warmup} warm-up")
    stats = (("median", m.median_ms), ("p90", m.p90_ms), ("min", m.min_ms), ("mean", m.mean_ms), ("std", m.std_ms))
    console.print("  " + "   ".join(f"{label} {fmt.quantity(v, 'ms')}" for label, v in stats), soft_wrap=True)
    if m.arena_bytes:
        console.print(f"  TFLM arena used: {fmt.byte_count(m.arena_bytes)}")
    for k in m.kernels:
        console.print(f"  kernels: {escape(k)}", soft_wrap=True)


def print_calibration(console: Console, result: Any) -> None:
    """The fit, row by row, its in-sample error, and where the new profile went."""
    table = Table(title=f"fit of {result.profile} ({result.mode}, {result.parameters} parameter(s))",
                  title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("model_file", "measured ms", "predicted ms", "error"):
        table.add_column(col, justify="left" if col == "model_file" else "right")
    for row in result.rows:
        table.add_row(escape(row["model_file"]), fmt.number(row["measured_ms"]), fmt.number(row["predicted_ms"]),
                      fmt.percent(row["error"], 1, signed=True))
    console.print(table)
    console.print(f"median |error| {fmt.percent(result.median_abs_error, 1)}, worst "
                  f"{fmt.percent(result.worst_abs_error, 1)} (in-sample: measure other models to see the error on "
                  "unseen ones)")
    for note in result.notes:
        console.print(f"[yellow]note:[/] {escape(note)}", soft_wrap=True)
    console.print(f"[green]ok[/] wrote {escape(str(result.out))}")


def _run_line(outcome: dict[str, Any]) -> str:
    latency = outcome.get("latency_ms")
    return (f"{outcome.get('label')}  score {outcome.get('score', 0):.3f}"
            + ("" if latency is None else f"  latency {fmt.quantity(latency, 'ms')}"))


def print_deploy(console: Console, bundle: Any, remote: Any) -> None:
    """The bundle written, what it predicts here, and (with --host) what the device answered."""
    expected = bundle.expected or {}
    rows = [("bundle", str(bundle.path)), ("files", str(len(bundle.files))), ("test input", str(bundle.test_input)),
            ("here", f"{_run_line(expected)}  [{expected.get('runtime') or expected.get('interpreter')}]")]
    if bundle.mcu is not None:
        m = bundle.mcu
        rows.append(("tensor arena", fmt.byte_count(bundle.arena_bytes)))
        rows.append(("model flash", f"{fmt.byte_count(m.flash_bytes)} ({m.core}, align {m.alignment})"
                     if m.flash_bytes is not None else f"not compiled: {m.skipped}"))
    if remote is not None:
        r = remote.result
        rows.append(("device", f"{remote.destination}:{remote.path} (venv {remote.venv}, {remote.transfer})"))
        rows.append(("on device", f"{_run_line(dict(r, latency_ms=r.get('latency_ms', 0)))}  "
                                  f"[{r.get('runtime')}, {r.get('kernels')}]"))
        rows.append(("same as here", "yes" if remote.matches_local else "NO"))
    rows += [("note", note) for note in bundle.notes]
    print_summary(console, [(label, escape(value)) for label, value in rows],
                  f"edgesparse deploy --target {bundle.target}")


# --------------------------------------------------------------------------- sweep, battery

def _sweep_cell(c: dict[str, Any]) -> str:
    if c.get("error"):
        return "[dim]n/a[/]"
    failed = [b["name"] for b in c["budgets"] if not b["ok"] and b["value"] is not None]
    unknown = [b["name"] for b in c["budgets"] if b["value"] is None]
    verdict = ("[bold red]FAIL[/] " + escape(",".join(failed)) if failed else
               "[yellow]unknown[/] " + escape(",".join(unknown)) if unknown else "[green]pass[/]")
    return f"{verdict} {fmt.number(c.get('latency_ms'), 3, 'ms', missing='-')}"


def _decode_cell(point: dict[str, Any]) -> str:
    """A microcontroller build's int8 file before and after DECODE, and the ratio of dense int8 to it."""
    c = next((b["compression"] for b in point["builds"].values() if b.get("compression")), None)
    if c is None:
        return "-"
    return (f"{fmt.byte_size(c.get('uncompressed_bytes'))} -> {fmt.byte_size(c.get('compressed_bytes'))} "
            f"({fmt.ratio(c.get('ratio_vs_dense_int8'))})")


def print_sweep(console: Console, doc: dict[str, Any]) -> None:
    """Points as rows; per profile PASS/FAIL with the failed budgets and the latency."""
    names = [p["name"] for p in doc["profiles"]]
    chosen = (doc.get("choice") or {}).get("point")
    compressed = any(b.get("compression") for p in doc["points"] for b in p["builds"].values())
    table = Table(title="sweep", title_justify="left", box=box.SIMPLE_HEAD)
    for col in ("point", "sparsity", ".tflite acc", "drop", "model") + (("TFLM int8 -> DECODE",) if compressed else ()):
        table.add_column(col, justify="left" if col == "point" else "right")
    for name in names:
        table.add_column(name, justify="left")
    for p in doc["points"]:
        first: dict[str, Any] = next((b for b in p["builds"].values() if not b.get("error")), {})
        built = [fmt.percent(first["achieved_sparsity"], 1), fmt.percent(first["accuracy"]),
                 f"{first['drop_points']:+.2f}", fmt.byte_size(first["artifact_bytes"])] if first else ["-"] * 4
        if compressed:
            built.append(_decode_cell(p))
        mark = " [bold green]*[/]" if p["label"] == chosen else ""
        table.add_row(escape(p["label"]) + mark, *built, *[_sweep_cell(p["checks"].get(n) or {}) for n in names])
    console.print(table)


def print_sweep_outcome(console: Console, doc: dict[str, Any], out_dir: str) -> None:
    """What was built and written, and the chosen point (or why none was) with every rejection."""
    console.print(f"[green]ok[/] {doc['built']} point(s) built, {doc['cached']} from the cache; wrote "
                  f"{escape(out_dir)}/sweep.json, sweep.csv, sweep.html")
    choice = doc.get("choice")
    if not choice:
        return
    style = "green" if choice["point"] else "bold red"
    console.print(f"[{style}]{'chosen' if choice['point'] else 'no choice'}:[/] {escape(choice['explanation'])}",
                  soft_wrap=True)
    for r in choice["rejected"]:
        console.print(f"  [dim]rejected {escape(r['point'])}: {escape('; '.join(r['why']))}[/]", soft_wrap=True)


def _battery_table(result: dict[str, Any]) -> Table:
    rows = result["variants"]
    first = rows[0]
    table = Table(title=f"battery on {result['profile']}: {first['battery_mah']} mAh battery, "
                        f"{first['rate'] or 'no rate'}, rest {first['sleep_mw']} mW", title_justify="left")
    for column in ("build", "size", "latency", "energy / inference", "avg power", "battery life", "inference share"):
        table.add_column(column, justify="left" if column == "build" else "right")
    for row in rows:
        table.add_row(row["variant"], fmt.byte_size(row["model_bytes"]), fmt.quantity(row["latency_ms"], "ms"),
                      fmt.quantity(row["energy_mj"], "mJ"), fmt.quantity(row["average_power_mw"], "mW"),
                      fmt.hours(row["battery_hours"]), fmt.percent(row["model_share"], 1))
    return table


def print_battery(console: Console, result: dict[str, Any]) -> None:
    """Each build's energy and battery life on one profile, and the gain over the dense float32 model."""
    console.print(_battery_table(result))
    rows = result["variants"]
    first = rows[0]
    base = next((r for r in rows if r["variant"] == "dense float32"), None)
    if base and first["battery_hours"] and base["battery_hours"]:
        gain = first["battery_hours"] / base["battery_hours"] - 1.0
        ratio = (f"{first['energy_mj'] / base['energy_mj']:.2f}x" if first["energy_mj"] and base["energy_mj"]
                 else fmt.UNKNOWN)
        console.print(f"pruned artifact vs dense float32: {fmt.percent(gain, 1, signed=True)} battery life, "
                      f"{ratio} the energy per inference")
    int8 = next((r for r in rows if r["variant"] == "dense int8"), None)
    if int8 and int8["model_bytes"] == first["model_bytes"]:
        console.print("the artifact is the dense int8 flatbuffer (this runtime cannot run sparse weights), "
                      "so pruning brings no energy gain here; int8 quantization does")
    bases = sorted({b for r in rows for b in (r["latency_basis"], r["energy_basis"]) if b})
    notes = sorted({a for r in rows for a in r["assumptions"] if a.startswith(("latency", "energy"))})
    if any(is_assumption(b) for b in bases) or notes:
        console.print("[yellow]estimate basis:[/] " + ", ".join(basis_markup(b) for b in bases))
        for note in notes:
            console.print(f"  [yellow]assumption:[/] {escape(note)}", soft_wrap=True)

"""Terminal rendering: the build summary's compression lines and the sweep table's DECODE column."""

from __future__ import annotations

import copy

from rich.console import Console
from support.compression import compression_section

from edgesparse.cli import render
from edgesparse.report import format as fmt


def _text(rows: list[tuple[str, str]]) -> str:
    console = Console(width=200, record=True, color_system=None)
    render.print_summary(console, rows, "summary")
    return console.export_text()


def test_compression_rows_say_file_ratio_arena_and_decode_time():
    rows = dict(render.compression_rows(compression_section()))
    assert rows["mcu compression"] == "auto: 2 of 4 tensors compressed (2 PRUNING)"
    assert rows["model file before -> after"] == "80,536 B -> 33,744 B  (2.39× smaller than dense int8)"
    assert rows["arena added by DECODE"] == "63,520 B  (measured in TFLM: 6,784 B -> 70,304 B)"
    # An assumed basis is yellow, as every assumption in the terminal (render.basis_markup).
    assert rows["decode per invoke"].startswith("1.234 ms for 70,144 elements; basis [yellow]assumption:")
    assert "kept dense for RAM" not in rows and "TFLM outputs" not in rows
    fitted = dict(render.compression_rows(compression_section(decode_basis="fitted")))
    assert fitted["decode per invoke"].endswith("basis fitted")


def test_kept_dense_for_ram_and_a_failed_proof_are_said():
    section = compression_section(kept_for_ram=True)
    section["verification"]["bitwise_identical"] = False
    text = _text(render.compression_rows(section))
    assert "kept dense for RAM" in text and "digits_cnn/fc1/MatMul;digits_cnn/fc1/BiasAdd" in text
    assert "RAM budget of 65,536 B" in text
    assert "NOT bitwise identical" in text and "1.04×" in text


def test_no_section_no_rows_and_markup_in_names_is_escaped():
    assert render.compression_rows(None) == []          # LiteRT builds, and report.json older than DECODE
    off = render.compression_rows({"mode": "off", "applied": False, "tensors": []})
    assert off == [("mcu compression", "off: 0 of 0 tensors compressed")]
    section = compression_section(kept_for_ram=True)
    section["ram_budget"]["kept_dense_for_ram"] = ["model/[bold]dense[/bold]/MatMul"]
    assert "model/[bold]dense[/bold]/MatMul" in _text(render.compression_rows(section))


def _sweep_doc() -> dict:
    section = compression_section()
    summary = {"uncompressed_bytes": section["uncompressed_bytes"], "compressed_bytes": section["compressed_bytes"],
               "ratio_vs_dense_int8": section["ratio_vs_dense_int8"]}
    build = {"achieved_sparsity": 0.8, "accuracy": 0.98, "drop_points": 0.5, "artifact_bytes": 33_744}
    check = {"budgets": [{"name": "ram_bytes", "ok": True, "value": 75_000}], "latency_ms": 41.8}
    return {"profiles": [{"name": "nrf52840"}], "choice": None, "points": [
        {"label": "0.8/int8", "builds": {"nrf52840": dict(build, compression=summary)},
         "checks": {"nrf52840": check}},
        {"label": "0.8/float16", "builds": {"nrf52840": {"error": "no float16 kernels"}},
         "checks": {"nrf52840": {"error": "no float16 kernels", "budgets": []}}}]}


def test_sweep_table_shows_the_compressed_file_and_its_int8_size():
    doc = _sweep_doc()
    console = Console(width=200, record=True, color_system=None)
    render.print_sweep(console, doc)
    text = console.export_text()
    assert "TFLM int8 -> DECODE" in text and f"{fmt.byte_size(80_536)} -> {fmt.byte_size(33_744)} (2.39×)" in text
    plain = copy.deepcopy(doc)                           # a sweep of LiteRT builds: no such column
    plain["points"][0]["builds"]["nrf52840"]["compression"] = None
    console = Console(width=200, record=True, color_system=None)
    render.print_sweep(console, plain)
    assert "DECODE" not in console.export_text()

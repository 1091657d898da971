"""Terminal rendering: the build summary's compression lines, the sweep table's DECODE column and check's
Ethos-U NPU table."""

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


# --------------------------------------------------------------------------- speed

def _speed_section(**overrides) -> dict:
    section = {"profile": "rpi4", "runtime": "litert", "artifact_bytes": 28112, "dense_int8_bytes": 80536,
               "file_ratio": 0.3491, "band": 0.05,
               "estimated": {"dense_int8_ms": 0.02139, "artifact_ms": 0.01848, "ratio": 0.864, "verdict": "faster",
                             "basis": "transferred", "notes": ["the 1x16 kernel is priced at 'int8': a TRANSFER"],
                             "kernels": []},
               "host": {"runtime": "litert", "threads": 1, "dense_int8_ms": 0.0189, "artifact_ms": 0.02264,
                        "ratio": 1.198, "rounds": 15, "runs_per_round": 20, "verdict": "slower", "band": 0.08},
               "size_only": False, "claim": "..."}
    section.update(overrides)
    return section


def test_speed_rows_give_the_estimated_and_host_verdicts_and_flag_the_transfer():
    rows = render.speed_rows(_speed_section())
    labels = [label for label, _ in rows]
    assert labels == ["speed on rpi4", "", "speed on this host"]
    assert rows[0][1].startswith("[green]faster (x0.864 of dense int8)[/]")
    assert rows[0][1].endswith("basis [yellow]transferred[/]")
    assert rows[1][1].startswith("[yellow]the 1x16 kernel")
    assert rows[2][1].startswith("[bold red]slower (x1.2 of dense int8)[/]") and "15 interleaved rounds" in rows[2][1]
    text = _text(rows)
    assert "0.01848 ms vs 0.02139 ms" in text and "0.02264 ms vs 0.0189 ms measured in litert" in text


def test_speed_rows_size_only_and_no_section():
    section = _speed_section(size_only=True, host=None)
    section["estimated"] = dict(section["estimated"], verdict="same", ratio=1.0, basis="fitted", notes=[])
    rows = dict(render.speed_rows(section))
    line = rows["speed on rpi4"]
    assert line.startswith("same (x1 of dense int8)") and line.endswith("basis fitted")
    assert rows["pruning gain"].startswith("[yellow]size only[/]") and "speed on this host" not in rows
    assert render.speed_rows(None) == []


def test_check_prints_the_npu_table_and_escapes_velas_words():
    import pytest
    from support.npu import compiled_fallback, fallback_npu_model, npu_profile

    from edgesparse.estimate import check_model
    from edgesparse.runtime.vela import vela_version

    if vela_version() is None:
        pytest.skip("Vela is not installed (edgesparse[npu])")
    result = check_model(fallback_npu_model(), npu_profile(), compilation=compiled_fallback())
    console = Console(width=200, record=True, color_system=None)
    render.print_check(console, result, all_ops=False)
    text = console.export_text()
    assert "Arm Ethos-U NPU (Vela)" in text and "op 2 FLOOR: Unsupported opType" in text
    assert "(tflm+ethos-u)" in text and "npu_sram_bytes" in text and "ETHOS-U" in text
    section = result.npu_dict()
    section["ops"][2]["reason"] = "[bold]not an op[/bold]"
    rows = dict(render.npu_rows(section))
    assert r"\[bold]not an op\[/bold]" in " ".join(v for _, v in render.npu_rows(section))
    assert rows["NPU latency"].startswith("[yellow]")      # the test profile's NPU clock is an assumption
    assert render.npu_rows(None) == []

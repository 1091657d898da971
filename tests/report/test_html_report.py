"""report.html: contents, self-containment, unknown budgets, and a real render in headless Chromium.

The documents are made from real estimator output (estimate.check_model on the
MLPerf Tiny KWS model) so no TensorFlow is needed; the sweep tests render pages
of real builds. `render_in_chromium` drives Chromium over the DevTools protocol
with the standard library only, and is reused by test_sweep.py.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.chromium import assert_renders_cleanly, render_in_chromium
from support.compression import compression_section

from edgesparse.cli.commands import main
from edgesparse.report import format as fmt
from edgesparse.report import html as html_report
from edgesparse.report.compression import compression_summary
from edgesparse.report.document import summary_rows

# --------------------------------------------------------------------------- a report.json made of real parts

def _document(mlperf_dir: Path, profile: str = "rpi4") -> dict:
    from edgesparse.estimate import check_model
    from edgesparse.profiles.profile import load_profile
    from edgesparse.tflite.graph import load_graph

    kws = mlperf_dir / "keyword_spotting"
    int8, f32 = (kws / "kws_ref_model.tflite").read_bytes(), (kws / "kws_ref_model_float32.tflite").read_bytes()
    prof = load_profile(profile)
    check = check_model(int8, prof).to_dict()
    layers = [
        {"name": "conv_1", "pattern": "dense", "target": 0.0, "achieved": 0.0, "params": 640,
         "reason": "too small to matter: 640 weights < min_params (1000)", "pruned": False, "zeros": 0},
        {"name": "dw_conv_2", "pattern": "element-wise", "target": 0.8, "achieved": 0.7993, "params": 9216,
         "reason": "element-wise; TFMOT block_size needs a 2-D (Dense) kernel", "pruned": True, "zeros": 7366},
        {"name": "fc", "pattern": "block 1x16", "target": 0.8, "achieved": 0.8001, "params": 768,
         "reason": "output layer <kept> & dense", "pruned": False, "zeros": 0},
    ]
    return {
        "schema_version": 1, "tool": {"name": "edgesparse", "version": "0.1.0"},
        "versions": {"python": "3.11", "tensorflow": "2.21.0", "tflite-runtime": None},
        "created_utc": "2026-01-01T00:00:00+00:00",
        "options": {"profile": profile, "final_sparsity": 0.8, "quantize": "int8", "epochs": 3, "model": None},
        "profile": {"name": prof.name, "path": str(prof.path), "sha256": prof.sha256, "class": prof.device_class,
                    "runtime": prof.runtime, "assumptions": {k: prof.source(k) for k in prof.assumptions()}},
        "model": {"source": "demo:kws", "name": "kws", "params": 22000, "labels": ["yes", "no"]},
        "data": {"source": "synthetic", "n_train": 100, "n_val": 40, "num_classes": 12},
        "pruning": {"end_step": 100, "policy": [{"name": "dw_conv_2", "layer_type": "DepthwiseConv2D",
                                                 "block_size": [1, 1]}],
                    "schedule": {"kind": "polynomial", "initial_sparsity": 0.0, "final_sparsity": 0.8,
                                 "begin_step": 0, "end_step": 100, "frequency": 10, "total_steps": 120,
                                 "notes": ["end_step derived"]}},
        "sparsity": {"overall": 0.7412, "layers": layers},
        "conversion": {"quantize": "int8", "has_densify": False, "notes": ["a conversion note"],
                       "tensors": [{"name": "fc/MatMul", "dense_bytes": 768, "sparse_bytes": 300, "values_bytes": 200,
                                    "index_bytes": 100, "kept_sparse": True, "reason": "smaller",
                                    "read_by": "DENSIFY"}]},
        "sizes": {"dense_float32_bytes": len(f32), "dense_float32_gzip_bytes": len(f32) // 2,
                  "dense_int8_bytes": len(int8), "dense_int8_gzip_bytes": len(int8) // 2,
                  "artifact_bytes": len(int8), "artifact_gzip_bytes": len(int8) // 2,
                  "ratio_dense_float32_to_artifact": round(len(f32) / len(int8), 3),
                  "ratio_dense_int8_to_artifact": 1.0,
                  "breakdown": {"dense_float32": load_graph(f32).size.as_dict(),
                                "dense_int8": load_graph(int8).size.as_dict(),
                                "artifact": load_graph(int8).size.as_dict()}},
        "accuracy": {"dense_float": 0.9125, "pruned_keras": 0.905, "tflite": 0.9031, "drop_points": 0.94,
                     "agreement_pruned_keras_vs_tflite": 0.99, "max_drop_points": 2.0, "n_samples": 40,
                     "test": {"dense_float": 0.9, "tflite": 0.89, "drop_points": 1.0, "n_samples": 50}},
        "verification": {"interpreter": "LiteRT 2.3.0 (ai-edge-litert)", "kernels": ["XNNPACK ran 5 of 8 ops"]},
        "check": check, "passed": True, "failures": [], "timings_s": {"total": 12.5},
        "files": {"model.tflite": {"bytes": len(int8), "sha256": "ab" * 32}},
    }


@pytest.fixture(scope="module")
def document(mlperf_dir):
    return _document(mlperf_dir)


@pytest.fixture(scope="module")
def page(document):
    return html_report.render_report(document)


# --------------------------------------------------------------------------- contents

def test_every_section_is_there_with_real_values(document, page):
    for anchor in ("budgets", "sparsity", "size", "accuracy", "latency", "battery", "memory", "assumptions",
                   "verification", "options"):
        assert f'id="{anchor}"' in page, anchor
    # Per-layer sparsity: target, achieved and the policy reason (escaped).
    assert "79.93 %" in page and "output layer &lt;kept&gt; &amp; dense" in page and "DepthwiseConv2D" in page
    # Size breakdown of all three builds, exactly the graph parser's numbers.
    for build in ("dense_float32", "dense_int8", "artifact"):
        assert fmt.byte_size(document["sizes"]["breakdown"][build]["weight_bytes"]) in page
    assert "sparse indices" in page and "graph overhead" in page
    # Accuracy of each stage, and the held-out test split.
    for value in ("91.25 %", "90.50 %", "90.31 %", "89.00 %"):
        assert value in page, value
    # One latency row per op; flagged ops are highlighted and explained.
    ops = document["check"]["latency"]["ops"]
    assert page.count('<td class="op">') == len(ops)
    flagged = [o for o in ops if o["flag"]]
    assert page.count('<tr class="flag">') == len(flagged)
    # Gauges: one per budget, with limit, value and margin.
    assert page.count('class="gauge ') == len(document["check"]["budgets"])
    assert "margin" in page and "limit ≤" in page
    # Assumptions from the check and from the profile's [sources].
    for a in document["check"]["assumptions"]:
        assert html_report.template_env().filters["e"](a) in page
    assert "battery.capacity_mah" in page
    # Options and versions.
    assert "final_sparsity" in page and "2.21.0" in page and "not installed" in page


def test_terminal_summary_and_page_print_bytes_and_hours_the_same_way(document, page):
    summary = dict(summary_rows(document))
    check = document["check"]
    for label, text in (("RAM", fmt.byte_size(check["ram_bytes"])), ("battery life", fmt.hours(check["battery_hours"])),
                        ("accuracy dense float", fmt.percent(document["accuracy"]["dense_float"]))):
        assert summary[label] == text and text in page, (label, text)
    assert summary["artifact"].startswith(fmt.byte_size(document["sizes"]["artifact_bytes"]))


def test_formatting_vocabulary():
    assert [fmt.byte_size(n) for n in (512, 1536, 1_047_000, 26_388_336, 4 << 30)] == [
        "512 B", "1.5 KiB", "1022 KiB", "25.2 MiB", "4 GiB"]                 # never 1.02e+03 KiB
    assert fmt.byte_size(None) == "unknown" and fmt.byte_size("n/a", "-") == "-" and fmt.byte_count(26_388_336) == (
        "26,388,336 B")
    assert [fmt.hours(h) for h in (0.5, 30, 100, 20_000)] == ["30.0 min", "30.0 h", "4.2 days", "2.3 years"]
    assert fmt.quantity(2, "d") == fmt.hours(48) == "2.0 days"
    assert [fmt.quantity(v, "ms") for v in (1000, 9999.7, 12_345.6, 0.1234567)] == [
        "1000 ms", "10,000 ms", "12,346 ms", "0.1235 ms"]
    assert fmt.percent(0.9125) == "91.25 %" and fmt.percent(-0.05, 1, signed=True) == "-5.0 %"
    assert fmt.rate(1 / 60) == "1/min" and fmt.rate(None) == "unknown"


def test_page_marks_transferred_and_assumed_bases(mlperf_dir):
    """The page's rule is the terminal's (edgesparse._types.is_assumption)."""
    doc = _document(mlperf_dir, "rpizero2w")
    assert doc["check"]["latency"]["basis"] == "transferred"
    page = html_report.render_report(doc)
    assert f'<span class="badge warn">{doc["check"]["ram"]["basis"]}</span>' in page
    assert doc["check"]["ram"]["basis"] == "interpreter+assumption"


def test_page_is_self_contained(page):
    assert "<script" not in page.lower() and "<link" not in page.lower() and "<img" not in page.lower()
    assert "@import" not in page and "@font-face" not in page
    refs = re.findall(r'(?:href|src)\s*=\s*"([^"]*)"', page)
    assert refs and all(r.startswith("#") for r in refs), [r for r in refs if not r.startswith("#")]
    assert all(u.startswith("#") for u in re.findall(r"url\(\s*([^)]*)\)", page))
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids)), "duplicate ids across the inline SVGs"
    assert len(re.findall(r'<svg [^>]*class="plot"', page)) == 5  # sparsity, size, accuracy, latency, battery


def test_unknown_budget_is_neither_pass_nor_fail(mlperf_dir):
    doc = _document(mlperf_dir)
    check = doc["check"]
    check["latency_ms"] = None
    check["energy_mj"] = check["battery_hours"] = None
    for b in check["budgets"]:
        if b["name"] == "latency_ms":
            b.update(value=None, ok=False, margin=None)
    page = html_report.render_report(doc)
    gauge = re.search(r'<div class="gauge (\w+)" data-budget="latency_ms"[\s\S]*?</div>\s*</div>', page)
    assert gauge and gauge.group(1) == "unknown"
    assert "UNKNOWN" in gauge.group(0) and "FAIL" not in gauge.group(0) and "PASS" not in gauge.group(0)
    assert "no estimate" in gauge.group(0)
    assert "No battery curve: the check has no a latency estimate" in page


def test_battery_curve_is_the_estimators_formula(document):
    check = document["check"]
    default = check["energy"]["rate_per_s"]
    hours = html_report.battery_curve(check, [default / 100, default, default * 100])
    assert hours[1] == pytest.approx(check["battery_hours"], rel=1e-3)
    assert hours[0] >= hours[1] >= hours[2]


def test_old_report_without_breakdowns_still_renders(mlperf_dir):
    doc = _document(mlperf_dir)
    del doc["sizes"]["breakdown"], doc["profile"]["assumptions"]
    page = html_report.render_report(doc)
    assert "unknown" in page and 'id="size"' in page
    assert "battery.capacity_mah" in page  # read back from the unchanged profile file


def test_not_a_report_is_a_clear_error():
    from edgesparse.errors import EdgesparseError

    with pytest.raises(EdgesparseError, match="schema_version"):
        html_report.render_report({"hello": 1})


def test_report_command_regenerates_from_json_atomically(tmp_path, document):
    (tmp_path / "report.json").write_text(json.dumps(document))
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    html = (tmp_path / "report.html").read_text()
    assert html == html_report.render_report(document)
    (tmp_path / "report.json").write_text("{ not json")
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 2 and "report.json" in result.output
    assert (tmp_path / "report.html").read_text() == html  # the earlier page is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "report.json"]  # no temp files
    result = CliRunner().invoke(main, ["report", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "No report.json" in result.output


needs_chromium = pytest.mark.usefixtures("chromium")  # skipped with a reason where Chromium is absent


def no_latency_model(monkeypatch) -> None:
    """Make every profile look like one without [latency] coefficients (the estimator's real path)."""
    from edgesparse.estimate import latency as estimate

    monkeypatch.setattr(estimate, "latency_coefficients", lambda profile: None)


@needs_chromium
@pytest.mark.parametrize("profile, figures", [("stm32l4r5", 5), ("nrf52840", 3)])
def test_report_renders_in_headless_chromium(tmp_path, mlperf_dir, monkeypatch, profile, figures):
    """stm32l4r5: every plot; nrf52840 without a latency model: no latency or battery plot, an unknown budget."""
    if figures == 3:
        no_latency_model(monkeypatch)
    doc = _document(mlperf_dir, profile)
    if figures == 3:
        assert 'data-status="unknown"' in html_report.render_report(doc)
    page = html_report.render_report(doc)
    path = tmp_path / "report.html"
    path.write_text(page)
    shot = tmp_path / "report.png"
    result = render_in_chromium(path, screenshot=shot, max_height=4000)
    assert len(re.findall(r"<svg[ >]", page)) == figures + len(doc["check"]["budgets"])
    assert_renders_cleanly(result, expected_svgs=figures + len(doc["check"]["budgets"]))
    assert [s["label"] for s in result["svgs"] if not s["label"].startswith("gauge")] == [
        "sparsity-per-layer", "size-breakdown", "accuracy", "latency-per-op", "battery-vs-rate"][:figures]
    assert result["title"] == f"edgesparse report: kws on {profile}"
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and struct.unpack(">II", png[16:24]) == (1280, 4000)


@needs_chromium
def test_the_chromium_probe_sees_fetches_errors_and_blank_plots(tmp_path):
    """The checks above would pass vacuously if the probe saw nothing: show it catches each fault."""
    path = tmp_path / "bad.html"
    path.write_text('<!DOCTYPE html><html><head><title>bad</title></head><body>'
                    '<img src="http://127.0.0.1:9/x.png"><script>console.error("boom"); undefinedCall();</script>'
                    '<svg width="0" height="0"></svg></body></html>')
    result = render_in_chromium(path)
    assert result["other_requests"] == ["http://127.0.0.1:9/x.png"]
    assert any("boom" in c for c in result["console_errors"]) and result["exceptions"]
    assert result["svgs"] == [{"label": None, "width": 0, "height": 0, "marks": 0}]


# --------------------------------------------------------------------------- microcontroller compression (DECODE)

@pytest.fixture(scope="module")
def mcu_document(mlperf_dir):
    """A TFLite Micro build's report.json (nrf52840) without its compression section; copy it to vary."""
    return _document(mlperf_dir, "nrf52840")


def _with_compression(mcu_document: dict, section) -> dict:
    return dict(mcu_document, compression=section)


@pytest.fixture(scope="module")
def mcu_page(mcu_document):
    return html_report.render_report(_with_compression(mcu_document, compression_section()))


def _card(page: str) -> str:
    match = re.search(r'<section class="card" id="compression">[\s\S]*?</section>', page)
    assert match, "no compression card"
    return match.group(0)


def test_compression_card_shows_every_tensor_and_the_model_figures(mcu_page):
    section = compression_section()
    card = _card(mcu_page)
    assert '<a href="#compression">' in mcu_page and "DECODE-compressed" in mcu_page   # nav link, artifact KPI
    # One row per candidate tensor, with its encoding, bytes before/after, saving, arena and reason.
    rows = re.findall(r'<tr class="[^"]*" data-method="(\w+)">([\s\S]*?)</tr>', card)
    assert [m for m, _ in rows] == [t["method"] for t in section["tensors"]]
    for (_, row), t in zip(rows, section["tensors"]):
        assert t["name"] in row and fmt.byte_count(t["dense_bytes"]) in row
        assert html_report.template_env().filters["e"](t["reason"]) in row
        if t["method"] != "dense":
            for key in ("encoded_bytes", "saved_bytes", "arena_added_bytes"):
                assert fmt.byte_count(t[key]) in row, key
            assert fmt.integer(t["decoded_elements"]) in row
        else:
            assert row.count("—") == 4                 # no encoding, nothing saved, no arena, nothing decoded
    fc1 = next(row for _, row in rows if "fc1/MatMul" in row)
    assert "128×512" in fc1 and "65,536" in fc1
    # The model: flash before/after, the ratio to dense int8, the arena both ways and the estimate, the decode time.
    for text in ("80,536 B → 33,744 B", "46,792 B", "58.1 %", "2.39×", "6,784 B → 70,304 B", "63,520 B",
                 "1.23 ms", "70,144 elements", "3,912 B", "tensor names", "1,880 B", "131,072 B",
                 "signature and input/output names kept", "(before DECODE)"):
        assert text in card, text
    assert card.count("70,304 B") >= 3           # measured (twice: KPI and table) and the estimator's
    assert "No tensor kept dense for RAM" in card and 'data-ram="fits"' in card
    # The verification in TFLM.
    assert '<span class="badge pass">YES</span>' in card and "16 validation and 64 random inputs" in card
    assert "2 of 2" in card and "bitwise identical to the uncompressed int8 file&#39;s" in card
    assert "3,912 B from the dense int8 baseline too" in card
    assert "Weight clustering" not in card           # no --cluster


def test_page_with_compression_is_self_contained(mcu_page):
    refs = re.findall(r'(?:href|src)\s*=\s*"([^"]*)"', mcu_page)
    assert all(r.startswith("#") for r in refs)
    ids = re.findall(r'\sid="([^"]+)"', mcu_page)
    assert len(ids) == len(set(ids))


def test_assumed_decode_time_is_flagged_like_every_other_assumption(mcu_document, mcu_page):
    assert '<span class="badge warn" data-basis="decode">assumption</span>' in _card(mcu_page)
    assumptions = mcu_page[mcu_page.index('id="assumptions"'):mcu_page.index('id="verification"')]
    assert "Decode time (microcontroller compression)" in assumptions and "host measurement" in assumptions
    fitted = compression_section(decode_basis="fitted: nrf52840 DECODE benchmark")
    page = html_report.render_report(_with_compression(mcu_document, fitted))
    assert '<span class="badge pass" data-basis="decode">fitted</span>' in _card(page)
    assert "Decode time (microcontroller compression)" not in page


def test_kept_dense_for_ram_clustering_and_a_failed_verification_are_shown(mcu_document):
    cluster = {"clusters": 16, "accuracy_before": 0.9812, "accuracy_after": 0.9787, "accuracy_split": "validation",
               "layers": [{"name": "fc1", "clustered": True, "reason": "pruned Dense kernel", "distinct_values": 17,
                           "sparsity_after": 0.8}]}
    section = compression_section(kept_for_ram=True, cluster=cluster)
    section["verification"]["bitwise_identical"] = False
    card = _card(html_report.render_report(_with_compression(mcu_document, section)))
    [name] = section["ram_budget"]["kept_dense_for_ram"]
    kept = re.search(r'<p class="warn-text" data-ram="kept-dense">([\s\S]*?)</p>', card)
    assert kept and name in kept.group(1) and "RAM budget of 65,536 B" in kept.group(1)
    flagged = re.findall(r'<tr class="flag" data-method="(\w+)">([\s\S]*?)</tr>', card)
    assert len(flagged) == 1 and flagged[0][0] == "dense" and name in flagged[0][1]
    assert "1 of 4 candidate tensors compressed (1 PRUNING)" in card and "1.04×" in card
    assert "16 values per kernel" in card and "98.12 % → 97.87 % on validation" in card
    assert "pruned Dense kernel" in card and "80.0 %" in card
    assert '<span class="badge fail">NO</span>' in card


def test_no_compression_section_means_no_card(mcu_document, page):
    """null on builds for LiteRT profiles, and absent from report.json written before DECODE existed."""
    for shown in (page, html_report.render_report(_with_compression(mcu_document, None))):
        assert 'id="compression"' not in shown and "#compression" not in shown and "DECODE" not in shown


def test_an_off_or_partial_section_still_renders(tmp_path, mcu_document):
    """Off (or nothing paid): the flash side and why each tensor stayed dense, no arena, decode or proof. Through
    `edgesparse report`, as a build's report.json is regenerated."""
    off = {"mode": "off", "applied": False, "uncompressed_bytes": 80_536, "compressed_bytes": 80_536,
           "saved_bytes": 0, "verification": None, "arena": {}, "tensors": [
               {"name": "fc1", "method": "dense", "dense_bytes": 65_536, "reason": "compression off"}]}
    (tmp_path / "report.json").write_text(json.dumps(_with_compression(mcu_document, off)))
    result = CliRunner().invoke(main, ["report", str(tmp_path)])
    assert result.exit_code == 0, result.output
    card = _card((tmp_path / "report.html").read_text())
    assert "no tensor compressed; model.tflite is the uncompressed int8 file" in card and "compression off" in card
    assert "Verification in TFLite Micro" not in card and "Decode time" not in card and "RAM (tensor arena)" not in card
    # A section missing most of its figures (an older or hand-edited report.json): unknown, never an error.
    card = _card(html_report.render_report(_with_compression(mcu_document, {"mode": "auto", "applied": True})))
    assert "unknown" in card and '<span class="badge unknown">UNKNOWN</span>' in card


def test_compression_summary_reads_any_section():
    summary = compression_summary(compression_section())
    assert summary["methods"] == {"PRUNING": 2} and (summary["compressed_tensors"], summary["tensors"]) == (2, 4)
    assert summary["arena_added_bytes"] == 63_520 and summary["kept_dense_for_ram"] == []
    assert compression_summary(None) is None and compression_summary([1]) is None
    # A section without its ratio gets it from its two sizes; missing figures are None, never an error.
    partial = compression_summary({"dense_int8_bytes": 80_536, "compressed_bytes": 33_744, "arena": "corrupt"})
    assert partial["ratio_vs_dense_int8"] == 2.387 and partial["arena_added_bytes"] is None
    assert partial["applied"] is False and partial["tensors"] == 0


def test_compression_formatters():
    assert fmt.ratio(2.3866) == "2.39×" and fmt.ratio(None) == "unknown" and fmt.ratio("x", missing="—") == "—"
    assert fmt.integer(4608) == "4,608" and fmt.integer(None, "—") == "—"
    assert fmt.byte_count(-32) == "-32 B" and fmt.byte_count("n/a", "—") == "—"


@needs_chromium
def test_report_with_compression_renders_in_headless_chromium(tmp_path, mcu_document, mcu_page):
    path = tmp_path / "report.html"
    path.write_text(mcu_page)
    result = render_in_chromium(path)
    assert_renders_cleanly(result, expected_svgs=5 + len(mcu_document["check"]["budgets"]))

"""report.html's Arm Ethos-U card, report.npu and the NPU terminal rows (cli.render): report.json's npu section
(estimate.npu via npu_section, real Vela on tiny models) shown with placement, Vela's figures, the basis, dense
beside the artifact and the statement of what was not verified; no section, no card; a partial section still renders."""

from __future__ import annotations

import html as html_lib
import re

import pytest
from support.npu import compiled_fallback, compiled_tiny, fallback_npu_model, npu_profile, tiny_npu_model

from edgesparse.cli.render import npu_rows
from edgesparse.estimate import check_model
from edgesparse.estimate.npu import npu_estimate
from edgesparse.report import html as html_report
from edgesparse.report.npu import NOT_VERIFIED, npu_section, npu_view
from edgesparse.runtime.vela import VELA_EXTRA, vela_version
from edgesparse.tflite.graph import load_graph

needs_vela = pytest.mark.skipif(vela_version() is None, reason=f"Vela is not installed ({VELA_EXTRA})")


def _card(page: str) -> str:
    match = re.search(r'<section class="card" id="npu">[\s\S]*?</section>', page)
    assert match, "no NPU card"
    return match.group(0)


def _text(fragment: str) -> str:
    return re.sub(r"\s+", " ", html_lib.unescape(re.sub(r"<[^>]+>", " ", fragment))).strip()


@pytest.fixture(scope="module")
def sections():
    """The pruned model (80 % zeros) against its dense baseline, and a model with CPU fallbacks."""
    profile = npu_profile()
    pruned = npu_estimate(compiled_tiny(0.8), profile, int8_model=load_graph(tiny_npu_model(sparsity=0.8)))
    dense = npu_estimate(compiled_tiny(), profile, int8_model=load_graph(tiny_npu_model()))
    fallback = npu_estimate(compiled_fallback(), profile, int8_model=load_graph(fallback_npu_model()))
    return (npu_section(pruned, dense=dense, verified="verified: baselines/pruned_int8.tflite in tflite-micro"),
            npu_section(fallback), pruned, dense)


@needs_vela
def test_the_card_shows_dense_against_pruned_and_what_was_not_verified(sections):
    section, _, pruned, dense = sections
    card = _card(html_report.render_report({"schema_version": 1, "npu": section}))
    text = _text(card)
    assert NOT_VERIFIED in text and "verified: baselines/pruned_int8.tflite" in text
    assert "ethos-u55-128" in text and "400 MHz" in text
    assert f'data-basis="npu-latency">{pruned.latency.basis}</span>' in card
    rows = {m.group(1): _text(m.group(2)) for m in re.finditer(r'<tr data-row="(\w+)">([\s\S]*?)</tr>', card)}
    enc_pruned, enc_dense = pruned.compilation.encoded_weight_bytes, dense.compilation.encoded_weight_bytes
    assert enc_pruned < enc_dense
    assert f"{enc_dense:,} B" in rows["encoded_weight_bytes"] and f"{enc_pruned:,} B" in rows["encoded_weight_bytes"]
    assert f"{dense.total_cycles:,}" in rows["total_cycles"] and f"{pruned.total_cycles:,}" in rows["total_cycles"]
    ratio = section["dense_over_artifact"]["encoded_weight_bytes"]
    assert ratio == pytest.approx(enc_dense / enc_pruned, rel=1e-3) and ratio > 2
    assert text.count("NPU") >= 5 and 'data-placement="cpu"' not in card
    page = html_report.render_report({"schema_version": 1, "npu": section})
    assert 'href="#npu"' in page


@needs_vela
def test_cpu_fallbacks_are_listed_with_velas_reason_and_no_dense_table(sections):
    _, section, _, _ = sections
    card = _card(html_report.render_report({"schema_version": 1, "npu": section}))
    assert card.count('data-placement="cpu"') == 2 and "Unsupported opType" in card
    assert 'data-table="dense-vs-artifact"' not in card
    rows = dict(npu_rows(section))
    assert "FLOOR" in " ".join(v for k, v in npu_rows(section) if "CPU fallback" in k)
    assert "basis Vela performance model" in rows["NPU latency"]
    assert rows["NPU not verified"] == f"[yellow]{NOT_VERIFIED}[/]"   # what was not verified stands out


@needs_vela
def test_terminal_rows_compare_dense_and_pruned(sections):
    section, _, pruned, dense = sections
    rows = dict(npu_rows(section))
    line = rows["dense -> artifact: encoded weights (Vela)"]
    assert f"{dense.compilation.encoded_weight_bytes:,} B -> {pruned.compilation.encoded_weight_bytes:,} B" in line


@needs_vela
def test_a_compiled_file_reads_as_what_the_file_says(tmp_path):
    path = tmp_path / "model_vela.tflite"
    path.write_bytes(compiled_fallback().model)
    section = check_model(path, npu_profile()).npu_dict()
    view = npu_view(section)
    assert view["compiled_file"] and view["cpu_op_names"] == ["DEPTHWISE_CONV_2D", "FLOOR"]
    rows = dict(npu_rows(section))
    assert "not re-estimated" in rows["not known from the file"]
    assert rows["arena Vela asked for"] == f"{compiled_fallback().arena_bytes:,} B"


def test_no_section_no_card_and_a_partial_section_still_renders():
    page = html_report.render_report({"schema_version": 1})
    assert 'id="npu"' not in page and 'href="#npu"' not in page
    assert npu_view(None) is None and npu_view([]) is None and npu_rows(None) == []
    partial = {"accelerator": "ethos-u55-64", "total_cycles": "many", "ops": [{"op_type": "CONV_2D"}, "junk"],
               "dense": {"encoded_weight_bytes": 1000}, "encoded_weight_bytes": 250}
    view = npu_view(partial)
    assert view["total_cycles"] is None and view["latency_assumed"] and view["ops"][0]["placement"] == "?"
    assert view["comparison"][0]["ratio"] == 4.0
    card = _card(html_report.render_report({"schema_version": 1, "npu": partial}))
    assert "ethos-u55-64" in card and "unknown" in _text(card)

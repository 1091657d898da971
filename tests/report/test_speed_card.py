"""report.html's Speed card and report.speed.speed_summary: the speed section (estimate.speed.speed_claim) shown
with its verdicts, basis, transfer notes and "size only"; an absent or partial section still renders."""

from __future__ import annotations

import copy

from edgesparse.report import html as html_report
from edgesparse.report.speed import speed_summary

TRANSFER = ("op 5: the 1x16 block-sparse int8 FULLY_CONNECTED runs LiteRT's builtin sparse kernel on 13,104 of its "
            "65,536 MACs (source: tensorflow/lite/kernels/fully_connected.cc); rpi4 has no coefficient for it "
            "(fc_int8_sparse): it is priced at the dense 'int8' rate. That is a TRANSFER, not a measurement")


def speed_section(**overrides) -> dict:
    """A speed section as speed_claim writes it for the digits demo on rpi4 (figures from a real run)."""
    section = {
        "profile": "rpi4", "runtime": "litert", "artifact_bytes": 28112, "dense_int8_bytes": 80536,
        "file_ratio": 0.3491, "band": 0.05,
        "estimated": {"dense_int8_ms": 0.02139, "artifact_ms": 0.01848, "ratio": 0.864, "verdict": "faster",
                      "basis": "transferred", "assumed": True, "notes": [TRANSFER],
                      "kernels": [{"index": 5, "op": "FULLY_CONNECTED", "dtype": "int8", "what": "sparse",
                                   "kernel": "builtin sparse FULLY_CONNECTED; skips zero blocks",
                                   "class": "fc_int8_sparse", "priced_by": "int8", "basis": "transferred",
                                   "coefficient_source": "fitted: ...", "macs": 65536, "macs_used": 13104,
                                   "source": "fully_connected.cc"}]},
        "host": {"runtime": "litert", "interpreter": "ai-edge-litert", "threads": 1, "dense_int8_ms": 0.0189,
                 "artifact_ms": 0.02264, "ratio": 1.198, "rounds": 15, "runs_per_round": 20,
                 "artifact_kernels": ["builtin kernels ran 3 ops: FULLY_CONNECTED x2, SOFTMAX"],
                 "verdict": "slower", "band": 0.08},
        "size_only": False,
        "claim": "On rpi4 the artifact is expected to be 1.16x faster than dense int8 (x0.86, estimated; "
                 "transferred: the sparse kernel's cost is a transfer, see the notes); its file is 2.86x smaller. "
                 "On this host it measured 1.20x slower than dense int8 in litert.",
    }
    section.update(overrides)
    return section


def _card(page: str) -> str:
    start = page.index('<section class="card" id="speed">')
    return page[start:page.index("</section>", start)]


def test_card_shows_both_verdicts_the_basis_and_the_transfer():
    page = html_report.render_report({"schema_version": 1, "speed": speed_section()})
    card = _card(page)
    assert 'href="#speed"' in page
    assert "On rpi4 the artifact is expected to be 1.16x faster" in card
    assert 'data-verdict="estimated"' in card and 'data-verdict="host"' in card
    assert '<span class="badge warn" data-basis="speed">transferred</span>' in card
    assert "TRANSFER, not a measurement" in card and 'class="warn-text"' in card
    assert "fc_int8_sparse" in card and "13,104 / 65,536" in card
    assert "±5 %" in card and "±8 %" in card
    assert "SIZE ONLY" not in card


def test_size_only_and_a_fitted_basis():
    section = speed_section(size_only=True, host=None)
    section["estimated"] = dict(section["estimated"], verdict="same", ratio=1.0, basis="fitted", assumed=False,
                                notes=[], kernels=[])
    card = _card(html_report.render_report({"schema_version": 1, "speed": section}))
    assert 'data-size-only="true"' in card and 'data-verdict="host"' not in card
    assert '<span class="badge pass" data-basis="speed">fitted</span>' in card


def test_no_section_no_card_and_a_partial_section_still_renders():
    page = html_report.render_report({"schema_version": 1})
    assert 'id="speed"' not in page and 'href="#speed"' not in page
    partial = {"profile": "rpi4", "estimated": {"verdict": "bogus", "ratio": "x"}, "host": "nonsense"}
    summary = speed_summary(partial)
    assert summary["estimated"]["verdict"] == "unknown" and summary["estimated"]["ratio"] is None
    assert summary["host"] is None and summary["estimated"]["assumed"]
    assert 'id="speed"' in html_report.render_report({"schema_version": 1, "speed": partial})
    assert speed_summary(None) is None and speed_summary([]) is None


def test_summary_keeps_the_section_figures():
    section = speed_section()
    summary = speed_summary(copy.deepcopy(section))
    assert summary["estimated"]["ratio"] == 0.864 and summary["host"]["ratio"] == 1.198
    assert summary["host"]["kernels"] == section["host"]["artifact_kernels"]
    assert summary["estimated"]["kernels"] == section["estimated"]["kernels"]

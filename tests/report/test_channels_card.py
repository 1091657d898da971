"""report.html's Channel pruning card and report.channels: report.json's channels section (a --granularity channel
build) shown with what --final-sparsity meant, every group, the groups kept whole, MACs, parameters, the masked vs
small model and the mask updates; no section, no card; a partial or hand-edited section still renders."""

from __future__ import annotations

import re

import numpy as np
import pytest
from support.channels import channels_section

from edgesparse.report import format as fmt
from edgesparse.report import html as html_report
from edgesparse.report.channels import MAX_MASK_UPDATES_SHOWN, channels_summary, channels_view


def _page(section, **document) -> str:
    return html_report.render_report({"schema_version": 1, "channels": section, **document})


def _card(page: str) -> str:
    match = re.search(r'<section class="card" id="channels">[\s\S]*?</section>', page)
    assert match, "no channels card"
    return match.group(0)


def _text(html: str) -> str:
    """The card as a person reads it: tags dropped, entities decoded, whitespace collapsed."""
    import html as html_lib

    return re.sub(r"\s+", " ", html_lib.unescape(re.sub(r"<[^>]+>", " ", html))).strip()


def test_card_says_what_final_sparsity_meant_and_shows_the_figures():
    page = _page(channels_section())
    card, text = _card(page), _text(_card(page))
    assert '<a href="#channels">' in page
    assert ("--final-sparsity 0.5 meant the fraction of prunable channels removed (whole filters), per group : "
            "50.0 % removed (640 → 320 prunable channels, target 50.0 %)") in text
    assert "L2 norm of each channel's filter in every producer" in text
    # MACs counted on the Keras model and on the two .tflite graphs, parameters, each before -> after.
    assert re.search(r'data-macs="keras">.*?9,409,536.*?2,656,768.*?3\.54×', card, re.S)
    assert re.search(r'data-macs="tflite">.*?9,409,536.*?2,656,768.*?3\.54×', card, re.S)
    assert "81,420 → 24,332" in text and "3.35× fewer" in text
    assert "masked 93.98 %" in text and "surgery check 0 max |difference| of outputs on 64 inputs" in text
    assert "element-wise" not in text
    # The page's headline shows the channels too.
    assert "channels removed 50.0 % 3.54× fewer MACs (.tflite)" in _text(page.split('id="budgets"')[0])


def test_every_group_with_its_members_roles_and_why_and_the_kept_whole_ones_highlighted():
    section = channels_section()
    card = _card(_page(section))
    rows = re.findall(r'<tr class="(\w*)" data-group="(\d+)">([\s\S]*?)</tr>', card)
    assert [int(g) for _, g, _ in rows] == [g["id"] for g in section["groups"]]
    for (cls, _, row), group in zip(rows, section["groups"]):
        text = _text(row)
        assert f"{group['channels_before']:,} → {group['channels_after']:,}" in text
        assert _text(html_report.template_env().filters["e"](group["reason"])) in text
        assert (cls == "flag") == (not group["prunable"]) and ("no" if cls else "yes") in text.split()
    assert "conv_1 makes , conv_1_bn carries , dw_1 carries , dw_1_bn carries , pw_1 reads" in _text(rows[1][2])
    assert "50.0 %" in _text(rows[1][2]) and "0.0 %" in _text(rows[0][2])
    kept = _text(re.search(r"<ul class=\"notes\" data-unprunable>[\s\S]*?</ul>", card).group(0))
    assert kept == ("group 0 conv_1 : the model's input: its channels are the data's "
                    "group 6 predictions : output layer predictions: its channels are the model's outputs")
    assert "Dependency groups (5 of 7 prunable)" in _text(card)


def test_mask_updates_in_one_compact_table_and_the_schedule():
    card = _card(_page(channels_section()))
    table = _text(re.search(r"<table data-mask-updates>[\s\S]*?</table>", card).group(0))
    assert table.startswith("step 94 188 282") and "schedule 13.6 % 24.4 %" in table and "masked 13.3 % 24.2 %" in table
    assert "Schedule polynomial 0 → 0.5 of the prunable channels, steps 0–940 of 1,264, every 94 steps" in _text(card)

    many = [{"step": s, "target_fraction": s / 1000, "masked_fraction": s / 1000} for s in range(1, 101)]
    view = channels_view(channels_section(mask_updates=many))
    assert view["mask_updates"] == 100 and len(view["mask_update_rows"]) == MAX_MASK_UPDATES_SHOWN
    assert view["mask_update_rows"][0]["step"] == 1 and view["mask_update_rows"][-1]["step"] == 100
    assert f"{MAX_MASK_UPDATES_SHOWN} of 100 shown" in _text(_card(_page(channels_section(mask_updates=many))))


def test_element_sparsity_after_the_channels_is_said():
    text = _text(_card(_page(channels_section(), options={"element_sparsity": 0.7})))
    assert "pruned element-wise to 70 % of its prunable weights" in text


def test_no_section_no_card_and_an_old_report_renders():
    for document in ({"schema_version": 1}, {"schema_version": 1, "channels": None}):
        page = html_report.render_report(document)
        assert 'id="channels"' not in page and 'href="#channels"' not in page
    assert channels_summary(None) is None and channels_view([]) is None and channels_view("x") is None


def test_a_partial_or_hand_edited_section_renders_what_it_has():
    partial = {"target_fraction": 0.25, "removed_fraction": "a quarter", "equivalence": "junk",
               "schedule": {"kind": "polynomial", "end_step": "late", "frequency": 10},
               "groups": [{"id": 3, "channels_before": 16, "channels_after": 12, "prunable": True,
                           "members": [{"layer": "conv", "role": "produce"}, "junk"]},
                          {"id": 4, "channels_before": 8, "channels_after": 8, "prunable": False,
                           "reason": "joined by add (Add): its activation maps 0 to 0.5"}, "junk"],
               "mask_updates": [{"step": "x", "target_fraction": None}, 7]}
    summary = channels_summary(partial)
    assert summary["target_fraction"] == 0.25 and summary["removed_fraction"] is None
    assert summary["max_abs_difference"] is None and summary["macs_ratio"] is None
    # Totals recorded nowhere are summed over the prunable groups.
    assert (summary["prunable_channels_before"], summary["prunable_channels_after"]) == (16, 12)
    card = _text(_card(_page(partial)))
    assert "unknown removed (16 → 12 prunable channels, target 25.0 %)" in card
    assert "group 4 : joined by add (Add): its activation maps 0 to 0.5" in card
    assert "steps unknown–unknown of unknown, every 10 steps" in card
    # Only the list of kept-whole groups (no groups): it is still shown.
    only = {"unprunable": [{"id": 0, "layers": ["stem", None], "reason": "stem is in skip_layers"}, "junk"]}
    assert "group 0 stem : stem is in skip_layers" in _text(_card(_page(only)))
    assert 'id="channels"' in _page({})           # an empty section is still a channel build's card


def test_summary_keeps_the_section_figures():
    section = channels_section()
    summary = channels_summary(section)
    for key in ("target_fraction", "removed_fraction", "prunable_channels_before", "prunable_channels_after",
                "macs_before", "macs_after", "params_before", "params_after", "accuracy_masked", "accuracy_small",
                "tflite_macs_before", "tflite_macs_after"):
        assert summary[key] == section[key], key
    assert summary["max_abs_difference"] == 0.0 and summary["equivalence_samples"] == 64
    assert fmt.ratio(summary["tflite_macs_ratio"]) == "3.54×" and summary["accuracy_change_points"] == 0.0
    assert (summary["groups"], summary["prunable_groups"], summary["unprunable_groups"]) == (7, 5, 2)


@pytest.mark.tensorflow
def test_the_card_draws_a_real_channel_pruning_result():
    """ChannelPruneResult.as_dict() from a real fine-tuning of a tiny residual model with a group the surgery
    cannot handle: the reader and the card agree with what the pruning returned."""
    from edgesparse.data import Dataset
    from edgesparse.pipeline.prune import ScheduleOptions, channel_prune_and_finetune
    from edgesparse.pipeline.tf_env import import_tf

    _, keras = import_tf()
    keras.utils.set_random_seed(0)
    layers = keras.layers
    inputs = keras.Input((8, 8, 1))
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    y = layers.Conv2D(8, 3, padding="same", name="branch")(x)
    x = layers.Add(name="add")([x, y])
    z = layers.Conv2D(6, 1, name="odd")(x)
    z = layers.Lambda(lambda t: t * 2.0, name="double")(z)
    z = layers.Conv2D(6, 1, activation="relu", name="after")(z)
    z = layers.GlobalAveragePooling2D(name="gap")(z)
    model = keras.Model(inputs, layers.Dense(4, activation="softmax", name="head")(z))
    rng = np.random.default_rng(0)
    labels = np.arange(64) % 4
    images = rng.normal(size=(64, 8, 8, 1)).astype(np.float32)
    data = Dataset(x_train=images[:48], y_train=labels[:48], x_val=images[48:], y_val=labels[48:], num_classes=4,
                   source="test:tiny")

    result = channel_prune_and_finetune(model, data, ScheduleOptions(final_sparsity=0.5), epochs=1, batch_size=8)
    section = result.as_dict()
    view = channels_view(section)
    assert view["macs_before"] == result.macs_before and view["params_after"] == result.params_after
    assert view["prunable_groups"] == sum(g.prunable for g in result.groups) >= 1
    tied = next(g for g in view["group_rows"] if {"stem", "branch"} <= set(g["producers"]))   # the residual Add
    assert tied["prunable"] and "add" in tied["reason"]
    blocked = [u for u in view["unprunable"] if "double" in u["reason"]]
    assert blocked and "Lambda" in blocked[0]["reason"]
    card = _text(_card(_page(section)))
    assert "double (Lambda)" in card and f"{result.params_before:,} → {result.params_after:,}" in card
    assert len(view["mask_update_rows"]) == len(result.mask_updates) >= 1


def test_terminal_rows_read_a_partial_section_as_unknown_not_an_error():
    """The build summary reads the section through the card's reader: a hand-edited section never raises."""
    from edgesparse.report.document import channel_rows

    rows = dict(channel_rows({"groups": [{"id": 1}], "removed_fraction": "half", "equivalence": None}))
    assert rows["MACs (Keras)"] == "unknown -> unknown" and "unknown" in rows["channels removed"]
    assert channel_rows(None) == [] and channel_rows({}) != []

"""Impossible physical values are refused (issue 9, item 11): exit 2, a message naming the flag, no battery life.

`check --battery-mah -5` used to print a battery life of -4.7 h, `--sleep-mw -1` was used as given and
`--threads 0` silently became the profile's 4. The command line refuses them as usage errors before any
work starts; the estimator refuses them too (DataError naming the parameter and its flag), so a library
caller or a value a click range lets through (NaN, infinity) cannot turn into a battery life either.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner
from support.builds import make_build_dir

from edgesparse import estimate
from edgesparse.cli.commands import main
from edgesparse.errors import DataError
from edgesparse.profiles import load_profile
from edgesparse.tflite.graph import load_graph

KWS = "keyword_spotting/kws_ref_model.tflite"
PROFILE = "stm32l4r5"

# command, extra arguments, the flag the message must name, a fragment of the message
CASES = [
    ("check", ["--battery-mah", "-5"], "--battery-mah", "-5.0 is not in the range x>0"),
    ("check", ["--battery-mah", "0"], "--battery-mah", "0.0 is not in the range x>0"),
    ("check", ["--battery-mah", "nan"], "--battery-mah", "must be > 0"),
    ("check", ["--battery-mah", "inf"], "--battery-mah", "must be > 0"),
    ("check", ["--sleep-mw", "-1"], "--sleep-mw", "-1.0 is not in the range x>=0"),
    ("check", ["--sleep-mw", "nan"], "--sleep-mw", "must be >= 0"),
    ("check", ["--threads", "0"], "--threads", "0 is not in the range x>=1"),
    ("check", ["--threads", "-2"], "--threads", "-2 is not in the range x>=1"),
    ("check", ["--threads", "two"], "--threads", "'two' is not a valid integer"),
    ("check", ["--rate", "often"], "--rate", "Bad inference rate"),
    ("check", ["--rate", "0/s"], "--rate", "Bad inference rate"),
    ("check", ["--rate", "-1/s"], "--rate", "Bad inference rate"),
    ("check", ["--rate", "1e999/s"], "--rate", "Bad inference rate"),
    ("battery", ["--battery-mah", "-5"], "--battery-mah", "-5.0 is not in the range x>0"),
    ("battery", ["--battery-mah", "nan"], "--battery-mah", "must be > 0"),
    ("battery", ["--sleep-mw", "-1"], "--sleep-mw", "-1.0 is not in the range x>=0"),
    ("battery", ["--rate", "0/h"], "--rate", "Bad inference rate"),
    ("measure", ["--threads", "0"], "--threads", "0 is not in the range x>=1"),
    ("measure", ["--runs", "0"], "--runs", "0 is not in the range x>=1"),
    ("measure", ["--warmup", "-1"], "--warmup", "-1 is not in the range x>=0"),
]


def _tree_digest(root: Path) -> str:
    """One hash over every file below root (names and contents)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture()
def kws_build_dir(tmp_path, mlperf_dir) -> Path:
    """A build directory holding the MLPerf keyword spotter, for `edgesparse battery`."""
    return make_build_dir(tmp_path / "kws-stm32l4r5", (mlperf_dir / KWS).read_bytes(), name="kws",
                          input_shape=(49, 10, 1), num_classes=12, profile=PROFILE, runtime="tflm",
                          device_class="mcu")


@pytest.mark.parametrize("command, args, flag, fragment", CASES,
                         ids=[f"{c}{''.join(a)}" for c, a, _, _ in CASES])
def test_impossible_values_exit_2_naming_the_flag(mlperf_dir, kws_build_dir, command, args, flag, fragment):
    target = {"check": [str(mlperf_dir / KWS), "--profile", PROFILE],
              "battery": [str(kws_build_dir), "--profile", PROFILE],
              "measure": [str(mlperf_dir / KWS)]}[command]
    before = _tree_digest(kws_build_dir)
    res = CliRunner().invoke(main, [command, *target, *args])
    assert res.exit_code == 2, res.output
    assert flag in res.output and fragment in res.output, res.output
    assert "battery life" not in res.output and "battery_hours" not in res.output
    assert "Traceback" not in res.output and "internal error" not in res.output
    assert _tree_digest(kws_build_dir) == before


def test_possible_edge_values_are_accepted(mlperf_dir, kws_build_dir):
    """Zero sleep power and one thread are possible: check and battery print a positive battery life."""
    res = CliRunner().invoke(main, ["check", str(mlperf_dir / KWS), "--profile", PROFILE, "--sleep-mw", "0",
                                    "--threads", "1", "--battery-mah", "0.5", "--rate", "1/h", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)[0]["battery_hours"] > 0
    res = CliRunner().invoke(main, ["battery", str(kws_build_dir), "--profile", PROFILE, "--sleep-mw", "0",
                                    "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.output)[0]["variants"]
    assert rows and all(row["battery_hours"] > 0 and row["sleep_mw"] == 0.0 for row in rows)


# --------------------------------------------------------------------------- the library refuses them too


@pytest.mark.parametrize("kwargs, name", [
    ({"battery_mah": -5}, "--battery-mah"), ({"battery_mah": 0}, "--battery-mah"),
    ({"battery_mah": math.nan}, "--battery-mah"), ({"battery_mah": math.inf}, "--battery-mah"),
    ({"sleep_mw": -1}, "--sleep-mw"), ({"sleep_mw": math.nan}, "--sleep-mw"),
    ({"rate": 0}, "rate"), ({"rate": -1.0}, "rate"), ({"rate": math.nan}, "rate"), ({"rate": "-3/h"}, "--rate"),
])
def test_estimate_energy_refuses_impossible_values(kwargs, name):
    with pytest.raises(DataError) as info:
        estimate.estimate_energy(10.0, load_profile(PROFILE), **kwargs)
    assert name in info.value.message


def test_estimate_energy_names_the_received_value():
    with pytest.raises(DataError) as info:
        estimate.estimate_energy(10.0, load_profile(PROFILE), rate="1/s", battery_mah=-5)
    assert info.value.message.startswith("--battery-mah (battery_mah) must be > 0.")
    assert "Received: -5." in info.value.message


@pytest.mark.parametrize("kwargs, name", [
    ({"battery_mah": -5.0}, "battery_mah"), ({"sleep_mw": -0.1}, "sleep_mw"), ({"voltage_v": 0.0}, "voltage_v"),
    ({"active_mw": -1.0}, "active_mw"), ({"rate_per_s": 0.0}, "rate_per_s"),
])
def test_energy_and_battery_refuses_impossible_values(kwargs, name):
    values = {"active_mw": 50.0, "sleep_mw": 0.1, "rate_per_s": 1.0, "battery_mah": 1000.0, "voltage_v": 3.0}
    values.update(kwargs)
    with pytest.raises(DataError, match=name):
        estimate.energy_and_battery(20.0, **values)


@pytest.mark.parametrize("threads", [0, -1, True, 1.5])
def test_estimate_latency_refuses_impossible_threads(mlperf_dir, threads):
    with pytest.raises(DataError, match="--threads"):
        estimate.estimate_latency(load_graph(mlperf_dir / KWS), load_profile("rpi4"), threads=threads)


def test_check_model_refuses_before_any_estimate(mlperf_dir):
    for kwargs in ({"threads": 0}, {"battery_mah": -5}, {"sleep_mw": -1}, {"rate": "0/s"}):
        with pytest.raises(DataError):
            estimate.check_model(mlperf_dir / KWS, PROFILE, **kwargs)


def test_zero_sleep_power_is_possible():
    energy = estimate.estimate_energy(10.0, load_profile(PROFILE), rate="1/s", battery_mah=100, sleep_mw=0)
    assert energy.sleep_mw == 0.0 and energy.battery_hours is not None and energy.battery_hours > 0

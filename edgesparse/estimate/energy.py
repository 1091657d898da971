"""Energy per inference, average power and battery life from a latency and a profile's power figures.

Why apart from latency: the arithmetic is the same for every runtime (latency x
active power per inference; sleep power between inferences; capacity over
average power), and the report's battery curve reuses it as is. Physical inputs
that cannot be (a negative capacity, a negative sleep power, a rate of zero)
are refused rather than turned into a battery life. Raises `DataError` naming
the parameter (and its command-line flag) for an impossible value or a rate
that does not parse.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from edgesparse.errors import DataError
from edgesparse.profiles import Profile

__all__ = [
    "EnergyEstimate",
    "energy_and_battery",
    "estimate_energy",
    "format_rate",
    "parse_rate",
]

_RATE_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "min": 60.0, "minute": 60.0, "m": 60.0,
               "h": 3600.0, "hr": 3600.0, "hour": 3600.0, "d": 86400.0, "day": 86400.0}


def parse_rate(text: str | float | int) -> float:
    """'1/s', '10/min', '3/h', '0.5/s', '2/day' (or a number per second) -> inferences per second."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if not math.isfinite(text) or text <= 0:
            raise DataError("Bad inference rate", expected="a positive rate such as 1/s, 10/min or 3/h",
                            received=repr(text))
        return float(text)
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?\d+)?)\s*/\s*([A-Za-z]+?)s?\s*", str(text))
    unit = match.group(2).lower() if match else ""
    if unit not in _RATE_UNITS and unit + "s" in _RATE_UNITS:
        unit = unit + "s"
    if not match or unit not in _RATE_UNITS or not 0 < float(match.group(1)) < math.inf:
        raise DataError("Bad inference rate", where="--rate",
                        expected="N/s, N/min or N/h with N > 0 (e.g. 1/s, 10/min, 3/h)",
                        received=repr(text), fix="Write the rate as a count per unit of time, e.g. --rate 2/min")
    return float(match.group(1)) / _RATE_UNITS[unit]


def format_rate(per_second: float) -> str:
    """Inferences per second as the shortest natural unit: '2/s', '10/min', '3/h'."""
    if per_second >= 1:
        return f"{per_second:g}/s"
    if per_second * 60 >= 1:
        return f"{per_second * 60:g}/min"
    return f"{per_second * 3600:g}/h"


def _require(value: float | None, name: str, what: str, *, minimum: float = 0.0, inclusive: bool) -> None:
    """DataError unless `value` is None or a finite number above `minimum` (or at it, when `inclusive`)."""
    if value is None:
        return
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if math.isfinite(number) and (number >= minimum if inclusive else number > minimum):
        return
    bound = f"{'>=' if inclusive else '>'} {minimum:g}"
    shown = f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value)
    raise DataError(f"{name} must be {bound}", expected=f"{what}: a finite number {bound}", received=shown)


@dataclass
class EnergyEstimate:
    """Energy per inference and, at a rate, average power and battery life, with what they rest on."""

    energy_mj: float | None          # per inference, active
    rate_per_s: float | None
    average_power_mw: float | None
    battery_hours: float | None
    model_share: float | None        # share of the battery drain spent on inference
    active_mw: float | None
    sleep_mw: float | None
    battery_mah: float | None
    voltage_v: float | None
    basis: str
    notes: list[str] = field(default_factory=list)

    @property
    def battery_days(self) -> float | None:
        return None if self.battery_hours is None else self.battery_hours / 24.0

    def to_dict(self) -> dict[str, Any]:
        def r(x: float | None, n: int = 6) -> float | None:
            return None if x is None else round(x, n)
        return {"energy_mj": r(self.energy_mj),
                "rate": None if self.rate_per_s is None else format_rate(self.rate_per_s),
                "rate_per_s": r(self.rate_per_s, 9), "average_power_mw": r(self.average_power_mw),
                "battery_hours": r(self.battery_hours, 3), "battery_days": r(self.battery_days, 3),
                "model_share": r(self.model_share, 4), "active_mw": self.active_mw, "sleep_mw": self.sleep_mw,
                "battery_mah": self.battery_mah, "voltage_v": self.voltage_v, "basis": self.basis,
                "notes": list(self.notes)}


def energy_and_battery(
    latency_ms: float | None, *, active_mw: float | None, sleep_mw: float | None, rate_per_s: float | None,
    battery_mah: float | None, voltage_v: float | None,
) -> tuple[float | None, float | None, float | None, float | None, list[str]]:
    """(energy_mj per inference, average power mW, battery hours, inference share of drain, notes).

    Energy per inference = latency x active power. Over one period 1/rate the
    device runs one inference at active power and sleeps the rest at sleep
    power; average power = rate x E + (1 - rate x latency) x P_sleep. Battery
    life = capacity (mAh x V = mWh) / average power. Any value given must be
    physically possible (DataError naming it otherwise).
    """
    _require(battery_mah, "--battery-mah (battery_mah)", "a battery capacity in mAh", inclusive=False)
    _require(sleep_mw, "--sleep-mw (sleep_mw)", "a power between inferences in mW", inclusive=True)
    _require(rate_per_s, "--rate (rate_per_s)", "inferences per second", inclusive=False)
    _require(active_mw, "active_mw", "an active power in mW", inclusive=True)
    _require(voltage_v, "voltage_v", "a battery voltage in V", inclusive=False)
    _require(latency_ms, "latency_ms", "a latency in ms", inclusive=True)
    notes: list[str] = []
    if latency_ms is None or active_mw is None:
        return None, None, None, None, notes
    energy_mj = latency_ms * active_mw / 1000.0
    if rate_per_s is None:
        return energy_mj, None, None, None, notes
    busy = rate_per_s * latency_ms / 1000.0
    if busy > 1.0:
        notes.append(f"at {format_rate(rate_per_s)} the device would need {busy:.2f} s of inference per second: "
                     "it cannot keep up; battery life computed at 100% duty")
        busy = 1.0
        inference_mw = active_mw
    else:
        inference_mw = rate_per_s * energy_mj  # mJ/s = mW
    sleeping_mw = (1.0 - busy) * (sleep_mw or 0.0)
    average = inference_mw + sleeping_mw
    hours = None
    if battery_mah and voltage_v and average > 0:
        hours = battery_mah * voltage_v / average
    share = inference_mw / average if average > 0 else None
    return energy_mj, average, hours, share, notes


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def estimate_energy(latency_ms: float | None, profile: Profile, *, rate: str | float | None = None,
                    battery_mah: float | None = None, sleep_mw: float | None = None,
                    latency_basis: str = "fitted", active_mw: float | None = None,
                    active_keys: tuple[str, ...] = ("power.active_mw",)) -> EnergyEstimate:
    """Energy and battery life on the profile; `rate`, `battery_mah` and `sleep_mw` override its figures.

    `active_mw` replaces [power] active_mw when the power during an inference is not one figure (an Ethos-U
    device: the NPU's power while it runs, the CPU's while CPU ops run, time-weighted by estimate.npu);
    `active_keys` are the profile keys it rests on, so an unsourced one makes the energy an assumption.
    DataError when `battery_mah` is not > 0, `sleep_mw` not >= 0, or `rate` does not parse.
    """
    _require(battery_mah, "--battery-mah (battery_mah)", "a battery capacity in mAh", inclusive=False)
    _require(sleep_mw, "--sleep-mw (sleep_mw)", "a power between inferences in mW", inclusive=True)
    power, battery = profile.table("power"), profile.table("battery")
    active = power.get("active_mw") if active_mw is None else active_mw
    rest = str(battery.get("rest_state", "sleep"))
    rest_key = f"{rest}_mw" if f"{rest}_mw" in power else "sleep_mw"
    sleep = sleep_mw if sleep_mw is not None else power.get(rest_key)
    mah = battery_mah if battery_mah is not None else battery.get("capacity_mah")
    volts = battery.get("voltage_v")
    if rate is None and battery.get("inferences_per_hour"):
        rate = float(battery["inferences_per_hour"]) / 3600.0
    rate_per_s = parse_rate(rate) if rate is not None else None

    notes: list[str] = []
    basis = latency_basis
    assumed = [key for key in active_keys if profile.is_assumption(key)]
    if active is None:
        notes.append("the profile gives no [power] active_mw: no energy estimate")
        basis = "none"
    elif assumed:
        notes.append(" and ".join(f"[{k.split('.')[0]}] {k.split('.', 1)[1]}" for k in assumed)
                     + (" are assumptions" if len(assumed) > 1 else " is an assumption") + " (no measured source)")
        basis = "assumption"
    if sleep_mw is None and sleep is not None and profile.is_assumption(f"power.{rest_key}"):
        notes.append(f"[power] {rest_key} (power between inferences) is an assumption")
    if (rate_per_s is not None and battery_mah is None and mah is not None
            and profile.is_assumption("battery.capacity_mah")):
        notes.append(f"battery capacity {mah:g} mAh is the profile's assumed battery; pass --battery-mah for yours")
    if rate_per_s is not None and sleep is None:
        notes.append("no sleep power: the device is assumed to draw nothing between inferences")
    active, sleep, mah, volts = (_optional_float(v) for v in (active, sleep, mah, volts))
    energy, average, hours, share, more = energy_and_battery(
        latency_ms, active_mw=active, sleep_mw=sleep, rate_per_s=rate_per_s, battery_mah=mah, voltage_v=volts)
    notes += more
    if rate_per_s is not None and (mah is None or volts is None):
        notes.append("no battery capacity/voltage: battery life not computed (pass --battery-mah)")
    return EnergyEstimate(energy, rate_per_s, average, hours, share, active, sleep, mah, volts, basis, notes)

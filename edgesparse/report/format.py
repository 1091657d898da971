"""One formatting vocabulary for every figure edgesparse shows a person, in the terminal and in HTML.

Why one module: the CLI, report.html and the build summary used to format bytes,
hours and percentages each their own way, so the same build read "25.2 MiB" in
the terminal and "25.17 MiB" on the page, "49.0 h" in one table and "2.0 days"
in another. Every function takes None (a value the estimator could not
compute) and prints `missing` for it. Raises nothing.
"""

from __future__ import annotations

from numbers import Real
from typing import Any

from edgesparse.estimate import format_rate

__all__ = [
    "UNKNOWN",
    "byte_count",
    "byte_size",
    "hours",
    "integer",
    "number",
    "percent",
    "quantity",
    "rate",
    "ratio",
]

UNKNOWN = "unknown"

_BYTE_UNITS = (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))


def byte_size(n: Any, missing: str = UNKNOWN) -> str:
    """A size as a person reads it: 3 significant digits in B/KiB/MiB/GiB (1234567 -> '1.18 MiB')."""
    if not isinstance(n, Real) or isinstance(n, bool):  # None, or a value read from a malformed file
        return missing
    value = float(n)
    for unit, factor in _BYTE_UNITS:
        if abs(value) >= factor:
            return f"{_significant(value / factor, 3)} {unit}"
    return f"{value:,.0f} B"


def byte_count(n: Any, missing: str = UNKNOWN) -> str:
    """An exact byte count, for where every byte matters (tensor arena, flash parts): '26,388,336 B'."""
    if not isinstance(n, Real) or isinstance(n, bool):
        return missing
    return f"{int(float(n)):,} B"


def integer(n: Any, missing: str = UNKNOWN) -> str:
    """A count of things (weights, elements) exactly, with thousands separators: 4608 -> '4,608'."""
    if not isinstance(n, Real) or isinstance(n, bool):
        return missing
    return f"{int(float(n)):,}"


def _significant(x: float, digits: int) -> str:
    """`digits` significant digits, never in exponent notation (1022.5 -> '1022', not '1.02e+03')."""
    text = f"{x:.{digits}g}"
    return f"{x:.0f}" if "e" in text else text


def number(x: Any, digits: int = 4, unit: str = "", missing: str = UNKNOWN) -> str:
    """Significant digits; a thousands separator only from 10**digits on (1000 ms, 12,346 ms)."""
    if x is None:
        return missing
    x = float(x)
    if x != 0 and abs(x) < 1e-3:
        text = f"{x:.{digits - 1}e}"
    elif abs(float(f"{x:.{digits}g}")) >= 10 ** digits:  # also 9999.7, which rounds up to 10,000
        text = f"{x:,.0f}"
    else:
        text = _significant(x, digits)
    return f"{text} {unit}".strip()


def percent(fraction: Any, digits: int = 2, *, signed: bool = False, missing: str = UNKNOWN) -> str:
    """A fraction as a percentage with a space before the sign (SI style): 0.9125 -> '91.25 %'."""
    if fraction is None:
        return missing
    return f"{float(fraction) * 100:{'+' if signed else ''}.{digits}f} %"


def hours(h: Any, missing: str = UNKNOWN) -> str:
    """A battery life in the unit a person thinks in: minutes, hours, days (from 48 h), years (from 2)."""
    if h is None:
        return missing
    h = float(h)
    if h >= 24 * 365 * 2:
        return f"{h / (24 * 365):,.1f} years"
    if h >= 48:
        return f"{h / 24:,.1f} days"
    if h >= 1:
        return f"{h:,.1f} h"
    return f"{h * 60:,.1f} min"


def quantity(value: Any, unit: str, missing: str = UNKNOWN) -> str:
    """A budget's or estimate's value in its unit: B -> byte_size, h and d -> hours, else 4 significant digits."""
    if value is None:
        return missing
    if unit == "B":
        return byte_size(value)
    if unit == "h":
        return hours(value)
    if unit == "d":
        return hours(float(value) * 24)
    return number(value, 4, unit)


def rate(per_second: Any, missing: str = UNKNOWN) -> str:
    """An inference rate the way --rate takes it (1/s, 10/min, 3/h): the estimator's own spelling."""
    return missing if per_second is None else format_rate(float(per_second))


def ratio(x: Any, missing: str = UNKNOWN) -> str:
    """How many times smaller (or larger) one size is than another, to 3 significant digits: 2.386 -> '2.39×'."""
    if not isinstance(x, Real) or isinstance(x, bool):
        return missing
    return f"{_significant(float(x), 3)}×"

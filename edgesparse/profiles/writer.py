"""Writing device profiles: replace one table or one table's [sources] entries, keep everything else.

Why tomlkit: a profile is a hand-written document whose comments and
[sources] entries carry the facts behind every number; rewriting it from the
parsed values would lose them, and editing its text line by line breaks on
the first unusual layout. `calibrate` and `bench/estimation.py` (which refits
the shipped profiles) both write through `write_latency`, so a profile is
written one way.

Values are written in the shipped profiles' style: floats to 6 significant
digits, maps as `{ a = 1.0, b = 2.0 }` inline tables. Every write is validated
first and atomic, so no invalid or half-written profile is ever left behind.
Raises `ProfileValidationError` (a `ProfileError`) for a profile that would be
invalid, `ProfileError` for text that is not TOML, `ValueError` for a value
TOML cannot hold (inf, NaN) and `TypeError` for a value of another type.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import tomlkit
import tomllib
from tomlkit.exceptions import ParseError
from tomlkit.items import Comment, Item, Key, Table, Whitespace

from edgesparse.errors import ProfileError
from edgesparse.fsutil import atomic_write_text
from edgesparse.profiles.schema import SOURCES
from edgesparse.profiles.validate import ProfileValidationError, validate

__all__ = [
    "LATENCY_ORDER",
    "check_profile_text",
    "set_sources",
    "set_table",
    "write_latency",
    "write_profile_text",
]

# Order of the [latency] keys as written (the shipped profiles use it); keys not listed follow.
LATENCY_ORDER = ("fitted", "basis", "fit_source", "fit_rows", "fit_threads", "clock_mhz", "transferred_from",
                 "transfer_factor", "overhead_from", "overhead_factor", "macs_per_cycle",
                 "elementwise_per_cycle", "bytes_per_cycle", "overhead_us_per_op", "fixed_overhead_us",
                 "parallel_efficiency", "notes")

Body = list[tuple[Key | None, Item]]


def set_table(text: str, name: str, values: Mapping[str, Any]) -> str:
    """`text` with the top-level table [name] holding exactly `values`, in their order (appended when absent).

    Comments and blank lines after the table's last key (they introduce the next table) are kept;
    comments between its keys go with the values they described.
    """
    doc = _parse(text)
    entries: Body = [(tomlkit.key(str(key)), _item(value)) for key, value in values.items()]
    old = doc.get(name)
    if isinstance(old, Table):
        _, trailing = _split_trailing(old)
        doc[name] = _table(entries + trailing)
    else:
        doc.add(name, _table(entries))
    return tomlkit.dumps(doc)


def set_sources(text: str, table: str, entries: Mapping[str, str]) -> str:
    """`text` with every [sources] entry of `table` ("table.*") replaced by `entries` (keys without the
    "table." prefix), appended after the other entries. Every other entry and comment is kept."""
    doc = _parse(text)
    prefix = table + "."
    new: Body = [(tomlkit.key(prefix + key), _item(value)) for key, value in entries.items()]
    old = doc.get(SOURCES)
    if not isinstance(old, Table):
        if not new:
            return text
        doc.add(SOURCES, _table(new))
        return tomlkit.dumps(doc)
    kept, trailing = _split_trailing(old)
    kept = [(key, item) for key, item in kept if key is None or not key.key.startswith(prefix)]
    doc[SOURCES] = _table(kept + new + trailing)
    return tomlkit.dumps(doc)


def check_profile_text(text: str, where: str) -> dict[str, Any]:
    """The parsed profile, after strict validation; raises `ProfileValidationError` with every problem."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileValidationError([f"{where}: not valid TOML: {exc}"]) from None
    problems = validate(raw, where)
    if problems:
        raise ProfileValidationError(problems)
    return raw


def write_profile_text(path: Path | str, text: str) -> bool:
    """Validate `text` as a profile and write it to `path` atomically; False (nothing written) when the file
    already holds exactly this text."""
    path = Path(path)
    check_profile_text(text, str(path))
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    atomic_write_text(path, text)
    return True


def write_latency(source: Path | str, values: Mapping[str, Any], sources: Mapping[str, str] | None = None, *,
                  out: Path | str | None = None) -> bool:
    """Replace the [latency] table of the profile file `source` with `values` (written in `LATENCY_ORDER`,
    `macs_per_cycle` as floats) and its [sources] "latency.*" entries with `sources` (none by default: a
    fitted table is its own source), validate, and write it to `out` (default: `source` itself).

    Returns whether the file changed. The source is read right before writing.
    """
    source = Path(source)
    text = source.read_text(encoding="utf-8")
    new = set_table(text, "latency", _latency_in_order(values))
    new = set_sources(new, "latency", sources or {})
    return write_profile_text(source if out is None else Path(out), new)


def _latency_in_order(values: Mapping[str, Any]) -> dict[str, Any]:
    ordered = {k: values[k] for k in LATENCY_ORDER if k in values}
    ordered.update({k: v for k, v in values.items() if k not in ordered})
    if "macs_per_cycle" in ordered:
        ordered["macs_per_cycle"] = {k: float(v) for k, v in ordered["macs_per_cycle"].items()}
    return ordered


# --------------------------------------------------------------------------- tomlkit plumbing


def _parse(text: str) -> tomlkit.TOMLDocument:
    try:
        return tomlkit.parse(text)
    except ParseError as exc:
        raise ProfileError("The profile is not valid TOML", expected="a TOML document",
                           received=str(exc)) from None


def _split_trailing(table: Table) -> tuple[Body, Body]:
    """A table's body up to its last key, and the comments and blank lines after it."""
    body: Body = list(table.value.body)
    cut = len(body)
    while cut and body[cut - 1][0] is None:
        cut -= 1
    return body[:cut], body[cut:]


def _table(body: Iterable[tuple[Key | None, Item]]) -> Table:
    table = tomlkit.table()
    for key, item in body:
        if isinstance(item, (Comment, Whitespace)):
            table.add(item)
        elif key is not None:
            table.add(key, item)
    return table


def _item(value: Any) -> Item:
    """A Python value as a TOML item in the shipped profiles' style."""
    if isinstance(value, bool):
        return tomlkit.item(value)
    if isinstance(value, numbers.Integral):
        return tomlkit.integer(int(value))
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"cannot write {number} to TOML")
        return tomlkit.float_(float(f"{number:.6g}"))
    if isinstance(value, str):
        return tomlkit.string(value)
    if isinstance(value, (list, tuple)):
        array = tomlkit.array()
        array.extend(_item(v) for v in value)
        return array
    if isinstance(value, Mapping):
        return _inline_table(value)
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _inline_table(values: Mapping[str, Any]) -> Item:
    """`{ a = 1.0, b = 2.0 }`, padded inside the braces like the hand-written profiles."""
    table = tomlkit.inline_table()
    for i, (key, value) in enumerate(values.items()):
        item = _item(value)
        if i == 0:
            item.trivia.indent = " "
        table.append(str(key), item)
    if values:
        table.add(tomlkit.ws(" "))
    return table

"""Shared types and closed vocabularies: one definition each, imported by every layer.

Why a module of its own: the progress callback, the runtime names and the set of
estimate bases that count as assumptions used to be redefined in five modules
each, and the copies had started to disagree.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

__all__ = [
    "ASSUMED_BASIS_WORDS",
    "QUANTIZE_MODES",
    "RUNTIMES",
    "Progress",
    "QuantizeMode",
    "Runtime",
    "is_assumption",
    "no_progress",
]


class Progress(Protocol):
    """The one progress callback: `progress(event, fields)`. Library code never prints; the CLI renders events."""

    def __call__(self, event: str, fields: dict[str, Any]) -> None: ...


def no_progress(event: str, fields: dict[str, Any]) -> None:
    """The default callback: ignore every event."""
    return None


Runtime = Literal["litert", "tflm"]
RUNTIMES: tuple[Runtime, ...] = ("litert", "tflm")

QuantizeMode = Literal["int8", "dynamic", "float16", "none"]
QUANTIZE_MODES: tuple[QuantizeMode, ...] = ("int8", "dynamic", "float16", "none")

# How an estimate's coefficient was obtained ("fitted", "planner", "interpreter",
# "transferred", "fitted+transferred", "planner+assumption", "none", ...). A basis
# that contains any of these words rests on something not measured or fitted on
# the device itself, and is shown as an assumption everywhere (terminal, HTML).
ASSUMED_BASIS_WORDS: tuple[str, ...] = ("assumption", "transferred", "none")


def is_assumption(basis: object) -> bool:
    """True when an estimate's basis is assumed, transferred from another device, or missing."""
    return not isinstance(basis, str) or any(word in basis for word in ASSUMED_BASIS_WORDS)

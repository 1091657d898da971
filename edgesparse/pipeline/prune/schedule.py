"""The pruning schedule: what the user asks for (ScheduleOptions), checked, and resolved into steps.

Why its own module: the schedule is where most pruning runs silently go wrong
(an end_step past the end of training, a last mask update that never reaches
the final sparsity, m:n masks that ignore the schedule), so every such case is
refused here with the step numbers that would fix it, before TensorFlow runs.

Every error names the command-line flag first and the Python field after it
(`--final-sparsity / ScheduleOptions.final_sparsity`), so both kinds of user
find what to change.

Raises PruningError.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any

from edgesparse.errors import PruningError
from edgesparse.pipeline.tf_env import import_tfmot

__all__ = [
    "DEFAULT_FINAL_SPARSITY",
    "DEFAULT_FREQUENCY",
    "KINDS",
    "MIN_MASK_UPDATES",
    "SETTLE_FRACTION",
    "ResolvedSchedule",
    "ScheduleOptions",
    "derive_end_step",
    "flag_and_field",
    "resolve_schedule",
    "steps_per_epoch",
]

DEFAULT_FINAL_SPARSITY = 0.8
DEFAULT_FREQUENCY = 100
#: Fraction of the training steps after begin_step left at the final sparsity so masks settle.
SETTLE_FRACTION = 0.25
#: With auto_frequency, the ramp gets at least this many mask updates (frequency is lowered).
MIN_MASK_UPDATES = 10
#: How far below final_sparsity the last mask update of an explicit end_step may land.
_ALIGN_SLACK = 0.005
KINDS = ("polynomial", "constant")
# The `edgesparse build` flag of each ScheduleOptions field a user sets (kind is --schedule).
_FLAGS = {"kind": "--schedule", "initial_sparsity": "--initial-sparsity", "final_sparsity": "--final-sparsity",
          "begin_step": "--begin-step", "end_step": "--end-step", "power": "--power", "frequency": "--frequency",
          "structured": "--structured"}


def flag_and_field(key: str) -> str:
    """Where an option error points: the flag, then the ScheduleOptions field (Python-only fields alone)."""
    field = f"ScheduleOptions.{key}"
    return f"{_FLAGS[key]} / {field}" if key in _FLAGS else field


@dataclass(frozen=True)
class ScheduleOptions:
    """What the user asked for; checked on construction, resolved against the data later."""

    kind: str = "polynomial"
    initial_sparsity: float = 0.0
    final_sparsity: float = DEFAULT_FINAL_SPARSITY
    begin_step: int = 0
    end_step: int | None = None
    power: float = 3
    frequency: int = DEFAULT_FREQUENCY
    structured: tuple[int, int] | None = None
    auto_frequency: bool = True
    block_size: tuple[int, int] | None = None
    settle_fraction: float = SETTLE_FRACTION

    def __post_init__(self) -> None:
        for name in ("structured", "block_size"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _int_pair(value, name))
        _validate_options(self)


def _int_pair(value: Any, name: str) -> tuple[int, int]:
    try:
        a, b = value
        pair = (int(a), int(b))
        ok = pair == (a, b) and pair[0] >= 1 and pair[1] >= 1
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise PruningError(f"Invalid {name}", where=flag_and_field(name),
                           expected="two positive integers, e.g. (2, 4)" if name == "structured"
                           else "two positive integers in TFLite [out, in] layout, e.g. (1, 4)",
                           received=repr(value))
    return pair


def _bad(what: str, key: str, expected: str, received: object, fix: str | None = None) -> PruningError:
    return PruningError(what, where=flag_and_field(key), expected=expected, received=received, fix=fix)


def _validate_options(o: ScheduleOptions) -> None:
    if o.kind not in KINDS:
        close = difflib.get_close_matches(str(o.kind), KINDS, n=1)
        raise _bad("Unknown pruning schedule kind", "kind", "'polynomial' (PolynomialDecay) or "
                   "'constant' (ConstantSparsity)", repr(o.kind),
                   f"Did you mean '{close[0]}' (--schedule {close[0]})?" if close else None)
    for key in ("initial_sparsity", "final_sparsity"):
        value = getattr(o, key)
        if not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
            raise _bad("Sparsity out of range", key, "a fraction in [0, 1), e.g. 0.8 for 80% zeros",
                       repr(value), "TFMOT cannot prune every weight; percentages are fractions (0.8, not 80)")
    if o.final_sparsity == 0.0:
        raise _bad("final_sparsity is 0: nothing would be pruned", "final_sparsity",
                   "a fraction in (0, 1)", 0.0, "Give --final-sparsity above 0, or skip the prune stage")
    if o.kind == "constant" and o.initial_sparsity:
        raise _bad("initial_sparsity only applies to PolynomialDecay", "initial_sparsity",
                   "0 with kind='constant' (ConstantSparsity prunes to final_sparsity at once)",
                   o.initial_sparsity, "Use --schedule polynomial (kind='polynomial') to ramp up from "
                   "--initial-sparsity")
    if o.kind == "polynomial" and o.initial_sparsity > o.final_sparsity:
        raise _bad("PolynomialDecay would lower the sparsity", "initial_sparsity",
                   f"initial_sparsity <= final_sparsity ({o.final_sparsity})", o.initial_sparsity)
    if not isinstance(o.begin_step, int) or o.begin_step < 0:
        raise _bad("begin_step must be a step number", "begin_step", "an integer >= 0",
                   repr(o.begin_step))
    if o.end_step is not None:
        if not isinstance(o.end_step, int):
            raise _bad("end_step must be a step number", "end_step", "an integer or None",
                       repr(o.end_step))
        if o.end_step <= o.begin_step:
            raise _bad("begin_step must come before end_step", "end_step",
                       f"end_step > begin_step ({o.begin_step})", o.end_step,
                       "Leave --end-step unset to derive it from the training length")
    if not isinstance(o.frequency, int) or o.frequency < 1:
        raise _bad("frequency must be a positive step count", "frequency",
                   "an integer >= 1 (steps between mask updates)", repr(o.frequency))
    if not isinstance(o.power, (int, float)) or o.power <= 0:
        raise _bad("power must be positive", "power", "a number > 0 (3 = TFMOT's default)",
                   repr(o.power))
    if not isinstance(o.settle_fraction, (int, float)) or not 0.0 <= o.settle_fraction < 1.0:
        raise _bad("settle_fraction out of range", "settle_fraction", "a fraction in [0, 1)",
                   repr(o.settle_fraction))
    if o.structured is not None:
        m, n = o.structured
        if m >= n:
            raise _bad("Structured sparsity needs fewer zeros than the group size", "structured",
                       "(m, n) with m < n, e.g. (2, 4)", o.structured)
        if abs(o.final_sparsity - m / n) > 1e-9:
            raise _bad(f"{m}:{n} structured pruning always zeroes exactly {m} of every {n} "
                       f"weights, so its sparsity is {m / n:g}", "final_sparsity",
                       f"final_sparsity={m / n:g} with structured={o.structured}",
                       o.final_sparsity, f"Pass --final-sparsity {m / n:g} (final_sparsity={m / n:g}), or omit it")
        if o.block_size is not None and o.block_size != (1, 1):
            raise _bad(f"{m}:{n} structured sparsity cannot be combined with block sparsity",
                       "block_size", "block_size=None with structured pruning", o.block_size,
                       "Choose either structured=(2, 4) or a block size")
        if o.begin_step != 0 or o.end_step is not None:
            raise _bad("TFMOT sets m_by_n masks once, at step 1, whatever the schedule says",
                       "begin_step" if o.begin_step else "end_step",
                       "begin_step=0 and end_step=None with structured pruning",
                       f"begin_step={o.begin_step}, end_step={o.end_step}",
                       "Drop --begin-step/--end-step, or use unstructured pruning (no --structured)")


@dataclass(frozen=True)
class ResolvedSchedule:
    """The schedule TFMOT will run, in concrete steps (what the report shows)."""

    kind: str
    initial_sparsity: float
    final_sparsity: float
    begin_step: int
    end_step: int
    power: float
    frequency: int
    structured: tuple[int, int] | None
    steps_per_epoch: int
    epochs: int
    total_steps: int
    mask_updates: int
    notes: tuple[str, ...] = ()

    @property
    def target(self) -> float:
        """Sparsity every pruned layer must reach."""
        if self.structured:
            return self.structured[0] / self.structured[1]
        return self.final_sparsity

    def is_update_step(self, step: int) -> bool:
        """Mirror of TFMOT's `_should_prune_in_step` (pruning_step counts batches from 1)."""
        if self.structured:
            return step == 1
        return (self.begin_step <= step <= self.end_step
                and (step - self.begin_step) % self.frequency == 0)

    def sparsity_at(self, step: int) -> float:
        """The schedule's sparsity at `step` (PolynomialDecay / ConstantSparsity formula)."""
        if self.structured or self.kind == "constant":
            return self.target
        p = min(1.0, max(0.0, (step - self.begin_step) / (self.end_step - self.begin_step)))
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (1 - p) ** self.power

    def to_tfmot(self, final_sparsity: float | None = None) -> Any:
        """The tfmot.sparsity.keras PruningSchedule object; `final_sparsity` gives one layer its own target on the
        same steps (the initial sparsity is capped at it)."""
        tfmot = import_tfmot()
        sparsity = tfmot.sparsity.keras
        if self.structured:
            # Ignored by TFMOT for m_by_n (mask set at step 1), but the wrapper needs one.
            return sparsity.ConstantSparsity(self.target, begin_step=0, end_step=1, frequency=1)
        final = self.final_sparsity if final_sparsity is None else final_sparsity
        if self.kind == "constant":
            return sparsity.ConstantSparsity(final, begin_step=self.begin_step,
                                             end_step=self.end_step, frequency=self.frequency)
        return sparsity.PolynomialDecay(
            initial_sparsity=min(self.initial_sparsity, final), final_sparsity=final,
            begin_step=self.begin_step, end_step=self.end_step, power=self.power,
            frequency=self.frequency)

    def as_dict(self) -> dict:
        """JSON-ready, for the build report."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


def steps_per_epoch(num_train: int, batch_size: int) -> int:
    """Batches per epoch of `model.fit(x, y, batch_size)` (the last one may be short)."""
    return math.ceil(num_train / batch_size)


def derive_end_step(total_steps: int, begin_step: int, frequency: int,
                    settle_fraction: float = SETTLE_FRACTION) -> int:
    """Last mask update at ~(1 - settle_fraction) of training, on a frequency boundary."""
    span = int((1.0 - settle_fraction) * (total_steps - begin_step))
    return begin_step + (span // frequency) * frequency


def _capped_frequency(frequency: int, ramp: int) -> int:
    return min(frequency, max(1, ramp // MIN_MASK_UPDATES))


def _derive(s: ScheduleOptions, total: int, training: str) -> tuple[int, int, list[str]]:
    """(end_step, frequency, notes) when the user left end_step unset."""
    span = int((1.0 - s.settle_fraction) * (total - s.begin_step))
    if span < 1:
        raise PruningError("Too few training steps to ramp the sparsity up", where="prune",
                           expected="at least 2 steps after begin_step", received=training,
                           fix="Train for more --epochs or use a smaller --batch-size")
    frequency, notes = s.frequency, []
    if s.auto_frequency and _capped_frequency(frequency, span) < frequency:
        frequency = _capped_frequency(frequency, span)
        notes.append(f"frequency lowered from {s.frequency} to {frequency} so the ramp gets "
                     f"~{MIN_MASK_UPDATES} mask updates")
    end = derive_end_step(total, s.begin_step, frequency, s.settle_fraction)
    if end <= s.begin_step:
        raise PruningError("frequency is longer than the pruning ramp: no mask would be updated",
                           where=flag_and_field("frequency"),
                           expected=f"frequency <= {span} steps ({training})", received=frequency,
                           fix="Lower --frequency (or keep auto_frequency=True in Python)")
    notes.append(f"end_step derived: {end} of {total} steps; the last {total - end} steps "
                 "train at the final sparsity so masks settle")
    return end, frequency, notes


def resolve_schedule(schedule: ScheduleOptions, *, num_train: int, batch_size: int,
                     epochs: int) -> ResolvedSchedule:
    """Turn options into concrete steps for this data size; PruningError when unreachable."""
    if not isinstance(schedule, ScheduleOptions):
        raise PruningError("schedule must be a ScheduleOptions", where="prune",
                           received=type(schedule).__name__)
    for key, value, minimum in (("epochs", epochs, 1), ("batch_size", batch_size, 1),
                                ("number of training examples", num_train, 1)):
        if not isinstance(value, int) or value < minimum:
            raise PruningError(f"Invalid {key} for fine-tuning",
                               where=f"--{key.replace('_', '-')}" if key in ("epochs", "batch_size") else "prune",
                               expected=f"an integer >= {minimum}", received=repr(value))
    spe = steps_per_epoch(num_train, batch_size)
    total = spe * epochs
    s = schedule
    notes: list[str] = []
    training = f"{epochs} epoch(s) x {spe} steps ({num_train} examples, batch {batch_size})"

    if s.structured:
        m, n = s.structured
        notes.append(f"{m}:{n} masks are computed once at step 1 (TFMOT ignores the schedule "
                     "for sparsity_m_by_n); the rest of training recovers accuracy")
        return ResolvedSchedule(s.kind, s.initial_sparsity, m / n, 0, 1, s.power, 1, s.structured,
                                spe, epochs, total, 1, tuple(notes))

    if s.begin_step >= total:
        raise PruningError("Pruning would begin after training ends", where=flag_and_field("begin_step"),
                           expected=f"begin_step < {total} total training steps ({training})",
                           received=s.begin_step, fix="Lower --begin-step or train for more --epochs")
    if s.end_step is None:
        end, frequency, derived_notes = _derive(s, total, training)
        notes += derived_notes
    else:
        end, frequency = s.end_step, s.frequency
        if end > total:
            try:
                suggestion = f"derived: {_derive(s, total, training)[0]}"
            except PruningError:
                suggestion = "no end_step fits this training length"
            raise PruningError("end_step is beyond the end of training: the final sparsity would "
                               "never be reached", where=flag_and_field("end_step"),
                               expected=f"end_step <= {total} total training steps ({training})",
                               received=end, fix=f"Leave --end-step unset ({suggestion}) "
                                                 "or train for more --epochs")
        if s.auto_frequency and _capped_frequency(frequency, end - s.begin_step) < frequency:
            frequency = _capped_frequency(frequency, end - s.begin_step)
            notes.append(f"frequency lowered from {s.frequency} to {frequency} so the ramp gets "
                         f"~{MIN_MASK_UPDATES} mask updates")
    last = s.begin_step + ((end - s.begin_step) // frequency) * frequency
    if last < 1:
        raise PruningError("No mask update would happen between begin_step and end_step",
                           where=flag_and_field("frequency"),
                           expected=f"frequency <= end_step - begin_step ({end - s.begin_step})",
                           received=frequency, fix="Lower --frequency (or keep auto_frequency=True in Python)")
    resolved = ResolvedSchedule(s.kind, s.initial_sparsity, s.final_sparsity, s.begin_step, end,
                                s.power, frequency, None, spe, epochs, total,
                                (end - s.begin_step) // frequency + (1 if s.begin_step >= 1 else 0),
                                tuple(notes))
    reached = resolved.sparsity_at(last)
    if reached < s.final_sparsity - _ALIGN_SLACK:
        aligned = s.begin_step + max(1, (end - s.begin_step) // frequency) * frequency
        raise PruningError(
            "The last mask update falls before end_step, so the final sparsity is never applied",
            where=flag_and_field("end_step"),
            expected=f"end_step - begin_step a multiple of frequency ({frequency})",
            received=f"end_step={end}: last update at step {last} sets {reached:.1%}, "
                     f"not {s.final_sparsity:.1%}",
            fix=f"Use end_step={aligned} (--end-step {aligned}), or leave it unset")
    return resolved



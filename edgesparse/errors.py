"""The one error family edgesparse raises for anything a user can fix.

`edgesparse.cli` turns an `EdgesparseError` into one readable message and its
`exit_code`; no traceback reaches the terminal. Messages follow one shape so a
user always learns the same four things: what went wrong, where, what was
expected and what was received, and how to fix it.
"""

from __future__ import annotations

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_BUDGET",
    "EXIT_INTERNAL",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "AccuracyDropExceeded",
    "BudgetExceeded",
    "ConversionError",
    "DataError",
    "EdgesparseError",
    "Interrupted",
    "MissingDependency",
    "ModelError",
    "OutputExistsError",
    "OutputLocationError",
    "ProfileError",
    "PruningError",
    "UnexpectedError",
    "VerificationError",
]

EXIT_OK = 0
EXIT_BUDGET = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3
EXIT_INTERRUPTED = 130  # SIGINT; SIGTERM exits 143 (128 + the signal number)


class EdgesparseError(Exception):
    """Base class. `exit_code` 2 means bad input, 1 a budget failed, 3 internal."""

    exit_code = EXIT_BAD_INPUT

    def __init__(
        self,
        what: str,
        *,
        where: str | None = None,
        expected: str | None = None,
        received: object = None,
        fix: str | None = None,
    ) -> None:
        self.what = what
        self.where = where
        self.expected = expected
        self.received = received
        self.fix = fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        parts = [self.what.rstrip(".") + (f" ({self.where})" if self.where else "") + "."]
        if self.expected is not None:
            parts.append(f"Expected: {self.expected}.")
        if self.received is not None:
            parts.append(f"Received: {self.received}.")
        if self.fix:
            parts.append(self.fix.rstrip(".") + ".")
        return " ".join(parts)

    def __str__(self) -> str:
        return self.message


class ProfileError(EdgesparseError):
    """A device profile is missing, malformed or inconsistent."""


class ModelError(EdgesparseError):
    """A model file is missing, unreadable, unsafe to load, or not a model."""


class DataError(EdgesparseError):
    """A data set is missing or does not match the model."""


class ConversionError(EdgesparseError):
    """The TFLite converter could not produce the requested artifact."""


class VerificationError(EdgesparseError):
    """The artifact did not run in the target interpreter."""

    exit_code = EXIT_INTERNAL


class UnexpectedError(EdgesparseError):
    """An exception edgesparse did not expect (a bug, or a library failing), raised in another process (a Dask
    worker) and carried back as one readable message: exit 3, as the CLI gives the same exception raised here."""

    exit_code = EXIT_INTERNAL


class OutputExistsError(EdgesparseError):
    """An output would overwrite an earlier build, or something that is not ours."""


class OutputLocationError(EdgesparseError):
    """The output location cannot be created or written (read-only, below a file, disk full)."""


class BudgetExceeded(EdgesparseError):
    """The model does not meet a budget (accuracy, flash, RAM, latency...)."""

    exit_code = EXIT_BUDGET


class AccuracyDropExceeded(BudgetExceeded):
    """Pruning and quantization cost more accuracy than `--max-accuracy-drop`."""


class MissingDependency(EdgesparseError):
    """An optional dependency (TensorFlow for the build half) is not installed."""


class Interrupted(EdgesparseError):
    """The user pressed Ctrl-C; nothing half-written was left behind."""

    exit_code = EXIT_INTERRUPTED


class PruningError(EdgesparseError):
    """Pruning could not reach the requested sparsity, or its options conflict."""

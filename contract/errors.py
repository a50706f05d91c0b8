"""The exceptions a trial raises for a user's mistake or a run gone wrong, without torch.

They are raised in ``trainers`` (which imports torch) but read where a failure is turned into
a row (``service.failure_text``, ``service.ledger``) and in tools that must start fast
(``qsweep status``): defining them here lets those import them without loading torch.
``trainers`` re-exports each from the module that raises it.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A user mistake in a trial configuration (one line, names the field)."""


class DatasetError(ValueError):
    """A dataset could not be loaded because of the user's input (path, file, option)."""

    def __init__(self, message: str) -> None:
        # Sweep logs and Ray error tables show one line per trial: keep it that way.
        super().__init__(" ".join(str(message).split()))


class TrialDiverged(RuntimeError):
    """The training loss became NaN or infinite: the trial is recorded as failed."""

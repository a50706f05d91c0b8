"""One map from a Tune trial to our trial, shared by every callback of a sweep.

The Parquet sink, the progress view and the trackers each need our trial id and full config
of a Tune trial (``service.tune_config.decode`` against the plan) and, for a planned trial,
its trials-table columns (built once with the plan, ``service.plan.PlannedTrial``). Each
Tune trial is decoded once, here, whichever callback asks first. Ray-free.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from service.tune_config import decode

logger = logging.getLogger(__name__)


class TrialIndex:
    """Tune trial -> (our trial id, our trial config); planned id -> row columns."""

    def __init__(
        self,
        planned: Mapping[str, dict[str, Any]],
        columns: Mapping[str, dict[str, Any]] | None = None,
    ) -> None:
        self.planned = planned
        self.columns = columns or {}
        self._ids: dict[str, tuple[str, dict[str, Any]]] = {}  # Tune trial id -> ours

    def __reduce__(self) -> tuple[Any, ...]:
        # Tune pickles callbacks into tuner.pkl: the plan goes, not the cache or the columns.
        return (type(self), (self.planned,))

    def identify(self, trial: Any) -> tuple[str, dict[str, Any]]:
        """Our id and config of ``trial`` (a deep copy, decoded once). A trial that is not one
        of ours is kept under Tune's id and config, with a warning, not a crash."""
        if trial.trial_id not in self._ids:
            try:
                self._ids[trial.trial_id] = decode(self.planned, trial.config, trial.trial_id)
            except (KeyError, TypeError, ValueError) as err:
                logger.warning(
                    "trial %s: config %r is not a planned trial (%s)",
                    trial.trial_id,
                    trial.config,
                    err,
                )
                self._ids[trial.trial_id] = (trial.trial_id, dict(trial.config))
        return self._ids[trial.trial_id]

    def columns_of(self, tid: str) -> dict[str, Any] | None:
        """The planned trial's row columns (None for a trial Optuna sampled, or unknown)."""
        return self.columns.get(tid)

"""Ray's log lines about a storage failure, shortened to one line.

When the results location fills up (or turns read-only), Ray Tune logs its failed experiment
snapshot at ERROR with the whole Python traceback of its syncer. qsweep already stops the sweep
with its own one-line ``error:`` that names the path and how to resume; a 20-line traceback from
Ray's internals above it reads as a crash. This filter keeps Ray's line and the reason
(``[Errno 28] ... No space left on device``) and drops the traceback, for OS errors only: any
other exception in those loggers is left exactly as Ray wrote it.
"""

from __future__ import annotations

import logging

# The Ray loggers that report a failed write to the experiment's storage.
STORAGE_LOGGERS = (
    "ray.tune.execution.experiment_state",
    "ray.train._internal.syncer",
    "ray.train._internal.storage",
)


class OneLineStorageErrors(logging.Filter):
    """Turn a record carrying an ``OSError`` traceback into its message plus the error's text."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, OSError):
            record.msg = f"{record.getMessage().rstrip(': ')}: {exc}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


_FILTER = OneLineStorageErrors()


def shorten_storage_errors() -> None:
    """Install the filter on Ray's storage loggers (idempotent)."""
    for name in STORAGE_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)

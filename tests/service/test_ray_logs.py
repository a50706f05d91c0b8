"""Ray's storage-failure log records: one line with the OS error, no traceback."""

from __future__ import annotations

import errno
import logging
import sys

import pytest

from service.ray_compat import STORAGE_LOGGERS, shorten_storage_errors


def _record_of(logger_name: str, exc: BaseException) -> str:
    """What a handler on ``logger_name`` prints for Ray's ``logger.error(..., exc_info=True)``."""
    logger = logging.getLogger(logger_name)
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(logging.Formatter("%(levelname)s %(message)s").format(record))

    handler = Keep()
    logger.addHandler(handler)
    try:
        try:
            raise exc
        except BaseException:
            logger.error(
                "Saving experiment state to storage at '%s' failed with exception: ",
                "/results/sweep/tune",
                exc_info=sys.exc_info(),
            )
    finally:
        logger.removeHandler(handler)
    return lines[0]


@pytest.mark.parametrize("logger_name", STORAGE_LOGGERS)
def test_a_full_disk_is_one_line_naming_the_path_and_the_os_error(logger_name):
    shorten_storage_errors()
    shorten_storage_errors()  # twice: still one filter
    assert len(logging.getLogger(logger_name).filters) == 1
    full = OSError(errno.ENOSPC, "No space left on device")
    text = _record_of(logger_name, full)
    assert "Traceback" not in text and "\n" not in text
    assert text == (
        "ERROR Saving experiment state to storage at '/results/sweep/tune' failed "
        "with exception: [Errno 28] No space left on device"
    )


def test_other_exceptions_keep_their_traceback():
    shorten_storage_errors()
    text = _record_of(STORAGE_LOGGERS[0], ValueError("a bug in Ray"))
    assert "Traceback" in text and "ValueError: a bug in Ray" in text


def test_without_the_filter_ray_would_print_the_traceback():
    text = _record_of("ray.tune.somewhere_else", OSError(errno.ENOSPC, "No space left on device"))
    assert "Traceback" in text

"""User-facing errors of the service: each prints as one line and exits 2 from the CLI.

Import-light on purpose: the CLI catches these before it knows which command runs."""


class SweepError(RuntimeError):
    """A problem with the results location or the cluster (one line for the user)."""


_LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"  # what str.splitlines() splits on


class SpecError(ValueError):
    """A user mistake in a sweep spec: one line, names the field. Line breaks in the
    message (a key or value from the file can hold any) are escaped to keep it one line."""

    def __init__(self, message: str) -> None:
        super().__init__(str(message).translate({ord(c): repr(c)[1:-1] for c in _LINE_BREAKS}))

"""User-facing errors of the service: each prints as one line and exits 2 from the CLI."""


class SweepError(RuntimeError):
    """A problem with the results location or the cluster (one line for the user)."""

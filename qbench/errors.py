"""User-facing errors: the CLI prints these as one line and exits 2, with no traceback and no record."""


class QbenchError(Exception):
    """A mistake in what the user asked for (bad config, missing data or weights)."""

"""The library's errors. The CLI prints each as one `error: ...` line and exits non-zero."""
from __future__ import annotations


class AblateError(Exception):
    """A mistake or a condition the user can act on. `exit_code` is what the CLI exits with."""

    exit_code = 1


class GridError(AblateError):
    """A grid file that cannot be used: `file: key.path: what was expected`."""

    exit_code = 2

    def __init__(self, file, key: str, message: str):
        self.file, self.key = file, key
        super().__init__(f"{file}: {key + ': ' if key else ''}{message}")


class RunError(AblateError):
    """A run that cannot start or continue: resources the cluster cannot give, bad storage, ..."""


class ResultsError(AblateError):
    """Results that cannot be read: a missing, empty or unreadable run directory."""

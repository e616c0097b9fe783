"""The library's errors. The CLI prints each as one `error: ...` line and exits non-zero."""
from __future__ import annotations

import re


class AblateError(Exception):
    """A mistake or a condition the user can act on. `exit_code` is what the CLI exits with."""

    exit_code = 1


class GridError(AblateError):
    """A grid that cannot be used: `file: key.path: what was expected`. Without a file, the key
    is a command-line option overriding the grid (`--gpus: ...`)."""

    exit_code = 2

    def __init__(self, file, key: str, message: str):
        self.file, self.key = file, key
        text = f"{file}: " if file is not None else ""
        text += f"{key}: {message}" if key else message
        # Keys and values come from the file: a newline or escape code in them must not break the one line.
        if not text.isprintable():
            text = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
        super().__init__(text)


class RunError(AblateError):
    """A run that cannot start or continue: resources the cluster cannot give, bad storage, ..."""


class StorageError(RunError):
    """A run's storage that cannot be written or reached: a full disk, a read-only one, an object
    store that stops answering. Not a trial's failure: the run stops, and runs again when it can."""

    @classmethod
    def at(cls, where: str, error: BaseException | str, doing: str = "write there") -> "StorageError":
        """The error for the storage `where`, saying what failed (its message is the exception's only
        argument, so that it crosses from a Ray worker to the driver intact)."""
        reason = error if isinstance(error, str) else (getattr(error, "strerror", None) or last_line(str(error)))
        reason = re.sub(r"^.*\[errno \d+\] ", "", reason)  # pyarrow's "Error writing bytes ... [errno 28] No space left"
        aws = re.search(r"AWS Error (\w+) during (\w+) operation: ([^;]*)", reason)  # pyarrow's S3 errors
        reason = f"{aws[1]} in {aws[2]}: {aws[3].strip()}" if aws else reason
        again = "reached" if doing == "reach it" else "written"  # `ablate summarize` of a store out of reach writes nothing
        return cls(f"{where}: cannot {doing} ({reason}); what finished is kept: run the same command again once "
                   f"it can be {again}")


class CheckpointError(AblateError):
    """A checkpoint that cannot be written or read as one that loads without running code."""


class UnloadableCheckpoint(CheckpointError):
    """A stored checkpoint that cannot be loaded: damaged, or one that would run code. Every retry
    of its trial would read the same file, so the trial fails at once (run/trial.py)."""


class ResultsError(AblateError):
    """Results that cannot be read: a missing, empty or unreadable run directory."""


class DamagedFile(ResultsError):
    """A file of the run read whole whose bytes make no record or table (cut short by a bad copy):
    a reader may note it and read past; a fault of the read itself is no such thing."""


def last_line(text: str) -> str:
    """The last line of a multi-line message (a traceback, Ray's errors) that says anything."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""

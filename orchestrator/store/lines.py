"""A file that a trial adds lines to while it runs: its log, its epochs, its progress.

    log = Lines(run, run.trial_file(trial_id, "trial.log"))
    log.add(b"a line\n"); log.close()
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

from orchestrator.errors import StorageError

if TYPE_CHECKING:
    from orchestrator.store.rundir import RunDir

PROGRESS_LIMIT = 64 * 1024  # a progress file grown past this starts over with its latest line


class Lines:
    """A file that a trial adds lines to while it runs: its log, its progress.

    On a local path or NFS the file stays open and a line is one append: rewriting the file
    instead costs the filesystem a truncate or a replace, several times an epoch, far more than an
    append (benchmarks/README.md). An object store cannot append: there the object is put again, with every line (`latest_only`
    false, a log) or with the latest alone (a progress file, of which only the last line is read).
    A local file of latest-only lines starts over, written whole, once it passes `limit` bytes."""

    def __init__(self, run: RunDir, path: str, latest_only: bool = False, limit: int = PROGRESS_LIMIT):
        self.run, self.path, self.latest_only, self.limit = run, path, latest_only, limit
        self.file = None  # the open file, on a local path
        self.held: bytes | None = None  # what the object holds, on an object store

    def add(self, data: bytes) -> None:
        try:
            self._add(data)
        except OSError as e:  # a line the disk had no room for is cut short: the next attempt starts its own
            raise StorageError.at(self.run.display(), e) from None

    def _add(self, data: bytes) -> None:
        if not self.run.local:
            if not self.latest_only:
                if self.held is None:  # an earlier attempt's lines
                    self.held = self.run.read_bytes(self.path) or b""
                self.held += data
            self.run.write_bytes(self.path, data if self.latest_only else self.held)
            return
        if self.file is not None and self.latest_only and self.file.tell() + len(data) > self.limit:
            self.replace(data)
            return
        if self.file is None:
            self.run.fs.create_dir(self.path.rsplit("/", 1)[0], recursive=True)
            self.file = open(self.path, "a+b")
            if self._ends_mid_line():  # a crash cut the last line short: this one starts a line of its own
                data = b"\n" + data
        self.file.write(data)
        self.file.flush()

    def replace(self, data: bytes) -> None:
        """The file holding `data` alone, written whole; later lines are added to it."""
        self.close()
        self.run.write_bytes(self.path, data)
        self.held = data

    def _ends_mid_line(self) -> bool:
        if self.file.seek(0, os.SEEK_END) == 0:
            return False
        self.file.seek(-1, os.SEEK_END)
        return self.file.read(1) != b"\n"

    def close(self) -> None:
        file, self.file = self.file, None
        if file is not None:
            try:
                file.close()  # writes what a full disk left of the last line: it fails again
            except OSError as e:
                raise StorageError.at(self.run.display(), e) from None

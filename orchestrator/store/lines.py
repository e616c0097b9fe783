"""A file that a trial adds lines to while it runs: its log, its epochs, its progress.

    log = Lines(run, run.trial_file(trial_id, "trial.log"))
    log.add(line); log.close()
    read_lines(run, run.trial_file(trial_id, "trial.log"))  # all it holds, on any storage

On a local path or NFS it is one file, appended to. An object store cannot append, and a file put
whole at each write costs bytes that grow with the square of a long trial's output. There, while
an attempt writes it, the file is a series of segments beside it, `<file>.segments/<generation>-<n>`,
of which only the last is put again: the next starts once it reaches SEGMENT_SIZE. `close()` puts
the file whole, one object as a finished trial has it, and removes the segments. A reader takes
the segments of the newest generation whose first segment is there, in order; where there are
none, the object. It never reads a torn file:
- segments are put one at a time, a segment for the last time before the next one's first, and S3
  lists and reads what was put before it: a reader may miss lines only at the end;
- `replace` starts a generation numbered past any named, then removes the older ones and the object;
- `close` removes the segments only once the object is put, each generation's first one first;
- a segment listed and gone when read (replaced, or joined into the object) is read again.
"""
from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from orchestrator.errors import RunError, StorageError

if TYPE_CHECKING:
    from orchestrator.store.rundir import RunDir

PROGRESS_LIMIT = 64 * 1024  # a progress file grown past this starts over with its latest line
SEGMENT_SIZE = 64 * 1024  # on an object store, what one write may put again (benchmarks/README.md)
_TRIES = 10  # a reader lists a file's segments again while they are gone before it reads them


def read_lines(run: RunDir, path: str) -> bytes | None:
    """All a Lines file holds, on any storage; None where there is none."""
    if run.local:
        return run.read_bytes(path)
    lines = Lines(run, path)
    return bytes(lines.held) if lines.load() else None


class Lines:
    """A file that a trial adds lines to while it runs (see the module).

    On a local path or NFS the file stays open and a line is one append: rewriting the file
    instead costs the filesystem a truncate or a replace, several times an epoch, far more than an
    append (benchmarks/README.md). On an object store its last segment is put again with every line
    (`latest_only` false: a log, the epochs), or the object with the latest line alone (a progress
    file, of which only the last line is read). A local file of latest-only lines starts over,
    written whole, once it passes `limit` bytes."""

    def __init__(self, run: RunDir, path: str, latest_only: bool = False, limit: int = PROGRESS_LIMIT):
        self.run, self.path, self.latest_only, self.limit = run, path, latest_only, limit
        self.file = None  # the open file, on a local path
        # On an object store: all the file holds once read, its generation being written, the
        # segment being written and where it starts in `held`, and whether close() has segments to join.
        self.held: bytearray | None = None
        self.generation = self.segment = self.segment_start = 0
        self.segmented = False

    def add(self, data: bytes) -> None:
        try:
            self._add(data)
        except OSError as e:  # a line the disk had no room for is cut short: the next attempt starts its own
            raise StorageError.at(self.run.display(), e) from None

    def _add(self, data: bytes) -> None:
        if not self.run.local:
            if self.latest_only:
                self.run.write_bytes(self.path, data)
                return
            if self.held is None:  # an earlier attempt's lines
                self.load()
            self.held += data
            self._put_segment()
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
        self._close_file()
        if self.run.local or self.latest_only:
            self.run.write_bytes(self.path, data)
            self.held = bytearray(data)
            return
        listed = _listed(self.run, self.path)
        self.held, self.generation = bytearray(data), _newest(listed) + 1
        self.segment = self.segment_start = 0
        self._put_segment()
        _remove(self.run, self.path, listed, self.path)

    def load(self) -> bool:
        """On an object store, take up the file where it is: `held` all it holds, the next lines
        going on its newest generation's segments or, where it has none, on the first segment of a
        new generation, after what the object holds. False where there is no such file."""
        for _ in range(_TRIES):
            listed = _listed(self.run, self.path)
            generation, count = _current(listed)
            if count == 0:  # no segments: the object, of a finished attempt or an older ablate
                data = self.run.read_bytes(self.path)
                if data is None and _current(_listed(self.run, self.path))[1]:  # replaced meanwhile
                    continue
                self.held, self.generation = bytearray(data or b""), _newest(listed) + 1
                self.segment = self.segment_start = 0
                return data is not None
            segments = [self.run.read_bytes(_segment_path(self.path, generation, n)) for n in range(count)]
            if None in segments:  # removed since listed: replaced, or joined into the object
                continue
            self.held, self.generation, self.segment = bytearray(b"".join(segments)), generation, count - 1
            self.segment_start = len(self.held) - len(segments[-1])
            self._next_segment_if_full()
            return True
        raise RunError(f"{self.run.uri.partition('://')[0]}://{self.path}: changed {_TRIES} times while it was read")

    def _put_segment(self) -> None:
        self.run.write_bytes(_segment_path(self.path, self.generation, self.segment),
                             bytes(self.held[self.segment_start:]))
        self.segmented = True
        self._next_segment_if_full()

    def _next_segment_if_full(self) -> None:
        if len(self.held) - self.segment_start >= SEGMENT_SIZE:
            self.segment, self.segment_start = self.segment + 1, len(self.held)

    def _ends_mid_line(self) -> bool:
        if self.file.seek(0, os.SEEK_END) == 0:
            return False
        self.file.seek(-1, os.SEEK_END)
        return self.file.read(1) != b"\n"

    def close(self) -> None:
        """The end of writing it: the file closed; on an object store, put whole as one object."""
        if self.segmented:
            self.segmented = False
            self.run.write_bytes(self.path, bytes(self.held))
            _remove(self.run, self.path, _listed(self.run, self.path))
            self.held = None
        self._close_file()

    def _close_file(self) -> None:
        file, self.file = self.file, None
        if file is not None:
            try:
                file.close()  # writes what a full disk left of the last line: it fails again
            except OSError as e:
                raise StorageError.at(self.run.display(), e) from None


def _segment_path(path: str, generation: int, n: int) -> str:
    return f"{path}.segments/{generation:04d}-{n:06d}"


def _listed(run: RunDir, path: str) -> set[tuple[int, int]]:
    """The (generation, n) of each of a file's segments on an object store."""
    return {(int(m[1]), int(m[2])) for name in run.names(f"{path}.segments")
            if (m := re.fullmatch(r"(\d+)-(\d+)", name))}


def _newest(listed: set[tuple[int, int]]) -> int:
    """The newest generation named, whole or not: a new one must not take up what is left of it."""
    return max((generation for generation, _ in listed), default=0)


def _current(listed: set[tuple[int, int]]) -> tuple[int, int]:
    """The generation a reader takes, the newest whose first segment is there, and how many
    segments it has in a row; (0, 0) where none has its first (the object holds the file)."""
    generation = max((g for g, n in listed if n == 0), default=0)
    count = 0
    while (generation, count) in listed:
        count += 1
    return generation, count


def _remove(run: RunDir, path: str, listed: set[tuple[int, int]], *also: str) -> None:
    """Remove these segments of a file, and the paths `also`: each generation's first segment
    before its others, oldest first, so that a reader meanwhile takes the newest generation whole
    or, once none is left whole, the object."""
    firsts = sorted(s for s in listed if s[1] == 0)
    for first in firsts:
        run.remove([_segment_path(path, *first)])
    run.remove([*(_segment_path(path, *s) for s in listed - set(firsts)), *also])

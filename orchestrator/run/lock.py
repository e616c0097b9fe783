"""One driver per run: `ablate run` holds `<run>/lock` while it runs, so that a second `ablate run`
of the same grid and storage (another terminal, a teammate, a Ray job submitted twice) starts no
trial and says who holds the run instead of training every trial a second time.

    with DriverLock(run).acquire(wait=False):   # RunLocked names the holder if a live driver has it
        ...                                     # run the trials

The holder writes who it is (host, pid, since when; its machine and process as processes.py
names them; the lock folder it holds) and beats every HEARTBEAT_S seconds (5). A hold without a
beat for STALE_S seconds (30) is taken over, so a driver killed with SIGKILL (or a lost node) does
not lock the run for good, and `--wait` waits for that. A holder that ran on this machine is
judged at once instead: where its process has ended (or its pid is another process's now), the
run is taken over without waiting, and the new driver lets the dead one's trial workers on this
machine end first (runner.py: Ray ends them within seconds of their driver). Where it lives but
the lock folder is not the one it holds, the run directory is a copy made while it was held:
nobody holds the copy. Holders on other machines keep the heartbeat rule: a process there cannot
be seen from here, and inode numbers of one folder differ between some network filesystems'
clients. `ABLATE_LOCK_HEARTBEAT_S` and `ABLATE_LOCK_STALE_S` change both times (tests shorten them).

Ages are measured with the storage's own clock, never by comparing two hosts' clocks: on S3 the
server's `Date` against the lock's `LastModified`; on a filesystem the mtime of a file this driver
has just touched against the lock's mtime (an NFS server stamps both).

How a lock is taken, so that of drivers racing for it exactly one wins:

- **S3** has no rename and no exclusive create, but conditional writes (2024): the lock is one
  object, created with `If-None-Match: *` (fails if it exists) and beaten, released and taken over
  with `If-Match: <the ETag last read>` (fails if anyone wrote in between). Each beat changes the
  body (a counter), hence the ETag, so a contender that read a stale lock cannot replace one that
  has since beaten. pyarrow's S3 filesystem cannot send these headers; boto3 can. An
  S3-compatible store that ignores them (check yours) cannot give this guarantee.
- **A local path or NFS**: the lock is a folder of generations `lock/1`, `lock/2`, ...; the
  highest is the hold. The first driver creates `lock/1`; whoever finds generation n released or
  stale creates n+1, with `link(2)` of a file it has already written: an exclusive create that is
  atomic on NFS too (and shows the holder's record complete, never half-written). Two contenders
  for a stale n both try n+1 and one gets EEXIST. Generations are never removed (one small file per
  hold), so a contender that read n and was delayed while others took the run finds n+1 taken too: that is
  why this is safer than "rename the stale lock away, then create anew", where a contender that
  judged the lock stale a moment too late would rename away the lock the winner has just created,
  and both would hold the run. The invariant: a driver holds the run while its generation is the
  highest one and holds its token. It checks that right after its link (where generations were
  removed, by hand or by an older ablate, a link can succeed below the hold: it then removes its
  link and has lost) and at every beat. OS file locks (fcntl/flock) were not chosen: on NFSv3
  they depend on lockd (often mounted `nolock`), and S3 needs the protocol above anyway; one
  takeover rule for both.

A holder that misses beats for STALE_S (a suspended laptop, a storage outage) can have its run
taken over while it still lives. Each beat checks that the lock is still its own; when it is not,
the holder stops its trials as Ctrl-C would and exits with an error naming the new holder. A
holder whose beats have all failed for STALE_S less a beat (a partition, expired credentials)
cannot see a takeover: it stops its trials the same way, before its hold can be judged stale. It
finds out when a beat's call fails, so a call that hangs (a hard NFS mount, botocore's own timeouts
and retries) delays that.
"""
from __future__ import annotations

import _thread
import email.utils
import errno
import json
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

from orchestrator.errors import RunError, StorageError
from orchestrator.run.processes import alive, this_process
from orchestrator.store.s3 import Bucket
from orchestrator.store.rundir import RunDir, now

HEARTBEAT_S = float(os.environ.get("ABLATE_LOCK_HEARTBEAT_S", "5"))
STALE_S = float(os.environ.get("ABLATE_LOCK_STALE_S", "30"))


@dataclass(frozen=True)
class Holder:
    """Who holds a run, from the lock's record."""

    host: str
    pid: int
    since: datetime
    age: float  # seconds since the holder's last beat, by the storage's clock
    released: bool
    process: dict  # processes.this_process() of the holder; {} in an older ablate's lock
    place: str | None  # the lock folder (or S3 key) it holds, where the record says

    def __str__(self) -> str:
        return (f"pid {self.pid} on {self.host} since {self.since:%Y-%m-%d %H:%M:%S} UTC "
                f"(heartbeat {self.age:.0f} s ago)")


class UnreadableLock(RunError):
    """A lock whose holder cannot be known: a damaged record, a file where a folder should be."""


class RunLocked(RunError):
    """Another live driver runs this run directory."""

    def __init__(self, run: RunDir, holder: Holder, stale_s: float):
        self.holder = holder
        super().__init__(f"{run.display()} is being run by {holder}; run again with --wait to wait for it "
                         f"(a driver without a heartbeat for {stale_s:g} s is taken over)")


def _holder(data: bytes, age: float, where: str, released: bool = False) -> Holder:
    """The holder a lock record names. A record is written whole, so a damaged one is a bad copy
    of the run directory: who held it cannot be known, and nothing is taken over on a guess."""
    try:
        record = json.loads(data)
        process = {"machine": record.get("machine"), "pid": record["pid"], "start": record.get("start")}
        return Holder(record["host"], record["pid"], datetime.fromisoformat(record["since"]), age,
                      released or record["released"], process, record.get("place"))
    except (ValueError, KeyError, TypeError) as e:
        raise UnreadableLock(f"{where}: unreadable lock record ({type(e).__name__}: {e}); if no `ablate run` is "
                             "running this run, delete it and run again") from None


class DriverLock:
    """The hold of one driver on one run directory; a context manager once acquired."""

    def __init__(self, run: RunDir, *, heartbeat_s: float | None = None, stale_s: float | None = None,
                 on_lost=None):
        self.run = run
        self.heartbeat_s = HEARTBEAT_S if heartbeat_s is None else heartbeat_s
        self.stale_s = STALE_S if stale_s is None else stale_s
        # Stopping the trials of a driver that lost its hold: what Ctrl-C does (Tune stops cleanly).
        self.on_lost = on_lost or _thread.interrupt_main
        self.token, self.since = uuid.uuid4().hex, now()  # since: when it was taken
        self.store = _FileStore(run, self.token) if run.local else _S3Store(run, self.token)
        self.lost = False
        self.previous: Holder | None = None  # a holder taken over that may have left trial workers behind
        self.unreachable_s = None  # how long the storage was out of reach, where that stopped the driver
        self._version = None
        self._stop = threading.Event()
        self._beating = threading.Thread(target=self._beat, name="ablate-lock-heartbeat", daemon=True)

    def acquire(self, wait: bool = False, notify=lambda message: None) -> "DriverLock":
        """Take the run, or raise RunLocked naming its live holder (with `wait`: wait until it is free)."""
        told = False
        try:
            while True:
                holder, version = self.store.read()
                taking = self._free(holder)
                if taking is not None:
                    self.since = now()
                    self._version = self.store.create(self._record(), replacing=version)
                    if self._version is not None:
                        message, self.previous = taking
                        if message:
                            notify(message)
                        break
                    continue  # another driver won the race: read who it is
                if not wait:
                    raise RunLocked(self.run, holder, self.stale_s)
                if not told:
                    notify(f"{self.run.display()} is being run by {holder}; waiting for it")
                    told = True
                time.sleep(self.heartbeat_s)
        except OSError as e:  # the first write to a run's storage: where it cannot be written, say so
            raise StorageError.at(self.run.display(), e) from None
        finally:
            self.store.close()
        self._beating.start()
        return self

    def _free(self, holder: Holder | None) -> tuple[str, Holder | None] | None:
        """None where `holder` may still run the run; else what to tell the user on taking it (or
        ""), and the holder whose trial workers may outlive it."""
        if holder is None or holder.released:
            return "", None
        if holder.age > self.stale_s:
            return f"{self.run.display()}: taking over from {holder}, whose heartbeat stopped", holder
        running = alive(holder.process)
        if running is False:
            return (f"{self.run.display()}: its driver, pid {holder.pid} on {holder.host}, has ended; "
                    "taking the run over"), holder
        if running and holder.place is not None and holder.place != self.store.place():
            return (f"{self.run.display()}: its lock is a copy of one that pid {holder.pid} on {holder.host} "
                    "holds elsewhere (this run directory was copied while it ran); taking the run"), None
        return None

    def holder(self) -> Holder | None:
        try:
            return self.store.read()[0]
        finally:
            self.store.close()

    def driven(self) -> bool | None:
        """Whether a driver may be running the run now (as `acquire` judges it: not released, not
        stale, its process not ended on this machine); None where no driver ever held it here (a
        copy of its results). `ablate status` asks, to say no trial of a run nobody drives is
        running, however recently it reported. Asks without writing where no lock folder is."""
        if self.run.local and not os.path.isdir(self.store.folder):
            return None
        holder = self.holder()
        return None if holder is None else self._free(holder) is None

    def _record(self, beats: int = 0, released: bool = False) -> bytes:
        me = this_process()
        return json.dumps({"token": self.token, "host": socket.gethostname(), "pid": os.getpid(),
                           "machine": me["machine"], "start": me["start"], "place": self.store.place(),
                           "since": self.since.isoformat(), "beats": beats, "released": released}).encode()

    def _beat(self) -> None:
        beats, beaten = 0, time.monotonic()  # beaten: when the last beat that reached the storage began
        while not self._stop.wait(self.heartbeat_s):
            beats += 1  # a new body each beat, hence a new ETag on S3 (see the module docstring)
            started = time.monotonic()
            try:
                version = self.store.beat(self._version, self._record(beats))
            except Exception:  # a storage hiccup: beat again, unless the hold may go stale before the next beat
                unreachable = time.monotonic() - beaten
                if unreachable < self.stale_s - self.heartbeat_s:
                    continue
                self.unreachable_s, version = unreachable, None
            if version is None:
                self.lost = True
                self.on_lost()
                return
            self._version, beaten = version, started

    def release(self) -> None:
        self._stop.set()
        self._beating.join()
        if not self.lost:
            try:
                self.store.release(self._version, self._record(released=True))
            except Exception:  # storage gone: the hold goes stale after STALE_S instead
                pass

    def __enter__(self) -> "DriverLock":
        return self

    def __exit__(self, kind, error, tb) -> None:
        self.release()
        if self.lost and (kind is None or issubclass(kind, KeyboardInterrupt)):
            if self.unreachable_s is not None:
                raise RunError(f"{self.run.display()}: this driver could not reach its storage for "
                               f"{self.unreachable_s:.0f} s and stopped its trials (a driver without a heartbeat "
                               f"for {self.stale_s:g} s is taken over)") from None
            holder = self.holder()
            raise RunError(f"{self.run.display()}: taken over by {holder or 'another driver'} after this driver's "
                           f"heartbeat had stopped for {self.stale_s:g} s; stopped its trials") from None


# -- a local path or NFS: generations created with link(2) ------------------------------------------
# A file another client removed is ESTALE on NFS where it would be ENOENT on a local disk.
_GONE = (errno.ENOENT, errno.ESTALE)


class _FileStore:
    def __init__(self, run: RunDir, token: str):
        self.run, self.folder, self.token = run, os.path.join(run.path, "lock"), token
        self.draft = os.path.join(self.folder, f".{token}")  # our record before it is linked, and our clock

    def _generation(self, n: int) -> str:
        return os.path.join(self.folder, str(n))

    def _made(self) -> None:
        """The lock folder, made where there is none. A file in its place is the lock of a run on
        S3 (one object), copied here with the run: a holder this protocol cannot judge."""
        if os.path.isfile(self.folder):
            raise UnreadableLock(f"{self.run.display('lock')}: expected the folder of a run's lock on a local path, "
                                 "found a file (a run's lock on S3, copied here?); if no `ablate run` is running this "
                                 "run, delete it and run again")
        os.makedirs(self.folder, exist_ok=True)

    def place(self) -> str:
        """The lock folder, as its inode: a copy of the run directory has a folder of its own."""
        self._made()
        return f"inode {os.stat(self.folder).st_ino}"

    def read(self) -> tuple[Holder | None, int | None]:
        """The holder and generation of the hold, or (None, None) where nobody ever held the run."""
        self._made()
        with open(self.draft, "ab"):  # touched now: its mtime is the storage's "now"
            os.utime(self.draft)
        storage_now = os.stat(self.draft).st_mtime
        while True:
            generations = [int(name) for name in os.listdir(self.folder) if name.isdigit()]
            if not generations:
                return None, None
            n = max(generations)
            try:
                # open + fstat, not stat: NFS's close-to-open consistency refreshes the mtime on open
                with open(self._generation(n), "rb") as f:
                    data, mtime = f.read(), os.fstat(f.fileno()).st_mtime
            except OSError as e:
                if e.errno not in _GONE:
                    raise
                continue  # removed just now: look again
            return _holder(data, storage_now - mtime, self.run.display("lock", str(n)), released=mtime == 0), n

    def create(self, record: bytes, replacing: int | None) -> int | None:
        """Link our record as the next generation; None where another driver got there first."""
        with open(self.draft, "wb") as f:
            f.write(record)
            f.flush()
            os.fsync(f.fileno())
        n = (replacing or 0) + 1
        try:
            os.link(self.draft, self._generation(n))
        except FileExistsError:
            # On NFS a retransmitted link can report EEXIST for a link that succeeded: link(2)'s advice
            # is to check the link count of the file that was linked.
            if os.stat(self.draft).st_nlink != 2:
                return None
        if self._holds(n):
            return n
        try:  # a higher generation exists (see the module docstring): ours must not stay as a hold
            if os.path.samefile(self.draft, self._generation(n)):
                os.unlink(self._generation(n))
        except OSError as e:
            if e.errno not in _GONE:
                raise
        return None

    def _holds(self, n: int) -> bool:
        """Whether generation n is the hold (the highest) and ours."""
        if max((int(name) for name in os.listdir(self.folder) if name.isdigit()), default=0) != n:
            return False
        try:
            with open(self._generation(n), "rb") as f:
                return json.loads(f.read())["token"] == self.token
        except OSError as e:
            if e.errno in _GONE:
                return False
            raise

    def beat(self, n: int, record: bytes) -> int | None:
        if not self._holds(n):
            return None
        try:
            os.utime(self._generation(n))
        except OSError as e:
            if e.errno in _GONE:
                return None
            raise
        return n

    def release(self, n: int, record: bytes) -> None:
        if self._holds(n):
            os.utime(self._generation(n), (0, 0))  # mtime 0: released, free to the next driver at once

    def close(self) -> None:
        try:
            os.unlink(self.draft)
        except OSError:
            pass


# -- S3: one object, written only with conditional PUTs ---------------------------------------------
class _S3Store:
    def __init__(self, run: RunDir, token: str):
        self.run, self.token = run, token
        self.bucket = Bucket(run)
        self.key = self.bucket.key(run.child("lock"))  # as the run's files are: `s3://b/a%20b` is `a b/...`

    def _call(self, method, **kwargs):
        return self.bucket.call(method, self.key, **kwargs)

    def place(self) -> str:
        # The key alone: a bucket may have other names (access point aliases).
        return f"key {self.key}"

    def read(self) -> tuple[Holder | None, str | None]:
        response = self._call("get_object")
        if response is None:
            return None, None
        storage_now = email.utils.parsedate_to_datetime(response["ResponseMetadata"]["HTTPHeaders"]["date"])
        age = (storage_now - response["LastModified"].astimezone(timezone.utc)).total_seconds()
        return _holder(response["Body"].read(), age, self.run.display("lock")), response["ETag"]

    def _put(self, record: bytes, **condition) -> str | None:
        """A conditional PUT of our record: its ETag, or None where another driver wrote first."""
        response = self._call("put_object", Body=record, **condition)
        if response is not None:
            return response["ETag"]
        # botocore retries a PUT whose response was lost, and where the first one was carried out
        # the retry fails its condition: the lock holding our token is that first PUT's doing.
        response = self._call("get_object")
        if response is not None and json.loads(response["Body"].read())["token"] == self.token:
            return response["ETag"]
        return None

    def create(self, record: bytes, replacing: str | None) -> str | None:
        return self._put(record, **{"IfMatch": replacing} if replacing else {"IfNoneMatch": "*"})

    def beat(self, etag: str, record: bytes) -> str | None:
        return self._put(record, IfMatch=etag)

    def release(self, etag: str, record: bytes) -> None:
        self._call("put_object", Body=record, IfMatch=etag)

    def close(self) -> None:
        pass

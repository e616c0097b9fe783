"""Which machine and process this is, so that a record naming a process (a run's lock, a trial's
progress) says unmistakably which one it was, and this machine can tell whether it still lives.

    me = this_process()        # {"machine": "...", "pid": 1234, "start": 5678}
    alive(me)                  # True; False once it has ended; None where it ran on another machine

A hostname is not a machine: containers and cloud images share them. A machine here is one pid
space of one boot of one kernel: the machine id (/etc/machine-id), the boot id (a new one at
every boot, so a reboot is another machine life), and the pid namespace (two containers of one
host share the kernel and often an image's machine id, not their pids). A process is its pid and
its start time since boot, so a pid the kernel has since given to another process is not it.
Linux only: elsewhere the machine is unknown and nothing is judged from it.
"""
from __future__ import annotations

import functools
import os

_MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


@functools.lru_cache(maxsize=None)
def machine() -> str | None:
    """This machine life's id, or None where it cannot be told (not Linux)."""
    boot = _read("/proc/sys/kernel/random/boot_id")
    try:
        pids = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    if not boot:
        return None
    installed = next(filter(None, map(_read, _MACHINE_ID_FILES)), "")
    return f"{installed}/{boot}/{pids}"


def _stat(pid: int) -> tuple[str, int] | None:
    """A process's state letter and start time (clock ticks since boot), or None where it has ended."""
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    fields = text.rsplit(")", 1)[-1].split()  # after the command name, which may hold spaces
    return fields[0], int(fields[19])


def this_process() -> dict:
    """This process, as a record names it."""
    stat = _stat(os.getpid())
    return {"machine": machine(), "pid": os.getpid(), "start": stat[1] if stat else None}


def alive(process: dict) -> bool | None:
    """Whether the process a record names (this_process()) still runs; None where that cannot be
    told here: it ran on another machine, or the record is an older ablate's."""
    if not process.get("machine") or process.get("machine") != machine() or process.get("start") is None:
        return None
    stat = _stat(process["pid"])
    # A zombie has ended and only waits for its parent to read its exit status.
    return stat is not None and stat[0] not in "ZX" and stat[1] == process["start"]

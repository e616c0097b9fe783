"""Runs a trial's command so that it cannot outlive its trial.

    python -I -S workloads/script/launch.py PARENT_PID PROGRAM ARG...

train.py starts this as the leader of a new process group, from the Ray worker that runs the
trial (PARENT_PID). It asks Linux for a SIGTERM when that worker dies (a killed driver, Ctrl-C,
a lost node, Ray ending the actor), runs the command as its child in the same group, and on that
SIGTERM kills the whole group: the command and whatever it started (data-loading workers, the
children of a shell). PR_SET_PDEATHSIG alone would reach only its direct child.

A worker that Ray kills (a trial ended for hanging, run/hangs.py) has its children killed with
SIGKILL first, which no handler sees: so a guard, a second child of this one in the group, asks
Linux for a SIGTERM when this process ends, however it ends, and then kills the group.

What the command starts in a session of its own (a daemon, `start_new_session=True`) leaves the
group: every process of the command has the trial's token in its environment (TOKEN, set by
train.py), and each of those kills ends those too, as does the end of the command (end_processes).

It exits as the command did, with its exit code or killed by the same signal, so the trial sees
what happened to the command itself. Standard library only, run without site-packages (-I -S):
it adds milliseconds to a trial's start, and it forks before any thread exists, which
`subprocess`'s `preexec_fn` in a threaded Ray worker cannot promise.
"""
import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
TOKEN = "ABLATE_PROCESSES"  # in the environment of each process of a trial's command: its attempt's token


def end_processes(token: str | None) -> None:
    """SIGKILL to every process but this one whose environment holds `token`, in any session: what
    a command started in a session of its own has left its process group. (Jenkins ends a build's
    processes so, by the BUILD_ID in their environment.) Where there is no /proc, nothing."""
    if token is None or not os.path.isdir("/proc"):
        return
    mark = f"{TOKEN}={token}".encode()
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if mark in f.read().split(b"\0"):
                    os.kill(int(name), signal.SIGKILL)
        except OSError:  # gone meanwhile, or another user's
            continue


def end_all() -> None:
    """This process group and every process of the command outside it."""
    end_processes(os.environ.get(TOKEN))
    os.killpg(0, signal.SIGKILL)


def end_group_when_parent_ends(parent: int) -> bool:
    """Kill this process group, and what the command started outside it, as soon as `parent` (this
    process's parent) ends; False where Linux cannot be asked to tell (the trial still kills them
    when it stops or fails)."""
    signal.signal(signal.SIGTERM, lambda *_: end_all())
    try:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except AttributeError:  # not Linux
        return False
    if os.getppid() != parent:  # it ended before the request above took effect
        end_all()
    return True


def guard(launcher: int) -> None:
    """The guard's life: nothing, until the launcher ends."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # not the trial's output pipe: the trial reads it until every writer is gone
        os.dup2(devnull, fd)
    end_group_when_parent_ends(launcher)
    while True:
        signal.pause()


def main(parent: int, argv: list[str]) -> None:
    if end_group_when_parent_ends(parent) and os.fork() == 0:
        guard(os.getppid())

    child = os.fork()
    if child == 0:
        try:
            os.execvp(argv[0], argv)
        except OSError as e:
            os.write(2, f"ablate: cannot run {argv[0]}: {e.strerror}\n".encode())
            os._exit(127)  # what a shell exits with for a command it cannot find
    _, status = os.waitpid(child, 0)
    end_processes(os.environ.get(TOKEN))  # what it left running, outside its group too
    if os.WIFSIGNALED(status):
        killed_by = os.WTERMSIG(status)
        if killed_by not in (signal.SIGKILL, signal.SIGSTOP):  # the two whose handling cannot change
            signal.signal(killed_by, signal.SIG_DFL)
        os.kill(os.getpid(), killed_by)
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:])

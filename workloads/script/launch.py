"""Runs a trial's command so that it cannot outlive its trial.

    python -I -S workloads/script/launch.py PARENT_PID PROGRAM ARG...

train.py starts this as the leader of a new process group, from the Ray worker that runs the
trial (PARENT_PID). It asks Linux for a SIGTERM when that worker dies (a killed driver, Ctrl-C,
a lost node, Ray ending the actor), runs the command as its child in the same group, and on that
SIGTERM kills the whole group: the command and whatever it started (data-loading workers, the
children of a shell). PR_SET_PDEATHSIG alone would reach only its direct child.

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


def main(parent: int, argv: list[str]) -> None:
    signal.signal(signal.SIGTERM, lambda *_: os.killpg(0, signal.SIGKILL))
    try:
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except AttributeError:  # not Linux: the trial still kills the group when it stops or fails
        pass
    if os.getppid() != parent:  # the worker died before the request above took effect
        os.killpg(0, signal.SIGKILL)

    child = os.fork()
    if child == 0:
        try:
            os.execvp(argv[0], argv)
        except OSError as e:
            os.write(2, f"ablate: cannot run {argv[0]}: {e.strerror}\n".encode())
            os._exit(127)  # what a shell exits with for a command it cannot find
    _, status = os.waitpid(child, 0)
    if os.WIFSIGNALED(status):
        killed_by = os.WTERMSIG(status)
        if killed_by not in (signal.SIGKILL, signal.SIGSTOP):  # the two whose handling cannot change
            signal.signal(killed_by, signal.SIG_DFL)
        os.kill(os.getpid(), killed_by)
    sys.exit(os.waitstatus_to_exitcode(status))


if __name__ == "__main__":
    main(int(sys.argv[1]), sys.argv[2:])

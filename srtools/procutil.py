"""Process and pipe helpers shared by the commands that supervise children (sr-push, sr-live, sr-hls)."""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import signal
from typing import Callable, Iterator

_PR_SET_PDEATHSIG = 1  # linux/prctl.h
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


@contextlib.contextmanager
def signals_ignored() -> Iterator[None]:
    """SIGINT and SIGTERM ignored while children are being stopped: a second Ctrl-C must not cut the
    stopping short and leave them running (we are exiting on the first one anyway)."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def enlarge_pipe(fd: int, size: int) -> bool:
    """Raise the buffer of the pipe ``fd`` to ``size`` bytes; False where the kernel refuses (above
    /proc/sys/fs/pipe-max-size for this user), which leaves the default."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, size)
    except OSError:
        return False
    return True


def die_with_parent(signum: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A ``preexec_fn`` for :class:`subprocess.Popen`: the child is sent ``signum`` when its parent dies,
    however it dies (Linux ``PR_SET_PDEATHSIG``), so that a supervisor killed with SIGKILL leaves no
    child running. None where prctl is missing.

    The signal comes when the *thread* that started the child ends: a child that must outlive the
    thread starting it is started from the main thread (or without this).
    """
    if _prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:  # in the child, between fork and exec: no allocation, no locks
        _prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signum)

    return preexec

"""Process and pipe helpers shared by the commands that supervise children (sr-push, sr-live, sr-hls)."""

from __future__ import annotations

import contextlib
import fcntl
import signal
from typing import Iterator


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

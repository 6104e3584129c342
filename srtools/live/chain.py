"""Stages of a live chain as real processes: started in order, watched together, stopped together.

A :class:`Chain` owns a private temporary directory for its named FIFOs (mode 0600, removed at the
end) and a list of stages, each a process in its own process group so that stopping a stage also
stops the ffmpeg processes it started. The first stage to fail stops the others; :meth:`Chain.stop`
sends SIGTERM to every stage (the last started first, so readers do not see a writer vanish
before they are told to end), waits a grace period and kills what is left. Nothing is left behind
when the supervisor itself is interrupted, since it stops the chain on its way out.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Sequence

from ..errors import ExitStatus, SrError

log = logging.getLogger("srtools.chain")


class StageFailed(SrError):
    """A stage of the chain exited with an error; the message names it."""

    exit_status = ExitStatus.STAGE_FAILED


def srtools_command(name: str, *args: object) -> list[str]:
    """argv running srtools command ``name`` with this interpreter (the installed package or a checkout)."""
    return [sys.executable, "-m", "srtools", name, *map(str, args)]


@dataclasses.dataclass
class Stage:
    name: str
    process: subprocess.Popen

    @property
    def returncode(self) -> int | None:
        return self.process.poll()


class Chain:
    """Processes wired by pipes and FIFOs; a context manager that always stops them."""

    def __init__(self, prefix: str = "sr-live-"):
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.stages: list[Stage] = []

    def __enter__(self) -> Chain:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def fifo(self, name: str) -> Path:
        path = self.dir / name
        os.mkfifo(path, 0o600)
        return path

    def start(self, name: str, argv: Sequence[str], stdin: int | IO | None = subprocess.DEVNULL,
              stdout: int | IO | None = subprocess.DEVNULL) -> Stage:
        """Start a stage; its stderr is ours (every srtools command prefixes its lines with its name)."""
        log.debug("starting %s: %s", name, " ".join(argv))
        process = subprocess.Popen(list(argv), stdin=stdin, stdout=stdout, start_new_session=True)
        stage = Stage(name, process)
        self.stages.append(stage)
        return stage

    def check(self) -> None:
        """Raise :class:`StageFailed` for the first stage that exited with an error."""
        for stage in self.stages:
            code = stage.returncode
            if code not in (None, 0):
                raise StageFailed(f"stage {stage.name} failed (exit status {_describe(code)})")

    def wait(self, names: Sequence[str] | None = None, poll: float = 0.2) -> None:
        """Wait until the stages named (default: all) have exited; a failing stage raises at once."""
        waited = [s for s in self.stages if names is None or s.name in names]
        while any(s.returncode is None for s in waited):
            self.check()
            time.sleep(poll)
        self.check()

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM every running stage's process group (newest first), SIGKILL after ``grace`` seconds,
        and remove the FIFO directory."""
        running = [s for s in reversed(self.stages) if s.returncode is None]
        for stage in running:
            _signal_group(stage.process, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for stage in running:
            try:
                stage.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("stage %s did not stop within %.0f s: killed", stage.name, grace)
        for stage in self.stages:  # also the children of stages that already exited
            _signal_group(stage.process, signal.SIGKILL)
            stage.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def _signal_group(process: subprocess.Popen, signum: int) -> None:
    try:
        os.killpg(process.pid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _describe(code: int) -> str:
    return f"{code}, killed by {signal.Signals(-code).name}" if code < 0 else str(code)


def port_listening(port: int) -> bool:
    """Whether some local socket listens on TCP ``port`` (read from /proc, without connecting: an
    RTMP listener accepts a single connection)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                next(handle)
                for line in handle:
                    fields = line.split()
                    if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                        return True
        except FileNotFoundError:
            continue
    return False

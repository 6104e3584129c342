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
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Callable, Sequence
from urllib.parse import urlsplit

from ..errors import ExitStatus, SrError
from ..ffmpeg import GLOBAL_ARGS, ffmpeg_binary
from ..hls import Encoding
from ..procutil import signals_ignored

log = logging.getLogger("srtools.chain")


class StageFailed(SrError):
    """A stage of the chain exited with an error; the message names it."""

    exit_status = ExitStatus.STAGE_FAILED


def srtools_command(name: str, *args: object) -> list[str]:
    """argv running srtools command ``name`` with this interpreter (the installed package or a checkout)."""
    return [sys.executable, "-m", "srtools", name, *map(str, args)]


class StageProcess:
    """A started stage; a thread records the moment it exits, so that of several stages failing
    together the first one (the cause; the others failed on its broken pipe) is blamed.

    :attr:`returncode` stays None until that thread has recorded the exit, even once the process has
    been waited for elsewhere: wait with :meth:`wait`, not ``process.wait()``, to read it after."""

    def __init__(self, name: str, process: subprocess.Popen):
        self.name, self.process = name, process
        self.exited_at: float | None = None
        self._reaped = threading.Event()
        threading.Thread(target=self._reap, name=f"reap-{name}", daemon=True).start()

    def _reap(self) -> None:
        self.process.wait()
        self.exited_at = time.monotonic()
        self._reaped.set()

    @property
    def returncode(self) -> int | None:
        return self.process.returncode if self.exited_at is not None else None

    def wait(self) -> int:
        """Wait until the stage has exited and its exit is recorded; its exit status."""
        self._reaped.wait()
        return self.process.returncode


class Chain:
    """Processes wired by pipes and FIFOs; a context manager that always stops them."""

    def __init__(self, prefix: str = "sr-live-"):
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        self.stages: list[StageProcess] = []

    def __enter__(self) -> Chain:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def fifo(self, name: str) -> Path:
        path = self.dir / name
        os.mkfifo(path, 0o600)
        return path

    def start(self, name: str, argv: Sequence[str], stdin: int | IO | None = subprocess.DEVNULL,
              stdout: int | IO | None = subprocess.DEVNULL, stderr: int | IO | None = None) -> StageProcess:
        """Start a stage; its stderr is ours unless ``stderr`` says otherwise (every srtools command prefixes
        its lines with its name)."""
        log.debug("starting %s: %s", name, " ".join(argv))
        process = subprocess.Popen(list(argv), stdin=stdin, stdout=stdout, stderr=stderr, start_new_session=True)
        stage = StageProcess(name, process)
        self.stages.append(stage)
        return stage

    def check(self, tolerate: Sequence[str] = ()) -> None:
        """Raise :class:`StageFailed` when a stage not in ``tolerate`` exited with an error, naming the
        cause: a stage killed by a signal before any that exited with an error status (those are
        usually its neighbours, failing on the broken pipe), then the first to exit (a tolerated
        one too)."""
        failed = [s for s in self.stages if s.returncode not in (None, 0)]
        if any(s.name not in tolerate for s in failed):
            first = min(failed, key=lambda s: (s.returncode > 0, s.exited_at))
            raise StageFailed(f"stage {first.name} failed (exit status {_describe(first.returncode)})")

    def wait(self, names: Sequence[str] | None = None, tolerate: Sequence[str] = (), poll: float = 0.2) -> None:
        """Wait until the stages named (default: all) have exited; a failing stage raises at once
        unless it is in ``tolerate``."""
        waited = [s for s in self.stages if names is None or s.name in names]
        while any(s.returncode is None for s in waited):
            self.check(tolerate)
            time.sleep(poll)
        self.check(tolerate)

    def forget(self, names: Sequence[str]) -> None:
        """Drop stages that have exited from the chain (a session's stages, before the next one)."""
        self.stages = [s for s in self.stages if s.name not in names or s.returncode is None]

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM every running stage's process group (newest first), SIGKILL after ``grace`` seconds,
        and remove the FIFO directory; a second SIGINT or SIGTERM meanwhile cannot cut this short."""
        with signals_ignored():
            self._stop(grace)

    def _stop(self, grace: float) -> None:
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


@dataclasses.dataclass
class ServerConfig:
    """The server side of the live system: ingest -> sr-serve --realtime -> sr-tcsr -> sr-hls, and the
    ingest's low-res video, copied, to sr-hls's LR rendition.

    Attributes:
        source: the RTMP URL: listened on (ffmpeg's listen mode, one publisher at a time) or, with
            ``pull``, played from a server such as nginx-rtmp.
        spool: the server's model spool (sr-serve and sr-tcsr hot-swap from it).
        hls_dir: sr-hls --out.
        fps: the constant frame rate the ingest normalises to (frame n is at n / fps).
        tcsr_budget_ms: sr-tcsr's per-frame budget; 0 leaves TCSR out.
        serve / receive: HOST:PORT of sr-hls --serve and of sr-receive (None: not run).
        token_file: sr-receive's --token-file.
        threads: sr-serve's and sr-tcsr's --threads (they share the cores with each other and ffmpeg).
        stats_dir: where sr-serve and sr-tcsr publish their --stats (session by session) and sr-receive its
            own, for sr-hls's /stats.json and /metrics (None: a private directory, when serving).
        frame_logs: sr-serve and sr-tcsr also log every frame into ``stats_dir`` (--frame-log).
        name: the stream's name in sr-hls's statistics (None: the RTMP URL's stream key).
    """

    source: str
    spool: Path
    hls_dir: Path
    pull: bool = False
    scale: int = 2
    fps: float = 25.0
    segment: float = Encoding.segment
    list_size: int = Encoding.list_size
    tcsr_budget_ms: float = 15.0
    audio: bool = True
    serve: str | None = None
    receive: str | None = None
    token_file: str | None = None
    threads: int = 1
    stats_dir: Path | None = None
    frame_logs: bool = False
    name: str | None = None

    @property
    def stream_name(self) -> str:
        return self.name or urlsplit(self.source).path.rstrip("/").rpartition("/")[2] or "default"


def ingest_args(config: ServerConfig, audio_out: Path | None, lr_out: Path | None = None) -> list[str]:
    """ffmpeg: the RTMP stream -> Y4M at a constant ``fps`` on stdout, its audio copied as ADTS AAC to
    ``audio_out``, its video copied as NUT to ``lr_out`` (sr-hls's LR rendition)."""
    args = [ffmpeg_binary(), *GLOBAL_ARGS, "-y"]
    if not config.pull:
        args += ["-listen", "1"]
    # round=down: a frame counts from the slot it starts in, so that a source at --fps comes out frame for
    # frame (round=near adds one at the end of a file whose audio outlasts its video by a little).
    args += ["-i", config.source, "-map", "0:v:0", "-vf", f"fps={config.fps:g}:round=down,format=yuv420p",
             "-f", "yuv4mpegpipe", "pipe:1"]
    if audio_out is not None:
        args += ["-map", "0:a:0", "-c:a", "copy", "-f", "adts", str(audio_out)]
    if lr_out is not None:
        args += ["-map", "0:v:0", "-c:v", "copy", "-f", "nut", str(lr_out)]
    return args


def rtmp_port(url: str) -> int:
    return urlsplit(url).port or 1935


class ServerChain:
    """Runs :class:`ServerConfig`'s chain: long-lived sr-hls (and sr-receive), and per publish session
    the ingest, sr-serve and sr-tcsr; see sr-live(1)."""

    def __init__(self, config: ServerConfig, chain: Chain):
        self.config, self.chain = config, chain
        self.video_fifo = chain.fifo("video.y4m")
        self.audio_fifo = chain.fifo("audio.aac") if config.audio else None
        self.lr_fifo = chain.fifo("lr.nut")
        self.stats_dir = config.stats_dir
        if self.stats_dir is None and config.serve:
            self.stats_dir = chain.dir / "stats"
            self.stats_dir.mkdir()
        self.sessions = 0

    def start_services(self) -> dict:
        """Start sr-receive and sr-hls; returns their announced URLs."""
        c, urls = self.config, {}
        stats = ["--stats-dir", self.stats_dir] if self.stats_dir else []
        if c.receive:
            stage = self.chain.start("sr-receive", srtools_command(
                "sr-receive", "--spool", c.spool, "--listen", c.receive,
                *(["--token-file", c.token_file] if c.token_file else []),
                *(["--stats", self.stats_dir / "sr-receive.json"] if self.stats_dir else [])), stdout=subprocess.PIPE)
            urls["receive"] = _announced(stage)
        # sr-hls outlives the sessions: it waits for the next stream on its FIFOs (sr-live stops it).
        hls = ["--out", c.hls_dir, "--continue", "--segment", c.segment, "--list-size", c.list_size,
               "--reopen-wait", 86400, "--stall-timeout", 0, "--lr", self.lr_fifo, "--lr-format", "nut",
               "--spool", c.spool, "--name", c.stream_name, *stats]
        if self.audio_fifo:
            hls += ["--audio", self.audio_fifo, "--audio-format", "aac"]
        if c.serve:
            hls += ["--serve", c.serve]
        stage = self.chain.start("sr-hls", srtools_command("sr-hls", self.video_fifo, *hls),
                                 stdout=subprocess.PIPE if c.serve else subprocess.DEVNULL)
        if c.serve:
            urls["hls"] = _announced(stage)
        return urls

    def run_session(self, on_ready: Callable[[], None] | None = None) -> None:
        """One publish session: start the per-session stages (the listener last, so that a publisher
        only gets in once the chain behind it is up), wait for the publisher to leave and the stages to
        drain. ``on_ready`` is called once the listener is up (pulling: once the stages are started)."""
        c = self.config
        self.sessions += 1
        names = ["ingest", "sr-serve"]
        ingest = self.chain.start("ingest", ingest_args(c, self.audio_fifo, self.lr_fifo), stdout=subprocess.PIPE)
        serve_out = subprocess.PIPE if c.tcsr_budget_ms else open(self.video_fifo, "wb")
        serve = self.chain.start("sr-serve", srtools_command(
            "sr-serve", "--realtime", "--spool", c.spool, "--scale", c.scale, "--threads", c.threads,
            *self._stats("sr-serve")),
            stdin=ingest.process.stdout, stdout=serve_out)
        ingest.process.stdout.close()
        if c.tcsr_budget_ms:
            names.append("sr-tcsr")
            with open(self.video_fifo, "wb") as out:
                self.chain.start("sr-tcsr", srtools_command(
                    "sr-tcsr", "--spool", c.spool, "--scale", c.scale, "--budget-ms", c.tcsr_budget_ms,
                    "--threads", c.threads, *self._stats("sr-tcsr")), stdin=serve.process.stdout, stdout=out)
            serve.process.stdout.close()
        else:
            serve_out.close()
        if not c.pull:
            self._wait_listening(ingest)
        if on_ready:
            on_ready()
        log.info("session %d: %s %s", self.sessions, "pulling" if c.pull else "listening on", c.source)
        # A publisher that drops ends the ingest with an error: the session ends, the chain goes on.
        self.chain.wait(names, tolerate=["ingest"])
        if ingest.returncode:
            log.warning("session %d: the ingest ended with status %s (publisher gone?)", self.sessions,
                        _describe(ingest.returncode))
        self.chain.forget(names)

    def _stats(self, stage: str) -> list:
        """--stats (and --frame-log) of ``stage`` in this session."""
        if self.stats_dir is None:
            return []
        path = self.stats_dir / f"{stage}-{self.sessions}"
        return ["--stats", path.with_suffix(".json"),
                *(["--frame-log", path.with_suffix(".jsonl")] if self.config.frame_logs else [])]

    def _wait_listening(self, ingest: StageProcess, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not port_listening(rtmp_port(self.config.source)):
            if ingest.returncode is not None or time.monotonic() > deadline:
                raise StageFailed(f"stage ingest: cannot listen on {self.config.source} (port in use?)")
            time.sleep(0.05)


def _announced(stage: StageProcess) -> str:
    """The URL a server stage prints as its first stdout line."""
    line = stage.process.stdout.readline()
    if not line:
        raise StageFailed(f"stage {stage.name} failed to start (exit status {_describe(stage.wait())})")
    return json.loads(line)["url"]

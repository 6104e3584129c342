"""Stages of a live chain as real processes: started in order, watched together, stopped together.

A :class:`Chain` owns a private temporary directory for its named FIFOs (mode 0600, removed at the
end) and a list of stages, each a process in its own process group so that stopping a stage also
stops the ffmpeg processes it started. The first stage to fail stops the others; :meth:`Chain.stop`
sends SIGTERM to every stage (the last started first, so readers do not see a writer vanish
before they are told to end), waits a grace period and kills what is left. Nothing is left behind
when the supervisor itself is interrupted, since it stops the chain on its way out.

Nor when it is killed: every stage is sent SIGTERM when the supervisor dies, however it dies
(:func:`srtools.procutil.die_with_parent`). The directory holds a lock file, locked while the chain
runs, and the list of its stages (pid and start time); a new chain of the same prefix recognises
the directory of a dead run by its free lock, waits for that run's stages to be gone (they are
stopping, and hold ports and the HLS directory's lock until they are), kills those still there
after a grace period, and removes the directory.
"""

from __future__ import annotations

import collections
import dataclasses
import fcntl
import hmac
import json
import logging
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import IO, Callable, Sequence
from urllib.parse import urlsplit

from ..errors import ExitStatus, SrError
from ..ffmpeg import ffmpeg_binary
from ..hls import Encoding
from ..procutil import die_with_parent, signals_ignored
from ..y4m import MAX_PIXELS

log = logging.getLogger("srtools.chain")

LOCK_FILE = "run.lock"
STAGES_FILE = "stages"
# The ingest's frame rate when it follows the publisher's: at most this (a stream announcing a
# millisecond time base as its rate is not duplicated to 1000 frames a second).
MAX_FPS = 120


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
    """Processes wired by pipes and FIFOs; a context manager that always stops them.

    Args:
        prefix: of the temporary directory's name; a dead run's directory of the same prefix is
            cleared first (see the module docstring).
    """

    def __init__(self, prefix: str = "sr-live-"):
        clear_dead_runs(prefix)
        self.dir = Path(tempfile.mkdtemp(prefix=prefix))
        # Locked, then given its name: a new chain never sees the lock file of a live one unlocked.
        lock = self.dir / (LOCK_FILE + ".new")
        self._lock_fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        lock.rename(self.dir / LOCK_FILE)
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
        """Start a stage, which dies with this process; its stderr is ours unless ``stderr`` says otherwise
        (every srtools command prefixes its lines with its name)."""
        log.debug("starting %s: %s", name, " ".join(argv))
        process = subprocess.Popen(list(argv), stdin=stdin, stdout=stdout, stderr=stderr, start_new_session=True,
                                   preexec_fn=die_with_parent())
        with open(self.dir / STAGES_FILE, "a") as record:
            record.write(f"{process.pid} {_start_time(process.pid)} {name}\n")
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
            _signal_group(stage.process.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for stage in running:
            try:
                stage.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("stage %s did not stop within %.0f s: killed", stage.name, grace)
        for stage in self.stages:  # also the children of stages that already exited
            _signal_group(stage.process.pid, signal.SIGKILL)
            stage.process.wait()
        shutil.rmtree(self.dir, ignore_errors=True)
        os.close(self._lock_fd)


def _signal_group(pgid: int, signum: int) -> None:
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def _describe(code: int) -> str:
    return f"{code}, killed by {signal.Signals(-code).name}" if code < 0 else str(code)


def _start_time(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot, from /proc): with the pid, it names one
    process, whatever later reuses the number; '' once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rpartition(")")[2].split()[19]  # field 22; the command name may hold spaces and ')'


def _group_running(pgid: int, started: str) -> bool:
    """Whether the process group of a stage that started as process ``pgid`` at ``started`` still
    has a process: its leader (the same process, by its start time), or, the leader gone, any
    member (a group cannot be taken over while it has members)."""
    leader = _start_time(pgid)
    if leader:
        return leader == started
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rpartition(")")[2].split()[2]) == pgid:
                return True
    return False


def clear_dead_runs(prefix: str, grace: float = 10.0) -> None:
    """Clear the directories of chains of ``prefix`` whose supervisor died: their lock is free. Their
    stages still running (they were sent SIGTERM and are stopping) are waited for up to ``grace``
    seconds, then killed; then the directory is removed."""
    for path in Path(tempfile.gettempdir()).glob(f"{prefix}*"):
        try:
            fd = os.open(path / LOCK_FILE, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:  # not a chain's directory, another user's, or one being created
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # a running chain
                continue
            try:
                stages = [line.split() for line in (path / STAGES_FILE).read_text().splitlines()]
            except OSError:
                stages = []
            groups = [(int(fields[0]), fields[1], fields[2]) for fields in stages if len(fields) == 3]
            deadline = time.monotonic() + grace
            running = [g for g in groups if _group_running(g[0], g[1])]
            if running:
                log.info("a dead run left %d stages (%s) in %s: waiting for them to stop", len(running),
                         ", ".join(name for _, _, name in running), path)
            while running and time.monotonic() < deadline:
                time.sleep(0.1)
                running = [g for g in running if _group_running(g[0], g[1])]
            for pgid, _, name in running:
                log.warning("stage %s of a dead run (pid %d) did not stop within %.0f s: killed", name, pgid, grace)
                _signal_group(pgid, signal.SIGKILL)
            shutil.rmtree(path, ignore_errors=True)
            log.info("cleared the FIFO directory of a dead run: %s", path)
        finally:
            os.close(fd)


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


def stream_key(url: str) -> str:
    """The stream key of an RTMP URL: its last path segment, without the query
    (rtmp://HOST:PORT/live/studio -> studio)."""
    return urlsplit(url).path.rstrip("/").rpartition("/")[2]


@dataclasses.dataclass
class ServerConfig:
    """The server side of the live system: ingest -> sr-serve --realtime -> sr-tcsr -> sr-hls, and the
    ingest's low-res video, copied, to sr-hls's LR rendition.

    Attributes:
        source: the RTMP URL: listened on (ffmpeg's listen mode, one publisher at a time) or, with
            ``pull``, played from a server such as nginx-rtmp.
        spool: the server's model spool (sr-serve and sr-tcsr hot-swap from it).
        hls_dir: sr-hls --out.
        fps: the constant frame rate the ingest normalises to (frame n is at n / fps); None keeps
            the publisher's own rate (made constant, at most :data:`MAX_FPS`).
        list_size: segments in the HLS playlist (0: all).
        tcsr_budget_ms: sr-tcsr's per-frame budget; 0 leaves TCSR out.
        tcsr_generic: sr-tcsr refines with the shipped generic TCSR until the spool has one (--generic).
        serve / receive: HOST:PORT of sr-hls --serve and of sr-receive (None: not run).
        token_file: sr-receive's --token-file.
        token: the stream's token, which a publisher to the listener must give (?token=); None
            admits any publisher to the stream's key.
        threads: sr-serve's and sr-tcsr's --threads (they share the cores with each other and ffmpeg).
        stats_dir: where sr-serve and sr-tcsr publish their --stats (session by session) and sr-receive its
            own, for sr-hls's /stats.json and /metrics (None: a private directory, when serving).
        max_pixels: the largest frame the stages accept (--max-pixels).
        frame_logs: sr-serve and sr-tcsr also log every frame into ``stats_dir`` (--frame-log).
        name: the stream's name in sr-hls's statistics (None: the RTMP URL's stream key).
    """

    source: str
    spool: Path
    hls_dir: Path
    pull: bool = False
    scale: int = 2
    fps: float | None = None
    segment: float = Encoding.segment
    list_size: int = Encoding.list_size
    tcsr_budget_ms: float = 15.0
    tcsr_generic: bool = False
    audio: bool = True
    serve: str | None = None
    receive: str | None = None
    token_file: str | None = None
    token: str | None = None
    threads: int = 1
    stats_dir: Path | None = None
    max_pixels: int = MAX_PIXELS
    frame_logs: bool = False
    name: str | None = None

    @property
    def key(self) -> str:
        return stream_key(self.source)

    @property
    def stream_name(self) -> str:
        return self.name or self.key or "default"


def ingest_args(config: ServerConfig, audio_out: Path | None, lr_out: Path | None = None) -> list[str]:
    """ffmpeg: the RTMP stream -> Y4M at a constant frame rate on stdout, its audio, if it has any,
    copied as ADTS AAC to ``audio_out``, its video copied as NUT to ``lr_out`` (sr-hls's LR rendition).

    One tee output holds them all, the audio's part allowed to fail: a publisher without audio
    leaves it without a stream, which an output of its own would make an error. ``audio_out`` is
    then opened and closed without a byte (sr-hls reads that as a stream without audio). Messages
    carry their level (``[info]``, ``[error]``, ...) for :class:`IngestLog`.
    """
    args = [ffmpeg_binary(), "-hide_banner", "-nostdin", "-nostats", "-loglevel", "repeat+level+info", "-y"]
    if not config.pull:
        args += ["-listen", "1"]
    args += ["-i", config.source, "-map", "0:v:0"]
    # round=down: a frame counts from the slot it starts in, so that a source at the output rate comes out
    # frame for frame (by default a video that starts a little after the audio gets its first frame twice).
    rate = f"{config.fps:g}" if config.fps else rf"min(source_fps\,{MAX_FPS})"
    args += ["-filter:v:0", f"fps={rate}:round=down,format=yuv420p"]
    args += ["-fps_mode:v:0", "cfr", "-c:v:0", "wrapped_avframe"]
    outputs = ["[select=0:f=yuv4mpegpipe]pipe:1"]  # streams by index, the optional audio last
    if lr_out is not None:
        args += ["-map", "0:v:0", "-c:v:1", "copy"]
        outputs.append(f"[select=1:f=nut]{lr_out}")
    if audio_out is not None:
        args += ["-map", "0:a:0?", "-c:a", "copy"]
        outputs.append(f"[select=a:f=adts:onfail=ignore]{audio_out}")
    return args + ["-f", "tee", "|".join(outputs)]


def rtmp_port(url: str) -> int:
    return urlsplit(url).port or 1935


class IngestLog(threading.Thread):
    """Reads the ingest's stderr: relays its messages to the log as the ingest's, and learns from
    them who publishes and what.

    ffmpeg's messages carry their level: errors are logged as warnings, warnings as information,
    the rest at debug level, each once when repeated. From the information it dumps it learns the
    stream name the publisher gave (listen mode: ffmpeg reports a name other than the key it
    listens on, the query included), whether the stream has audio, and the frame size and rate
    of the output; :attr:`decided` is set once the input is open, with :attr:`admitted` saying
    whether the publisher may go on (the key, and the token when ``token`` is given).

    Args:
        stage: the ingest, started with its stderr on a pipe.
        config: the chain's configuration (listen or pull, key, token, fps).
        session: the number the session would get, for the log.
        closing: whether the chain is being stopped (what ffmpeg says then is logged at debug level).
    """

    _LINE = re.compile(r"(?:\[[^\]]* @ 0x[0-9a-f]+\] )?\[(?P<level>[a-z]+)\] (?P<text>.*)")
    _UNEXPECTED = re.compile(r"Unexpected stream (?P<name>.*), expecting ")
    _VIDEO = re.compile(r"Stream #0:0: Video: .*?(?P<width>\d+)x(?P<height>\d+).*?(?P<fps>[\d.]+(?:k)?) fps")

    def __init__(self, stage: StageProcess, config: ServerConfig, session: int, closing: Callable[[], bool]):
        super().__init__(name="ingest-log", daemon=True)
        self.stage, self.config, self.session, self.closing = stage, config, session, closing
        self.published = config.key  # the stream name the publisher gave (listen mode)
        self.audio: bool | None = None
        self.opened = False  # the input is open: a publisher is there, with a stream
        self.admitted = False
        self.decided = threading.Event()
        self._section = ""  # of ffmpeg's dump: "input" or "output"

    def run(self) -> None:
        previous = None
        for raw in self.stage.process.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            match = self._LINE.fullmatch(line)
            level, text = (match["level"], match["text"]) if match else ("info", line)
            if line and line != previous:
                self._learn(text)
                self._relay(level, text, line)
            previous = line
        self.decided.set()

    def _relay(self, level: str, text: str, line: str) -> None:
        if self.audio is False and line.startswith(("[tee @", "[adts @")) or self.closing():
            level = "debug"  # the tee's audio part failing without audio; a listener told to stop
        if level in ("panic", "fatal", "error"):
            log.warning("ingest: %s", text)
        elif level == "warning" and not self._UNEXPECTED.match(text):
            log.info("ingest: %s", text)
        else:
            log.debug("ingest: %s", text)

    def _learn(self, text: str) -> None:
        if match := self._UNEXPECTED.match(text):
            self.published = match["name"]
        elif text.startswith("Input #0,"):
            self._section, self.audio, self.opened = "input", False, True
            self._decide()
        elif text.startswith("Output #0,"):
            self._section = "output"
        elif self._section == "input" and re.match(r"\s*Stream #0:\d+.*: Audio: ", text):
            self.audio = True
        elif self._section == "output" and (match := self._VIDEO.search(text)):
            self._section = ""
            rate = ("normalised to it (--fps)" if self.config.fps is not None
                    else "the publisher's, made constant (--fps normalises)")
            log.info("session %d: %sx%s at %s fps (%s), %s", self.session, match["width"], match["height"],
                     match["fps"], rate, "with audio" if self.audio else "without audio")

    def _decide(self) -> None:
        """Admit the publisher, or refuse it and stop the ingest (listen mode)."""
        if not self.config.pull:
            name, _, query = self.published.partition("?")
            token = urllib.parse.parse_qs(query).get("token", [""])[0]
            where = f"{urlsplit(self.config.source).netloc}/.../{name}"
            if name != self.config.key:
                log.warning("refused a publisher to %s: not this stream's key (%s)", where, self.config.key)
                return self._refuse()
            if self.config.token is not None and not hmac.compare_digest(token.encode(), self.config.token.encode()):
                log.warning("refused a publisher to %s: %s token", where, "a wrong" if token else "no")
                return self._refuse()
        self.admitted = True
        self.decided.set()

    def _refuse(self) -> None:
        _signal_group(self.stage.process.pid, signal.SIGKILL)
        self.decided.set()


class Relay(threading.Thread):
    """Moves the ingest's Y4M to sr-serve once :class:`IngestLog` has admitted the publisher; until then
    the ingest waits on its full pipe (a publisher to the listener waits a moment).

    Once admitted, the ingest is read as fast as it writes: a stream pulled from nginx-rtmp flows
    while sr-serve still starts (Python, torch, its model: seconds on a loaded machine), and an
    ingest that stopped reading would make nginx drop the stream's frames for it. What sr-serve
    has not taken yet waits here, up to :attr:`BUFFER_BYTES` (then the ingest waits after all);
    the frames then come late to sr-serve, which makes that the session's latency, and none is lost.

    Attributes:
        bytes: how many came from the ingest; 0 when the publisher was refused or brought no stream.
    """

    BUFFER_BYTES = 128 << 20

    def __init__(self, source: IO[bytes], target: int, gate: IngestLog):
        super().__init__(name="relay", daemon=True)
        self.source, self.target, self.gate = source, target, gate
        self.bytes = 0

    def run(self) -> None:
        try:
            self.gate.decided.wait()
            if self.gate.admitted:
                self._move()
        except OSError as exc:  # sr-serve gone: the chain names the stage that failed
            log.debug("relay: %s", exc)
        finally:
            self.source.close()

    def _move(self) -> None:
        source = self.source.fileno()
        os.set_blocking(self.target, False)
        pending: collections.deque[memoryview] = collections.deque()
        held, ended = 0, False
        while not ended or pending:
            readable, writable, _ = select.select([source] if not ended and held < self.BUFFER_BYTES else [],
                                                  [self.target] if pending else [], [])
            if readable:
                data = os.read(source, 1 << 20)
                ended = not data
                if data:
                    pending.append(memoryview(data))
                    held += len(data)
                    self.bytes += len(data)
            if writable:
                try:
                    written = os.write(self.target, pending[0])
                except BlockingIOError:
                    continue
                held -= written
                pending[0] = pending[0][written:]
                if not pending[0]:
                    pending.popleft()


class ServerChain:
    """Runs :class:`ServerConfig`'s chain: long-lived sr-hls (and sr-receive), and per publish session
    the ingest, sr-serve and sr-tcsr; see sr-live(1).

    Between sessions sr-serve and sr-tcsr wait for a stream on a pipe that only an admitted
    publisher's frames reach: a connection refused, or one that ends before its stream starts,
    costs a new ingest (one ffmpeg), never new stages.
    """

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
        self.finishing = False
        self.closing = False  # set while the chain stops
        self._ingest: StageProcess | None = None

    def start_services(self) -> dict:
        """Start sr-receive and sr-hls; returns their announced URLs."""
        c, urls = self.config, {}
        stats = ["--stats-dir", self.stats_dir] if self.stats_dir else []
        if c.receive:  # the RTMP URL's stream key is sr-receive's (which refuses one it cannot serve)
            stage = self.chain.start("sr-receive", srtools_command(
                "sr-receive", "--stream", f"{c.key}={c.spool}", "--listen", c.receive,
                *(["--token-file", c.token_file] if c.token_file else []),
                *(["--stats", self.stats_dir / "sr-receive.json"] if self.stats_dir else [])), stdout=subprocess.PIPE)
            urls["receive"] = _announced(stage)
        # sr-hls outlives the sessions: it waits for the next stream on its FIFOs (sr-live stops it).
        hls = ["--out", c.hls_dir, "--continue", "--segment", c.segment, "--list-size", c.list_size,
               "--reopen-wait", 86400, "--stall-timeout", 0, "--max-pixels", c.max_pixels, "--lr", self.lr_fifo,
               "--lr-format", "nut", "--spool", c.spool, "--name", c.stream_name, *stats]
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
        """One publish session: start sr-serve and sr-tcsr, then ingests until one brings a stream
        (an admitted publisher); wait for that publisher to leave and the stages to drain. Returns
        early, without a session, once :meth:`finish` is called. ``on_ready`` is called once the
        first listener is up (pulling: once the first ingest is started)."""
        c = self.config
        number = self.sessions + 1
        names = ["sr-serve"]
        serve_in, relay_out = os.pipe()
        serve_out = subprocess.PIPE if c.tcsr_budget_ms else open(self.video_fifo, "wb")
        serve = self.chain.start("sr-serve", srtools_command(
            "sr-serve", "--realtime", "--spool", c.spool, "--scale", c.scale, "--threads", c.threads,
            "--max-pixels", c.max_pixels, *self._stats("sr-serve", number)), stdin=serve_in, stdout=serve_out)
        os.close(serve_in)
        if c.tcsr_budget_ms:
            names.append("sr-tcsr")
            with open(self.video_fifo, "wb") as out:
                self.chain.start("sr-tcsr", srtools_command(
                    "sr-tcsr", "--spool", c.spool, "--scale", c.scale, "--budget-ms", c.tcsr_budget_ms,
                    "--threads", c.threads, "--max-pixels", c.max_pixels, *(["--generic"] if c.tcsr_generic else []),
                    *self._stats("sr-tcsr", number)),
                    stdin=serve.process.stdout, stdout=out)
            serve.process.stdout.close()
        else:
            serve_out.close()
        try:
            while not self.finishing:
                if self._ingest_once(number, relay_out, on_ready):
                    self.sessions += 1
                    break
                on_ready = None
        finally:
            os.close(relay_out)  # sr-serve's end of input: the session's stages drain
        if self.finishing and self.sessions < number:
            return  # no stream came: the chain's stop ends the waiting stages
        self.chain.wait(names, tolerate=["ingest"])
        self.chain.forget(names)

    def _ingest_once(self, number: int, relay_out: int, on_ready: Callable[[], None] | None) -> bool:
        """One ingest: listen (or pull) until its input ends; whether a stream went through to sr-serve."""
        c = self.config
        ingest = self.chain.start("ingest", ingest_args(c, self.audio_fifo, self.lr_fifo), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        self._ingest = ingest
        gate = IngestLog(ingest, c, number, closing=lambda: self.closing)
        relay = Relay(ingest.process.stdout, relay_out, gate)
        gate.start()
        relay.start()
        if not c.pull:
            self._wait_listening(ingest)
        if on_ready:
            on_ready()
        log.info("%s %s", "pulling" if c.pull else "listening on", c.source)
        # A publisher that drops ends the ingest with an error: the session ends, the chain goes on.
        self.chain.wait(["ingest"], tolerate=["ingest"])
        relay.join()
        gate.join()
        self._ingest = None
        self.chain.forget(["ingest"])
        if relay.bytes and ingest.returncode:
            log.warning("session %d: the ingest ended with status %s (publisher gone?)", number,
                        _describe(ingest.returncode))
        elif not relay.bytes and gate.admitted:
            log.info("the publisher left before its stream started (ingest status %s)", _describe(ingest.returncode))
        elif not gate.opened and not self.finishing:
            log.info("a connection ended before publishing a stream (ingest status %s)",
                     _describe(ingest.returncode))
        return relay.bytes > 0

    def finish(self, grace: float = 2.0) -> None:
        """End the current session as if its publisher had left (the ingest finishes its outputs; what
        is in the stages drains to HLS), and no new one: for SIGUSR1.

        The ingest gets SIGINT, and another after ``grace`` seconds: one lets ffmpeg read what it has
        been sent, but not leave a read that waits for more (a stream whose publisher has gone, a
        server that keeps the connection open); the second ends that read.
        """
        self.finishing = True
        ingest = self._ingest
        if ingest is not None and ingest.returncode is None:
            ingest.process.send_signal(signal.SIGINT)
            timer = threading.Timer(grace, lambda: ingest.returncode is None and ingest.process.send_signal(
                signal.SIGINT))
            timer.daemon = True
            timer.start()

    def _stats(self, stage: str, session: int) -> list:
        """--stats (and --frame-log) of ``stage`` in session number ``session``."""
        if self.stats_dir is None:
            return []
        path = self.stats_dir / f"{stage}-{session}"
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

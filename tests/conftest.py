"""Shared test helpers: run commands as real processes, make real clips with ffmpeg's lavfi sources."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import IO, Callable, Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_MEDIA = ROOT.parent / "shared" / "media"
sys.path.insert(0, str(ROOT / "benchmarks"))  # benchmarks/instances.py: the design's random instances


pytest_plugins = ["tiled_fixtures"]


def expect_error(result: subprocess.CompletedProcess, status: int, fragment: str = "") -> str:
    """The command failed with ``status`` and exactly one line on stderr, no traceback, nothing on stdout."""
    err = result.stderr.decode()
    assert result.returncode == status, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err and "error" in err
    assert fragment in err, err
    assert result.stdout == b""
    return err


def assert_head_answers_as_get(url: str) -> int:
    """HEAD ``url`` is answered as GET is, without the body: the same status and headers. Returns the status."""
    answers = []
    for method in ("HEAD", "GET"):
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=60) as response:
                answers.append((response.status, response.headers, response.read()))
        except urllib.error.HTTPError as error:
            answers.append((error.code, error.headers, error.read()))
    (head_status, head_headers, head_body), (status, headers, body) = answers
    assert (head_status, head_body) == (status, b""), (url, head_status, status)
    for name in ("Content-Type", "Content-Length", "Cache-Control", "Access-Control-Allow-Origin"):
        assert head_headers[name] == headers[name], (url, name, head_headers[name], headers[name])
    assert int(headers["Content-Length"]) == len(body), url
    return status


def raw_http(url: str, request: bytes, timeout: float = 10) -> bytes:
    """Send ``request`` to the server at ``url`` as it is (as curl --path-as-is would, or a broken client),
    on a new connection; everything the server answers until it closes the connection."""
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=timeout) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
        return answer


def command_line(name: str, *args) -> list[str]:
    return [str(ROOT / "bin" / name), *map(str, args)]


# bin/ scripts run the interpreter running the tests.
COMMAND_ENV = {**os.environ, "SRTOOLS_PYTHON": sys.executable}


def run_command(name: str, *args, input: bytes | None = None, timeout: float = 300,
                env: dict | None = None, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    """Run bin/NAME as a real process; stdout and stderr captured as bytes."""
    return subprocess.run(command_line(name, *args), input=input, stdout=stdout, stderr=subprocess.PIPE,
                          timeout=timeout, env={**COMMAND_ENV, **(env or {})})


def start_command(name: str, *args, **popen_kwargs) -> subprocess.Popen:
    """Start bin/NAME as a real process (pipes as asked in ``popen_kwargs``)."""
    return subprocess.Popen(command_line(name, *args), env=COMMAND_ENV, **popen_kwargs)


@contextlib.contextmanager
def running_command(name: str, *args, deadline: float = 300, **popen_kwargs) -> Iterator[subprocess.Popen]:
    """start_command() for the body of a with statement: the process is killed if it is still running
    when the body ends, and its pipes are closed. One that outlives ``deadline`` seconds is killed even
    while the body waits on it (a read of its pipes then meets EOF) and fails the test, which never hangs."""
    process = start_command(name, *args, **popen_kwargs)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        process.kill()

    watchdog = threading.Timer(deadline, expire)
    watchdog.start()
    try:
        yield process
    finally:
        watchdog.cancel()
        if process.poll() is None:
            process.kill()
        process.wait()
        for pipe in (process.stdin, process.stdout, process.stderr):
            if pipe is not None:
                with contextlib.suppress(BrokenPipeError):
                    pipe.close()
        if expired.is_set():
            raise AssertionError(f"{name} still running after {deadline} s: killed")


class LineReader:
    """Reads a process's pipe line by line on a thread of its own, so that a test can wait for a line
    with a deadline (a plain readline blocks for ever on a process that hangs) and still read them all."""

    def __init__(self, stream: IO[bytes]):
        self.lines: list[bytes] = []
        self._changed = threading.Condition()
        self._ended = False
        self._thread = threading.Thread(target=self._read, args=(stream,), name="line-reader", daemon=True)
        self._thread.start()

    def _read(self, stream: IO[bytes]) -> None:
        try:
            for line in stream:
                with self._changed:
                    self.lines.append(line)
                    self._changed.notify_all()
        finally:
            with self._changed:
                self._ended = True
                self._changed.notify_all()

    def wait_for(self, condition: Callable[[list[bytes]], bool], timeout: float, what: str) -> None:
        """Wait until ``condition(lines)`` holds; AssertionError when the pipe ends or ``timeout`` seconds
        pass first."""
        with self._changed:
            self._changed.wait_for(lambda: self._ended or condition(self.lines), timeout)
            assert condition(self.lines), f"not {what} within {timeout} s: {self.text_so_far()}"

    def text_so_far(self) -> str:
        return b"".join(self.lines).decode(errors="replace")

    def text(self, timeout: float = 30) -> str:
        """All the lines, once the pipe has ended (its writer exited)."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the pipe still open after {timeout} s: {self.text_so_far()}"
        return self.text_so_far()


def stop_command(process: subprocess.Popen, signum: int = signal.SIGTERM, timeout: float = 30) -> tuple[bytes, bytes]:
    """Signal a start_command() process and collect its pipes; one that outlives ``timeout`` is killed
    (never left behind) and fails the test."""
    process.send_signal(signum)
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
        raise AssertionError(f"still running {timeout} s after {signal.Signals(signum).name}: "
                             f"{err.decode()[-2000:]}") from None


def make_clip(path: Path, size: str = "320x180", seconds: float = 2, rate: int = 25,
              source: str = "testsrc2",
              codec: tuple[str, ...] = ("-c:v", "libx264", "-crf", "12", "-preset", "veryfast")) -> Path:
    """Write a clip from an ffmpeg lavfi source (testsrc2, mandelbrot, ...) to ``path``."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"{source}=size={size}:rate={rate}",
                    "-t", str(seconds), "-pix_fmt", "yuv420p", *codec, str(path)], check=True)
    return path


def make_y4m(path: Path, **kwargs) -> Path:
    return make_clip(path, codec=("-f", "yuv4mpegpipe"), **kwargs)


@pytest.fixture(scope="session")
def hr_clip(tmp_path_factory) -> Path:
    """A 3 s 320x180 25 fps H.264 clip with detail and motion (testsrc2)."""
    return make_clip(tmp_path_factory.mktemp("media") / "hr.mp4", seconds=3)


class Server:
    """A bin/ server started as a real process; its first stdout line is {"url": ...}. One that exits,
    announces something else or nothing within ``timeout`` seconds fails the test, stopped (never left
    behind) and its pipes closed."""

    def __init__(self, name: str, *args, timeout: float = 60):
        self.process = start_command(name, *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = b""
        try:
            # Servers write their announcement as one whole line: once the pipe is readable, readline returns.
            if select.select([self.process.stdout], [], [], timeout)[0]:
                line = self.process.stdout.readline()
            self.info = json.loads(line)
            self.url = self.info["url"]
        except BaseException as exc:
            code, err = self.stop()
            if not isinstance(exc, Exception):
                raise
            raise AssertionError(f"{name} did not announce its URL within {timeout} s (first line {line!r}, "
                                 f"exit status {code}): {err}") from None

    def stop(self) -> tuple[int, str]:
        if self.process.stdout.closed:
            return self.process.returncode, ""
        self.process.terminate()
        try:
            code = self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        err = self.process.stderr.read().decode()
        self.process.stdout.close()
        self.process.stderr.close()
        return code, err

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()



def fill_pool(hr: Path, spool: Path, every: int = 5, runs_every: int | None = None, run_frames: int = 5,
              t0: float = 0.0) -> Path:
    """Sample ``hr`` into the spool's pool like the push side: every ``every``-th frame with the decoded
    frame of the default degradation (t = t0 + index / 25), and with ``runs_every`` a run of
    ``run_frames`` consecutive frames every ``runs_every`` frames; returns the spool."""
    from srtools import degrade, video
    from srtools.live.pool import Pool

    lr = hr.with_name(hr.stem + "-lr.mp4")
    degrade.make_lr(str(hr), str(lr), 2)
    pool = Pool(spool, create=True)
    run: list = []
    with video.open_source(str(hr)) as hr_frames, video.open_source(str(lr)) as lr_frames:
        for index, (h, lo) in enumerate(zip(hr_frames, lr_frames)):
            if index % every == 0:
                pool.add(t0 + index / 25, h, lo)
            if runs_every and index % runs_every < run_frames:
                run.append((h, lo))
                if len(run) == run_frames:
                    pool.add_run(t0 + (index - run_frames + 1) / 25, [f for f, _ in run], [f for _, f in run])
                    run = []
    return spool


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Debian installs nginx in /usr/sbin, which is not on a normal user's PATH.
NGINX = shutil.which("nginx", path=f"{os.environ.get('PATH', '')}:/usr/sbin")


@contextlib.contextmanager
def running_nginx(conf: Path, prefix: Path, port: int):
    """A real nginx on ``conf`` in the foreground, unprivileged paths under ``prefix``, until it listens on
    ``port``; stopped on exit."""
    # As root, workers would run as nobody and could not reach pytest's private temporary directories.
    user = "user root;" if os.geteuid() == 0 else ""
    process = subprocess.Popen([NGINX, "-p", str(prefix), "-c", str(conf),
                                "-g", f"daemon off; pid {prefix}/nginx.pid; error_log stderr; {user}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None:
                raise AssertionError(f"nginx did not start: {process.stderr.read().decode()}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "nginx did not listen within 10 s"
                time.sleep(0.05)
        yield process
    finally:
        process.terminate()
        process.wait(10)
        process.stderr.close()


PROMTOOL = shutil.which("promtool")


def check_metrics(text: str) -> dict[str, float]:
    """``promtool check metrics`` accepts the scrape ``text`` without a complaint (Debian's prometheus
    package; make deps installs it); its samples, by name and labels as written."""
    if PROMTOOL is None:
        pytest.skip("promtool is not installed (make deps installs the prometheus package)")
    result = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), \
        (result.stdout + result.stderr).decode() + text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            samples[key] = float(value)
    return samples


CHROMIUM = shutil.which("chromium")


class Chromium:
    """Headless Chromium (Debian's; no sandbox, as tests run as root) driven over the DevTools
    protocol on a pipe: Chromium reads commands on its fd 3 and answers on fd 4, NUL-terminated JSON."""

    def __init__(self, webgl: bool = False):
        """``webgl``: WebGL2 through SwiftShader (software; float render targets), not no GPU at all."""
        commands, self._commands = os.pipe()
        self._replies, replies = os.pipe()
        gpu = ["--use-angle=swiftshader", "--enable-unsafe-swiftshader"] if webgl else ["--disable-gpu"]
        self.process = subprocess.Popen(
            [CHROMIUM, "--no-sandbox", "--headless=new", *gpu, "--mute-audio",
             "--autoplay-policy=no-user-gesture-required", "--remote-debugging-pipe", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, close_fds=False,
            preexec_fn=lambda: (os.dup2(commands, 3), os.dup2(replies, 4)))
        os.close(commands)
        os.close(replies)
        self._buffer, self._next_id = b"", 0

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:  # skip events and replies to other commands
            while b"\0" not in self._buffer:
                if not select.select([self._replies], [], [], 30)[0]:
                    raise AssertionError(f"chromium did not answer {method} within 30 s")
                chunk = os.read(self._replies, 1 << 16)
                if not chunk:
                    raise AssertionError(f"chromium exited during {method}")
                self._buffer += chunk
            raw, self._buffer = self._buffer.split(b"\0", 1)
            reply = json.loads(raw)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply["result"]

    def open(self, url: str) -> str:
        """Open ``url`` in a new tab; its session id."""
        target = self.call("Target.createTarget", url=url)["targetId"]
        return self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def played(self, session: str, beyond: float, timeout: float) -> float:
        """Wait until the player page's playhead (its #time element, written by its timeupdate handler)
        passes ``beyond`` seconds, or ``timeout``; the last position seen."""
        deadline, position = time.monotonic() + timeout, 0.0
        while position <= beyond and time.monotonic() < deadline:
            time.sleep(0.25)
            position = float(self.evaluate(session, '(document.getElementById("time") || {}).textContent || "0"'))
        return position

    def evaluate(self, session: str, expression: str):
        return self.call("Runtime.evaluate", session, expression=expression, returnByValue=True)["result"].get("value")

    def close(self) -> None:
        try:
            self.call("Browser.close")
        except AssertionError:
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._commands)
        os.close(self._replies)

"""ffmpeg subprocesses: decode anything ffmpeg reads to Y4M, encode Y4M, run one-shot jobs.

Every process started here has its stderr drained by a thread into a short ring buffer (and the
``srtools.ffmpeg`` debug log), so ffmpeg never blocks on a full stderr pipe and a failure can quote
ffmpeg's own last words. Return codes are always checked. A process started from the main thread
is sent SIGTERM if its parent dies (:func:`srtools.procutil.die_with_parent`), so that no ffmpeg
outlives a command killed with SIGKILL.
"""

from __future__ import annotations

import collections
import logging
import shutil
import signal
import subprocess
import threading
from typing import IO, Sequence

from .errors import FFmpegError, InputError
from .procutil import die_with_parent

log = logging.getLogger("srtools.ffmpeg")
# Before every ffmpeg's inputs: no banner, no progress, errors only (drained by Process), and no keyboard
# interaction on stdin (a pipe:0 input is still read).
GLOBAL_ARGS = ("-hide_banner", "-nostdin", "-nostats", "-loglevel", "error")


def ffmpeg_binary() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        raise FFmpegError("ffmpeg not found on PATH (run `make` or `apt-get install ffmpeg`)")
    return path


class Process:
    """A running ffmpeg with a drained stderr.

    Attributes:
        stdin / stdout: the pipes asked for, else None.
    """

    def __init__(self, args: Sequence[str], *, stdin: int | IO | None = None, stdout: int | IO | None = None,
                 pass_fds: Sequence[int] = ()):
        self.args = [ffmpeg_binary(), *args]
        # What it reads that a user gave it (a pipe from us is not the user's input).
        self.inputs = [args[i + 1] for i in range(len(args) - 1)
                       if args[i] == "-i" and not args[i + 1].startswith("pipe:")]
        log.debug("running %s", " ".join(self.args))
        # A frame pipe we read is unbuffered (see srtools.y4m.open_file); one we write is buffered.
        # pass_fds: pipe ends ffmpeg reaches as pipe:N (the same numbers in the child). Only a process
        # the main thread starts dies with us: one started by a worker thread would die with the thread.
        main = threading.current_thread() is threading.main_thread()
        self._proc = subprocess.Popen(self.args, stdin=stdin, stdout=stdout, stderr=subprocess.PIPE,
                                      bufsize=-1 if stdin == subprocess.PIPE else 0, pass_fds=tuple(pass_fds),
                                      preexec_fn=die_with_parent() if main else None)
        self.stdin, self.stdout = self._proc.stdin, self._proc.stdout
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self._drain = threading.Thread(target=self._drain_stderr, daemon=True)
        self._drain.start()

    def _drain_stderr(self) -> None:
        for raw in self._proc.stderr:  # type: ignore[union-attr]
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._stderr_tail.append(line)
                log.debug("ffmpeg: %s", line)

    @property
    def last_error(self) -> str:
        return self._stderr_tail[-1] if self._stderr_tail else "(no message)"

    @property
    def stderr_tail(self) -> list[str]:
        """ffmpeg's last stderr lines, oldest first."""
        return list(self._stderr_tail)

    def wait(self, check: bool = True, timeout: float | None = None) -> int:
        """Close our pipe ends, wait, and on a non-zero exit if ``check`` raise :class:`InputError` when
        ffmpeg failed on one of its inputs (its last words, ffmpeg's way, start with the input's name:
        it cannot decode it), else :class:`FFmpegError`.

        Raises:
            subprocess.TimeoutExpired: still running after ``timeout`` seconds (then call again).
        """
        for pipe in (self.stdin, self.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except BrokenPipeError:
                    pass
        code = self._proc.wait(timeout)
        self._drain.join()
        if check and code != 0:
            failed = next((name for name in self.inputs if self.last_error.startswith(f"{name}: ")), None)
            if code > 0 and failed is not None:
                raise InputError(f"{failed}: ffmpeg cannot decode it ({self.last_error[len(failed) + 2:]})")
            raise FFmpegError(f"ffmpeg exited with status {code}: {self.last_error}")
        return code

    def interrupt(self) -> None:
        """Ask ffmpeg to stop as Ctrl-C does: it stops reading, finishes its outputs (trailers,
        playlists) and exits with status 255."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGINT)

    def kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
        self.wait(check=False)

    def terminate(self, timeout: float = 5.0) -> int:
        """Ask ffmpeg to finish (on SIGTERM it still writes its outputs' trailers), kill it after
        ``timeout`` seconds; returns its exit status."""
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        return self.wait(check=False)


def decode_args(source: str, *, start: float | None = None, duration: float | None = None,
                vf: str | None = None, pix_fmt: str = "yuv420p") -> list[str]:
    """ffmpeg arguments that decode ``source`` to Y4M on stdout, every frame kept in order."""
    args = list(GLOBAL_ARGS)
    if start:
        args += ["-ss", str(start)]
    if duration:
        args += ["-t", str(duration)]
    args += ["-i", source, *(["-vf", vf] if vf else []), "-pix_fmt", pix_fmt, "-fps_mode", "passthrough",
             "-f", "yuv4mpegpipe", "pipe:"]
    return args


def decode(source: str, **kwargs) -> Process:
    """Start ffmpeg decoding ``source`` (a path or any URL ffmpeg reads) to Y4M on its stdout."""
    require_input(source)
    return Process(decode_args(source, **kwargs), stdout=subprocess.PIPE)


def encode(output: str, *, codec_args: Sequence[str] = ("-c:v", "libx264", "-crf", "18", "-preset", "veryfast"),
           output_args: Sequence[str] = ()) -> Process:
    """Start ffmpeg reading Y4M on its stdin and writing ``output``."""
    args = [*GLOBAL_ARGS, "-y", "-f", "yuv4mpegpipe", "-i", "pipe:",
            *codec_args, *output_args, output]
    return Process(args, stdin=subprocess.PIPE)


def run(args: Sequence[str]) -> None:
    """Run ffmpeg to completion with ``args`` (after the global ones); raise on failure."""
    Process([*GLOBAL_ARGS, "-y", *args]).wait()


def require_input(source: str) -> None:
    """Fail early, and clearly, on a local input that cannot be read (URLs are ffmpeg's to judge)."""
    if "://" in source:
        return
    try:
        with open(source, "rb"):
            pass
    except FileNotFoundError:
        raise InputError(f"{source}: no such file") from None
    except OSError as exc:
        raise InputError(f"{source}: cannot open: {exc.strerror}") from None

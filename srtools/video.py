"""Frame sources and sinks: Y4M on a pipe, file or FIFO, or anything ffmpeg decodes."""

from __future__ import annotations

import contextlib
from typing import Iterator

from . import ffmpeg, y4m
from .errors import FFmpegError, InputError


@contextlib.contextmanager
def open_source(source: str, **decode_options) -> Iterator[y4m.Reader]:
    """Yield a Y4M reader over ``source``.

    '-', a FIFO, or a file that starts with the Y4M magic is read directly; anything else (an .mp4,
    an rtmp:// URL, ...) is decoded by an ffmpeg process, whose exit status is checked when the
    caller has read the whole stream (a caller that stops early just ends the process).
    ``decode_options`` go to :func:`srtools.ffmpeg.decode_args` and require ffmpeg.

    Raises:
        InputError: ``source`` is missing, not Y4M where read directly, or something ffmpeg cannot
            decode (ffmpeg's message quoted): the input's fault, whoever reads it.
        FFmpegError: ffmpeg is missing, or was killed.
    """
    if not decode_options and y4m.is_y4m_path(source):
        with y4m.open_input(source) as reader:
            yield reader
        return
    process = ffmpeg.decode(source, **decode_options)
    try:
        try:
            reader = y4m.Reader(process.stdout, source)
        except Exception:
            _check_decoder(process, source)  # an ffmpeg failure explains an empty stream better than "empty input"
            raise
        yield reader
    except BaseException:
        process.kill()
        raise
    if reader.at_end:
        _check_decoder(process, source)
    else:
        process.kill()


def _check_decoder(process: ffmpeg.Process, source: str) -> None:
    """Wait for a decoding ffmpeg; one that failed did so on its input (an error status), or was killed."""
    code = process.wait(check=False)
    if code > 0:
        raise InputError(f"{source}: ffmpeg cannot decode it ({process.last_error})")
    if code < 0:
        raise FFmpegError(f"ffmpeg decoding {source} was killed by signal {-code}")


def read_all(source: str, **decode_options) -> tuple[y4m.Header, list[y4m.Frame]]:
    """Read every frame of ``source`` into memory."""
    with open_source(source, **decode_options) as reader:
        return reader.header, list(reader)

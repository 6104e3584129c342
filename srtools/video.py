"""Frame sources and sinks: Y4M on a pipe, file or FIFO, or anything ffmpeg decodes."""

from __future__ import annotations

import contextlib
from typing import Iterator

from . import ffmpeg, y4m


@contextlib.contextmanager
def open_source(source: str, **decode_options) -> Iterator[y4m.Reader]:
    """Yield a Y4M reader over ``source``.

    '-', a FIFO, or a file that starts with the Y4M magic is read directly; anything else (an .mp4,
    an rtmp:// URL, ...) is decoded by an ffmpeg process, whose exit status is checked when the
    caller has read the whole stream (a caller that stops early just ends the process).
    ``decode_options`` go to :func:`srtools.ffmpeg.decode_args` and require ffmpeg.
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
            process.wait()  # an ffmpeg failure explains an empty stream better than "empty input"
            raise
        yield reader
    except BaseException:
        process.kill()
        raise
    if reader.at_end:
        process.wait()
    else:
        process.kill()


def read_all(source: str, **decode_options) -> tuple[y4m.Header, list[y4m.Frame]]:
    """Read every frame of ``source`` into memory."""
    with open_source(source, **decode_options) as reader:
        return reader.header, list(reader)

"""Exit statuses and the exceptions that map to them.

Commands raise a :class:`SrError` subclass for every expected failure; :mod:`srtools.cli` turns it
into a one-line message on stderr and the exception's exit status (a traceback only with --debug).
"""

import enum


class ExitStatus(enum.IntEnum):
    """Process exit codes, listed under EXIT STATUS in every man page."""

    OK = 0
    ERROR = 1
    USAGE = 2
    BAD_INPUT = 3
    BAD_MODEL = 4
    FFMPEG_FAILED = 5
    BUSY = 6
    STAGE_FAILED = 7
    INTERRUPTED = 130


EXIT_STATUS_DESCRIPTIONS = {
    ExitStatus.OK: "Success.",
    ExitStatus.ERROR: "Runtime error not covered below (I/O failure, spool not writable, internal error).",
    ExitStatus.USAGE: "Bad command line: unknown option, missing or invalid argument, binary output to a terminal.",
    ExitStatus.BAD_INPUT: "Input missing or unreadable, or not valid: not valid YUV4MPEG2 where Y4M is read (see "
    "srtools-y4m(7)) or nothing ffmpeg can decode where ffmpeg decodes it, video or audio (its message quoted), "
    "truncated, in an unsupported pixel format, or of frames over the size limit (--max-pixels).",
    ExitStatus.BAD_MODEL: "A model file asked for explicitly is corrupt or does not match (architecture, "
    "tensor shapes, scale). A bad model found in the spool by a running server is only a warning.",
    ExitStatus.FFMPEG_FAILED: "ffmpeg is missing, or one of its processes failed on something other than an "
    "input it cannot decode (that is status 3): an encoder, an output or destination, a live source that stopped "
    "sending, a signal; the message quotes its last stderr line.",
    ExitStatus.BUSY: "Another process holds what this one needs: a second online trainer (sr-train --watch) "
    "on the same spool.",
    ExitStatus.STAGE_FAILED: "A stage of a live chain (sr-live) failed; the message names it. The other stages "
    "were stopped.",
    ExitStatus.INTERRUPTED: "Interrupted by SIGINT or SIGTERM; outputs were closed cleanly.",
}


class SrError(Exception):
    """An expected failure: reported as one line, exits with :attr:`exit_status`."""

    exit_status = ExitStatus.ERROR


class UsageError(SrError):
    exit_status = ExitStatus.USAGE


class InputError(SrError):
    exit_status = ExitStatus.BAD_INPUT


class ModelError(SrError):
    exit_status = ExitStatus.BAD_MODEL


class FFmpegError(SrError):
    exit_status = ExitStatus.FFMPEG_FAILED


class BusyError(SrError):
    exit_status = ExitStatus.BUSY


class Interrupted(BaseException):
    """Raised by the SIGTERM handler. Like KeyboardInterrupt it is no Exception, so no ``except Exception``
    or ``except SrError`` on its way up (a skipped pair, logging's own error handler) swallows it."""

    exit_status = ExitStatus.INTERRUPTED

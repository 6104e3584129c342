"""Files published atomically (readers see the old file or the new one, never a partial one) and the
JSON documents the tools exchange (manifests, plans, profiles, and the JSON lines on stdout)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

from .errors import InputError


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename or link inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def current_umask() -> int:
    """The process umask, read without changing it where Linux exposes it (os.umask is racy)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_temp(directory: str | os.PathLike, write: Callable[[str], None], suffix: str = "") -> Path:
    """Create a temporary file in ``directory``, fill it with ``write(path)`` and fsync it.

    The file gets the mode a plain ``open(path, "w")`` would give (0666 & ~umask), not mkstemp's
    0600, so that a server running as another user can read what is published. It is removed if
    ``write`` fails. ``directory`` must be on the file system of the final destination, so that
    the caller's rename or link is atomic.
    """
    fd, name = tempfile.mkstemp(suffix=suffix, dir=directory)
    os.close(fd)
    try:
        write(name)
        with open(name, "rb+") as f:
            os.fchmod(f.fileno(), 0o666 & ~current_umask())  # after write(): some writers re-create the file
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def write_atomic(path: str | os.PathLike, write: Callable[[str], None],
                 tmp_dir: str | os.PathLike | None = None) -> None:
    """Publish ``path`` atomically: temp file (in ``tmp_dir``, default beside it), fsync, os.replace."""
    path = Path(path)
    tmp = write_temp(tmp_dir or path.parent, write, suffix=path.suffix)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_json_atomic(path: str | os.PathLike, data: Any, tmp_dir: str | os.PathLike | None = None) -> None:
    """Publish ``data`` as JSON at ``path`` atomically."""
    write_atomic(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=1) + "\n"), tmp_dir)


def read_json_document(path: str | os.PathLike, fmt: str, kind: str, producer: str) -> dict:
    """The JSON object at ``path`` whose ``format`` is ``fmt``, as ``producer`` writes it.

    Raises:
        InputError: missing, unreadable, or not that kind of document (one-line messages).
    """
    try:
        raw = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: no such {kind} (run {producer} first)") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"{path}: unreadable {kind} ({exc})") from None
    if not isinstance(raw, dict) or raw.get("format") != fmt:
        raise InputError(f"{path}: not an {producer} {kind} (format {fmt} expected)")
    return raw


def emit_json(document: Any, stream: IO[str] | None = None) -> None:
    """Write ``document`` as one JSON line to ``stream`` (default stdout) and flush: what commands put
    on stdout besides frames (summaries, events, the URL a server listens on)."""
    stream = stream or sys.stdout
    stream.write(json.dumps(document) + "\n")
    stream.flush()

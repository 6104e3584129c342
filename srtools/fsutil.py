"""Atomic publication of files: readers see the old file or the new one, never a partial one."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename or link inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_temp(directory: str | os.PathLike, write: Callable[[str], None], suffix: str = "") -> Path:
    """Create a temporary file in ``directory``, fill it with ``write(path)`` and fsync it.

    The file is removed if ``write`` fails. ``directory`` must be on the file system of the final
    destination, so that the caller's rename or link is atomic.
    """
    fd, name = tempfile.mkstemp(suffix=suffix, dir=directory)
    os.close(fd)
    try:
        write(name)
        with open(name, "rb+") as f:
            os.fsync(f.fileno())
    except BaseException:
        os.unlink(name)
        raise
    return Path(name)


def write_atomic(path: str | os.PathLike, write: Callable[[str], None], tmp_dir: str | os.PathLike | None = None) -> None:
    """Publish ``path`` atomically: temp file (in ``tmp_dir``, default beside it), fsync, os.replace."""
    path = Path(path)
    tmp = write_temp(tmp_dir or path.parent, write, suffix=path.suffix)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)

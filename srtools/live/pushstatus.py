"""The push side at a glance: sr-push's one-line status, from its own counters and the push spool.

sr-push knows what it sends (the video's bit rate, the stream time, the pairs sampled); the rest is
in the spool, where the push side's service appends the other commands' JSON lines
(conf/systemd/sr-push@.service, ``make demo``; see srtools-spool(5)): ``monitor.jsonl`` (sr-monitor:
the current model's Y-PSNR gain over bicubic on the newest pair), ``train.jsonl`` (sr-train --watch:
sessions and publications) and ``upload.jsonl`` (sr-upload: versions sent). Only the last line of
each is read, and a file that is not there leaves its field out: the push side may run without it.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

MONITOR_LOG, TRAIN_LOG, UPLOAD_LOG = "monitor.jsonl", "train.jsonl", "upload.jsonl"
REQUESTS_DIR = "requests"


def last_line(path: Path) -> tuple[dict, float] | None:
    """The last JSON line of ``path`` and the file's modification time, or None (no file, no line)."""
    try:
        with open(path, "rb") as handle:
            size = handle.seek(0, os.SEEK_END)
            handle.seek(max(0, size - 8192))
            lines = handle.read().splitlines()
            written = os.fstat(handle.fileno()).st_mtime
    except OSError:
        return None
    for raw in reversed(lines):
        try:
            document = json.loads(raw)
        except ValueError:  # a line being written, or cut by the window
            continue
        if isinstance(document, dict):
            return document, written
    return None


def _ago(seconds: float) -> str:
    return f"{seconds:.0f} s ago" if seconds < 120 else f"{seconds / 60:.0f} min ago"


class PushStatus:
    """sr-push's status: :meth:`line` says it in one line, each call measuring the bit rate since the
    call before (so call it at a steady pace, e.g. every second).

    Args:
        pusher: the running :class:`srtools.live.push.Pusher`.
        spool: the push spool's directory.
    """

    def __init__(self, pusher, spool: str | os.PathLike):
        self.pusher, self.spool = pusher, Path(spool)
        self._last: tuple[float, int] | None = None  # (monotonic time, video bytes) at the last call
        self.kbit_s: float | None = None

    def _rate(self) -> float | None:
        now, sent = time.monotonic(), self.pusher.video_bytes
        if self._last is not None and now > self._last[0]:
            self.kbit_s = 8 * (sent - self._last[1]) / (now - self._last[0]) / 1e3
        self._last = (now, sent)
        return self.kbit_s

    def fields(self) -> dict[str, str]:
        """The status, by field: time, video, pairs, gain, training, upload (those known)."""
        pusher, fields = self.pusher, {}
        header, sampler = pusher.hr_header, pusher.sampler
        if header is not None:
            frames = pusher.frames + (sampler.hr_frames if sampler is not None else 0)
            fields["time"] = f"{frames / float(header.fps):.1f} s"
        rate = self._rate()
        fields["video"] = f"video {rate:.0f} kbit/s" if rate is not None else "video -"
        writer = pusher.writer
        fields["pairs"] = f"pairs {writer.offered}" + (f" ({writer.dropped} dropped)" if writer.dropped else "")
        now = time.time()
        if (monitor := last_line(self.spool / MONITOR_LOG)) is not None:
            sample, _ = monitor
            model = f"v{sample['model']}" if sample.get("model") is not None else "bicubic"
            try:
                fields["gain"] = f"gain {sample['psnr'] - sample['bicubic_psnr']:+.2f} dB ({model})"
            except (KeyError, TypeError):
                pass
        if (train := last_line(self.spool / TRAIN_LOG)) is not None:
            fields["training"] = "training: " + self._training(*train, now)
        if (upload := last_line(self.spool / UPLOAD_LOG)) is not None:
            result, written = upload
            fields["upload"] = f"upload: v{result.get('version')} {result.get('status', '?')} {_ago(now - written)}"
        return fields

    def _training(self, event: dict, written: float, now: float) -> str:
        requests = len(list((self.spool / REQUESTS_DIR).glob("request-*.json")))
        pending = f", {requests} request{'s' * (requests != 1)} pending" if requests else ""
        kind = event.get("event")
        if kind == "session":
            return f"session ({event.get('reason')}){pending}"
        if kind == "published":
            return f"v{event.get('version')} published ({event.get('gain_db', 0):+.2f} dB held out){pending}"
        if kind == "stopped":
            return f"idle since {_ago(now - written)} ({event.get('reason')}){pending}"
        return f"{kind}{pending}"

    def line(self) -> str:
        return " | ".join(self.fields().values())

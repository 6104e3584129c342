"""What sr-hls --serve tells about the live chain: /stats.json for the player's panel, /metrics for Prometheus.

Sources, read afresh for every request: sr-hls's own counters (frames encoded, the output frame
rate) and its renditions (:class:`srtools.ladder.Ladder`); with a stats directory, the files the
chain's other stages publish there (sr-live passes one to each of them): ``sr-serve-N.json`` and
``sr-tcsr-N.json`` (the ``--stats`` of publish session N, :class:`srtools.framefilter.Stats`, the
newest session by modification time) and ``sr-receive.json`` (sr-receive ``--stats``); with the
server's spool, when the model on air arrived. A missing file or field is reported as null, never
an error: a chain without sr-tcsr or sr-receive has none to show, and older stages publish fewer
fields.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Callable

from . import archs
from .prometheus import Exposition

log = logging.getLogger("srtools.hls")

SERVE, TCSR, RECEIVE = "sr-serve", "sr-tcsr", "sr-receive"
STATS_FORMAT = "sr-hls-stats/1"


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="seconds")


def _epoch(text: object) -> float | None:
    try:
        return datetime.datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return None


def _read(path: Path) -> dict | None:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):  # not there yet, or replaced as we read (published atomically: rare)
        return None
    return document if isinstance(document, dict) else None


def _version(label: object) -> int | None:
    match = re.fullmatch(r"v(\d+)", str(label))
    return int(match.group(1)) if match else None


class LiveStats:
    """The live statistics of one stream.

    Args:
        name: the stream's name (the ``stream`` label of every metric).
        summary: sr-hls's counters (:class:`srtools.hls.Summary`).
        renditions: a callable giving the renditions' figures (:meth:`srtools.ladder.Ladder.as_dict`).
        stats_dir: where the chain's stages publish their statistics, or None.
        spool: the server's model spool, or None.
    """

    def __init__(self, name: str, summary, renditions: Callable[[], dict], stats_dir: str | os.PathLike | None = None,
                 spool: str | os.PathLike | None = None):
        self.name, self.summary, self.renditions = name, summary, renditions
        self.stats_dir = Path(stats_dir) if stats_dir else None
        self.spool = Path(spool) if spool else None

    def sessions(self, stage: str) -> list[dict]:
        """The statistics ``stage`` published, one per session, the newest last."""
        if self.stats_dir is None:
            return []
        paths = [p for p in self.stats_dir.glob(f"{stage}-*.json") if re.fullmatch(rf"{stage}-\d+\.json", p.name)]
        found = []
        for path in paths:
            try:
                written = path.stat().st_mtime
            except FileNotFoundError:
                continue
            if (document := _read(path)) is not None:
                found.append((written, document))
        return [document for _, document in sorted(found, key=lambda item: item[0])]

    def received(self) -> dict | None:
        """sr-receive's figures for this stream: the stream of that name, else its only stream."""
        if self.stats_dir is None or (document := _read(self.stats_dir / f"{RECEIVE}.json")) is None:
            return None
        streams = document.get("streams") or {}
        if self.name in streams:
            return streams[self.name]
        return next(iter(streams.values())) if len(streams) == 1 else None

    def model_arrived(self, label: object, received: dict | None) -> float | None:
        """When the model ``label`` ("v7") came into the server's spool: sr-receive's record of it, else
        its file's time in the spool."""
        version = _version(label)
        if version is None:
            return None
        for upload in ((received or {}).get("models") or {}).values():
            if upload.get("version") == version and archs.ARCHITECTURES.get(upload.get("arch"), None) is not None \
                    and archs.ARCHITECTURES[upload["arch"]].task == archs.UPSCALE:
                return _epoch(upload.get("received"))
        if self.spool is None:
            return None
        for path in (self.spool / "models").glob(f"*-{version:06d}.safetensors"):
            arch = path.name.split("-x", 1)[0]
            if arch in archs.ARCHITECTURES and archs.ARCHITECTURES[arch].task == archs.UPSCALE:
                try:
                    return path.stat().st_mtime
                except FileNotFoundError:
                    return None
        return None

    def document(self) -> dict:
        """The /stats.json document (its fields: sr-hls(1))."""
        now = time.time()
        serve, tcsr, received = self.sessions(SERVE), self.sessions(TCSR), self.received()
        newest = serve[-1] if serve else {}
        arrived = self.model_arrived(newest.get("model"), received)
        input_fps = newest["frames"] / newest["seconds"] if newest.get("seconds") and "frames" in newest else None
        output_fps = self.summary.fps()
        renditions = self.renditions()
        return {
            "format": STATS_FORMAT, "stream": self.name, "time": _iso(now),
            "model": newest.get("model"), "model_arrived": _iso(arrived) if arrived else None,
            "model_age_s": round(now - arrived, 1) if arrived else None,
            "swaps": sum(s.get("swaps", 0) for s in serve), "late_frames": sum(s.get("late", 0) for s in serve),
            "network_frames": sum(s.get("engine_frames", 0) for s in serve),
            "block_share": newest.get("block_share"),
            "tcsr_frames": sum(s.get("frames", 0) for s in tcsr) if tcsr else None,
            "tcsr_refined": sum(s.get("engine_frames", 0) for s in tcsr) if tcsr else None,
            "sessions": len(serve), "frames": self.summary.frames,
            "input_fps": round(input_fps, 2) if input_fps is not None else None,
            "output_fps": round(output_fps, 2) if output_fps is not None else None,
            "segment_age_s": (renditions.get("sr") or {}).get("newest_age_s"),
            "renditions": renditions,
            "upload": (received or {}).get("last_upload"), "request": (received or {}).get("last_request"),
        }

    def metrics(self) -> str:
        """The /metrics scrape (Prometheus text format, :mod:`srtools.prometheus`)."""
        out = Exposition(stream=self.name)
        out.counter("srtools_hls_frames_total", "Frames encoded into the super-resolved rendition.",
                    self.summary.frames)
        out.counter("srtools_hls_streams_total", "Y4M streams (publish sessions) encoded.", self.summary.streams)
        renditions = self.renditions()
        for name, figures in renditions.items():
            out.counter("srtools_hls_segments_total", "Segments written, by rendition.", figures["segments"],
                        rendition=name)
        for name, figures in renditions.items():
            out.counter("srtools_hls_segment_bytes_total", "Bytes of the segments written, by rendition.",
                        figures["bytes"], rendition=name)
        for name, figures in renditions.items():
            out.counter("srtools_hls_segment_media_seconds_total", "Seconds of media in the segments written, "
                        "by rendition.", figures["seconds"], rendition=name)
        for name, figures in renditions.items():
            out.gauge("srtools_hls_newest_segment_age_seconds", "Time since the newest segment of the rendition "
                      "was written.", figures["newest_age_s"], rendition=name)
        serve, tcsr = self.sessions(SERVE), self.sessions(TCSR)
        for stage, sessions, fields in (
                (SERVE, serve, [("frames", "frames_total", "Frames upscaled."),
                                ("engine_frames", "network_frames_total", "Frames with the network's output, whole "
                                                                          "or in blocks."),
                                ("late", "late_frames_total", "Frames written after their deadline."),
                                ("swaps", "model_swaps_total", "Models swapped in."),
                                ("block_frames", "block_frames_total", "Frames upscaled in blocks rather than "
                                                                       "whole."),
                                ("blocks_total", "blocks_total", "Blocks of the frames upscaled in blocks."),
                                ("blocks_computed", "computed_blocks_total", "Blocks computed by the network."),
                                ("blocks_reused", "reused_blocks_total", "Blocks given a remembered correction.")]),
                (TCSR, tcsr, [("frames", "frames_total", "Frames through sr-tcsr."),
                              ("engine_frames", "refined_frames_total", "Frames refined by TCSR."),
                              ("predicted_to_lose", "predicted_to_lose_frames_total", "Frames passed through as "
                                                                                      "refining them would lose."),
                              ("late", "late_frames_total", "Frames written after their deadline.")])):
            prefix = "srtools_" + stage.removeprefix("sr-")
            for field, name, help_text in fields:
                if sessions and any(field in s for s in sessions):
                    out.counter(f"{prefix}_{name}", f"{help_text} Summed over the publish sessions.",
                                sum(s.get(field, 0) or 0 for s in sessions))
        if serve:
            newest = serve[-1]
            out.gauge("srtools_serve_block_share_ratio", "Share of the blocks with the network's output (computed "
                      "or reused) in the current session.", newest.get("block_share"))
            out.gauge("srtools_serve_lag_seconds", "How long the newest frame took from the start of its slot "
                      "until written (one that keeps growing is a backlog).",
                      newest["lag_ms"] / 1e3 if "lag_ms" in newest else None)
            out.gauge("srtools_serve_worst_lag_seconds", "The longest a frame took from the start of its slot "
                      "until written, in the current session.",
                      newest["worst_lag_ms"] / 1e3 if "worst_lag_ms" in newest else None)
            out.gauge("srtools_serve_model_version", "Version of the model on air (0: none).",
                      _version(newest.get("model")) or 0)
        out.gauge("srtools_serve_sessions", "Publish sessions so far.", len(serve))
        return out.text()

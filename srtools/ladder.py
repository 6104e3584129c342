"""sr-hls's ABR ladder: the master playlist of its renditions, with what each of them measures.

The master playlist (``index.m3u8``) lists the video renditions, the super-resolved one
(``sr.m3u8``) first, then the low-res one as the server received it (``lr.m3u8``), each with the
one audio rendition (``audio.m3u8``, an EXT-X-MEDIA group) where there is one::

    #EXTM3U
    #EXT-X-VERSION:3
    #EXT-X-INDEPENDENT-SEGMENTS
    #EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="audio",DEFAULT=YES,AUTOSELECT=YES,URI="audio.m3u8"
    #EXT-X-STREAM-INF:BANDWIDTH=1121735,AVERAGE-BANDWIDTH=934022,RESOLUTION=640x360,CODECS="avc1.64001e,mp4a.40.2",AUDIO="audio"
    sr.m3u8
    #EXT-X-STREAM-INF:BANDWIDTH=412893,AVERAGE-BANDWIDTH=351580,RESOLUTION=320x180,CODECS="avc1.64000d,mp4a.40.2",AUDIO="audio"
    lr.m3u8

BANDWIDTH is the peak segment bit rate as RFC 8216 defines it (the highest bit rate of any run of
consecutive segments lasting 0.5 to 1.5 target durations), measured over the segments written so
far, the video's plus the audio's; AVERAGE-BANDWIDTH is their mean bit rate. A live stream's future
is unknown, so the master playlist is rewritten (atomically) whenever a figure changes; a player
reads it once, at its start. RESOLUTION and CODECS (RFC 6381: ``avc1.PPCCLL`` from the H.264
sequence parameter set, ``mp4a.40.2`` for AAC-LC) are read from the first segment of the newest
stream, since a publisher may come back with another size. A rendition joins the master playlist
with its first segment. The first master playlist waits for the SR rendition's first segment, then
up to :data:`FIRST_MASTER_WAIT_TARGETS` target durations for every other rendition the stream is
expected to have (:meth:`Ladder.expect`): a player reads it once, and one that loaded it without the
audio would play the stream silent to its end. One-variant master playlists, ``index-sr.m3u8``
and ``index-lr.m3u8``, let a player that cannot pin a variant (the browser's native HLS) play
either with the audio.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import math
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

from . import ffmpeg
from .fsutil import write_atomic

log = logging.getLogger("srtools.hls")

MASTER = "index.m3u8"
SR, LR, AUDIO = "sr", "lr", "audio"
VIDEO_RENDITIONS = (SR, LR)
VARIANT_MASTERS = {SR: "index-sr.m3u8", LR: "index-lr.m3u8"}
AUDIO_GROUP = "audio"
AAC_CODECS = {"LC": "mp4a.40.2", "HE-AAC": "mp4a.40.5", "HE-AACv2": "mp4a.40.29"}
UPDATE_INTERVAL_S = 1.0
# How long the first master playlist waits for an expected rendition after the SR one is listed (an
# audio segment is cut a little after its video one; a rendition that fails must not hold the stream).
FIRST_MASTER_WAIT_TARGETS = 3


def media_playlist(rendition: str) -> str:
    """The file name of ``rendition``'s media playlist."""
    return f"{rendition}.m3u8"


@dataclasses.dataclass
class Entry:
    """A segment as a media playlist lists it."""

    name: str
    duration: float
    discontinuity: bool


@dataclasses.dataclass
class MediaPlaylist:
    target: float  # EXT-X-TARGETDURATION, seconds
    sequence: int  # EXT-X-MEDIA-SEQUENCE
    entries: list[Entry]
    ended: bool


def parse_media_playlist(text: str) -> MediaPlaylist:
    """The fields of a media playlist that the ladder and the tests read."""
    target, sequence, entries, discontinuity, duration = 0.0, 0, [], False, 0.0
    for line in text.splitlines():
        if line.startswith("#EXT-X-TARGETDURATION:"):
            target = float(line.split(":", 1)[1])
        elif line.startswith("#EXT-X-MEDIA-SEQUENCE:"):
            sequence = int(line.split(":", 1)[1])
        elif line == "#EXT-X-DISCONTINUITY":
            discontinuity = True
        elif line.startswith("#EXTINF:"):
            duration = float(line[len("#EXTINF:"):].split(",")[0])
        elif line and not line.startswith("#"):
            entries.append(Entry(line, duration, discontinuity))
            discontinuity = False
    return MediaPlaylist(target, sequence, entries, "#EXT-X-ENDLIST" in text)


def ffprobe_binary() -> str:
    return shutil.which("ffprobe") or "ffprobe"


def _probe(path: Path, stream: str, entries: str) -> dict:
    result = subprocess.run([ffprobe_binary(), "-v", "error", "-select_streams", stream, "-show_entries",
                             f"stream={entries}", "-of", "json", str(path)], capture_output=True, timeout=30)
    streams = json.loads(result.stdout or b"{}").get("streams") or [{}]
    return streams[0]


def avc_codec(path: Path) -> str | None:
    """RFC 6381's name of the H.264 stream in the segment ``path``, ``avc1.PPCCLL``: the profile,
    constraint flags and level of its first sequence parameter set (None when there is none)."""
    result = subprocess.run([ffmpeg.ffmpeg_binary(), *ffmpeg.GLOBAL_ARGS, "-i", str(path), "-map", "0:v:0",
                             "-c", "copy", "-frames:v", "1", "-f", "h264", "pipe:1"], capture_output=True, timeout=30)
    data = result.stdout
    start = data.find(b"\x00\x00\x01")
    while start >= 0:
        if start + 6 <= len(data) and data[start + 3] & 0x1F == 7:  # NAL unit type 7: a sequence parameter set
            return "avc1." + data[start + 4:start + 7].hex()
        start = data.find(b"\x00\x00\x01", start + 3)
    return None


def describe_segment(path: Path, kind: str) -> tuple[str | None, tuple[int, int] | None]:
    """(CODECS entry, resolution or None) of a segment's video or audio."""
    if kind == AUDIO:
        info = _probe(path, "a:0", "codec_name,profile")
        if info.get("codec_name") != "aac":
            return None, None
        return AAC_CODECS.get(info.get("profile"), "mp4a.40.2"), None
    info = _probe(path, "v:0", "codec_name,width,height")
    size = (info["width"], info["height"]) if "width" in info and "height" in info else None
    return (avc_codec(path) if info.get("codec_name") == "h264" else None), size


class Rendition:
    """One rendition's measurements: its segments as they are listed, their bit rates, and what the
    newest stream's first segment holds."""

    def __init__(self, name: str):
        self.name = name
        self.kind = AUDIO if name == AUDIO else "video"
        self.segments = 0
        self.bytes = 0
        self.seconds = 0.0
        self.peak_bps = 0.0
        self.codecs: str | None = None
        self.resolution: tuple[int, int] | None = None
        self.newest_written: float | None = None  # the newest segment's mtime
        self.target = 0.0
        self._seen: set[str] = set()
        self._recent: collections.deque[tuple[int, float]] = collections.deque(maxlen=64)  # (bytes, seconds)

    @property
    def average_bps(self) -> float:
        return 8 * self.bytes / self.seconds if self.seconds > 0 else 0.0

    @property
    def bandwidth_bps(self) -> float:
        """The peak segment bit rate (the mean until a run of segments is long enough to count)."""
        return self.peak_bps or self.average_bps

    @property
    def listed(self) -> bool:
        """Whether it belongs in the master playlist: it has segments, and a video one a known size."""
        return self.segments > 0 and (self.kind == AUDIO or self.resolution is not None)

    def update(self, directory: Path) -> None:
        """Measure the segments listed since the last update."""
        try:
            playlist = parse_media_playlist((directory / media_playlist(self.name)).read_text())
        except FileNotFoundError:
            return
        self.target = playlist.target or self.target
        for entry in playlist.entries:
            if entry.name in self._seen:
                continue
            try:
                info = (directory / entry.name).stat()
            except FileNotFoundError:  # deleted from the window before we saw it
                self._seen.add(entry.name)
                continue
            self._seen.add(entry.name)
            if entry.discontinuity or self.codecs is None and self.resolution is None:  # a new stream begins
                try:
                    self.codecs, self.resolution = describe_segment(directory / entry.name, self.kind)
                except (OSError, ValueError, subprocess.SubprocessError) as exc:
                    log.warning("%s: cannot read its codec and size (%s)", entry.name, exc)
            self._measure(info.st_size, entry.duration)
            self.newest_written = max(self.newest_written or 0.0, info.st_mtime)

    def _measure(self, size: int, duration: float) -> None:
        self.segments += 1
        self.bytes += size
        self.seconds += duration
        self._recent.append((size, duration))
        if not self.target:
            return
        total_bytes, total_seconds = 0, 0.0
        for size, duration in reversed(self._recent):  # every run of segments that ends with this one
            total_bytes += size
            total_seconds += duration
            if total_seconds > 1.5 * self.target:
                break
            if total_seconds >= 0.5 * self.target:
                self.peak_bps = max(self.peak_bps, 8 * total_bytes / total_seconds)

    def as_dict(self) -> dict:
        age = time.time() - self.newest_written if self.newest_written else None
        return {"segments": self.segments, "bytes": self.bytes, "seconds": round(self.seconds, 3),
                "bandwidth_bps": round(self.bandwidth_bps), "average_bps": round(self.average_bps),
                "codecs": self.codecs, "resolution": list(self.resolution) if self.resolution else None,
                "newest_age_s": None if age is None else round(max(0.0, age), 3)}


class Ladder:
    """The renditions of an sr-hls output directory and its master playlists (see the module docstring).

    :meth:`update` measures the segments listed since the last one and rewrites the master playlists
    when they change; :meth:`keep_current` does so every second on a thread. Thread-safe.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.renditions = {name: Rendition(name) for name in (*VIDEO_RENDITIONS, AUDIO)}
        self._lock = threading.Lock()
        self._written: dict[str, str] = {}
        self._expected: set[str] = set()
        self._sr_listed_at: float | None = None  # when the first master began to wait for the expected renditions

    def expect(self, *names: str) -> None:
        """The renditions the stream being written will have: the first master playlist waits for them."""
        with self._lock:
            self._expected = set(names)

    def update(self) -> None:
        with self._lock:
            for rendition in self.renditions.values():
                rendition.update(self.directory)
            videos = [r for name in VIDEO_RENDITIONS if (r := self.renditions[name]).listed]
            if not videos or not self._written and not self._first_master_due():
                return
            texts = {MASTER: self.master_text(videos)}
            texts.update({VARIANT_MASTERS[r.name]: self.master_text([r]) for r in videos})
            for name, text in texts.items():
                if self._written.get(name) != text:
                    write_atomic(self.directory / name, lambda tmp, text=text: Path(tmp).write_text(text))
                    self._written[name] = text

    def _first_master_due(self) -> bool:
        """Whether the SR rendition has a segment, and every expected one too or the wait for them is over."""
        sr = self.renditions[SR]
        if not sr.listed:
            return False
        if all(self.renditions[name].listed for name in self._expected):
            return True
        now = time.monotonic()
        self._sr_listed_at = self._sr_listed_at or now
        return now - self._sr_listed_at >= FIRST_MASTER_WAIT_TARGETS * (sr.target or UPDATE_INTERVAL_S)

    def master_text(self, videos: list[Rendition]) -> str:
        """A master playlist of ``videos``, each with the audio rendition where there is one."""
        audio = self.renditions[AUDIO] if self.renditions[AUDIO].listed else None
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-INDEPENDENT-SEGMENTS"]
        if audio:
            lines.append(f'#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="{AUDIO_GROUP}",NAME="audio",DEFAULT=YES,AUTOSELECT=YES,'
                         f'URI="{media_playlist(AUDIO)}"')
        for video in videos:
            peak = video.bandwidth_bps + (audio.bandwidth_bps if audio else 0.0)
            average = video.average_bps + (audio.average_bps if audio else 0.0)
            attributes = [f"BANDWIDTH={math.ceil(peak)}", f"AVERAGE-BANDWIDTH={math.ceil(average)}",
                          "RESOLUTION={}x{}".format(*video.resolution)]
            if video.codecs and (audio is None or audio.codecs):
                attributes.append(f'CODECS="{",".join(filter(None, (video.codecs, audio and audio.codecs)))}"')
            if audio:
                attributes.append(f'AUDIO="{AUDIO_GROUP}"')
            lines += ["#EXT-X-STREAM-INF:" + ",".join(attributes), media_playlist(video.name)]
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict:
        """Each rendition's figures, for the live statistics."""
        with self._lock:
            return {name: rendition.as_dict() for name, rendition in self.renditions.items() if rendition.segments}

    def keep_current(self, interval: float = UPDATE_INTERVAL_S) -> _Updater:
        """Update every ``interval`` seconds on a thread until the returned updater is stopped."""
        updater = _Updater(self, interval)
        updater.start()
        return updater


class _Updater(threading.Thread):
    def __init__(self, ladder: Ladder, interval: float):
        super().__init__(name="ladder", daemon=True)
        self.ladder, self.interval = ladder, interval
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self._update()

    def _update(self) -> None:
        try:
            self.ladder.update()
        except OSError as exc:  # a full disk, a directory removed: the renditions go on
            log.warning("cannot update the master playlist: %s", exc)

    def stop(self) -> None:
        """Stop, after one last update."""
        self._stop_event.set()
        self.join()
        self._update()

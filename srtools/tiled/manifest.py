"""The tiled-delivery manifest: what ``sr-tile`` wrote and where every tile lives.

Layout of a tiled directory (``sr-tile VIDEO --out DIR``)::

    DIR/manifest.json                       this manifest (written last, atomically)
    DIR/origin/seg00000/t00.mp4             high-res (HR) version of tile 0 of segment 0
    DIR/edges/edge-0/seg00000/t03.mp4       low-res (LR) version, stored at the edge holding its set

Tile j of a segment is row ``j // cols``, column ``j % cols`` of the grid. Set m of every segment
is stored at edge m. Paths inside the manifest are relative to DIR; the URL path of a tile on an
edge server is its path relative to the edge directory (``/seg00000/t03.mp4``).
"""

from __future__ import annotations

import dataclasses
import os
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..fsutil import read_json_document, write_json_atomic

FORMAT = "srtools-tiled/1"
MANIFEST_NAME = "manifest.json"


@dataclasses.dataclass
class Tile:
    """One tile of one segment: its grid position and encoded sizes."""

    index: int
    row: int
    col: int
    lr_bytes: int
    hr_bytes: int


@dataclasses.dataclass
class Segment:
    """A time segment: frames [start_frame, start_frame + frames), its tiles and their sets."""

    index: int
    start_frame: int
    frames: int
    tiles: list[Tile]
    sets: list[list[int]]  # sets[m]: tile indices stored at edge m
    attention: float  # v_i, normalised over the video (sums to 1)

    def edge_of(self, tile: int) -> int:
        for m, members in enumerate(self.sets):
            if tile in members:
                return m
        raise KeyError(tile)


@dataclasses.dataclass
class Manifest:
    """Everything the cache planner, the proxy and the simulator need about a tiled video.

    ``width``/``height`` are the HR frame size after cropping to a whole number of tiles (the
    top-left part of the source; reconstructed frames are compared with this crop of it).
    """

    source: str
    width: int
    height: int
    fps: Fraction
    scale: int
    rows: int
    cols: int
    edges: int
    segment_seconds: float
    lr_crf: int
    hr_crf: int
    segments: list[Segment]
    partition: dict[str, Any] = dataclasses.field(default_factory=dict)
    root: Path = dataclasses.field(default=Path("."), compare=False)

    # Geometry -------------------------------------------------------------------------------
    @property
    def tiles_per_segment(self) -> int:
        return self.rows * self.cols

    @property
    def tile_width(self) -> int:
        return self.width // self.cols

    @property
    def tile_height(self) -> int:
        return self.height // self.rows

    def tile_rect(self, j: int, scale: int = 1) -> tuple[int, int, int, int]:
        """(y, x, height, width) of tile j in the HR frame, divided by ``scale``."""
        th, tw = self.tile_height // scale, self.tile_width // scale
        return (j // self.cols) * th, (j % self.cols) * tw, th, tw

    # Paths ------------------------------------------------------------------------------------
    @staticmethod
    def tile_name(segment: int, tile: int) -> str:
        return f"seg{segment:05d}/t{tile:02d}.mp4"

    @staticmethod
    def edge_dirname(edge: int) -> str:
        return f"edges/edge-{edge}"

    def hr_path(self, segment: int, tile: int) -> Path:
        return self.root / "origin" / self.tile_name(segment, tile)

    def lr_path(self, segment: int, tile: int) -> Path:
        edge = self.segments[segment].edge_of(tile)
        return self.root / self.edge_dirname(edge) / self.tile_name(segment, tile)

    # Arrays -----------------------------------------------------------------------------------
    def array(self, field: str) -> np.ndarray:
        """(n, J) array of a per-tile field (``lr_bytes`` or ``hr_bytes``)."""
        return np.array([[getattr(t, field) for t in s.tiles] for s in self.segments], dtype=float)

    @property
    def attention(self) -> np.ndarray:
        return np.array([s.attention for s in self.segments], dtype=float)

    @property
    def tile_sets(self) -> list[list[list[int]]]:
        return [s.sets for s in self.segments]

    # JSON -------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        raw = {k: v for k, v in dataclasses.asdict(self).items() if k != "root"}
        raw["fps"] = f"{self.fps.numerator}/{self.fps.denominator}"
        return {"format": FORMAT, **raw}

    def save(self, path: str | os.PathLike) -> None:
        write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike) -> Manifest:
        """Read and validate a manifest; ``path`` is the JSON file or the directory holding it.

        Raises:
            InputError: missing, not JSON, or inconsistent.
        """
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST_NAME
        raw = read_json_document(path, FORMAT, "manifest", "sr-tile")
        try:
            segments = [Segment(index=int(s["index"]), start_frame=int(s["start_frame"]), frames=int(s["frames"]),
                                tiles=[Tile(**t) for t in s["tiles"]], sets=[list(map(int, m)) for m in s["sets"]],
                                attention=float(s["attention"])) for s in raw["segments"]]
            manifest = cls(source=str(raw["source"]), width=int(raw["width"]), height=int(raw["height"]),
                           fps=Fraction(raw["fps"]), scale=int(raw["scale"]), rows=int(raw["rows"]),
                           cols=int(raw["cols"]), edges=int(raw["edges"]),
                           segment_seconds=float(raw["segment_seconds"]), lr_crf=int(raw["lr_crf"]),
                           hr_crf=int(raw["hr_crf"]), segments=segments, partition=dict(raw.get("partition", {})),
                           root=path.parent)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            raise InputError(f"{path}: malformed manifest ({type(exc).__name__}: {exc})") from None
        manifest.validate(str(path))
        return manifest

    def validate(self, name: str) -> None:
        problems = []
        if not self.segments:
            problems.append("no segments")
        if self.edges < 1 or self.rows < 1 or self.cols < 1 or self.scale < 1:
            problems.append("non-positive grid, edges or scale")
        for s in self.segments:
            indices = sorted(i for m in s.sets for i in m)
            if len(s.sets) != self.edges or indices != list(range(self.tiles_per_segment)):
                problems.append(f"segment {s.index}: sets do not partition its {self.tiles_per_segment} tiles "
                                f"over {self.edges} edges")
            if len(s.tiles) != self.tiles_per_segment or s.frames < 1:
                problems.append(f"segment {s.index}: {len(s.tiles)} tiles, {s.frames} frames")
        if problems:
            raise InputError(f"{name}: inconsistent manifest: {problems[0]}")

"""sr-tile: cut a video into segments and tiles, encode them at LR and HR, group tiles into edge sets."""

from __future__ import annotations

import logging
import re

import click

from .. import cli
from ..fsutil import emit_json
from ..tiled.tiling import PARTITION_ALGORITHM, make_tiles

log = logging.getLogger("srtools.tile")


def parse_grid(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", value)
    if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise click.BadParameter("expected ROWSxCOLS, e.g. 4x6")
    return int(match.group(1)), int(match.group(2))


@cli.command("sr-tile", epilog="See also: sr-cache(1), sr-edge(1), sr-proxy(1), sr-sim(1).")
@click.argument("video", metavar="VIDEO")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="Directory to create (must not exist or be empty).")
@click.option("--segment", type=click.FloatRange(0.04, 60), default=1.0, show_default=True, metavar="SECONDS",
              help="Segment duration (rounded to whole frames).")
@click.option("--grid", default="4x6", show_default=True, callback=parse_grid, metavar="ROWSxCOLS",
              help="Tiles per segment, in rows and columns.")
@click.option("--sets", type=click.IntRange(1, 64), default=6, show_default=True, metavar="M",
              help="Tile sets per segment = number of edge servers.")
@cli.scale_option()
@click.option("--lr-crf", type=click.IntRange(0, 51), default=23, show_default=True,
              help="x264 CRF of the low-res tiles served by the edges.")
@click.option("--hr-crf", type=click.IntRange(0, 51), default=18, show_default=True,
              help="x264 CRF of the high-res tiles kept at the origin.")
@click.option("--jobs", type=click.IntRange(1, 64), default=None, help="Segments encoded in parallel.")
def command(video: str, out_dir: str, segment: float, grid: tuple[int, int], sets: int, scale: int, lr_crf: int,
            hr_crf: int, jobs: int | None) -> None:
    """Prepare a video for cache-assisted multi-source tiled delivery.

    VIDEO (anything ffmpeg reads) is cut in time into segments of --segment seconds and each
    segment in space into ROWS x COLS equal tiles (the frame is cropped at the right and bottom
    to whole tiles whose low-res size is even). Every tile is encoded twice with libx264: the
    high-res crop (DIR/origin/) and its low-res version, downscaled SCALE times with ffmpeg's
    area filter (served by the edges). The tiles of each segment are grouped into M sets of
    near-equal LR bytes (multiway Karmarkar-Karp, then pairwise exchanges; the manifest records
    the imbalance reached) and set m is stored in DIR/edges/edge-m/. Each segment's viewer
    attention is its mean spectral-residual saliency (Hou & Zhang 2007), normalised over the
    video.

    DIR/manifest.json lists the segments, tile sizes, sets and attention; DIR appears
    complete or not at all. A JSON summary goes to stdout.
    """
    rows, cols = grid
    m = make_tiles(video, out_dir, segment_seconds=segment, rows=rows, cols=cols, edges=sets, scale=scale,
                   lr_crf=lr_crf, hr_crf=hr_crf, jobs=jobs)
    lr_total = int(m.array("lr_bytes").sum())
    log.info("%d segments x %d tiles (%dx%d HR, x%d) in %d sets; set imbalance mean %.1f%%, max %.1f%%",
             len(m.segments), m.tiles_per_segment, m.tile_width, m.tile_height, scale, sets,
             100 * m.partition["imbalance_mean"], 100 * m.partition["imbalance_max"])
    summary = {"manifest": str(m.root / "manifest.json"), "segments": len(m.segments),
               "tiles_per_segment": m.tiles_per_segment, "edges": sets, "width": m.width, "height": m.height,
               "lr_bytes": lr_total, "hr_bytes": int(m.array("hr_bytes").sum()),
               "partition": {"algorithm": PARTITION_ALGORITHM, "imbalance_mean": m.partition["imbalance_mean"],
                             "imbalance_max": m.partition["imbalance_max"]}}
    emit_json(summary)


main = cli.entry_point(command)

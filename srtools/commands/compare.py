"""sr-compare: frame-by-frame quality of one or more videos against a reference."""

from __future__ import annotations

import contextlib
import logging
import math

import click
import numpy as np
from rich.table import Table

from .. import cli, metrics, video
from ..errors import InputError, UsageError
from ..fsutil import emit_json

log = logging.getLogger("srtools.compare")


def _mean_finite(values: list[float]) -> float | None:
    """Mean over frames; identical frames (infinite PSNR) are left out, None if all are."""
    finite = [v for v in values if math.isfinite(v)]
    return round(float(np.mean(finite)), 4) if finite else None


def _cell(value: float | None, digits: int) -> str:
    return "inf" if value is None else f"{value:.{digits}f}"


@cli.command("sr-compare", epilog="See also: sr-serve(1), srtools-y4m(7).")
@click.argument("reference")
@click.argument("candidates", nargs=-1, required=True)
@click.option("-l", "--label", "labels", multiple=True, metavar="NAME",
              help="Name of each candidate in the table, in order (default: its path).")
def command(reference: str, candidates: tuple[str, ...], labels: tuple[str, ...]) -> None:
    """Measure Y-PSNR, Y-SSIM and RGB-PSNR of CANDIDATES against REFERENCE.

    Every input is Y4M (srtools-y4m(7)) or anything ffmpeg decodes; they are read in lockstep,
    frame by frame, and must have the reference's size and frame count. The conventions (whole
    frame, mean of per-frame PSNR, ffmpeg's SSIM) are those of srtools.metrics and agree with
    ffmpeg's psnr and ssim filters; frames identical to the reference (infinite PSNR) are left
    out of the means, and a mean over none is null. A table goes to stderr and one JSON object
    per candidate to stdout: {"label", "frames", "y_psnr_db", "y_ssim", "rgb_psnr_db"}. RGB-PSNR
    needs a 4:2:0 reference of even sizes; a 4:2:2 or 4:4:4 candidate's chroma is then converted
    to 4:2:0 for it, and a mono candidate has none (null). Frames under 8x8 pixels (SSIM's
    window) are refused (exit status 3).
    """
    if labels and len(labels) != len(candidates):
        raise UsageError(f"{len(labels)} --label for {len(candidates)} candidates")
    labels = labels or candidates
    scores: list[dict[str, list[float]]] = [{"y_psnr_db": [], "y_ssim": [], "rgb_psnr_db": []} for _ in candidates]
    with contextlib.ExitStack() as stack:
        ref_reader = stack.enter_context(video.open_source(reference))
        readers = [stack.enter_context(video.open_source(c)) for c in candidates]
        size = (ref_reader.header.width, ref_reader.header.height)
        for name, reader in zip(candidates, readers):
            if (reader.header.width, reader.header.height) != size:
                raise InputError(f"{name}: {reader.header.width}x{reader.header.height}, "
                                 f"reference is {size[0]}x{size[1]}")
        if min(size) < 8:
            raise InputError(f"{reference}: {size[0]}x{size[1]} frames are under 8x8, the window of SSIM")
        rgb_reference = ref_reader.header.colorspace.startswith("420") and size[0] % 2 == 0 and size[1] % 2 == 0
        rgb = [rgb_reference and reader.header.colorspace != "mono" for reader in readers]
        for ref in ref_reader:
            for name, reader, score, with_rgb in zip(candidates, readers, scores, rgb):
                frame = reader.read()
                if frame is None:
                    raise InputError(f"{name}: ends at frame {ref_reader.frames_read - 1}, the reference goes on")
                score["y_psnr_db"].append(metrics.y_psnr(frame, ref))
                score["y_ssim"].append(metrics.y_ssim(frame, ref))
                if with_rgb:
                    score["rgb_psnr_db"].append(metrics.rgb_psnr(frame, ref))
        for name, reader in zip(candidates, readers):
            if reader.read() is not None:
                raise InputError(f"{name}: has more frames than the reference ({ref_reader.frames_read})")
    table = Table("candidate", "frames", "Y-PSNR dB", "Y-SSIM", "RGB-PSNR dB", title=f"against {reference}")
    for label, score in zip(labels, scores):
        row = {"label": label, "frames": len(score["y_psnr_db"])}
        row.update({key: _mean_finite(values) for key, values in score.items()})
        table.add_row(label, str(row["frames"]), _cell(row["y_psnr_db"], 2), _cell(row["y_ssim"], 4),
                      _cell(row["rgb_psnr_db"], 2) if score["rgb_psnr_db"] else "-")
        emit_json(row)
    cli.console.print(table)


main = cli.entry_point(command)

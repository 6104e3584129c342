"""sr-monitor: score each new pool pair with the current model and request training on a scene change."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import sys
import time

import click

from .. import cli
from ..fsutil import emit_json
from ..live.lowess import SceneChangeDetector
from ..live.monitor import Monitor

log = logging.getLogger("srtools.monitor")


@cli.command("sr-monitor", epilog="See also: sr-train(1), sr-serve(1), srtools-spool(5).")
@cli.spool_option(required=True)
@cli.scale_option()
@click.option("--once", is_flag=True, help="Score the pairs in the pool now and exit (batch evaluation).")
@click.option("--log", "log_path", type=click.Path(dir_okay=False, writable=True), metavar="FILE",
              help="Append the JSON lines to FILE instead of stdout.")
@click.option("--window", type=click.IntRange(3, 256), default=SceneChangeDetector.K, show_default=True, metavar="K",
              help="Samples in the smoothing window (the k most recent).")
@click.option("--threshold-db", type=click.FloatRange(0, None, min_open=True), default=SceneChangeDetector.THRESHOLD_DB,
              show_default=True, metavar="DB", help="The least departure from the trend, up or down, that counts.")
@click.option("--noise-factor", type=click.FloatRange(0, None), default=SceneChangeDetector.NOISE_FACTOR,
              show_default=True, metavar="F",
              help="Where the PSNR is noisier, a departure must also exceed F robust standard deviations of "
                   "the recent residuals from the trend (0: the fixed threshold only).")
@click.option("--persistence", type=click.IntRange(1, 16), default=SceneChangeDetector.PERSISTENCE,
              show_default=True, metavar="N",
              help="Counting samples in a row needed for a request: brief events are ignored.")
@click.option("--picture-gate", type=click.FloatRange(0, 2), default=SceneChangeDetector.PICTURE_GATE,
              show_default=True, metavar="C",
              help="The picture change (about 1 - correlation of 16x9 luma thumbnails) a departure needs to "
                   "count (0: every departure counts).")
@click.option("--picture-cut", type=click.FloatRange(0, 2), default=SceneChangeDetector.PICTURE_CUT,
              show_default=True, metavar="C",
              help="The picture change that counts without a departure, on a view whose pictures usually "
                   "stay the same (a cut to content as hard as the last; 2: never).")
@cli.poll_interval_option(what="the pool is checked for new pairs (without --once)")
@cli.threads_option
@cli.device_option
def command(spool: str, scale: int, once: bool, log_path: str | None, window: int, threshold_db: float,
            noise_factor: float, persistence: int, picture_gate: float, picture_cut: float, poll_interval: float,
            device: str) -> None:
    """Track the current model's Y-PSNR on the live content and ask for retraining on a scene change.

    For each pair the push side adds to the spool's pool (srtools-spool(5)), the HR frame is
    compared with the current upscaling model's output for the LR frame, and with bicubic. The
    model's PSNR series is smoothed by locally weighted regression with the Epanechnikov kernel
    over the --window most recent samples (local-constant: it raised fewer false alarms than
    local-linear on noisy drifting series). A sample departs when it is further from that trend,
    either way, than --threshold-db, or than --noise-factor robust standard deviations of the recent
    residuals where the PSNR is noisy.

    A departure counts only if the picture changed too: the HR frame's 16x9 luma thumbnail is
    compared with those of the trend's samples (change: about 1 minus the best correlation; 0 the
    same picture, about 1 an unrelated one; brightness does not count), unless the thumbnail has
    too little contrast to be recognised (std under 4 levels). On real footage the PSNR
    of an unchanged view moves by as much as a cut moves it (a camera's encoder, objects moved,
    noise), while a cut changes the whole picture. A change beyond --picture-cut plus twice the
    view's usual change counts even without a departure (a cut to content of the same
    difficulty); where every picture is new (a fine moving texture) that is out of reach and the
    PSNR decides. --persistence counting samples in a row write a training request into
    SPOOL/requests/, and the trend restarts from the new scene; it also restarts at each new
    model version, so a better model never triggers a retraining loop. Nothing counts in the
    first 3 s of a stream, while the noise is measured. Jump cuts within one camera view (the same
    picture) are not scene changes to the monitor.

    Writes one JSON object per scored pair: t (stream time, s), pair, psnr, bicubic_psnr (Y-PSNR,
    dB; 99 for identical planes), smoothed (the trend), threshold (the departure that counted),
    change (the picture's), model (version, null for none yet) and request; smoothed and
    threshold are null for the first samples after a restart. Follows the pool until SIGINT or
    SIGTERM, or with --once scores what is there and exits. An empty pool, a pair evicted while
    being read or a rejected model is logged and skipped. benchmarks/bench_monitor.py measures
    the defaults on real and synthetic footage (docs/benchmarks.md).
    """
    detector = SceneChangeDetector(k=window, threshold_db=threshold_db, noise_factor=noise_factor,
                                   persistence=persistence, picture_gate=picture_gate, picture_cut=picture_cut)
    monitor = Monitor(spool, scale, detector, cli.resolve_device(device))
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(log_path, "a")) if log_path else sys.stdout
        scored = requests = 0
        while True:
            for sample in monitor.new_samples():
                emit_json(dataclasses.asdict(sample), out)
                scored += 1
                requests += sample.request
            if once:
                break
            time.sleep(poll_interval)
        if scored == 0:
            log.warning("the pool is empty: no pair to score")
        log.info("%d pairs scored, %d training requests", scored, requests)


main = cli.entry_point(command)

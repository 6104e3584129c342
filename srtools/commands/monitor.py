"""sr-monitor: score each new pool pair with the current model and request training on a scene change."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import sys
import time

import click

from .. import cli
from ..live.lowess import SceneChangeDetector
from ..live.monitor import Monitor

log = logging.getLogger("srtools.monitor")


@cli.command("sr-monitor", epilog="See also: sr-train(1), sr-serve(1), srtools-spool(5).")
@cli.spool_option(required=True)
@cli.scale_option
@click.option("--once", is_flag=True, help="Score the pairs in the pool now and exit (batch evaluation).")
@click.option("--log", "log_path", type=click.Path(dir_okay=False, writable=True), metavar="FILE",
              help="Append the JSON lines to FILE instead of stdout.")
@click.option("--window", type=click.IntRange(3, 256), default=8, show_default=True, metavar="K",
              help="Samples in the smoothing window (the k most recent).")
@click.option("--threshold-db", type=click.FloatRange(0, None, min_open=True), default=1.5, show_default=True,
              metavar="DB", help="A sample this far from its trend, up or down, marks a scene change "
                                 "(benchmarks/bench_monitor.py: the README's table).")
@click.option("--persistence", type=click.IntRange(1, 16), default=2, show_default=True, metavar="N",
              help="Consecutive departing samples needed: one-sample spikes are ignored.")
@click.option("--poll-interval", type=click.FloatRange(0.05, 60), default=0.5, show_default=True,
              metavar="SECONDS", help="How often the pool is checked for new pairs (without --once).")
@cli.threads_option
@cli.device_option
def command(spool: str, scale: int, once: bool, log_path: str | None, window: int, threshold_db: float,
            persistence: int, poll_interval: float, device: str) -> None:
    """Track the current model's Y-PSNR on the live content and ask for retraining on a scene change.

    For each pair the push side adds to the spool's pool (srtools-spool(5)), the HR frame is
    compared with the current upscaling model's output for the LR frame, and with bicubic. The
    model's PSNR series is smoothed by locally weighted regression with the Epanechnikov kernel
    over the --window most recent samples (local-constant: it raised fewer false alarms than
    local-linear on noisy drifting series). A sample departing from that trend by more than
    --threshold-db either way, for --persistence samples in a row, writes a training request
    into SPOOL/requests/. The trend restarts
    at each new model version, so a better model never triggers a retraining loop.

    Writes one JSON object per scored pair: t (stream time, s), pair, psnr, bicubic_psnr,
    smoothed, model (version, null for none yet) and request. Follows the pool until SIGINT or
    SIGTERM, or with --once scores what is there and exits. An empty pool, a pair evicted while
    being read or a rejected model is logged and skipped.
    """
    detector = SceneChangeDetector(k=window, threshold_db=threshold_db, persistence=persistence)
    monitor = Monitor(spool, scale, detector, cli.resolve_device(device))
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open(log_path, "a")) if log_path else sys.stdout
        scored = requests = 0
        while True:
            for sample in monitor.new_samples():
                out.write(json.dumps(dataclasses.asdict(sample)) + "\n")
                out.flush()
                scored += 1
                requests += sample.request
            if once:
                break
            time.sleep(poll_interval)
        if scored == 0:
            log.warning("the pool is empty: no pair to score")
        log.info("%d pairs scored, %d training requests", scored, requests)


main = cli.entry_point(command)

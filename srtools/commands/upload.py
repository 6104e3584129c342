"""sr-upload: send the push side's current model to the server (sr-receive), paced to spare the video."""

from __future__ import annotations

import dataclasses
import logging

import click

from .. import archs, cli
from ..fsutil import emit_json
from ..live.streamtoken import TOKEN_ENV, read_token
from ..live.upload import Uploader, UploadResult
from ..spool import Spool

log = logging.getLogger("srtools.upload")


def _emit(result: UploadResult) -> None:
    emit_json(dataclasses.asdict(result))


@cli.command("sr-upload", epilog="See also: sr-receive(1), sr-train(1), srtools-spool(5).")
@cli.spool_option(required=True)
@click.option("--to", "url", required=True, metavar="URL",
              help="The stream's URL on the server: http[s]://HOST[:PORT]/models/KEY (sr-receive's --spool "
                   "serves KEY 'default').")
@click.option("--token-file", type=click.Path(dir_okay=False), metavar="FILE",
              help=f"File holding the stream's shared secret (default: ${TOKEN_ENV}).")
@click.option("--arch", "arches", type=click.Choice(list(archs.ARCHITECTURES)), multiple=True,
              default=list(archs.ARCHITECTURES), show_default=True,
              help="Architecture of the models to upload; repeat for several, in priority order (default: all, "
                   "F-EDSR first).")
@cli.scale_option()
@click.option("--uplink", type=click.FloatRange(1, None), required=True, metavar="KBIT/S",
              help="The uplink's rate in kbit/s (what the video and the uploads share).")
@click.option("--share", type=click.FloatRange(0, 1, min_open=True), default=0.2, show_default=True,
              metavar="FRACTION", help="Share of --uplink the upload may use (token bucket, bursts of 50 ms).")
@click.option("--once", is_flag=True, help="Upload the current model (retrying until done), then exit.")
@cli.poll_interval_option()
@click.option("--timeout", type=click.FloatRange(1, 600), default=30, show_default=True, metavar="SECONDS",
              help="Longest wait to connect or for any one network read or write.")
@click.option("--max-backoff", type=click.FloatRange(0.5, 3600), default=30, show_default=True, metavar="SECONDS",
              help="Longest wait between retries (they start at 0.5 s and double).")
def command(spool: str, url: str, token_file: str | None, arches: tuple[str, ...], scale: int, uplink: float,
            share: float,
            once: bool, poll_interval: float, timeout: float, max_backoff: float) -> None:
    """Upload each new model of the push side's spool to the server, sharing the uplink with the video.

    Follows the spool's current model of each --arch at --scale (srtools-spool(5): F-EDSR, and
    TCSR once the online trainer makes one) and sends it to sr-receive on the server, which makes
    it the server's current model under the same version number. Only the newest model is sent:
    when an upload ends, the current model is the next one, and versions published meanwhile are
    skipped. One upload runs at a time, the first --arch with a new model first. The body is paced
    by a token bucket at --share of --uplink, so the video keeps the rest of the uplink
    (benchmarks/bench_uplink.py measures it).

    Before each upload a GET asks the server for its current version: a model it already has is
    not sent again (after a restart of either side). With each upload goes the newest training
    request sr-monitor has left in SPOOL/requests/ (header X-Srtools-Request), which sr-receive
    reports in its statistics: the server's operators see when and why the push side retrained.

    When the server is unreachable or answers 5xx, the upload is retried with exponential backoff,
    moving on to a newer model if one is published meanwhile. A wrong token (401) or an unknown
    stream (404) ends sr-upload with an error; a model the server rejects (413 too large, 422
    invalid) is reported and skipped.

    The token is read from --token-file or $SRTOOLS_UPLOAD_TOKEN, never from the command line,
    where other users could read it. Use an https:// URL across networks (sr-receive(1) shows
    the reverse proxy); certificates are checked against the system's authorities, or
    $SSL_CERT_FILE.

    Writes one JSON object per version handled: arch, version, bytes (the model file's size), seconds
    (the PUT's duration), status (uploaded, present: the server had it or a newer one, or
    rejected), http (the server's status code), attempts, kbit_s (the achieved rate). Runs
    until SIGINT or SIGTERM, or with --once until the current model of each --arch is handled.
    """
    token = read_token(token_file)
    rate = uplink * 1e3 / 8 * share
    uploader = Uploader(Spool(spool), url, token, arches, scale, rate, timeout=timeout, max_backoff=max_backoff)
    log.info("uploading %s models from %s to %s at %.0f kbit/s", ", ".join(Spool.key(a, scale) for a in arches), spool,
             uploader.url, rate * 8 / 1e3)
    uploader.run(_emit, once=once, poll_interval=poll_interval)


main = cli.entry_point(command)

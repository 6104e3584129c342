"""sr-live: the server side of the live system, wired from the other commands."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import click

from .. import cli
from ..errors import UsageError
from ..fsutil import emit_json
from ..live.chain import MAX_FPS, Chain, ServerChain, ServerConfig, stream_key
from ..live.streamtoken import TOKEN_ENV, read_token

log = logging.getLogger("srtools.live")

@cli.command("sr-live", epilog="See also: srtools-live(7), sr-push(1), sr-serve(1), sr-tcsr(1), sr-hls(1), "
                                "sr-receive(1), srtools-spool(5).")
@click.argument("source", metavar="RTMP_URL")
@click.option("--pull", is_flag=True,
              help="Play RTMP_URL from a server (nginx-rtmp) instead of listening on it for a publisher.")
@cli.spool_option(required=True)
@click.option("--hls", "hls_dir", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help="HLS output directory (sr-hls --out; a restart continues its stream).")
@click.option("--serve", metavar="HOST:PORT", help="Serve the HLS stream and a player page here (sr-hls --serve).")
@click.option("--receive", metavar="HOST:PORT",
              help="Run sr-receive here for models uploaded into --spool by the push side (sr-upload).")
@click.option("--token-file", type=click.Path(dir_okay=False), metavar="FILE",
              help=f"The stream's shared secret (default: ${TOKEN_ENV}): what a publisher to the listener must "
                   "give (?token=), and sr-receive's.")
@cli.scale_option()
@click.option("--fps", type=click.FloatRange(1, MAX_FPS), metavar="F",
              help="Normalise the stream to a constant F frames per second (frames are dropped or repeated); "
                   f"default: the publisher's own rate, made constant (at most {MAX_FPS}).")
@click.option("--segment", type=click.FloatRange(0.5, 60), default=ServerConfig.segment, show_default=True,
              metavar="SECONDS",
              help="HLS segment duration.")
@click.option("--list-size", type=click.IntRange(0, None), default=ServerConfig.list_size, show_default=True,
              metavar="N",
              help="Segments in the HLS playlist; older ones are deleted. 0 keeps them all (the whole run, e.g. "
                   "for evaluation).")
@click.option("--tcsr-budget-ms", type=click.FloatRange(0, None), default=ServerConfig.tcsr_budget_ms,
              show_default=True, metavar="MS",
              help="sr-tcsr's time per frame for TCSR refinement; 0 leaves sr-tcsr out.")
@click.option("--tcsr-generic", is_flag=True,
              help="Until the spool has a TCSR model, sr-tcsr refines with the generic TCSR shipped with srtools "
                   "(sr-tcsr --generic: at full strength, unmeasured on this stream, it may lose). Without it, "
                   "frames pass through until the push side publishes a TCSR measured on the stream.")
@click.option("--threads", type=click.IntRange(0, 256), default=ServerConfig.threads, show_default=True, metavar="N",
              help="--threads of sr-serve and sr-tcsr: they share the cores with each other and with ffmpeg, "
                   "where one thread each is fastest (sr-serve(1)).")
@click.option("--no-audio", is_flag=True, help="The stream has no audio track.")
@click.option("--sessions", type=click.IntRange(0, None), default=0, show_default=True, metavar="N",
              help="Exit after N publish sessions (0: serve publisher after publisher until stopped); with "
                   "--serve, go on serving the HLS stream until stopped.")
@click.option("--stats-dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Where sr-serve and sr-tcsr publish their counters, SR-NAME-SESSION.json (--stats), and "
                   "sr-receive its own, sr-receive.json (default with --serve: a private directory).")
@click.option("--frame-logs", is_flag=True,
              help="sr-serve and sr-tcsr also log every frame, SR-NAME-SESSION.jsonl in --stats-dir (--frame-log).")
@click.option("--name", metavar="NAME",
              help="The stream's name in /stats.json and the metrics' stream label (default: RTMP_URL's stream "
                   "key, its last path segment).")
@cli.max_pixels_option("out")
def command(source: str, pull: bool, spool: str, hls_dir: str, serve: str | None, receive: str | None,
            token_file: str | None, scale: int, fps: float | None, segment: float, list_size: int,
            tcsr_budget_ms: float, tcsr_generic: bool, threads: int, no_audio: bool, sessions: int,
            stats_dir: str | None, frame_logs: bool, name: str | None, max_pixels: int) -> None:
    """Run the server side of the live chain: RTMP in, super-resolution, HLS out.

    Starts, as separate processes wired with pipes and named FIFOs in a private temporary
    directory: sr-hls (and sr-receive with --receive) for the whole run, then for each publish
    session an ffmpeg ingest of RTMP_URL, sr-serve --realtime (F-EDSR in real time, hot-swapped
    from --spool) and sr-tcsr (TCSR on the frames its budget affords). The ingest makes the
    frame rate constant, the publisher's own (or --fps), so frame n is at n / fps all the way to
    sr-hls, and splits the audio off to a FIFO that sr-hls muxes back in: the SR stages add delay
    but no drift. A publisher without audio makes a stream without audio. It also copies the video
    as received to a third FIFO, which sr-hls publishes, without re-encoding, as the low-res
    rendition beside the super-resolved one (sr-hls(1), THE LADDER): its segments are aligned
    with the SR rendition's where the publisher puts a keyframe at every --segment boundary, as
    sr-push --segment does. The log says which size and rate each session has, and which stage
    each line comes from (the ingest's ffmpeg as "ingest:").

    In listen mode (the default) ffmpeg listens on RTMP_URL for one publisher; the listener is up
    before sr-live announces itself, and when the publisher leaves, the stages drain and a new
    listener waits for the next one; sr-hls continues the playlist after a discontinuity (so a
    publisher may come back with another frame size). The listener admits a publisher only to
    RTMP_URL's stream key, with the stream's token when there is one (--token-file or
    $SRTOOLS_UPLOAD_TOKEN): rtmp://HOST:PORT/APP/KEY?token=TOKEN (sr-push --token-file adds it).
    Anyone else is refused in one log line and the listener waits again, as it does after a
    connection that ends before publishing a stream: neither is a session, and neither stops
    anything. With --pull the stream is played from a server such as nginx-rtmp, which starts one
    sr-live per stream (conf/nginx-rtmp.conf) and checks the publishers itself.

    With --receive, sr-receive takes the stream's models at /models/KEY/ARCH-xSCALE, KEY being
    RTMP_URL's stream key (sr-upload --to http://HOST:PORT/models/KEY).

    On start, one JSON line goes to stdout: {"rtmp": RTMP_URL, "hls": URL or null, "receive": URL
    or null, "fifo_dir": DIR}. SIGINT or SIGTERM stops every stage (no process or FIFO is left
    behind); SIGUSR1 ends the current session as if its publisher had left (what the stages hold
    drains to HLS) and then sr-live, with status 0 (nginx-rtmp's exec_kill_signal: the stream has
    ended). A stage that fails stops the others and sr-live exits with status 7 naming it. Every
    stage dies with sr-live, even killed with SIGKILL, and the next sr-live clears what a killed
    one left (its FIFO directory, its stages still stopping).

    With --serve, sr-hls serves the master playlist, the comparison player at / and the live
    statistics, /stats.json and /metrics (sr-hls(1), STATISTICS), from the files the stages
    publish in --stats-dir.

    srtools-live(7) has the same chain by hand as a shell recipe, the push side to go with it,
    systemd units and nginx-rtmp for many streams.
    """
    if pull and not source.startswith("rtmp://"):
        raise UsageError(f"{source}: --pull plays an rtmp:// URL")
    if not pull and not source.startswith("rtmp://"):
        raise UsageError(f"{source}: sr-live listens on an rtmp://HOST:PORT/APP/KEY URL")
    token = None
    if not pull and (token_file is not None or os.environ.get(TOKEN_ENV, "").strip()):
        token = read_token(token_file)
    elif not pull:
        log.warning("no token (--token-file, $%s): the listener admits any publisher to the stream key %r",
                    TOKEN_ENV, stream_key(source))
    config = ServerConfig(source=source, spool=Path(spool), hls_dir=Path(hls_dir), pull=pull, scale=scale, fps=fps,
                          segment=segment, list_size=list_size, tcsr_budget_ms=tcsr_budget_ms,
                          tcsr_generic=tcsr_generic, audio=not no_audio, serve=serve, receive=receive,
                          token_file=token_file, token=token, threads=threads,
                          stats_dir=Path(stats_dir) if stats_dir else None, frame_logs=frame_logs, name=name,
                          max_pixels=max_pixels)
    if frame_logs and not stats_dir:
        raise UsageError("--frame-logs needs --stats-dir")
    if config.stats_dir:
        config.stats_dir.mkdir(parents=True, exist_ok=True)
    with Chain() as chain:
        server = ServerChain(config, chain)
        signal.signal(signal.SIGUSR1, lambda signum, frame: server.finish())
        try:
            urls = server.start_services()
            server.run_session(on_ready=lambda: _announce(source, urls, chain))
            while not server.finishing and (sessions == 0 or server.sessions < sessions):
                server.run_session()
            if server.finishing:
                log.info("the stream has ended (SIGUSR1) after %d sessions", server.sessions)
            elif serve:
                log.info("%d sessions served; serving %s until interrupted", sessions, hls_dir)
                chain.wait(["sr-hls"])
        finally:
            server.closing = True


def _announce(source: str, urls: dict, chain: Chain) -> None:
    emit_json({"rtmp": source, "hls": urls.get("hls"), "receive": urls.get("receive"), "fifo_dir": str(chain.dir)})


main = cli.entry_point(command)

"""sr-hls: encode the live chain's Y4M frames, with the ingest's audio and low-res video, into HLS for viewers,
and serve it."""

from __future__ import annotations

import contextlib
import logging
import os
import re

import click

from .. import cli
from ..errors import InputError, UsageError
from ..hls import PLAYLIST, X264_PRESETS, Encoding, HlsHandler, OutputDir, PlayerModel, Summary, hold_fifo, publish
from ..httpserve import bind, serve_until_interrupted, server_url, serving
from ..ladder import Ladder
from ..livestats import LiveStats

log = logging.getLogger("srtools.hls")


def _rate(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not re.fullmatch(r"\d+(\.\d+)?[kKM]?", value):
        raise click.BadParameter(f"{value!r}: expected bits per second like 800k or 2.5M")
    return value


@cli.command("sr-hls", epilog="See also: sr-serve(1), sr-tcsr(1), srtools-y4m(7).")
@cli.input_argument
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), metavar="DIR",
              help=f"Output directory: the master playlist {PLAYLIST}, the renditions' playlists and segments, and "
                   "the marker file .sr-hls.json (created when missing).")
@click.option("--continue", "continue_", is_flag=True,
              help="Append to the stream already in --out, after a discontinuity (a restart); with none there, "
                   "start one.")
@click.option("--fresh", is_flag=True, help="Delete the playlist and segments of an earlier stream in --out and "
                                           "start a new stream.")
@click.option("--serve", "listen", metavar="HOST:PORT",
              help="Also serve --out over HTTP: the playlist, the segments and a player page at / (port 0 picks a "
                   "free port).")
@click.option("--segment", type=click.FloatRange(0.5, 60), default=Encoding.segment, show_default=True,
              metavar="SECONDS", help="Target segment duration; every segment starts with a keyframe.")
@click.option("--list-size", type=click.IntRange(0, None), default=Encoding.list_size, show_default=True, metavar="N",
              help="Segments in the playlist; older ones are deleted. 0 keeps them all.")
@click.option("--crf", type=click.IntRange(0, 51), default=Encoding.crf, show_default=True,
              help="x264 constant rate factor (quality), unless --bitrate is given.")
@click.option("--bitrate", callback=_rate, metavar="RATE",
              help="Video bitrate instead of --crf, e.g. 2M; capped with a one-second buffer.")
@click.option("--preset", type=click.Choice(X264_PRESETS), default=Encoding.preset, show_default=True, metavar="NAME",
              help=f"x264 preset ({', '.join(X264_PRESETS)}); the tune is always zerolatency.")
@click.option("--audio", metavar="SRC",
              help="Audio to mux with the frames: a file, named FIFO or URL ffmpeg reads (ADTS AAC, Matroska, ...), "
                   "encoded to AAC.")
@click.option("--audio-delay", type=click.FloatRange(-60, 60), default=0.0, show_default=True, metavar="SECONDS",
              help="Shift the audio by this much (positive: later) against the frames; see DESCRIPTION.")
@click.option("--audio-bitrate", callback=_rate, default=Encoding.audio_bitrate, show_default=True, metavar="RATE",
              help="AAC bitrate.")
@click.option("--audio-format", metavar="FMT",
              help="ffmpeg's demuxer for the audio (aac for ADTS AAC, as sr-live's ingest writes it); "
                   "naming it lets a live audio FIFO start at its first packet (default: detected).")
@click.option("--lr", "lr_source", metavar="SRC",
              help="The low-res video as the server received it (a file, named FIFO or URL ffmpeg reads): published "
                   "as the LR rendition, copied without re-encoding (see DESCRIPTION).")
@click.option("--lr-format", metavar="FMT",
              help="ffmpeg's demuxer for --lr (nut, as sr-live's ingest writes it); naming it lets a live FIFO "
                   "start at its first packet (default: detected).")
@click.option("--lr-encode", is_flag=True,
              help="Encode --lr with a keyframe at every segment boundary (x264, --crf, --preset) instead of "
                   "copying it: for a source whose keyframes are not at the segment boundaries.")
@click.option("--stats-dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Where the chain's stages publish their statistics (sr-serve-N.json, sr-tcsr-N.json, "
                   "sr-receive.json, as sr-live writes them): --serve reports them at /stats.json and /metrics.")
@click.option("--spool", type=click.Path(file_okay=False), metavar="DIR",
              help="The server's model spool (srtools-spool(5)): /stats.json says when the model on air arrived, "
                   "and its current F-EDSR model is published for the player (see SR IN THE BROWSER).")
@click.option("--name", default="default", show_default=True, metavar="NAME",
              help="The stream's name in /stats.json and in the stream label of /metrics.")
@click.option("--stall-timeout", type=click.FloatRange(0, None), default=10.0, show_default=True, metavar="SECONDS",
              help="Fail when a stream, once its header has come, goes this long without a frame (0: wait "
                   "forever). The first stream may take any time to come.")
@click.option("--reopen-wait", type=click.FloatRange(0, None), default=60.0, show_default=True, metavar="SECONDS",
              help="For a FIFO INPUT: how long to wait for the next stream after one ends; 0 ends at the first end.")
@click.option("--endlist", is_flag=True,
              help="When the input ends, mark the playlist complete (EXT-X-ENDLIST) so that players stop there.")
@cli.max_pixels_option("in")
def command(input: str, out_dir: str, continue_: bool, fresh: bool, listen: str | None, segment: float,
            list_size: int, crf: int, bitrate: str | None, preset: str, audio: str | None, audio_delay: float,
            audio_bitrate: str, audio_format: str | None, lr_source: str | None, lr_format: str | None,
            lr_encode: bool, stats_dir: str | None, spool: str | None, name: str, stall_timeout: float,
            reopen_wait: float, endlist: bool, max_pixels: int) -> None:
    """Encode live Y4M frames, the audio and the low-res video split off at ingest, into HLS for viewers.

    The last stage of the live chain. Reads Y4M (srtools-y4m(7)) from INPUT ('-' for stdin, a
    file or a named FIFO), typically sr-serve's or sr-tcsr's output, and writes H.264 (libx264,
    tune zerolatency) in MPEG-TS segments of --segment seconds with a rolling playlist of the
    last --list-size segments, the super-resolved rendition DIR/sr.m3u8, through ffmpeg's hls
    muxer. Older segments are deleted; segments and playlists are written to temporary files and
    renamed, so a reader never sees a partial one. Frame n is stamped n / fps: every srtools stage
    passes the same frames in the same order, so that is the frame's time at ingest, however far
    behind the SR stages run.

    \b
    THE LADDER
    DIR/index.m3u8 is a master playlist: the SR rendition, then with --lr the low-res rendition
    DIR/lr.m3u8, each with the audio rendition DIR/audio.m3u8 (one audio, shared), with their
    BANDWIDTH (the peak segment bit rate of RFC 8216, measured over the segments so far, video plus
    audio; AVERAGE-BANDWIDTH the mean), RESOLUTION and CODECS (read from the newest stream's first
    segment); it is rewritten as these change. It first appears once the stream's renditions each
    have a segment (or three segment durations after the SR one, without those still missing): a
    player reads it once, and one that found no audio in it would play silent. A player takes either
    variant, e.g. the small one on a slow link. DIR/index-sr.m3u8 and DIR/index-lr.m3u8 list one
    variant each, with the audio, for a player that cannot pin one (native HLS). --lr names where
    the stream as the server received it comes from (sr-live's ingest writes it, copied, to a FIFO):
    it is copied into the LR rendition without re-encoding, by its own ffmpeg, so it runs ahead of
    the SR rendition and its failure costs only itself. Its segments are cut at its keyframes, at or
    after each --segment boundary: a push side with a keyframe at every boundary (sr-push --segment,
    the same value) gets the two renditions aligned segment by segment, as players switching between
    them want; --lr-encode re-encodes it, with keyframes at the boundaries, for any other source. A
    FIFO --lr is opened again for each new writer (a new session, a discontinuity), like INPUT.

    Audio: --audio names what ffmpeg reads the audio from (the ingest's split-off track: ADTS
    AAC, Matroska, ... in a file or named FIFO). It is encoded to AAC, its first sample aligned
    with frame 0, gaps filled with silence. A named FIFO is held open from the start (the ingest
    can open it before frames flow) with a 1 MiB pipe buffer, so the ingest does not block while
    the video is in the SR stages, and ffmpeg reads it from that descriptor (the audio of an
    ingest that has already left is still read); a stream whose FIFO has no byte within 2 s of
    its first frame, or whose writer opened and closed it without writing one (sr-live's ingest,
    for a publisher without audio), is encoded without audio, with a warning. --audio-delay
    shifts the audio against the frames; processing
    latency needs none (sr-tcsr running k frames behind delays the frames in time, not their
    timestamps). It is for a fixed offset between the two tracks at the split: a stage or an
    ingest that drops the first k frames wants -k/fps, one that adds k frames at the start +k/fps,
    an audio path with its own latency L wants -L. A/V offsets already in the source (an AAC
    encoder's 21 ms priming) pass through.

    Streams: a new Y4M header, either a FIFO INPUT opened again by a new writer (an upstream stage
    restarted after the publisher reconnected) or a header line in the middle of the input, starts
    a new ffmpeg that continues the playlist after an EXT-X-DISCONTINUITY (its timestamps restart;
    its size and frame rate may differ). The audio source is read again for each stream. After a
    FIFO's writer leaves, sr-hls waits --reopen-wait seconds for the next one.

    DIR: the marker file .sr-hls.json tells an sr-hls output (and its stream id, which segment
    names carry) from any other directory. A non-empty DIR without it is refused. A DIR holding an
    earlier stream is refused unless --continue (append to it: numbering and media sequence
    continue, with a discontinuity at the join; for a restart, e.g. by a supervisor) or --fresh
    (delete its playlist and segments and start a new stream) is given. One sr-hls at a time
    writes a DIR (flock).

    The end: when INPUT ends (end of file or stdin; a FIFO with no new writer within
    --reopen-wait), the last segment is written and sr-hls exits with 0. The playlist stays live
    (no EXT-X-ENDLIST; players wait for more, and a restart with --continue extends it) unless
    --endlist is given. With --serve it keeps serving until SIGINT or SIGTERM (status 130).

    --serve HOST:PORT serves (GET and HEAD) the playlists (no-cache), the segments (immutable: names
    are never reused), the comparison player at / (the super-resolved and low-res renditions, alone
    or in a wipe with a draggable divider, kept in sync, with a statistics panel; hls.js from
    /hls.min.js where the checkout vendors it, else the browser's native HLS; with --spool and --lr,
    SR in the browser too), /stats.json, /metrics, /model.json and /models/NAME, with CORS on every
    answer, and nothing else from DIR. The master playlist exists from the first segment on. The
    first stdout line is {"url": ..., "playlist": ..., "player": ...}; nothing else goes to stdout.

    \b
    SR IN THE BROWSER
    With --spool, the spool's current F-EDSR model at the stream's scale (the SR rendition's
    height over the LR rendition's) is published beside the playlists: /model.json (no-cache) is
    {"format": "sr-hls-model/1", "arch": "fedsr", "scale": 2, "model": {"version": 7, "url":
    "models/fedsr-x2-000007.safetensors", "bytes": ..., "hparams": {...}, "published": ...,
    "gain_db": ...}}, with model null and a reason while there is none (no --spool, the scale not
    known yet, no model at that scale); /models/NAME serves the spool's file of that name
    (immutable: a version's file never changes), with CORS like the rest. sr-hls reads nothing of
    the file but its safetensors header. The player polls /model.json every 2 s and adds a view,
    "SR in this browser": the LR rendition upscaled in the viewer's GPU (WebGL2), luma through the
    model as sr-serve computes it (the network's output plus bicubic of its input, from the
    decoder's Y plane where the browser gives it, WebCodecs), chroma scaled bilinearly; it checks
    the file as sr-serve does (metadata, hparams and limits, tensor names, types and shapes, finite
    weights) and refuses, with the reason in its statistics panel, one it cannot run (a damaged
    file, a colour model): the previous model runs on, or the browser's scaling is shown. A newer
    version is swapped in between two frames. The panel shows the view's frames per second and
    milliseconds per frame; when the network cannot keep up with the video, the view shows the
    browser's scaling and says so (?websr=always in the page's URL keeps it running).

    \b
    STATISTICS
    /stats.json, which the player's panel reads every second, is one JSON object: format
    (sr-hls-stats/1), stream (--name), time; model (on air at sr-serve, e.g. "v7"), model_arrived
    (when it came into --spool or sr-receive took it) and model_age_s; swaps, late_frames and
    network_frames (frames with the network's output), summed over the sessions, and block_share
    (the current session's share of blocks through the network, null before selective SR) of
    sr-serve; tcsr_frames and tcsr_refined of sr-tcsr; sessions; frames (encoded by sr-hls);
    input_fps (sr-serve's pace) and output_fps (sr-hls's, over the last 5 s); segment_age_s (since
    the newest SR segment was written); renditions ({"sr", "lr", "audio"}: segments, bytes, seconds,
    bandwidth_bps, average_bps, codecs, resolution, newest_age_s); upload and request, the last
    model upload and training request as sr-receive saw them (sr-receive(1)). A figure whose source
    is missing (no --stats-dir, no sr-tcsr) is null. /metrics has the same counters in the
    Prometheus text format (srtools_hls_*, srtools_serve_*, srtools_tcsr_*, labelled
    stream=NAME; conf/prometheus.yml in the srtools sources scrapes them).

    Failures are one line on stderr: a foreign or earlier DIR, a bad option or a port in use
    (--serve) exit with 2; input that is not Y4M, truncated, stalled (a stream without a frame
    for --stall-timeout seconds), or of frames over --max-pixels, and an --audio ffmpeg cannot
    decode, with 3; ffmpeg failing otherwise, or not taking a frame for --stall-timeout seconds
    (an audio source that stalls), with 5; another sr-hls writing DIR with 1. The segments
    written until then stay valid. An --lr that ffmpeg cannot read is logged as a warning: the LR
    rendition is missing, the SR rendition goes on.
    """
    if continue_ and fresh:
        raise UsageError("give --continue or --fresh, not both")
    if audio is None and audio_delay:
        raise UsageError("--audio-delay needs --audio")
    if audio is not None and "://" not in audio and not os.path.exists(audio):
        raise InputError(f"{audio}: no such file")
    if input != "-" and not os.path.exists(input):
        raise InputError(f"{input}: no such file")
    if lr_source is not None and "://" not in lr_source and not os.path.exists(lr_source):
        raise InputError(f"{lr_source}: no such file")
    if lr_source is None and (lr_format or lr_encode):
        raise UsageError("--lr-format and --lr-encode need --lr")
    enc = Encoding(segment=segment, list_size=list_size, crf=crf, bitrate=bitrate, preset=preset, audio=audio,
                   audio_delay=audio_delay, audio_bitrate=audio_bitrate, audio_format=audio_format, lr=lr_source,
                   lr_format=lr_format, lr_encode=lr_encode)
    server = bind(HlsHandler, listen, root=None) if listen else None  # a port in use fails before DIR is touched
    out = OutputDir(out_dir, "continue" if continue_ else "fresh" if fresh else "new")
    audio_fd = hold_fifo(audio) if audio else None
    fifos = [fd for fd in (audio_fd, hold_fifo(lr_source) if lr_source else None) if fd is not None]
    summary, ladder = Summary(), Ladder(out.path)
    try:
        with contextlib.ExitStack() as stack:
            if server is not None:
                server.root = out.path
                server.live = LiveStats(name, summary, ladder.as_dict, stats_dir, spool)
                server.player_model = PlayerModel(spool, ladder.as_dict)
                url = server_url(server)
                stack.enter_context(serving(server, playlist=f"{url}/{PLAYLIST}", player=f"{url}/"))
                log.info("serving %s at %s/%s", out.path, url, PLAYLIST)
            publish(input, out, enc, stall_timeout or None, reopen_wait, endlist, max_pixels, audio_fd, summary,
                    ladder)
            log.info("input ended: %d frames (%.1f s of video) in %d stream(s)", summary.frames, summary.seconds,
                     summary.streams)
            if server is not None:
                log.info("serving until interrupted")
                serve_until_interrupted()
    finally:
        for fd in fifos:
            os.close(fd)
        out.close()


main = cli.entry_point(command)

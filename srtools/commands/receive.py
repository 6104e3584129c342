"""sr-receive: receive models uploaded by the push side (sr-upload) into the server's spools."""

from __future__ import annotations

import logging

import click

from .. import cli
from ..errors import UsageError
from ..httpserve import bind, serve_until_interrupted, serving
from ..live.receive import DEFAULT_KEY, ReceiveHandler, Stream, parse_stream, serve_attributes
from ..live.streamtoken import TOKEN_ENV, read_token
from ..spool import Spool

log = logging.getLogger("srtools.receive")


@cli.command("sr-receive", epilog="See also: sr-upload(1), sr-serve(1), srtools-spool(5).")
@click.option("--spool", type=click.Path(file_okay=False), metavar="DIR",
              help="Spool of the stream named 'default' (shorthand for --stream default=DIR; srtools-spool(5)).")
@click.option("--stream", "stream_specs", multiple=True, metavar="KEY=SPOOL_DIR[:TOKEN_FILE]",
              help="Receive stream KEY's models into SPOOL_DIR, authenticated by the token in TOKEN_FILE "
                   "(default: --token-file's). Repeat for several streams.")
@click.option("--token-file", type=click.Path(dir_okay=False), metavar="FILE",
              help=f"File holding the shared secret of --spool and of the streams naming no token file "
                   f"(default: ${TOKEN_ENV}).")
@click.option("--listen", default="127.0.0.1:0", show_default=True, metavar="HOST:PORT",
              help="Address to serve on; port 0 picks a free port.")
@click.option("--keep-models", type=click.IntRange(0, None), default=10, show_default=True, metavar="N",
              help="Keep the newest N versions of each model in a spool, removing older ones (0: keep all).")
@click.option("--max-bytes", type=click.IntRange(1024, 1 << 30), default=4 << 20, show_default=True,
              metavar="BYTES", help="Largest model file accepted; larger bodies are refused (413) unread.")
@click.option("--max-publishers", type=click.IntRange(0, None), default=0, show_default=True, metavar="N",
              help="Streams that may publish at once through nginx-rtmp (on_publish); the next is refused (403). "
                   "0: no limit.")
@click.option("--stats", "stats_path", type=click.Path(dir_okay=False), metavar="FILE",
              help="Publish the counters as JSON to FILE (replaced atomically) after every upload and refusal "
                   "(see STATISTICS); sr-hls --stats-dir reads it as sr-receive.json.")
def command(spool: str | None, stream_specs: tuple[str, ...], token_file: str | None, listen: str,
            keep_models: int, max_bytes: int, max_publishers: int, stats_path: str | None) -> None:
    """Receive models from the push side over HTTP and publish them into the server's spool.

    The server half of model upload: sr-upload on the push side sends each new model of its
    spool; sr-receive checks it and publishes it into the server's spool under the push side's
    version number, where sr-serve --spool (or sr-tcsr) hot-swaps to it. Versions thus agree end
    to end (srtools-spool(5), UPLOADED MODELS).

    Each stream has a key, a spool and a token. --spool DIR serves the stream named "default";
    --stream KEY=SPOOL_DIR:TOKEN_FILE, repeated, serves several push sides from one receiver, each
    with its own spool and token. The key is a name in the URL, not a secret; the token is, and
    is read from a file (or $SRTOOLS_UPLOAD_TOKEN), never from the command line. Files are read
    once at start. Spools are created when missing.

    Requests (every one with 'Authorization: Bearer TOKEN'):

    \b
        GET /models/KEY/ARCH-xSCALE   {"version": N or null, "max_bytes": ...}: the current model
        PUT /models/KEY/ARCH-xSCALE   body: the model file; header X-Srtools-Version: N

    A PUT is answered 201 when the model is the stream's current one, or refused, leaving the spool
    as it was: 401 missing or wrong token (compared in constant time), 404 unknown stream or
    architecture, 411 no Content-Length, 413 over --max-bytes (refused from Content-Length, before
    the body is read; never more than that is read), 422 not a valid model file (loaded as
    safetensors, nothing executed) or one of another architecture or scale than the URL's, 409 a
    version not newer than the current one. Checks that need no body also answer
    'Expect: 100-continue', so a client like curl sends no body to be refused:

    \b
        curl -T model.safetensors -H "Authorization: Bearer $(cat token)" \\
             -H "X-Srtools-Version: 7" http://127.0.0.1:8090/models/default/fedsr-x2

    The same server answers nginx-rtmp's on_publish callback (conf/nginx-rtmp.conf) on POST
    /on_publish: a publisher is let in (204) only for a stream key it knows and with that stream's
    token in the publish URL, rtmp://HOST/live/KEY?token=TOKEN (sr-push --token-file adds it),
    and while fewer than --max-publishers streams publish; anything else gets 403, in one log
    line, and nginx drops the connection. POST /on_publish_done (nginx-rtmp's on_publish_done)
    says a publisher has left.

    Limits: a request has 10 s for its line and headers and, for a body, 10 s more plus its
    length at 16 KiB/s; a connection idle for 60 s in a read or write is dropped; 256
    connections are served at once (more get 503); a malformed request (a control character in
    the path, a Content-Length that is not a number) gets 400. nginx in front (below) adds TLS,
    buffers slow clients itself and has its own timeouts and limits (client_header_timeout,
    client_body_timeout, limit_conn).

    On start, one JSON line {"url": "http://HOST:PORT", "streams": {KEY: SPOOL_DIR, ...}} goes to
    stdout; each upload is logged on stderr. Runs until SIGINT or SIGTERM.

    \b
    STATISTICS
    GET /metrics (no token: counts and stream keys, nothing secret) answers in the Prometheus text
    format: srtools_receive_uploads_total, _upload_bytes_total, _upload_seconds_total and
    _refusals_total per stream (stream="" for requests naming none), the current version of each
    model (srtools_receive_model_version{model="fedsr-x2"}), when each model was last uploaded
    and when the last training request came, with its stream time. --stats FILE publishes the
    same as JSON: {"format": "sr-receive-stats/1", "time", "refused", "streams": {KEY:
    {"accepted", "refused", "bytes", "seconds", "models": {"ARCH-xS": UPLOAD}, "last_upload":
    UPLOAD, "last_request": REQUEST}}}, an UPLOAD being {"arch", "scale", "version", "bytes",
    "seconds", "received", "from", and from the model file "gain_db", "val_psnr_db", "created",
    "train_seconds", "steps"}, a REQUEST the training request sr-upload reported with an upload
    (header X-Srtools-Request: sr-monitor's request, {"t", "pair", "psnr", "created"}) and when it
    came ("received").

    sr-receive speaks plain HTTP: on a network, put it behind a TLS reverse proxy and let it
    listen on 127.0.0.1 only. conf/nginx-receive.conf in the srtools sources is a template for
    nginx (TLS, body limit, the request passed on as it arrives); its header says how to fill
    it in. The core of it:

    \b
        server {
            listen 443 ssl;
            ssl_certificate     /etc/ssl/sr.example.com.pem;
            ssl_certificate_key /etc/ssl/sr.example.com.key;
            location /models/ {
                client_max_body_size 4m;          # at least --max-bytes
                proxy_request_buffering off;      # bodies reach sr-receive as they arrive
                proxy_pass http://127.0.0.1:8090;
            }
        }
    """
    specs = [parse_stream(text) for text in stream_specs]
    if spool is not None:
        specs.insert(0, (DEFAULT_KEY, spool, None))
    if not specs:
        raise UsageError("give --spool DIR or --stream KEY=SPOOL_DIR[:TOKEN_FILE]")
    keys = [key for key, _, _ in specs]
    if len(set(keys)) < len(keys):
        raise UsageError(f"a stream key is given twice: {', '.join(keys)}")
    default_token = None
    streams = []
    for key, spool_dir, stream_token_file in specs:
        if stream_token_file is None and default_token is None:
            default_token = read_token(token_file)
        token = default_token if stream_token_file is None else read_token(stream_token_file)
        streams.append(Stream(key, Spool(spool_dir, create=True, keep=keep_models or None), token))
    server = bind(ReceiveHandler, listen, **serve_attributes(streams, max_bytes, max_publishers, stats_path))
    try:
        with serving(server, streams={s.key: str(s.spool.root) for s in streams}, max_bytes=max_bytes) as url:
            log.info("receiving models at %s for %s", url, ", ".join(f"{s.key} -> {s.spool.root}" for s in streams))
            serve_until_interrupted()
    finally:
        log.info("%d models accepted, %d requests refused", server.accepted, server.refused)


main = cli.entry_point(command)

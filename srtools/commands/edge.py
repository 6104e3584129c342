"""sr-edge: serve one edge server's low-res tile sets over HTTP, with emulated latency."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import click

from .. import cli
from ..errors import UsageError
from ..httpserve import ReadOnlyHandler, bind, serve_until_interrupted, serving

log = logging.getLogger("srtools.edge")


class EdgeHandler(ReadOnlyHandler):
    server_version = "sr-edge"

    def respond(self, head_only: bool) -> None:
        server = self.server
        if server.delay_s:
            time.sleep(server.delay_s)
        size = self.send_file_under(server.root, head_only)
        if size is not None:
            with server.lock:
                server.served += 1
                server.bytes_out += size


@cli.command("sr-edge", epilog="See also: sr-tile(1), sr-proxy(1).")
@click.argument("directory", metavar="DIR")
@click.option("--listen", default="127.0.0.1:0", show_default=True, metavar="HOST:PORT",
              help="Address to serve on; port 0 picks a free port.")
@click.option("--delay-ms", type=click.FloatRange(0, 60000), default=0.0, show_default=True, metavar="MS",
              help="Emulated latency added before every response.")
def command(directory: str, listen: str, delay_ms: float) -> None:
    """Serve the low-res tiles of one edge server over HTTP.

    DIR is one edge directory written by sr-tile (TILED/edges/edge-M), or the origin's HR tree
    (TILED/origin, for sr-proxy --origin); the tile of segment i, number j is served at
    /segIIIII/tJJ.mp4 (GET and HEAD; anything outside DIR is 404). Each
    response is delayed by --delay-ms to emulate the edge's network latency (the delay runs
    in the request's own thread, so parallel requests overlap).

    On start, one JSON line {"url": "http://HOST:PORT", ...} goes to stdout; the server runs
    until SIGINT or SIGTERM and logs how much it served.

    In production, serve edge directories with nginx instead: conf/nginx-edge.conf in the
    srtools sources is a template (root, port, CORS headers, video/mp4, year-long cache headers,
    sendfile); its header says how to fill it in and start nginx.
    """
    root = Path(directory).resolve()
    if not root.is_dir():
        raise UsageError(f"{directory}: no such directory")
    server = bind(EdgeHandler, listen, root=root, delay_s=delay_ms / 1e3, lock=threading.Lock(), served=0,
                  bytes_out=0)
    try:
        with serving(server, directory=str(root), delay_ms=delay_ms) as url:
            log.info("serving %s at %s with %.0f ms latency", root, url, delay_ms)
            serve_until_interrupted()
    finally:
        log.info("served %d tiles, %d bytes", server.served, server.bytes_out)


main = cli.entry_point(command)

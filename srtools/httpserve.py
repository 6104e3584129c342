"""The threaded HTTP server every srtools server uses (sr-edge, sr-proxy, sr-receive, and the live HLS
server), served on a thread until the command is interrupted (:func:`serving`).

Responses carry what players and browsers need: MIME types for HLS playlists and segments, cache
headers (playlists are re-read, segments never change once listed), CORS so a player page on
another origin can load the stream, and a player page (hls.js where the checkout has it, the
browser's native HLS otherwise): a generated one for a single stream (sr-proxy), or the live
comparison player in ``srtools/web/`` (sr-hls). ``make`` vendors hls.js into vendor/hls.min.js
(npm pack hls.js@1).
"""

from __future__ import annotations

import contextlib
import html
import http.server
import json
import logging
import posixpath
import sys
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Iterator, NoReturn

from .errors import UsageError
from .fsutil import emit_json

log = logging.getLogger("srtools.http")
HLS_JS = Path(__file__).resolve().parent.parent / "vendor" / "hls.min.js"
WEB_DIR = Path(__file__).resolve().parent / "web"  # the live player's page, script and style

CONTENT_TYPES = {
    ".m3u8": "application/vnd.apple.mpegurl",
    ".ts": "video/mp2t",
    ".m4s": "video/iso.segment",
    ".mp4": "video/mp4",
    ".aac": "audio/aac",
    ".js": "text/javascript; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".safetensors": "application/octet-stream",
}


def content_type(path: str) -> str:
    return CONTENT_TYPES.get(posixpath.splitext(path)[1].lower(), "application/octet-stream")


def cache_control(mime: str) -> str:
    """Playlists and stats change under the same URL; media segments never do once published."""
    if mime.startswith(("video/", "audio/")):
        return "public, max-age=3600, immutable"
    return "no-cache"


def parse_listen(text: str) -> tuple[str, int]:
    """'HOST:PORT' (port 0 = any free port) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not sep or not host or not 0 <= number <= 65535:
        raise UsageError(f"listen address {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8081 (port 0 picks a free one)")
    return host.strip("[]"), number


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64

    def handle_error(self, request, client_address) -> None:
        """A client hanging up mid-request is routine (players and ffmpeg drop connections they no
        longer need): a debug line, not socketserver's traceback on stderr."""
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            log.debug("%s: client disconnected", client_address[0])
            return
        super().handle_error(request, client_address)


def bind(handler: type, listen: str, **attributes) -> Server:
    """A threading HTTP server bound to ``listen``; ``attributes`` are set on the server object."""
    host, port = parse_listen(listen)
    try:
        server = Server((host, port), handler)
    except OSError as exc:
        raise UsageError(f"cannot listen on {listen} ({exc.strerror})") from None
    for key, value in attributes.items():
        setattr(server, key, value)
    return server


def server_url(server: Server) -> str:
    host, port = server.server_address[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def announce(url: str, **extra) -> None:
    """Print the server's URL as one JSON line on stdout (for scripts using port 0)."""
    emit_json({"url": url, **extra})


@contextlib.contextmanager
def serving(server: Server, **announced) -> Iterator[str]:
    """Serve ``server`` on a thread for the time of the with-block, which gets its URL.

    The URL is announced first (one JSON line on stdout with ``announced``). On leaving, however the
    block ends, the server stops accepting requests and is closed; requests in progress finish on
    their own threads.
    """
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, name="http", daemon=True)
    thread.start()
    try:
        url = server_url(server)
        announce(url, **announced)
        yield url
    finally:
        server.shutdown()
        server.server_close()


def serve_until_interrupted() -> NoReturn:
    """Wait, while a :func:`serving` thread serves, until SIGINT or SIGTERM ends the command (the
    signal's exception propagates from here)."""
    while True:
        time.sleep(3600)


def player_page(playlist: str, title: str, hls_js: str | None = "hls.min.js") -> str:
    """An HTML page playing ``playlist`` (a URL relative to the page) with hls.js, loaded from
    ``hls_js`` when given, or the browser's native HLS (Safari, mobile browsers)."""
    script = f'<script src="{html.escape(hls_js)}"></script>' if hls_js else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{margin:0;background:#111;color:#ddd;font:14px sans-serif}}video{{width:100%;max-height:90vh}}</style>
{script}</head>
<body><video id="video" controls autoplay muted playsinline></video>
<p id="status">loading {html.escape(playlist)}</p>
<p>playing at <span id="time">0.00</span> s</p>
<script>
const video = document.getElementById("video"), status = document.getElementById("status");
video.addEventListener("timeupdate", () => {{
  document.getElementById("time").textContent = video.currentTime.toFixed(2);
}});
const source = {json.dumps(playlist)};
if (window.Hls && Hls.isSupported()) {{
  const hls = new Hls({{lowLatencyMode: true}});
  hls.on(Hls.Events.ERROR, (_, data) => {{ if (data.fatal) status.textContent = "error: " + data.details; }});
  hls.loadSource(source);
  hls.attachMedia(video);
  status.textContent = "hls.js " + Hls.version;
}} else if (video.canPlayType("application/vnd.apple.mpegurl")) {{
  video.src = source;
  status.textContent = "native HLS";
}} else {{
  status.textContent = "this browser cannot play HLS";
}}
video.play().catch(() => {{}});
</script></body></html>
"""


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """Request lines go to the debug log, not to stderr; every response allows any origin (CORS)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        log.debug("%s %s", self.address_string(), format % args)

    def end_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Expose-Headers", "Content-Length, Content-Range")
        super().end_headers()

    def do_OPTIONS(self) -> None:  # noqa: N802  (CORS preflight)
        self.send_response(204)
        self.send_header("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
        self.send_header("Access-Control-Allow-Headers", "Range, Content-Type")
        self.send_header("Access-Control-Max-Age", "86400")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def send_player(self, path: str, playlist: str, title: str, head_only: bool = False) -> bool:
        """Answer / and /player.html with the player page of ``playlist``, and /hls.min.js with the
        vendored hls.js where the checkout has it; False for any other path."""
        has_hls_js = HLS_JS.is_file()
        if path in ("/", "/player.html"):
            page = player_page(playlist, title, "hls.min.js" if has_hls_js else None)
            self.send_bytes(page.encode(), content_type("player.html"), head_only)
        elif path == "/hls.min.js" and has_hls_js:
            self.send_bytes(HLS_JS.read_bytes(), content_type(path), head_only)
        else:
            return False
        return True

    def send_web(self, path: str, head_only: bool = False) -> bool:
        """Answer / and /player.html with the live player's page, a file of ``WEB_DIR`` by its name, and
        /hls.min.js with the vendored hls.js where the checkout has it; False for any other path."""
        name = "player.html" if path == "/" else path.lstrip("/")
        if name == "hls.min.js":
            target = HLS_JS
        elif "/" not in name and name and not name.startswith("."):
            target = WEB_DIR / name
        else:
            return False
        if not target.is_file():
            return False
        self.send_bytes(target.read_bytes(), content_type(name), head_only)
        return True

    def url_path(self) -> str:
        """The request's path, decoded and normalised ('/a/../b' -> '/b')."""
        return posixpath.normpath(urllib.parse.unquote(urllib.parse.urlsplit(self.path).path))

    def send_bytes(self, body: bytes, mime: str, head_only: bool = False, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", mime)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache_control(mime) if status == 200 else "no-store")
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def send_file_under(self, root: Path, head_only: bool = False) -> int | None:
        """Serve the file the URL path names under ``root`` (resolved; nothing outside it); its size,
        or None after a 404."""
        target = (root / self.url_path().lstrip("/")).resolve()
        if root not in target.parents or not target.is_file():
            self.send_bytes(b"not found\n", "text/plain", head_only, status=404)
            return None
        try:
            body = target.read_bytes()
        except FileNotFoundError:  # removed between the check and the read (a rolling HLS window)
            self.send_bytes(b"not found\n", "text/plain", head_only, status=404)
            return None
        self.send_bytes(body, content_type(target.name), head_only)
        return len(body)


class ReadOnlyHandler(QuietHandler):
    """A handler that only serves: GET and HEAD are both answered by :meth:`respond`, so that a HEAD
    gets the status and headers its GET would (and no body) on every path."""

    def do_GET(self) -> None:  # noqa: N802
        self.respond(head_only=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self.respond(head_only=True)

    def respond(self, head_only: bool) -> None:
        """Answer the request, without the body when ``head_only``."""
        raise NotImplementedError

"""The threaded HTTP server every srtools server uses (sr-edge, sr-proxy, sr-receive, and the live HLS
server), served on a thread until the command is interrupted (:func:`serving`).

Responses carry what players and browsers need: MIME types for HLS playlists and segments, cache
headers (playlists are re-read, segments never change once listed), CORS so a player page on
another origin can load the stream, byte ranges (``Range``: 206, or 416 past the end), and a player
page (hls.js where the checkout has it, the browser's native HLS otherwise): a generated one for a
single stream (sr-proxy), or the live comparison player in ``srtools/web/`` (sr-hls). ``make``
vendors hls.js into vendor/hls.min.js (npm pack hls.js@1).

No client holds the server: each connection has a thread, and there are at most
:attr:`Server.max_connections` of them (one more is answered 503 and closed, unread); the listen
backlog (:attr:`Server.request_queue_size`) holds bursts of new connections until they are
accepted. A request has :attr:`QuietHandler.request_timeout` seconds for its line and headers to
arrive, and its body, if it has one, that much more plus its length at
:attr:`QuietHandler.MIN_BODY_RATE`; a read or write that makes no progress for
:attr:`QuietHandler.timeout` seconds ends the connection too. A malformed request (a NUL in its
path, a Content-Length that is not one number) gets 400, and an error inside a handler 500 and one
log line, never a traceback or an empty reply.
"""

from __future__ import annotations

import contextlib
import html
import http.server
import io
import json
import logging
import math
import posixpath
import re
import socket
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


IMMUTABLE = "public, max-age=3600, immutable"


def cache_control(mime: str) -> str:
    """Playlists and stats change under the same URL; media segments never do once published."""
    if mime.startswith(("video/", "audio/")):
        return IMMUTABLE
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
    """A thread per connection, at most :attr:`max_connections` of them.

    Attributes:
        request_queue_size: the listen backlog: connections the kernel completes while the server
            is busy accepting others (capped by the kernel's net.core.somaxconn).
        max_connections: connections served at once; one more is answered 503 and closed.
        busy_refusals: connections refused so far for being over :attr:`max_connections`.
    """

    daemon_threads = True
    block_on_close = False  # a request in progress finishes on its own thread
    request_queue_size = 1024
    max_connections = 256
    BUSY_LOG_EVERY = 10.0  # seconds between two log lines about refused connections

    def __init__(self, address: tuple[str, int], handler: type):
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(self.max_connections)
        self.busy_refusals = 0
        self._busy_logged = -math.inf

    def process_request(self, request: socket.socket, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse_busy(request, client_address)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:  # no thread started: the slot is free again
            self._slots.release()
            raise

    def process_request_thread(self, request: socket.socket, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse_busy(self, request: socket.socket, client_address) -> None:
        """503 without a thread: written without waiting (a client that does not read loses it), what the
        client sent already discarded, so that closing sends it an end rather than a reset."""
        self.busy_refusals += 1
        now = time.monotonic()
        if now - self._busy_logged >= self.BUSY_LOG_EVERY:
            self._busy_logged = now
            log.warning("%s: refused: %d connections served at once already (%d refused so far)", client_address[0],
                        self.max_connections, self.busy_refusals)
        request.setblocking(False)
        try:
            request.send(_BUSY)
            request.recv(1 << 16)
        except OSError:
            pass
        self.shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        """A client hanging up mid-request is routine (players and ffmpeg drop connections they no
        longer need): a debug line, not socketserver's traceback on stderr; anything else one line."""
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionResetError, BrokenPipeError)):
            log.debug("%s: client disconnected", client_address[0])
            return
        log.error("%s: internal error: %s: %s", client_address[0], type(error).__name__, error,
                  exc_info=log.isEnabledFor(logging.DEBUG))


_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 21\r\n"
         b"Retry-After: 1\r\nCache-Control: no-store\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n"
         b"too many connections\n")


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
    """Request lines go to the debug log, not to stderr; every response allows any origin (CORS).

    Requests are bounded in time (see the module docstring) and checked before any handler sees
    them: 400 for a NUL or control character in the path, or a Content-Length that is not one
    number.
    """

    protocol_version = "HTTP/1.1"
    timeout = 30  # seconds a read or write may make no progress before the connection is dropped
    request_timeout = 10.0  # seconds for a request's line and headers to arrive, and its body beyond them
    MIN_BODY_RATE = 16 * 1024  # bytes a second a body must average (the rest of its time)
    CHUNK = 1 << 16  # bytes written at a time: the idle timeout applies to each

    def setup(self) -> None:  # socketserver's, with the reader and writer below
        self.connection = self.request
        self.deadline = math.inf
        self.rfile = io.BufferedReader(_DeadlineReader(self))
        self.wfile = _ChunkedWriter(self.connection, self.timeout, self.CHUNK)

    def handle_one_request(self) -> None:
        self.deadline = time.monotonic() + self.request_timeout
        self._answered = False
        try:
            super().handle_one_request()
        except (ConnectionError, TimeoutError):
            raise
        except Exception as exc:  # a handler's bug: one line, and 500 if nothing was sent yet
            command, path = getattr(self, "command", ""), getattr(self, "path", "")[:200]
            log.error("%s %s: internal error: %s: %s", command, path, type(exc).__name__, exc,
                      exc_info=log.isEnabledFor(logging.DEBUG))
            self.close_connection = True
            if not self._answered:
                self.send_bytes(b"internal error\n", "text/plain", command == "HEAD", status=500)

    def parse_request(self) -> bool:
        """The request line and headers, checked; the body's deadline (the head's plus its length at
        :attr:`MIN_BODY_RATE`). False after answering 400."""
        if not super().parse_request():
            return False
        problem = _request_problem(self.path, self.headers.get_all("Content-Length") or [])
        if problem:
            self.close_connection = True
            self.send_bytes(f"bad request: {problem}\n".encode(), "text/plain", self.command == "HEAD", status=400,
                            headers={"Connection": "close"})
            return False
        length = int(self.headers.get("Content-Length") or 0)
        self.deadline = time.monotonic() + self.request_timeout + length / self.MIN_BODY_RATE
        return True

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        log.debug("%s %s", self.address_string(), format % args)

    def end_headers(self) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Expose-Headers", "Content-Length, Content-Range")
        self._answered = True
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

    def send_bytes(self, body: bytes, mime: str, head_only: bool = False, status: int = 200,
                   headers: dict[str, str] | None = None, cache: str | None = None) -> None:
        """Answer ``body``; a 200 honours a Range header asking for one range of it (206, or 416 when
        it starts past the end). ``cache``: the Cache-Control of a 200 or 206, where the MIME type's
        (:func:`cache_control`) is not right (a versioned file that never changes)."""
        headers = dict(headers or {})
        if status == 200:
            headers["Accept-Ranges"] = "bytes"
            span = byte_range(self.headers.get("Range"), len(body))
            if span == UNSATISFIABLE:
                headers["Content-Range"] = f"bytes */{len(body)}"
                status, body, mime = 416, b"range not satisfiable\n", "text/plain"
            elif span is not None:
                start, end = span
                status, headers["Content-Range"] = 206, f"bytes {start}-{end}/{len(body)}"
                body = body[start:end + 1]
        self.send_response(status)
        self.send_header("Content-Type", mime)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", (cache or cache_control(mime)) if status in (200, 206) else "no-store")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def send_file_under(self, root: Path, head_only: bool = False) -> int | None:
        """Serve the file the URL path names under ``root`` (resolved; nothing outside it); its size,
        or None after a 404."""
        try:
            target = (root / self.url_path().lstrip("/")).resolve()
            body = target.read_bytes() if root in target.parents and target.is_file() else None
        except (OSError, ValueError):  # removed meanwhile (a rolling HLS window), a name too long, ...
            body = None
        if body is None:
            self.send_bytes(b"not found\n", "text/plain", head_only, status=404)
            return None
        self.send_bytes(body, content_type(target.name), head_only)
        return len(body)

    def send_file(self, path: Path, head_only: bool = False, cache: str | None = None) -> None:
        """Serve the file ``path`` (a name the caller has checked), or 404 where it is missing."""
        try:
            body = path.read_bytes()
        except OSError:  # removed meanwhile (an old version pruned from a spool), ...
            self.send_bytes(b"not found\n", "text/plain", head_only, status=404)
            return
        self.send_bytes(body, content_type(path.name), head_only, cache=cache)


UNSATISFIABLE = (-1, -1)


def byte_range(spec: str | None, size: int) -> tuple[int, int] | None:
    """The one byte range a Range header asks of ``size`` bytes: (first, last), inclusive;
    :data:`UNSATISFIABLE` when it starts past the end (or asks for the last 0 bytes); None for no
    header, several ranges or one that does not parse (the whole body is then sent, as RFC 9110
    allows)."""
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", spec or "")
    if match is None or match[1] == match[2] == "":
        return None
    if match[1] == "":  # the last N bytes
        suffix = int(match[2])
        return UNSATISFIABLE if suffix == 0 or size == 0 else (max(0, size - suffix), size - 1)
    first = int(match[1])
    if first >= size:
        return UNSATISFIABLE
    last = size - 1 if match[2] == "" else int(match[2])
    return None if last < first else (first, min(last, size - 1))


def _request_problem(path: str, lengths: list[str]) -> str | None:
    """What makes a request malformed, or None."""
    if any(ord(c) < 32 or ord(c) == 127 for c in urllib.parse.unquote(path)):
        return "a control character in the path"
    if len(lengths) > 1 or lengths and not re.fullmatch(r"\s*[0-9]{1,18}\s*", lengths[0]):
        return "Content-Length is not one number of bytes"
    return None


class _DeadlineReader(io.RawIOBase):
    """The socket as read by a handler whose request must arrive by ``handler.deadline``: each read
    waits at most until then (and at most the idle timeout); past it, TimeoutError."""

    def __init__(self, handler: QuietHandler):
        self.handler, self.sock = handler, handler.connection

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        left = self.handler.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request did not arrive in time")
        self.sock.settimeout(min(self.handler.timeout, left))
        return self.sock.recv_into(buffer)


class _ChunkedWriter(io.BufferedIOBase):
    """Writes to the socket in chunks, each allowed ``idle`` seconds: a slow reader is served as long
    as it makes progress, one that stops is dropped."""

    def __init__(self, sock: socket.socket, idle: float, chunk: int):
        self.sock, self.idle, self.chunk = sock, idle, chunk

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        for start in range(0, len(view), self.chunk):
            self.sock.settimeout(self.idle)
            self.sock.sendall(view[start:start + self.chunk])
        return len(view)


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

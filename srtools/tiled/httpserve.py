"""Small HTTP helpers shared by sr-edge and sr-proxy: address parsing, a quiet threading server."""

from __future__ import annotations

import http.server
import json
import logging
import sys

from ..errors import UsageError

log = logging.getLogger("srtools.http")


def parse_listen(text: str) -> tuple[str, int]:
    """'HOST:PORT' (port 0 = any free port) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not sep or not host or not 0 <= number <= 65535:
        raise UsageError(f"--listen {text!r}: expected HOST:PORT, e.g. 127.0.0.1:8081 (port 0 picks a free one)")
    return host.strip("[]"), number


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64


def bind(handler: type, listen: str, **attributes) -> Server:
    """A threading HTTP server bound to ``listen``; ``attributes`` are set on the server object."""
    host, port = parse_listen(listen)
    try:
        server = Server((host, port), handler)
    except OSError as exc:
        raise UsageError(f"--listen {listen}: cannot bind ({exc.strerror})") from None
    for key, value in attributes.items():
        setattr(server, key, value)
    return server


def server_url(server: Server) -> str:
    host, port = server.server_address[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def announce(url: str, **extra) -> None:
    """Print the server's URL as one JSON line on stdout (for scripts using port 0)."""
    json.dump({"url": url, **extra}, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """Request lines go to the debug log, not to stderr."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        log.debug("%s %s", self.address_string(), format % args)

    def send_bytes(self, body: bytes, content_type: str, head_only: bool = False, status: int = 200) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

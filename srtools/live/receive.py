"""The server side of model upload (sr-receive): authenticate, bound, validate, publish.

See :mod:`srtools.live.upload` for the protocol. Every check that needs no body runs before the
body is read (route, token, Content-Length against the limit, version against the current one),
also in answer to ``Expect: 100-continue`` so that a client like curl does not send a body that
would be refused. A body is then read, at most its announced length, into a temporary file under
the stream's SPOOL/tmp, validated as a model file of the route's architecture and scale
(:func:`srtools.modelfile.load`: safetensors, nothing executed), and published with
:meth:`srtools.spool.Spool.publish_file` under the push side's version. Whatever is refused leaves
the spool as it was.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import logging
import re
import socket
import threading
import time
import urllib.parse
from pathlib import Path

from .. import archs, modelfile
from ..errors import ModelError, SrError, UsageError
from ..fsutil import write_temp
from ..httpserve import QuietHandler
from ..spool import Spool, StaleVersion
from .upload import VERSION_HEADER

log = logging.getLogger("srtools.receive")

DEFAULT_KEY = "default"
PUBLISH_CHECK_PATH = "/on_publish"
PUBLISH_DONE_PATH = "/on_publish_done"
_KEY = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_ROUTE = re.compile(rf"/models/(?P<key>{_KEY})/(?P<arch>[a-z0-9_]+)-x(?P<scale>[234])")
_CHUNK = 65536
# After refusing a request whose body was not read: how long to discard what the client still sends
# (at most max_bytes), so that it reads the refusal instead of a connection reset.
_LINGER_SECONDS = 2.0


@dataclasses.dataclass
class Stream:
    """One push side: its stream key (a name, not a secret), its spool, its token (the secret)."""

    key: str
    spool: Spool
    token: str


def is_stream_key(text: str) -> bool:
    """Whether ``text`` may name a stream: letters, digits, '_', '.', '-', at most 64."""
    return re.fullmatch(_KEY, text) is not None


def parse_stream(text: str) -> tuple[str, str, str | None]:
    """'KEY=SPOOL_DIR[:TOKEN_FILE]' -> (key, spool directory, token file or None).

    The token file is what follows the last ':', so a spool directory may contain ':' when a
    token file is given.
    """
    key, sep, rest = text.partition("=")
    if not sep or not is_stream_key(key) or not rest:
        raise UsageError(f"--stream {text!r}: expected KEY=SPOOL_DIR[:TOKEN_FILE], KEY of letters, digits, "
                         "'_', '.', '-'")
    spool, sep, token_file = rest.rpartition(":")
    if not sep:
        return key, rest, None
    if not spool or not token_file:
        raise UsageError(f"--stream {text!r}: empty spool directory or token file")
    return key, spool, token_file


class _Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class ReceiveHandler(QuietHandler):
    """Answers GET and PUT on /models/KEY/ARCH-xSCALE for the server's ``streams``."""

    server_version = "sr-receive"
    timeout = 60  # seconds a client may stay silent mid-request before its connection is dropped

    def do_GET(self) -> None:  # noqa: N802
        try:
            stream, arch, scale = self._route_and_token()
        except _Refused as exc:
            self._refuse(exc, body_pending=False)
            return
        self._reply(200, {"stream": stream.key, "arch": arch, "scale": scale,
                          "version": _current_version(stream.spool, arch, scale), "max_bytes": self.server.max_bytes})

    def do_POST(self) -> None:  # noqa: N802
        """nginx-rtmp's on_publish callback (conf/nginx-rtmp.conf): 204 lets the publisher in, 403 drops
        it; and its on_publish_done, which says a publisher has left (204).

        The form body carries the stream ``name`` (its key), nginx's ``clientid`` and the publish
        URL's arguments: the publisher proves it knows the stream's token with
        rtmp://HOST/APP/KEY?token=TOKEN. Beyond the server's ``max_publishers`` streams publishing
        at once, a new one is refused.
        """
        path = self.url_path()
        if path not in (PUBLISH_CHECK_PATH, PUBLISH_DONE_PATH):
            self._refuse(_Refused(404, f"POST only on {PUBLISH_CHECK_PATH} and {PUBLISH_DONE_PATH}"),
                         body_pending=True)
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > _CHUNK:
            self._refuse(_Refused(413, "an on_publish form is small"), body_pending=True)
            return
        try:
            form = urllib.parse.parse_qs(self.rfile.read(length).decode("latin-1"))
        except TimeoutError:
            self._refuse(_Refused(408, "the form did not arrive in time"), body_pending=False, close=True)
            return
        key, token, client = (form.get(field, [""])[0] for field in ("name", "token", "clientid"))
        publishers = self.server.publishers
        if path == PUBLISH_DONE_PATH:
            with self.server.lock:
                if key in publishers and publishers[key] in (client, ""):
                    del publishers[key]
                live = len(publishers)
            log.info("%s: publisher gone (%d streams publishing)", key, live)
            self._no_content()
            return
        stream = self.server.streams.get(key)
        if stream is None or not hmac.compare_digest(token.encode(), stream.token.encode()):
            self._refuse(_Refused(403, f"stream key {key!r} with a missing or wrong token may not publish"),
                         body_pending=False)
            return
        with self.server.lock:
            limit = self.server.max_publishers
            full = limit and key not in publishers and len(publishers) >= limit
            if not full:
                publishers[key] = client  # a key publishing again (nginx admits one publisher a key) counts once
            live = len(publishers)
        if full:
            self._refuse(_Refused(403, f"stream {key!r} may not publish: {live} streams are publishing, the most "
                                       f"allowed (--max-publishers {limit})"), body_pending=False)
            return
        log.info("%s: publisher admitted from %s (%d streams publishing)", key, form.get("addr", ["?"])[0], live)
        self._no_content()

    def _no_content(self) -> None:
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def handle_expect_100(self) -> bool:
        try:
            self._check_put()
        except _Refused as exc:
            self._refuse(exc, body_pending=False, close=True)  # the client waits for this before sending a body
            return False
        return super().handle_expect_100()

    def do_PUT(self) -> None:  # noqa: N802
        start = time.monotonic()
        try:
            stream, arch, scale, length, version = self._check_put()
        except _Refused as exc:
            self._refuse(exc, body_pending=True)
            return
        try:
            tmp = self._receive_body(stream.spool, length)
        except TimeoutError:
            self._refuse(_Refused(408, "the body did not arrive in time"), body_pending=True)
            return
        except ConnectionError as exc:
            log.warning("%s: upload of v%d broken off (%s)", stream.key, version, exc)
            self.close_connection = True
            return
        except OSError as exc:  # the spool's file system: full, read-only, tmp/ removed
            self._refuse(_Refused(500, f"cannot store the upload: {exc.strerror}"), body_pending=True)
            return
        try:
            pointer = self._publish(stream, arch, scale, version, tmp)
        except _Refused as exc:
            self._refuse(exc, body_pending=False)
            return
        except OSError as exc:
            self._refuse(_Refused(500, f"cannot publish the upload: {exc.strerror}"), body_pending=False)
            return
        finally:
            tmp.unlink(missing_ok=True)
        with self.server.lock:
            self.server.accepted += 1
        seconds = time.monotonic() - start
        log.info("%s: %s v%d is current (%d bytes in %.1f s from %s)", stream.key, Spool.key(arch, scale), version,
                 length, seconds, self.address_string())
        self._reply(201, {"stream": stream.key, "arch": arch, "scale": scale, "version": version, "bytes": length,
                          "file": str(pointer.path.relative_to(stream.spool.root))})

    def _route_and_token(self) -> tuple[Stream, str, int]:
        match = _ROUTE.fullmatch(self.url_path())
        stream = match and self.server.streams.get(match["key"])
        if stream is None or match["arch"] not in archs.ARCHITECTURES:
            keys, names = ", ".join(sorted(self.server.streams)), ", ".join(archs.ARCHITECTURES)
            raise _Refused(404, f"no such stream or model: expected /models/KEY/ARCH-xSCALE, KEY one of {keys}, "
                                f"ARCH one of {names}")
        scheme, _, given = self.headers.get("Authorization", "").partition(" ")
        # compare_digest: the time taken does not depend on where the tokens differ.
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), stream.token.encode()):
            raise _Refused(401, "missing or wrong token")
        return stream, match["arch"], int(match["scale"])

    def _check_put(self) -> tuple[Stream, str, int, int, int]:
        """Everything that can be refused before the body is read."""
        stream, arch, scale = self._route_and_token()
        if "Transfer-Encoding" in self.headers or "Content-Length" not in self.headers:
            raise _Refused(411, "a Content-Length is required")
        try:
            length, version = int(self.headers["Content-Length"]), int(self.headers.get(VERSION_HEADER, ""))
        except ValueError:
            raise _Refused(400, f"Content-Length and {VERSION_HEADER} must be integers") from None
        if length > self.server.max_bytes:
            raise _Refused(413, f"{length} bytes, over the limit of {self.server.max_bytes}")
        if length <= 0 or version <= 0:
            raise _Refused(400, f"an empty body or a {VERSION_HEADER} below 1")
        current = _current_version(stream.spool, arch, scale)
        if current is not None and current >= version:
            raise _Refused(409, f"version {version} is not newer than the current version {current}")
        return stream, arch, scale, length, version

    def _receive_body(self, spool: Spool, length: int) -> Path:
        """The body, exactly ``length`` bytes, in a temporary file under the spool's tmp/."""

        def write(path: str) -> None:
            with open(path, "wb") as f:
                left = length
                while left:
                    chunk = self.rfile.read(min(left, _CHUNK))
                    if not chunk:
                        raise ConnectionError(f"the client closed after {length - left} of {length} bytes")
                    f.write(chunk)
                    left -= len(chunk)

        return write_temp(spool.tmp_dir, write, suffix=".safetensors")

    def _publish(self, stream: Stream, arch: str, scale: int, version: int, tmp: Path):
        try:
            _, info = modelfile.load(tmp, arch=arch, scale=scale)
        except ModelError as exc:
            raise _Refused(422, str(exc).replace(str(tmp), "the model")) from None
        try:
            return stream.spool.publish_file(tmp, info, version)
        except StaleVersion as exc:
            raise _Refused(409, str(exc)) from None

    def _refuse(self, refusal: _Refused, body_pending: bool, close: bool = False) -> None:
        with self.server.lock:
            self.server.refused += 1
        log.warning("refused %s %s from %s: %d %s", self.command, self.url_path(), self.address_string(),
                    refusal.status, refusal)
        headers = {"WWW-Authenticate": 'Bearer realm="sr-receive"'} if refusal.status == 401 else {}
        if body_pending or close:
            headers["Connection"] = "close"
        self._reply(refusal.status, {"error": str(refusal)}, headers)
        if body_pending:
            self._linger()

    def _reply(self, status: int, document: dict, headers: dict[str, str] | None = None) -> None:
        body = (json.dumps(document) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _linger(self) -> None:
        """Close as nginx does after refusing a body it did not read: stop writing, then discard what
        the client still sends, for a moment and at most max_bytes, so that it reads the refusal
        instead of a reset (closing with unread data resets the connection)."""
        deadline = time.monotonic() + _LINGER_SECONDS
        left = self.server.max_bytes
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            while left > 0 and (remaining := deadline - time.monotonic()) > 0:
                self.connection.settimeout(remaining)
                data = self.connection.recv(min(left, _CHUNK))
                if not data:
                    break
                left -= len(data)
        except OSError:
            pass


def _current_version(spool: Spool, arch: str, scale: int) -> int | None:
    try:
        pointer = spool.current(arch, scale)
    except SrError:  # a damaged pointer: any valid upload replaces it
        return None
    return None if pointer is None else pointer.version


def serve_attributes(streams: list[Stream], max_bytes: int, max_publishers: int = 0) -> dict:
    """The attributes :func:`srtools.httpserve.bind` sets on the server for :class:`ReceiveHandler`
    (``max_publishers`` 0: no limit)."""
    return {"streams": {s.key: s for s in streams}, "max_bytes": max_bytes, "max_publishers": max_publishers,
            "publishers": {}, "lock": threading.Lock(), "accepted": 0, "refused": 0}

"""The server side of model upload (sr-receive): authenticate, bound, validate, publish.

See :mod:`srtools.live.upload` for the protocol. Every check that needs no body runs before the
body is read (route, token, Content-Length against the limit, version against the current one),
also in answer to ``Expect: 100-continue`` so that a client like curl does not send a body that
would be refused. A body is then read, at most its announced length, into a temporary file under
the stream's SPOOL/tmp, validated as a model file of the route's architecture and scale
(:func:`srtools.modelfile.load`: safetensors, nothing executed), and published with
:meth:`srtools.spool.Spool.publish_file` under the push side's version. Whatever is refused leaves
the spool as it was.

The server keeps counters per stream (uploads accepted and refused, bytes, the last upload of each
model and the last training request the push side reported with one, see
:data:`srtools.live.upload.REQUEST_HEADER`), answers ``GET /metrics`` with them in the Prometheus text
format, and publishes them as a JSON document (:meth:`ReceiveStats.document`) where sr-hls reads them.
"""

from __future__ import annotations

import dataclasses
import datetime
import hmac
import json
import logging
import re
import socket
import threading
import time
import urllib.parse
from pathlib import Path

from .. import archs, modelfile, prometheus
from ..errors import ModelError, SrError, UsageError
from ..fsutil import write_json_atomic, write_temp
from ..httpserve import QuietHandler
from ..spool import Spool, StaleVersion
from .upload import REQUEST_HEADER, VERSION_HEADER

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
STATS_FORMAT = "sr-receive-stats/1"
# What a training request may tell (REQUEST_HEADER), by field: its type.
_REQUEST_FIELDS = {"t": float, "pair": int, "psnr": float, "created": str}


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def parse_request(text: str) -> dict | None:
    """The training request of a REQUEST_HEADER, its known fields only (see the module docstring of
    :mod:`srtools.live.upload`); None for anything else."""
    if len(text) > 1024:
        return None
    try:
        raw = json.loads(text)
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    request = {}
    for key, kind in _REQUEST_FIELDS.items():
        value = raw.get(key)
        if kind is str and isinstance(value, str) and len(value) <= 64:
            request[key] = value
        elif kind is not str and isinstance(value, (int, float)) and not isinstance(value, bool):
            request[key] = kind(value)
    return request if "t" in request else None


@dataclasses.dataclass
class StreamCounters:
    """What one stream's uploads came to (see :class:`ReceiveStats`)."""

    accepted: int = 0
    refused: int = 0
    bytes: int = 0
    seconds: float = 0.0  # receiving the accepted bodies
    models: dict = dataclasses.field(default_factory=dict)  # "fedsr-x2" -> its last upload
    last_upload: dict | None = None
    last_request: dict | None = None


class ReceiveStats:
    """sr-receive's counters, per stream; published to ``path`` (atomically) after every upload or
    refusal when there is one. Thread-safe.

    The document: {"format": "sr-receive-stats/1", "time", "refused" (requests naming no stream),
    "streams": {KEY: {"accepted", "refused", "bytes", "seconds", "models": {"ARCH-xS": UPLOAD},
    "last_upload": UPLOAD, "last_request": REQUEST}}}, where an UPLOAD is {"arch", "scale",
    "version", "bytes", "seconds", "received", "from", "gain_db", "val_psnr_db", "created",
    "train_seconds", "steps"} (the last six from the model file) and a REQUEST {"t", "pair",
    "psnr", "created", "received"} (as the push side's sr-monitor wrote it, and when it came).
    """

    def __init__(self, keys: list[str], path: str | None = None):
        self.streams = {key: StreamCounters() for key in keys}
        self.unattributed = 0
        self.path = path
        self.lock = threading.Lock()

    def accepted(self, key: str, upload: dict, request: dict | None) -> None:
        with self.lock:
            counters = self.streams[key]
            counters.accepted += 1
            counters.bytes += upload["bytes"]
            counters.seconds += upload["seconds"]
            counters.models[Spool.key(upload["arch"], upload["scale"])] = upload
            counters.last_upload = upload
            if request is not None:
                counters.last_request = {**request, "received": upload["received"]}
            self._publish()

    def refused(self, key: str | None) -> None:
        with self.lock:
            if key in self.streams:
                self.streams[key].refused += 1
            else:
                self.unattributed += 1
            self._publish()

    def document(self) -> dict:
        with self.lock:
            return self._document()

    def _document(self) -> dict:
        return {"format": STATS_FORMAT, "time": _now(), "refused": self.unattributed,
                "streams": {key: dataclasses.asdict(c) for key, c in self.streams.items()}}

    def _publish(self) -> None:
        if self.path:
            try:
                write_json_atomic(self.path, self._document())
            except OSError as exc:
                log.warning("cannot publish the statistics to %s: %s", self.path, exc.strerror)

    def metrics(self, spools: dict[str, Spool]) -> str:
        """The /metrics scrape: the counters, and each stream's current model versions."""
        with self.lock:
            streams = {key: dataclasses.replace(c, models=dict(c.models)) for key, c in self.streams.items()}
            unattributed = self.unattributed
        out = prometheus.Exposition()
        for key, c in streams.items():
            out.counter("srtools_receive_uploads_total", "Model uploads accepted (published into the spool).",
                        c.accepted, stream=key)
        for key, c in streams.items():
            out.counter("srtools_receive_upload_bytes_total", "Bytes of the model uploads accepted.", c.bytes,
                        stream=key)
        for key, c in streams.items():
            out.counter("srtools_receive_upload_seconds_total", "Time spent receiving the uploads accepted.",
                        round(c.seconds, 3), stream=key)
        for key, c in streams.items():
            out.counter("srtools_receive_refusals_total", "Requests refused (a request naming no stream has "
                        "stream=\"\").", c.refused, stream=key)
        out.counter("srtools_receive_refusals_total", "", unattributed, stream="")  # declared above
        for key, spool in spools.items():
            for arch in archs.ARCHITECTURES:
                for scale in (2, 3, 4):
                    version = _current_version(spool, arch, scale)
                    if version is not None:
                        out.gauge("srtools_receive_model_version", "Version of the stream's current model, by "
                                  "model (ARCH-xSCALE).", version, stream=key, model=Spool.key(arch, scale))
        for key, c in streams.items():
            for name, upload in c.models.items():
                out.gauge("srtools_receive_last_upload_timestamp_seconds", "When the model's last upload was "
                          "accepted (Unix time).", _timestamp(upload["received"]), stream=key, model=name)
        for key, c in streams.items():
            if c.last_request is not None:
                out.gauge("srtools_receive_last_request_timestamp_seconds", "When the last training request "
                          "reported with an upload came (Unix time).", _timestamp(c.last_request["received"]),
                          stream=key)
                out.gauge("srtools_receive_last_request_stream_seconds", "Stream time of the last training "
                          "request reported with an upload.", c.last_request["t"], stream=key)
        return out.text()


def _timestamp(iso: str) -> float:
    return datetime.datetime.fromisoformat(iso).timestamp()


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
    """Answers GET and PUT on /models/KEY/ARCH-xSCALE for the server's ``streams``, and GET /metrics."""

    server_version = "sr-receive"
    timeout = 60  # seconds a client may stay silent mid-request before its connection is dropped

    def do_GET(self) -> None:  # noqa: N802
        if self.url_path() == "/metrics":  # counts and stream keys (names), nothing secret: no token
            spools = {key: stream.spool for key, stream in self.server.streams.items()}
            body = self.server.stats.metrics(spools).encode()
            self.send_response(200)
            self.send_header("Content-Type", prometheus.CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)
            return
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
                         body_pending=False, key=key)
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
        refusal = None
        try:
            pointer, info = self._publish(stream, arch, scale, version, tmp)
        except _Refused as exc:
            refusal = exc
        except OSError as exc:
            refusal = _Refused(500, f"cannot publish the upload: {exc.strerror}")
        finally:
            tmp.unlink(missing_ok=True)  # before the answer: a client that has it sees the spool as it stays
        if refusal is not None:
            self._refuse(refusal, body_pending=False)
            return
        with self.server.lock:
            self.server.accepted += 1
        seconds = time.monotonic() - start
        upload = {"arch": arch, "scale": scale, "version": version, "bytes": length, "seconds": round(seconds, 3),
                  "received": _now(), "from": self.address_string(), "gain_db": info.gain_db,
                  "val_psnr_db": info.val_psnr_db, "created": info.created, "train_seconds": info.train_seconds,
                  "steps": info.steps}
        request_text = self.headers.get(REQUEST_HEADER)
        request = parse_request(request_text) if request_text else None
        if request_text and request is None:
            log.warning("%s: ignored a malformed %s header", stream.key, REQUEST_HEADER)
        self.server.stats.accepted(stream.key, upload, request)
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
        """(the spool's new pointer, the model's info)."""
        try:
            _, info = modelfile.load(tmp, arch=arch, scale=scale)
        except ModelError as exc:
            raise _Refused(422, str(exc).replace(str(tmp), "the model")) from None
        try:
            return stream.spool.publish_file(tmp, info, version), info
        except StaleVersion as exc:
            raise _Refused(409, str(exc)) from None

    def _refuse(self, refusal: _Refused, body_pending: bool, close: bool = False, key: str | None = None) -> None:
        with self.server.lock:
            self.server.refused += 1
        route = _ROUTE.fullmatch(self.url_path())
        self.server.stats.refused(key if key is not None else route and route["key"])
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


def serve_attributes(streams: list[Stream], max_bytes: int, max_publishers: int = 0,
                     stats_path: str | None = None) -> dict:
    """The attributes :func:`srtools.httpserve.bind` sets on the server for :class:`ReceiveHandler`
    (``max_publishers`` 0: no limit); ``stats_path``: where :class:`ReceiveStats` publishes its counters."""
    return {"streams": {s.key: s for s in streams}, "max_bytes": max_bytes, "max_publishers": max_publishers,
            "publishers": {}, "lock": threading.Lock(), "accepted": 0, "refused": 0,
            "stats": ReceiveStats([s.key for s in streams], stats_path)}

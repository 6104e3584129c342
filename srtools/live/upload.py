"""Model upload from the push side to the server: the protocol, the shared token, and the uploader.

The push side trains models into its own spool; the server upscales with models from its spool.
:class:`Uploader` (sr-upload) sends the push side's current models (F-EDSR, and TCSR when the
trainer makes one) to sr-receive (:mod:`srtools.live.receive`) over the broadcaster's uplink, which
also carries the video, so it:

- sends only the newest model of each architecture: when an upload finishes, the spool's current
  model is the next one, and the versions published meanwhile are skipped (a model is only worth
  its latest weights); architectures are served in priority order (F-EDSR first: it is what every
  frame goes through);
- paces the body with a token bucket at a share of the uplink, so the video keeps the rest;
- retries with exponential backoff while the server is away or failing, moving on to a newer
  version if one is published during the outage.

Protocol (HTTP/1.1; TLS from a reverse proxy, see sr-receive(1)), for stream KEY, architecture ARCH
and scale S, every request carrying ``Authorization: Bearer TOKEN``:

- ``GET /models/KEY/ARCH-xS``: 200 with ``{"stream", "arch", "scale", "version", "max_bytes"}``, the
  server's current version (null for none) and the largest body it accepts.
- ``PUT /models/KEY/ARCH-xS`` with ``X-Srtools-Version: N`` (the push side's version) and a
  ``Content-Length``; the body is the model file (srtools-spool(5)). 201 when it became the server's
  current model under version N; 401 without the right token, 404 for an unknown stream, 411
  without a length, 413 for a body over max_bytes, 422 for an invalid model or one of another
  architecture or scale, 409 when N is not newer than the server's current version. Errors come as
  ``{"error": "..."}``. An optional ``X-Srtools-Request`` header carries, as compact JSON, the newest
  training request the push side's sr-monitor made before the upload (``{"t", "pair", "psnr",
  "created"}`` of its request file, see srtools-spool(5)): the server reports it in its statistics,
  so that its operators see when and why the push side retrained. It changes nothing else.

The token is a shared secret per stream, read from a file or the environment variable
SRTOOLS_UPLOAD_TOKEN, never from the command line (where other users could read it in ps); see
:mod:`srtools.live.streamtoken`.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import select
import ssl
import threading
import time
import urllib.parse
from typing import Callable, Sequence

from ..errors import InputError, SrError, UsageError
from ..spool import Pointer, Spool

log = logging.getLogger("srtools.upload")

VERSION_HEADER = "X-Srtools-Version"
REQUEST_HEADER = "X-Srtools-Request"
REQUESTS_DIR = "requests"  # sr-monitor's training requests in the push side's spool (srtools.live.monitor)


def model_path(key: str, arch: str, scale: int) -> str:
    """The URL path of stream ``key``'s model of ``arch`` at ``scale``."""
    return f"/models/{key}/{arch}-x{scale}"


class TokenBucket:
    """Paces a byte stream at ``rate`` bytes per second, allowing bursts of ``burst`` bytes.

    Thread-safe: callers sharing one bucket share its rate.
    """

    def __init__(self, rate: float, burst: float):
        if rate <= 0 or burst <= 0:
            raise ValueError("rate and burst must be positive")
        self.rate, self.burst = rate, burst
        self._tokens, self._last = burst, time.monotonic()
        self._lock = threading.Lock()

    def take(self, n: int) -> None:
        """Block until ``n`` bytes (at most ``burst``) may be sent."""
        if n > self.burst:
            raise ValueError(f"{n} bytes exceed the bucket's burst of {self.burst:.0f}")
        with self._lock:  # held while waiting: takers are served in turn
            while True:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
                self._last = now
                if self._tokens >= n:
                    self._tokens -= n
                    return
                time.sleep((n - self._tokens) / self.rate)


def chunk_bytes(rate: float) -> int:
    """Bytes sent at once: 50 ms of the rate, between 1 KiB and 64 KiB (small bursts delay the video little)."""
    return int(min(65536, max(1024, rate * 0.05)))


@dataclasses.dataclass
class UploadResult:
    """What became of one version: one JSON line of sr-upload.

    status: ``uploaded`` (the server's current model now), ``present`` (the server already had it
    or a newer one: 409 or its GET said so) or ``rejected`` (413 too large, 422 invalid).
    """

    arch: str
    version: int
    bytes: int
    seconds: float
    status: str
    http: int
    attempts: int
    kbit_s: float | None = None


class UploadError(SrError):
    """The server refused us for good (wrong token, unknown stream): retrying cannot help."""


class _Transient(Exception):
    """A failure worth retrying: the server is unreachable, timed out, or answered 5xx."""


class Uploader:
    """Uploads the spool's current models of ``arches`` at ``scale`` to a stream URL.

    Args:
        spool: the push side's spool.
        url: the stream's URL, ``http[s]://HOST[:PORT]/models/KEY`` (the model path is appended).
        token: the stream's shared secret.
        arches: the architectures to upload, in priority order (one upload at a time: a new model of
            the first waits at most for the upload in progress).
        rate: the upload's share of the uplink, in bytes per second.
        timeout: seconds to connect, and for any one socket operation.
        max_backoff: the longest wait between retries (they start at 0.5 s and double).
    """

    def __init__(self, spool: Spool, url: str, token: str, arches: Sequence[str], scale: int, rate: float,
                 timeout: float = 30, max_backoff: float = 30):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"{url!r}: expected http[s]://HOST[:PORT]/models/KEY")
        self.spool, self.arches, self.scale = spool, list(arches), scale
        self._https = parts.scheme == "https"
        self._netloc = parts.netloc
        self._stream_path = parts.path.rstrip("/")
        self._auth = f"Bearer {token}"
        self.bucket = TokenBucket(rate, chunk_bytes(rate))
        self.timeout, self.max_backoff = timeout, max_backoff
        self.sent = dict.fromkeys(self.arches, 0)  # the newest version the server has from us, as far as we know
        self.request: dict | None = None  # the newest training request seen in the spool
        self._request_name = ""

    @property
    def url(self) -> str:
        """The stream's URL."""
        return f"{'https' if self._https else 'http'}://{self._netloc}{self._stream_path}"

    def _path(self, arch: str) -> str:
        return f"{self._stream_path}/{arch}-x{self.scale}"

    def run(self, emit: Callable[[UploadResult], None], once: bool = False, poll_interval: float = 0.5,
            stop: threading.Event | None = None) -> None:
        """Upload each newer current version until ``stop`` is set (or, with ``once``, the current model
        of each architecture that has one).

        Raises:
            InputError: with ``once``, the spool has no model of any of the architectures.
            UploadError: the server refused the token or does not know the stream.
        """
        stop = stop or threading.Event()
        if once and all(self._current(arch) is None for arch in self.arches):
            missing = " and no ".join(f"{Spool.key(arch, self.scale)} model" for arch in self.arches)
            raise InputError(f"{self.spool.root}: no {missing} to upload")
        while not stop.is_set():
            self.note_request()
            due = [(arch, p) for arch in self.arches if (p := self._current(arch)) and p.version > self.sent[arch]]
            if not due:
                if once:
                    return
                stop.wait(poll_interval)
                continue
            arch, pointer = due[0]  # the first in priority order; then look again (newer versions may be out)
            result = self.deliver(arch, pointer, stop)
            if result is None:  # stopped while retrying
                return
            self.sent[arch] = max(self.sent[arch], result.version)
            emit(result)

    def deliver(self, arch: str, pointer: Pointer, stop: threading.Event) -> UploadResult | None:
        """Upload ``pointer``'s model of ``arch``, retrying with backoff; after a failed attempt the
        newest version is tried instead. None when ``stop`` was set while waiting to retry."""
        delay, attempts = 0.5, 0
        while True:
            attempts += 1
            try:
                return self._attempt(arch, pointer, attempts)
            except _Transient as exc:
                log.warning("upload of %s v%d to %s failed (%s); retrying in %.1f s", arch, pointer.version, self.url,
                            exc, delay)
            if stop.wait(delay):
                return None
            delay = min(2 * delay, self.max_backoff)
            self.note_request()
            newest = self._current(arch)
            if newest is not None and newest.version > pointer.version:
                log.info("%s v%d was published meanwhile: uploading it instead of v%d", arch, newest.version,
                         pointer.version)
                pointer = newest

    def note_request(self) -> None:
        """Remember the spool's newest training request (the trainer removes requests once it has
        trained: they are read while they are there)."""
        names = sorted(p.name for p in (self.spool.root / REQUESTS_DIR).glob("request-*.json"))
        if not names or names[-1] <= self._request_name:
            return
        try:
            raw = json.loads((self.spool.root / REQUESTS_DIR / names[-1]).read_text())
        except (OSError, ValueError):  # removed as we read it, or not JSON
            return
        if isinstance(raw, dict):
            self._request_name = names[-1]
            self.request = {key: raw[key] for key in ("t", "pair", "psnr", "created") if key in raw}

    def _current(self, arch: str) -> Pointer | None:
        try:
            return self.spool.current(arch, self.scale)
        except SrError as exc:  # a damaged pointer: the next publish replaces it
            log.warning("%s", exc)
            return None

    def _connection(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return cls(self._netloc, timeout=self.timeout)

    def _attempt(self, arch: str, pointer: Pointer, attempts: int) -> UploadResult:
        try:
            body = pointer.path.read_bytes()
        except OSError as exc:
            raise _Transient(f"cannot read {pointer.path}: {exc.strerror}") from None
        conn = self._connection()
        path = self._path(arch)
        try:
            state = self._state(conn, path)
            if state.get("version") is not None and state["version"] >= pointer.version:
                log.info("the server already has %s v%d (v%d asked)", arch, state["version"], pointer.version)
                return UploadResult(arch, pointer.version, len(body), 0.0, "present", 200, attempts)
            if len(body) > state.get("max_bytes", len(body)):
                log.error("%s v%d: %d bytes, over the server's limit of %d", arch, pointer.version, len(body),
                          state["max_bytes"])
                return UploadResult(arch, pointer.version, len(body), 0.0, "rejected", 413, attempts)
            start = time.monotonic()
            status, answer = self._put(conn, path, body, pointer.version)
            seconds = time.monotonic() - start
        except ssl.SSLCertVerificationError as exc:
            raise UploadError(f"{self.url}: {exc.verify_message} (the server's certificate; see $SSL_CERT_FILE)") \
                from None
        except (OSError, http.client.HTTPException) as exc:
            raise _Transient(f"{type(exc).__name__}: {exc}") from None
        finally:
            conn.close()
        result = UploadResult(arch, pointer.version, len(body), round(seconds, 3), "uploaded", status, attempts,
                              round(len(body) * 8 / seconds / 1e3, 1) if seconds > 0 else None)
        if status in (200, 201):
            log.info("uploaded %s v%d: %d bytes in %.1f s", arch, pointer.version, len(body), seconds)
        elif status == 409:
            log.info("the server has %s v%d or newer: %s", arch, pointer.version, answer)
            result.status = "present"
        elif status in (413, 422):
            log.error("the server rejected %s v%d: %s", arch, pointer.version, answer)
            result.status = "rejected"
        else:
            self._raise_for(status, answer)
        return result

    def _state(self, conn: http.client.HTTPConnection, path: str) -> dict:
        """The server's current version and limit for the model at ``path`` (GET), on the connection the
        PUT reuses."""
        conn.request("GET", path, headers={"Authorization": self._auth})
        response = conn.getresponse()
        answer = response.read()
        if response.status != 200:
            self._raise_for(response.status, _error_text(answer))
        try:
            state = json.loads(answer)
        except ValueError:
            raise _Transient("the server's answer is not JSON (is --to an sr-receive URL?)") from None
        return state if isinstance(state, dict) else {}

    def _put(self, conn: http.client.HTTPConnection, path: str, body: bytes, version: int) -> tuple[int, str]:
        conn.putrequest("PUT", path, skip_accept_encoding=True)
        headers = [("Authorization", self._auth), ("Content-Type", "application/octet-stream"),
                   ("Content-Length", str(len(body))), (VERSION_HEADER, str(version))]
        if self.request:
            headers.append((REQUEST_HEADER, json.dumps(self.request, separators=(",", ":"))))
        for name, value in headers:
            conn.putheader(name, value)
        conn.endheaders()
        view = memoryview(body)
        step = chunk_bytes(self.bucket.rate)
        for offset in range(0, len(body), step):
            piece = view[offset:offset + step]
            self.bucket.take(len(piece))
            if select.select([conn.sock], [], [], 0)[0]:
                break  # the server answered before the end of the body: a refusal; stop sending and read it
            try:
                conn.send(piece)
            except (BrokenPipeError, ConnectionResetError):
                break  # it may have refused and closed: its answer can still be read
        response = conn.getresponse()
        return response.status, _error_text(response.read())

    def _raise_for(self, status: int, answer: str) -> None:
        if status >= 500 or status in (408, 429):
            raise _Transient(f"HTTP {status} {answer}")
        if status == 401:
            raise UploadError(f"{self.url}: the server refused the token (401 {answer})")
        raise UploadError(f"{self.url}: HTTP {status} {answer} (is it http[s]://HOST/models/KEY of a stream "
                          f"sr-receive serves?)")


def _error_text(answer: bytes) -> str:
    """The ``error`` of a JSON error body, else the body's first line."""
    try:
        return str(json.loads(answer)["error"])
    except (ValueError, KeyError, TypeError):
        return answer.decode(errors="replace").strip().split("\n")[0][:200]

"""The shared HTTP server: HLS MIME types, cache headers, CORS, the player page, nothing outside the root,
byte ranges, 400 for malformed requests, slow clients cut off, connections capped."""

import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from srtools import httpserve
from srtools.errors import UsageError

from conftest import raw_http


class DirectoryHandler(httpserve.QuietHandler):
    def do_GET(self):  # noqa: N802
        if self.url_path() == "/":
            self.send_bytes(httpserve.player_page("live.m3u8", "test").encode(), httpserve.content_type("player.html"))
        else:
            self.send_file_under(self.server.root)


@pytest.fixture
def server(tmp_path):
    root = (tmp_path / "hls").resolve()
    root.mkdir()
    (root / "live.m3u8").write_text("#EXTM3U\n")
    (root / "seg00001.ts").write_bytes(b"\x47" * 188)
    (tmp_path / "secret.txt").write_text("outside")
    srv = httpserve.bind(DirectoryHandler, "127.0.0.1:0", root=root)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpserve.server_url(srv)
    srv.shutdown()
    srv.server_close()


def fetch(url, method="GET"):
    request = urllib.request.Request(url, method=method, headers={"Origin": "http://player.example"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.headers, response.read()


def test_hls_types_cache_headers_and_cors(server):
    status, headers, body = fetch(f"{server}/live.m3u8")
    assert (status, headers["Content-Type"], headers["Cache-Control"]) == (
        200, "application/vnd.apple.mpegurl", "no-cache")
    assert headers["Access-Control-Allow-Origin"] == "*" and body == b"#EXTM3U\n"
    status, headers, body = fetch(f"{server}/seg00001.ts")
    assert headers["Content-Type"] == "video/mp2t" and "immutable" in headers["Cache-Control"]
    assert len(body) == 188 and headers["Access-Control-Allow-Origin"] == "*"
    status, headers, _ = fetch(f"{server}/seg00001.ts", method="OPTIONS")  # CORS preflight
    assert status == 204 and "GET" in headers["Access-Control-Allow-Methods"]


def test_player_page_loads_the_playlist(server):
    _, headers, body = fetch(f"{server}/")
    page = body.decode()
    assert headers["Content-Type"].startswith("text/html")
    assert '"live.m3u8"' in page and "Hls.isSupported" in page and "application/vnd.apple.mpegurl" in page


@pytest.mark.parametrize("path", ["/missing.ts", "/../secret.txt", "/%2e%2e/secret.txt"])
def test_nothing_outside_the_root(server, path):
    with pytest.raises(urllib.error.HTTPError) as info:
        fetch(server + path)
    assert info.value.code == 404 and info.value.headers["Cache-Control"] == "no-store"


def test_listen_address_errors_describe_the_problem():
    with pytest.raises(UsageError, match="expected HOST:PORT"):
        httpserve.parse_listen("8080")
    taken = httpserve.bind(DirectoryHandler, "127.0.0.1:0")
    try:
        with pytest.raises(UsageError, match="cannot listen on 127.0.0.1:"):
            httpserve.bind(DirectoryHandler, f"127.0.0.1:{taken.server_address[1]}")
    finally:
        taken.server_close()


@pytest.mark.parametrize("spec,status,content_range,body", [
    ("bytes=0-99", 206, "bytes 0-99/188", b"\x47" * 100),
    ("bytes=180-", 206, "bytes 180-187/188", b"\x47" * 8),
    ("bytes=-10", 206, "bytes 178-187/188", b"\x47" * 10),
    ("bytes=100-999999", 206, "bytes 100-187/188", b"\x47" * 88),
    ("bytes=999999999-", 416, "bytes */188", b"range not satisfiable\n"),
    ("bytes=0-1,5-6", 200, None, b"\x47" * 188),  # several ranges: the whole file, as RFC 9110 allows
])
def test_byte_ranges(server, spec, status, content_range, body):
    request = urllib.request.Request(f"{server}/seg00001.ts", headers={"Range": spec})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            answer = response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        answer = error.code, error.headers, error.read()
    assert (answer[0], answer[1]["Content-Range"], answer[2]) == (status, content_range, body)
    assert int(answer[1]["Content-Length"]) == len(body)
    if status != 416:
        assert answer[1]["Accept-Ranges"] == "bytes"


@pytest.mark.parametrize("request_bytes,reason", [
    (b"GET /seg00001.ts%00 HTTP/1.1\r\nHost: x\r\n\r\n", b"a control character in the path"),
    (b"GET /a%0d%0ab HTTP/1.1\r\nHost: x\r\n\r\n", b"a control character in the path"),
    (b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", b"Content-Length is not one number"),
    (b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", b"Content-Length is not one number"),
    (b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
     b"Content-Length is not one number"),
])
def test_a_malformed_request_gets_400_and_the_server_goes_on(server, request_bytes, reason):
    answer = raw_http(server, request_bytes)
    assert answer.startswith(b"HTTP/1.1 400 ") and reason in answer, answer
    assert fetch(f"{server}/live.m3u8")[0] == 200


class SlowHandler(DirectoryHandler):
    request_timeout = 1.0


class SmallServer(httpserve.Server):
    max_connections = 4


def test_slow_clients_are_cut_off_and_connections_are_capped(tmp_path):
    """A request has request_timeout for its head, however it trickles; beyond max_connections a client
    gets 503 at once, without a thread; the backlog holds bursts."""
    srv = SmallServer(("127.0.0.1", 0), SlowHandler)
    srv.root = tmp_path
    (tmp_path / "a.m3u8").write_text("#EXTM3U\n")
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    url = httpserve.server_url(srv)
    tricklers: list[socket.socket] = []
    try:
        port = srv.server_address[1]
        listing = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout.split()
        assert int(listing[2]) >= min(1024, int(Path("/proc/sys/net/core/somaxconn").read_text()))  # the backlog
        tricklers = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        began = time.monotonic()
        time.sleep(0.2)
        assert raw_http(url, b"GET /a.m3u8 HTTP/1.1\r\nHost: x\r\n\r\n").startswith(b"HTTP/1.1 503 ")
        closed = []
        while len(closed) < 4 and time.monotonic() - began < 10:  # one byte every 0.3 s, never a whole line
            for sock in tricklers:
                if sock not in closed:
                    try:
                        sock.send(b"G")
                        sock.settimeout(0.01)
                        if sock.recv(100) == b"":
                            closed.append(sock)
                    except TimeoutError:
                        pass
                    except OSError:
                        closed.append(sock)
            time.sleep(0.3)
        assert len(closed) == 4 and time.monotonic() - began < 3  # cut off after 1 s, not served forever
        assert fetch(f"{url}/a.m3u8")[0] == 200  # the slots are free again
        assert srv.busy_refusals == 1
    finally:
        for sock in tricklers:
            sock.close()
        srv.shutdown()
        srv.server_close()

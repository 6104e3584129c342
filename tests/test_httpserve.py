"""The shared HTTP server: HLS MIME types, cache headers, CORS, the player page, nothing outside the root."""

import threading
import urllib.error
import urllib.request

import pytest

from srtools import httpserve
from srtools.errors import UsageError


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

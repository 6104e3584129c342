"""sr-edge: a real HTTP server on an ephemeral port, emulated latency, parallel requests."""

import concurrent.futures
import time
import urllib.error
import urllib.request

import pytest

from srtools.tiled.manifest import Manifest

from conftest import Server, expect_error, raw_http, run_command

DELAY_MS = 150


def get(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


def test_serves_its_tiles_with_latency_in_parallel(tiled):
    tiles, _ = tiled
    m = Manifest.load(tiles)
    members = m.segments[0].sets[1]
    with Server("sr-edge", tiles / "edges/edge-1", "--listen", "127.0.0.1:0", "--delay-ms", DELAY_MS) as edge:
        assert edge.url.startswith("http://127.0.0.1:")
        start = time.monotonic()
        status, body = get(f"{edge.url}/seg00000/t{members[0]:02d}.mp4")
        assert time.monotonic() - start >= DELAY_MS / 1e3
        assert status == 200 and body == m.lr_path(0, members[0]).read_bytes()
        # Requests in parallel overlap their delays: all of them take less time than the delays of one
        # after the other alone (on any machine, however loaded: only the delays are wall-clock).
        urls = [f"{edge.url}/seg{s:05d}/t{j:02d}.mp4" for s in (0, 1) for j in m.segments[s].sets[1]] * 3
        start = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(len(urls)) as pool:
            assert all(status == 200 for status, _ in pool.map(get, urls))
        elapsed = time.monotonic() - start
        assert elapsed < len(urls) * DELAY_MS / 1e3, f"{len(urls)} requests in {elapsed:.2f} s"
        # Tiles of other edges and paths outside the directory are not served.
        other = m.segments[0].sets[0][0]
        for path in (f"/seg00000/t{other:02d}.mp4", "/../manifest.json", "/%2e%2e/manifest.json"):
            with pytest.raises(urllib.error.HTTPError) as info:
                get(edge.url + path)
            assert info.value.code == 404
        code, err = edge.stop()
    assert code == 130  # SIGTERM: documented INTERRUPTED status
    assert "served" in err and "Traceback" not in err


def test_a_bad_request_gets_400_and_a_range_its_bytes(tiled):
    tiles, _ = tiled
    m = Manifest.load(tiles)
    tile = f"/seg00000/t{m.segments[0].sets[1][0]:02d}.mp4"
    whole = m.lr_path(0, m.segments[0].sets[1][0]).read_bytes()
    with Server("sr-edge", tiles / "edges/edge-1") as edge:
        answer = raw_http(edge.url, f"GET {tile}%00 HTTP/1.1\r\nHost: edge\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.1 400 ") and b"control character" in answer, answer
        request = urllib.request.Request(edge.url + tile, headers={"Range": "bytes=10-19"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert (response.status, response.read()) == (206, whole[10:20])
            assert response.headers["Content-Range"] == f"bytes 10-19/{len(whole)}"
        request = urllib.request.Request(edge.url + tile, headers={"Range": "bytes=999999999-"})
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(request, timeout=10)
        assert info.value.code == 416 and info.value.headers["Content-Range"] == f"bytes */{len(whole)}"
        assert get(edge.url + tile) == (200, whole)  # still serving
        code, err = edge.stop()
    assert code == 130 and "Traceback" not in err and "error" not in err, err


def test_bad_arguments(tiled):
    tiles, _ = tiled
    expect_error(run_command("sr-edge", tiles / "no-such-edge"), 2, "no such directory")
    expect_error(run_command("sr-edge", tiles / "edges/edge-0", "--listen", "nonsense"), 2, "HOST:PORT")

"""conf/nginx-rtmp.conf: a real nginx-rtmp, unprivileged on free high ports, admits a publisher only with
its stream's token and while the streams publishing are fewer than sr-receive's --max-publishers
(sr-receive answers on_publish), starts one sr-live chain per stream (exec_push), and lets the end of
each stream drain into HLS (SIGUSR1)."""

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from srtools import generic, modelfile
from srtools.spool import Spool

from conftest import NGINX, ROOT, Server, free_port, running_nginx
from test_sr_live import publish, segments_of

TEMPLATE = ROOT / "conf" / "nginx-rtmp.conf"
RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
TOKEN = "rtmp-test-token-0123456789abcdef"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(NGINX is None or not RTMP_MODULE.exists(),
                                                   reason="nginx with libnginx-mod-rtmp (make deps installs them)")]


class Ingest:
    """nginx-rtmp checking publishers with a real sr-receive, an sr-live per stream.

    Attributes:
        port: nginx's RTMP port.
        state: @STATE@: STATE/KEY/{spool,hls,stats} per stream, and STATE/KEY.log, its sr-live's stderr.
        receiver: the sr-receive server (its stderr is read when it stops).
    """

    def __init__(self, port: int, state: Path, receiver: Server):
        self.port, self.state, self.receiver = port, state, receiver

    def url(self, key: str, token: str = TOKEN) -> str:
        return f"rtmp://127.0.0.1:{self.port}/live/{key}?token={token}"

    def playlist(self, key: str) -> Path:
        return self.state / key / "hls" / "sr.m3u8"  # the SR rendition's media playlist

    def seconds(self, key: str) -> float:
        """Seconds of video the stream's HLS playlist has had so far: those listed, and sr-live's 2 s
        segments that left its rolling window before them (its media sequence)."""
        playlist = self.playlist(key)
        if not playlist.exists():
            return 0.0
        earlier = int(re.search(r"^#EXT-X-MEDIA-SEQUENCE:(\d+)$", playlist.read_text(), re.M)[1])
        return 2.0 * earlier + sum(d for d, _ in segments_of(playlist))

    def chain_running(self, key: str) -> bool:
        """Whether a process of the stream's chain runs (one names the stream's HLS directory)."""
        mark = str(self.state / key / "hls").encode()
        for entry in os.listdir("/proc"):
            try:
                if entry.isdigit() and mark in Path(f"/proc/{entry}/cmdline").read_bytes():
                    return True
            except OSError:
                continue
        return False


@pytest.fixture
def start_ingest(tmp_path):
    """start(keys, max_publishers): an :class:`Ingest` for stream ``keys``, each spool holding the generic
    F-EDSR model, sr-receive with ``--max-publishers`` (None: no limit); stopped after the test."""
    with contextlib.ExitStack() as stack:

        def start(keys: tuple[str, ...] = ("studio",), max_publishers: int | None = None) -> Ingest:
            state, prefix = tmp_path / "state", tmp_path / "nginx"
            state.mkdir()
            prefix.mkdir()
            token = tmp_path / "token"
            token.write_text(TOKEN + "\n")
            token.chmod(0o600)
            model, info = modelfile.load(generic.find("fedsr", {"channels": 16, "blocks": 4}, 2, "y"))
            for key in keys:
                Spool(state / key / "spool", create=True).publish(model, info)
            # nginx runs exec_push with nothing of our environment but PATH: the wrapper names this
            # interpreter and keeps each chain's log.
            wrapper = tmp_path / "sr-live"
            wrapper.write_text(f"#!/bin/sh\nexport SRTOOLS_PYTHON={sys.executable} "
                               f"PYTHONPATH={os.environ.get('PYTHONPATH', '')}\n"
                               f'exec {ROOT / "bin" / "sr-live"} "$@" 2>> "{state}/${{1##*/}}.log"\n')
            wrapper.chmod(0o755)
            streams = [arg for key in keys for arg in ("--stream", f"{key}={state / key / 'spool'}:{token}")]
            limit = ["--max-publishers", max_publishers] if max_publishers else []
            receiver = stack.enter_context(Server("sr-receive", *streams, *limit))
            port = free_port()
            conf = prefix / "nginx.conf"
            conf.write_text(TEMPLATE.read_text().replace("@RTMP_PORT@", str(port)).replace("@STATE@", str(state))
                            .replace("@RECEIVE_URL@", receiver.url).replace("@SR_LIVE@", str(wrapper))
                            .replace("@RTMP_MODULE@", str(RTMP_MODULE)))
            stack.enter_context(running_nginx(conf, prefix, port))
            return Ingest(port, state, receiver)

        yield start


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not {what} within {timeout} s"
        time.sleep(0.2)


def decodes(segment: Path) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-xerror", "-i", str(segment), "-f", "null", "-"], check=True, timeout=60)


def test_a_publisher_with_its_token_gets_a_chain_and_a_wrong_token_is_refused(start_ingest):
    ingest = start_ingest()
    refused = publish(ingest.url("studio", "wrong"), seconds=2, wait=False)
    assert refused.wait(30) != 0
    stranger = publish(ingest.url("stranger"), seconds=2, wait=False)
    assert stranger.wait(30) != 0
    assert sorted(p.name for p in ingest.state.iterdir()) == ["studio"]  # sr-receive's spool; no chain was started
    assert not (ingest.state / "studio" / "hls").exists()
    # The chain starts once the publisher is in (python, torch: seconds on a loaded machine) and pulls the
    # stream from then on; the publisher stops (SIGINT: ffmpeg closes the stream) once a segment is out, and
    # what the chain pulled reaches HLS in full, however late (SIGUSR1 lets it drain).
    publisher = publish(ingest.url("studio"), seconds=120, wait=False)
    try:
        wait_for(lambda: ingest.seconds("studio") >= 2, 90, "a segment in HLS")
        publisher.send_signal(signal.SIGINT)
        publisher.wait(30)
    finally:
        publisher.kill()
        publisher.wait()
    wait_for(lambda: not ingest.chain_running("studio"), 90, "the chain ended")
    log = (ingest.state / "studio.log").read_text()
    report = stream_report(ingest, "studio")
    assert report["hls_s"] >= 2 and report["hls_s"] == pytest.approx(report["frames"] / 25, abs=0.1), (report, log)
    for _, name in segments_of(ingest.playlist("studio")):
        decodes(ingest.playlist("studio").parent / name)


def stream_report(ingest: Ingest, key: str) -> dict:
    """What sr-serve did for the stream: frames, late frames, frames with network output, share of blocks."""
    stats = json.loads((ingest.state / key / "stats" / "sr-serve-1.json").read_text())
    share = stats.get("block_share")  # of the frames upscaled in blocks (None: every frame whole)
    return {"frames": stats["frames"], "late": stats["late"], "lag_ms": stats["lag_ms"],
            "worst_lag_ms": stats["worst_lag_ms"],
            "model_frames": stats["engine_frames"], "block_frames": stats.get("block_frames", 0),
            "block_share": None if share is None else round(100 * share), "hls_s": round(ingest.seconds(key), 1)}


def test_three_publishers_at_once_and_a_fourth_over_the_limit(start_ingest, capsys):
    """Three streams on this machine at once, each with its key, spool and HLS directory: every one's
    HLS decodes, no sr-serve falls behind its input (selective SR shares the cores), one publisher
    dropping disturbs none of the others, and a fourth, over --max-publishers, is refused at on_publish."""
    ingest = start_ingest(("s1", "s2", "s3", "s4"), max_publishers=3)
    publishers = {key: publish(ingest.url(key), seconds=40, wait=False) for key in ("s1", "s2", "s3")}
    try:
        # All three admitted: their chains have started (sr-hls made their HLS directories).
        wait_for(lambda: all((ingest.state / key / "hls").exists() for key in publishers), 60, "three chains")
        fourth = publish(ingest.url("s4"), seconds=5, wait=False)
        assert fourth.wait(30) != 0  # dropped by nginx
        wait_for(lambda: all(ingest.seconds(key) >= 2 for key in publishers), 90, "HLS from all three chains")
        publishers["s3"].send_signal(signal.SIGKILL)  # a publisher gone without a word
        publishers["s3"].wait()
        dropped_at = {key: ingest.seconds(key) for key in ("s1", "s2")}
        wait_for(lambda: not ingest.chain_running("s3"), 90, "s3's chain ended")  # nginx: drop_idle_publisher
        for key in ("s1", "s2"):
            assert publishers[key].wait(60) == 0
        wait_for(lambda: not any(ingest.chain_running(key) for key in ("s1", "s2")), 90, "every chain ended")
    finally:
        for publisher in publishers.values():
            publisher.kill()
            publisher.wait()
    code, err = ingest.receiver.stop()
    assert "refused POST /on_publish from 127.0.0.1: 403 stream 's4' may not publish: 3 streams are publishing" in err
    assert not (ingest.state / "s4" / "hls").exists()  # no chain for it
    report = {key: stream_report(ingest, key) for key in ("s1", "s2", "s3")}
    with capsys.disabled():
        print(f"\nthree publishers at 320x180 -> 640x360, 25 fps: {report}")
    for key in ("s1", "s2"):
        assert ingest.playlist(key).read_text().count("#EXT-X-DISCONTINUITY") == 0, key  # never interrupted
        assert report[key]["hls_s"] >= dropped_at[key] + 8, (key, dropped_at, report)  # went on after s3 dropped
    for key, row in report.items():
        assert row["hls_s"] == pytest.approx(row["frames"] / 25, abs=0.1), (key, row)  # every frame reached HLS
        # sr-serve kept up with its input: no backlog was left at the end, and none built up (one that could
        # not keep up would lag more with every frame, 10 s behind after 20 s at 1.5x real time). Three chains
        # and three encoders share 2 cores, and each chain's start (three processes importing torch) takes
        # them for a while: stalls of a few seconds, and the late frames (over 2 frame intervals) that follow,
        # happen and are reported.
        assert row["lag_ms"] < 500 and row["worst_lag_ms"] < 8000, (key, row)
        for _, name in segments_of(ingest.playlist(key)):
            decodes(ingest.playlist(key).parent / name)
        audio = ingest.playlist(key).parent / "audio.m3u8"
        video_window = sum(d for d, _ in segments_of(ingest.playlist(key)))
        assert sum(d for d, _ in segments_of(audio)) >= video_window - 2.5, key  # audio in the whole window

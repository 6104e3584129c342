"""conf/nginx-rtmp.conf: a real nginx-rtmp, unprivileged on free high ports, admits a publisher only with
its stream's token (sr-receive answers on_publish) and starts one sr-live chain per stream (exec_push)."""

import subprocess
import time
from pathlib import Path

import pytest

from conftest import NGINX, ROOT, Server, free_port, running_nginx
from test_sr_live import publish, segments_of

TEMPLATE = ROOT / "conf" / "nginx-rtmp.conf"
RTMP_MODULE = Path("/usr/lib/nginx/modules/ngx_rtmp_module.so")
TOKEN = "rtmp-test-token-0123456789abcdef"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(NGINX is None or not RTMP_MODULE.exists(),
                                                   reason="nginx with libnginx-mod-rtmp (make deps installs them)")]


@pytest.fixture
def nginx_rtmp(tmp_path):
    """(RTMP port, state directory): nginx-rtmp checking keys with a real sr-receive."""
    state, prefix = tmp_path / "state", tmp_path / "nginx"
    state.mkdir()
    prefix.mkdir()
    (tmp_path / "token").write_text(TOKEN + "\n")
    (tmp_path / "token").chmod(0o600)
    with Server("sr-receive", "--stream", f"studio={state / 'studio' / 'spool'}:{tmp_path / 'token'}") as receiver:
        port = free_port()
        conf = prefix / "nginx.conf"
        conf.write_text(TEMPLATE.read_text().replace("@RTMP_PORT@", str(port)).replace("@STATE@", str(state))
                        .replace("@CHECK_URL@", f"{receiver.url}/on_publish")
                        .replace("@SR_LIVE@", str(ROOT / "bin" / "sr-live")).replace("@RTMP_MODULE@", str(RTMP_MODULE)))
        with running_nginx(conf, prefix, port):
            yield port, state


def test_a_publisher_with_its_token_gets_a_chain_and_a_wrong_token_is_refused(nginx_rtmp):
    port, state = nginx_rtmp
    refused = publish(f"rtmp://127.0.0.1:{port}/live/studio?token=wrong", seconds=2, wait=False)
    assert refused.wait(30) != 0
    stranger = publish(f"rtmp://127.0.0.1:{port}/live/stranger?token={TOKEN}", seconds=2, wait=False)
    assert stranger.wait(30) != 0
    assert [p.name for p in state.iterdir()] == ["studio"]  # sr-receive's spool; no chain was started
    assert not (state / "studio" / "hls").exists()
    publish(f"rtmp://127.0.0.1:{port}/live/studio?token={TOKEN}", seconds=5)
    playlist = state / "studio" / "hls" / "index.m3u8"
    deadline = time.monotonic() + 30
    while not (playlist.exists() and sum(d for d, _ in segments_of(playlist)) >= 4):
        assert time.monotonic() < deadline, f"no HLS from the chain: {list(state.rglob('*'))}"
        time.sleep(0.5)
    for _, name in segments_of(playlist):
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(playlist.parent / name), "-f", "null", "-"], check=True)

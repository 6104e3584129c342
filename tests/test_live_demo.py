"""make demo's program: the whole live system (push side and server side as separate processes) on a
short embedded sample; it must end with its summary and leave a playable HLS stream."""

import subprocess
import sys

import pytest

from conftest import ROOT

pytestmark = pytest.mark.slow


def test_the_live_demo_runs_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, str(ROOT / "samples" / "live_demo.py"), "--out", str(out),
                             "--seconds", "15", "--serve", "127.0.0.1:0"], capture_output=True, timeout=300)
    err = result.stderr.decode()
    assert result.returncode == 0, err
    assert "== watch: http://127.0.0.1:" in err and "== summary" in err
    assert "training sessions: " in err and "first HLS segment listed" in err
    summary = err.split("== summary", 1)[1]
    assert "0-10" in summary and "sr-serve: " in summary
    # The picture, measured on the renditions as served, its path printed.
    assert f"== quality plot: {out / 'quality.png'}" in summary and "as served, against the source" in summary
    assert (out / "quality.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for rendition, kind in (("sr", "video"), ("lr", "video"), ("audio", "audio")):  # every segment decodable
        segments = sorted((out / "hls").glob(f"*-{rendition}-*.ts"))
        assert segments, rendition
        for segment in segments:
            streams = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_type", "-of",
                                      "csv=p=0", str(segment)], capture_output=True, text=True, check=True).stdout
            assert set(streams.split()) == {kind}  # (ffprobe lists a TS program's streams twice)
    assert (out / "push-spool" / "pool").is_dir() and list((out / "push-spool" / "pool").iterdir())
    assert "sr-push: status: " in err  # the push side's status, as log lines on a pipe

"""sr-tile: real tiles encoded by ffmpeg, sets at the edges, manifest consistent with the files."""

import json
import subprocess

import numpy as np
import pytest

from srtools.tiled.manifest import Manifest
from srtools.tiled.partition import imbalance

from conftest import expect_error, run_command


def probe(path):
    out = subprocess.run(["ffprobe", "-v", "error", "-count_frames", "-show_entries",
                          "stream=codec_name,width,height,nb_read_frames", "-of", "json", str(path)],
                         check=True, capture_output=True).stdout
    return json.loads(out)["streams"][0]


def test_tiles_sets_and_manifest(tiled):
    out, summary = tiled
    m = Manifest.load(out)
    assert summary["segments"] == len(m.segments) == 2
    assert (m.width, m.height) == (192, 104)  # cropped to whole tiles with an even LR size
    assert (m.tile_width, m.tile_height) == (64, 52)
    assert [s.frames for s in m.segments] == [12, 12]
    assert abs(sum(s.attention for s in m.segments) - 1) < 1e-9
    for segment in m.segments:
        assert sorted(j for s in segment.sets for j in s) == list(range(6))
        assert all(segment.sets)
        for edge, members in enumerate(segment.sets):
            stored = sorted(p.name for p in (out / f"edges/edge-{edge}/seg{segment.index:05d}").iterdir())
            assert stored == [f"t{j:02d}.mp4" for j in members]
        for tile in segment.tiles:
            assert m.lr_path(segment.index, tile.index).stat().st_size == tile.lr_bytes
            assert m.hr_path(segment.index, tile.index).stat().st_size == tile.hr_bytes
    hr, lr = probe(m.hr_path(1, 4)), probe(m.lr_path(1, 4))
    assert (hr["codec_name"], hr["width"], hr["height"], int(hr["nb_read_frames"])) == ("h264", 64, 52, 12)
    assert (lr["codec_name"], lr["width"], lr["height"], int(lr["nb_read_frames"])) == ("h264", 32, 26, 12)
    # The reported balance is that of the stored sets, and better than dealing tiles round-robin.
    spreads = [imbalance([t.lr_bytes for t in s.tiles], s.sets) for s in m.segments]
    assert m.partition["imbalance_mean"] == pytest.approx(np.mean(spreads), abs=1e-5)
    assert m.partition["imbalance_max"] == pytest.approx(max(spreads), abs=1e-5)
    round_robin = [imbalance([t.lr_bytes for t in s.tiles], [list(range(e, 6, 3)) for e in range(3)])
                   for s in m.segments]
    assert all(balanced <= dealt for balanced, dealt in zip(spreads, round_robin))
    assert summary["partition"]["imbalance_max"] == m.partition["imbalance_max"]


def test_existing_output_directory_is_refused(tiled, tiled_clip):
    out, _ = tiled
    expect_error(run_command("sr-tile", tiled_clip, "--out", out), 2, "not an empty directory")


@pytest.mark.parametrize("args, status, fragment", [
    (["/no/such.mp4"], 3, "no such file"),
    (["CLIP", "--grid", "4"], 2, "ROWSxCOLS"),
    (["CLIP", "--grid", "2x2", "--sets", "5"], 2, "more sets"),
    (["CLIP", "--grid", "60x60"], 2, "too small"),
])
def test_bad_input(tmp_path, tiled_clip, args, status, fragment):
    out = tmp_path / "out"
    args = [str(tiled_clip) if a == "CLIP" else a for a in args]
    expect_error(run_command("sr-tile", *args, "--out", out), status, fragment)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(f".{out.name}.")]  # no staging left behind

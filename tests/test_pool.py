"""The pair pool: bounded, atomically published, readable while pairs come and go, never unpickles."""

import stat
import subprocess
import sys

import numpy as np
import pytest

from srtools import y4m
from srtools.errors import SrError
from srtools.live.pool import Pool

HR, LR = y4m.Header(32, 18), y4m.Header(16, 10)


def frame(header, value):
    return y4m.Frame([np.full(shape, value, np.uint8) for shape in header.plane_shapes])


def test_pairs_round_trip_in_order_and_the_oldest_are_evicted(tmp_path):
    pool = Pool(tmp_path, max_pairs=3, create=True)
    for i in range(5):
        assert pool.add(0.5 * i, frame(HR, 10 + i), frame(LR, 20 + i)) == i + 1
    assert pool.sequence() == [3, 4, 5]
    pair = pool.read(4)
    assert (pair.seq, pair.t) == (4, 1.5)
    assert pair.hr.y.shape == (18, 32) and pair.hr.y[0, 0] == 13 and pair.lr.planes[2][0, 0] == 23
    assert pool.read(1) is None  # evicted: skipped by readers, not an error
    assert list((tmp_path / "tmp").iterdir()) == []
    assert stat.S_IMODE((tmp_path / "pool" / Pool.name(5)).stat().st_mode) & 0o044  # others can read


def test_a_missing_pool_is_empty_and_foreign_files_are_refused(tmp_path):
    assert Pool(tmp_path / "none").sequence() == []
    pool = Pool(tmp_path, create=True)
    np.savez(tmp_path / "pool" / Pool.name(1), t=np.array([object()], dtype=object))  # a pickle inside
    with pytest.raises(SrError, match="not a pair file"):
        pool.read(1)


KILLED_WRITER = """
import os, sys
import numpy as np
from srtools import y4m
from srtools.live.pool import Pool
real = np.savez
def savez_then_die(path, **arrays):
    real(path, **arrays)
    os._exit(9)  # killed after writing the temp file, before it is linked into the pool
np.savez = savez_then_die
header = y4m.Header(8, 8)
f = y4m.Frame([np.zeros(s, np.uint8) for s in header.plane_shapes])
Pool(sys.argv[1]).add(9.0, f, f)
"""


def test_a_writer_killed_mid_pair_leaves_the_pool_readable(tmp_path):
    pool = Pool(tmp_path, create=True)
    pool.add(1.0, frame(HR, 1), frame(LR, 2))
    result = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path)])
    assert result.returncode == 9
    assert pool.sequence() == [1] and pool.read(1).t == 1.0
    assert pool.add(2.0, frame(HR, 3), frame(LR, 4)) == 2  # the next writer carries on


def test_runs_round_trip_beside_the_pairs_each_kind_under_its_own_bound(tmp_path):
    pool = Pool(tmp_path, max_pairs=2, max_runs=2, create=True)
    for i in range(3):
        frames = [frame(HR, 10 * i + j) for j in range(5)], [frame(LR, 10 * i + j + 100) for j in range(5)]
        assert pool.add_run(2.0 * i, *frames) == i + 1
        pool.add(2.0 * i + 0.5, frame(HR, 1), frame(LR, 2))
    assert pool.sequence("run") == [2, 3] and pool.sequence() == [2, 3]  # the oldest of each kind evicted
    run = pool.read_run(3)
    assert run.t == 4.0 and run.hr.shape == (5, 18, 32) and run.lr.shape == (5, 10, 16)
    assert run.hr[:, 0, 0].tolist() == [20, 21, 22, 23, 24]  # in order
    assert run.lr[:, 0, 0].tolist() == [120, 121, 122, 123, 124]  # aligned with the HR frames
    assert pool.read_run(1) is None
    np.savez(tmp_path / "pool" / Pool.name(9, "run"), t=np.array(1.0), hr_y=np.zeros((3, 4, 4), np.uint8),
             lr_y=np.zeros((2, 2, 2), np.uint8))
    with pytest.raises(SrError, match="not a run file"):
        pool.read_run(9)


def test_stream_time_resumes_after_the_newest_pair_or_run(tmp_path):
    pool = Pool(tmp_path, create=True)
    assert pool.resume_time() == 0.0
    pool.add(31.5, frame(HR, 1), frame(LR, 2))
    assert pool.resume_time() == 32.5
    pool.add_run(40.0, [frame(HR, 1)] * 3, [frame(LR, 1)] * 3)
    assert pool.resume_time() == 41.0

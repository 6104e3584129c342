"""The live chain's stages as real processes: a server stage that ends before announcing its URL is named,
with its exit status."""

import subprocess
import time

import pytest

from srtools.errors import ExitStatus
from srtools.live.chain import Chain, StageFailed, StageProcess, _announced, srtools_command

FAILED_TO_START = rf"^stage sr-receive failed to start \(exit status {int(ExitStatus.USAGE)}\)$"


def failing_server(tmp_path) -> list[str]:
    """sr-receive on an address it cannot parse: a usage error before it prints its URL."""
    return srtools_command("sr-receive", "--spool", tmp_path / "spool", "--listen", "nonsense")


class LateReaper(StageProcess):
    """A stage whose reaper thread records the exit half a second after the process exited: it holds
    open the window in which the process has been waited for but its exit is not recorded yet."""

    def _reap(self) -> None:
        self.process.wait()
        time.sleep(0.5)
        super()._reap()


def test_a_server_stage_that_exits_before_announcing_is_named_with_its_status(tmp_path):
    with Chain() as chain:
        stage = chain.start("sr-receive", failing_server(tmp_path), stdout=subprocess.PIPE)
        with pytest.raises(StageFailed, match=FAILED_TO_START):
            _announced(stage)


def test_the_exit_status_is_read_once_the_reaper_has_recorded_it(tmp_path):
    process = subprocess.Popen(failing_server(tmp_path), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        stage = LateReaper("sr-receive", process)
        with pytest.raises(StageFailed, match=FAILED_TO_START):
            _announced(stage)
        assert stage.returncode == ExitStatus.USAGE and stage.exited_at is not None
    finally:
        process.wait()
        process.stdout.close()

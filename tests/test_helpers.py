"""The test helpers themselves: a server that never announces its URL and a command that outlives its
deadline fail the test, and leave no process behind."""

import os
import subprocess
from pathlib import Path

import pytest

from conftest import Server, make_y4m, running_command


def processes_with(marker: Path) -> list[int]:
    """Processes whose command line names ``marker`` (a test's own temporary directory)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if str(marker).encode() in cmdline:
                found.append(int(entry))
    return found


def test_a_server_whose_first_line_is_not_its_url_is_stopped(tmp_path):
    clip = make_y4m(tmp_path / "in.y4m", size="64x36", seconds=2)  # more frames than the pipe holds
    with pytest.raises(AssertionError, match="sr-serve did not announce its URL"):
        Server("sr-serve", "--spool", tmp_path / "spool", clip)  # its first line is a Y4M header
    assert processes_with(tmp_path) == []


def test_a_silent_server_is_stopped_after_its_timeout(tmp_path):
    fifo = tmp_path / "never-written"
    os.mkfifo(fifo)
    with pytest.raises(AssertionError, match=r"did not announce its URL within 2 s .*exit status"):
        Server("sr-serve", "--spool", tmp_path / "spool", fifo, timeout=2)  # waits for a writer for ever
    assert processes_with(tmp_path) == []


def test_a_command_past_its_deadline_is_killed_and_fails_the_test(tmp_path):
    fifo = tmp_path / "never-written"
    os.mkfifo(fifo)
    with pytest.raises(AssertionError, match="sr-serve still running after 2 s: killed"):
        with running_command("sr-serve", "--spool", tmp_path / "spool", fifo, deadline=2,
                             stdout=subprocess.PIPE) as serve:
            serve.stdout.read()  # would block for ever: nothing comes before a writer does
    assert processes_with(tmp_path) == []

"""Behaviour every command shares: help, version, usage errors as one line, exit statuses."""

import configparser
import json
import select
import signal
import subprocess

import pytest

from srtools import __version__, manpage
from srtools.commands import COMMANDS
from srtools.errors import EXIT_STATUS_DESCRIPTIONS, ExitStatus

from conftest import ROOT, run_command, start_command, stop_command


@pytest.fixture(params=sorted(COMMANDS))
def name(request):
    return request.param


def test_help_goes_to_stdout(name):
    result = run_command(name, "--help")
    assert result.returncode == 0
    assert result.stdout.startswith(f"Usage: {name} ".encode())


def test_version(name):
    result = run_command(name, "--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"{name}, version {__version__}".encode())


def test_unknown_option_is_one_line_usage_error(name):
    result = run_command(name, "--no-such-option")
    assert result.returncode == ExitStatus.USAGE
    [line] = result.stderr.decode().splitlines()
    assert line.startswith(f"{name}: error: No such option") and "--no-such-option" in line
    assert line.endswith(f"(try '{name} --help')")
    assert result.stdout == b""


def test_every_exit_status_is_documented():
    assert set(EXIT_STATUS_DESCRIPTIONS) == set(ExitStatus)


def test_entry_points_bin_scripts_and_man_pages_agree_with_commands():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    scripts = dict(line.split(" = ") for line in config["options.entry_points"]["console_scripts"].split("\n") if line)
    assert scripts == {name: f"{module}:main" for name, module in COMMANDS.items()}
    for name in COMMANDS:
        assert (ROOT / "bin" / name).exists()
    # Nothing left over from a command that is gone.
    assert {p.name for p in (ROOT / "bin").iterdir()} == set(COMMANDS) | {"srtools-command"}
    pages = {p.name for p in (ROOT / "man").iterdir() if p.suffix == ".1"}
    assert pages == {f"{name}.1" for name in COMMANDS}


def test_man_pages_are_generated_and_current():
    pages = manpage.generate()
    assert set(pages) == {f"{n}.1" for n in COMMANDS} | {"srtools-spool.5", "srtools-y4m.7", "srtools-live.7"}
    for file_name, text in pages.items():
        assert (ROOT / "man" / file_name).read_text() == text, f"man/{file_name} is stale: run `make man`"
        if file_name.endswith(".1"):
            assert ".SH EXIT STATUS" in text and ".SH OPTIONS" in text


def test_sigterm_is_not_swallowed_by_a_loop_that_skips_errors():
    """A SIGTERM landing where a command catches and skips its own errors (a damaged pool pair,
    logging's error handler) still ends the command with status INTERRUPTED."""
    import os

    import click

    from srtools import cli
    from srtools.errors import SrError

    @click.command()
    def skipper():
        for _ in range(3):
            try:
                os.kill(os.getpid(), signal.SIGTERM)
            except (SrError, Exception):
                continue

    previous = signal.getsignal(signal.SIGTERM)
    try:
        assert cli.run(skipper, []) == ExitStatus.INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_sigint_stops_a_command_started_with_it_ignored(tmp_path):
    """A shell starts background jobs (`sr-edge DIR &` in a script) with SIGINT ignored, which Python
    keeps; the documented SIGINT must still stop the command, with status INTERRUPTED."""
    edge = start_command("sr-edge", tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert select.select([edge.stdout], [], [], 60)[0] and "url" in json.loads(edge.stdout.readline())
    _, stderr = stop_command(edge, signal.SIGINT)
    assert edge.returncode == ExitStatus.INTERRUPTED and b"interrupted by SIGINT" in stderr

"""The command skeleton: shared options, logging to stderr, one-line errors and exit statuses.

Each command module defines ``command`` with :func:`command` and ``main = entry_point(command)``.
"""

from __future__ import annotations

import logging
import signal
import sys
from typing import Callable, Sequence

import click
from rich.console import Console

from . import __version__, y4m
from .errors import ExitStatus, Interrupted, SrError

log = logging.getLogger("srtools")
# Progress bars and tables for people; stdout is reserved for data.
console = Console(stderr=True)

CONTEXT_SETTINGS = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _Formatter(logging.Formatter):
    def __init__(self, prog: str):
        super().__init__()
        self.prog = prog

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.levelno >= logging.WARNING:
            message = f"{record.levelname.lower()}: {message}"
        text = f"{self.prog}: {message}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def _configure_logging(prog: str, level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter(prog))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _set_quiet(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value and logging.getLogger().level != logging.DEBUG:  # --debug wins
        logging.getLogger().setLevel(logging.WARNING)


# --debug is read by run() before parsing, so that errors in parsing itself can show a traceback.
_COMMON_OPTIONS = [
    click.option("--debug", is_flag=True, expose_value=False,
                 help="Log debugging detail (ffmpeg command lines, model loads) and show tracebacks."),
    click.option("-q", "--quiet", is_flag=True, expose_value=False, is_eager=True, callback=_set_quiet,
                 help="Log warnings and errors only."),
]


def command(name: str, epilog: str | None = None) -> Callable[[Callable], click.Command]:
    """Decorator: a click command named ``name`` with the options every srtools command has."""

    def decorate(func: Callable) -> click.Command:
        for option in reversed(_COMMON_OPTIONS):
            func = option(func)
        func = click.version_option(__version__, "--version", prog_name=name)(func)
        return click.command(name=name, context_settings=CONTEXT_SETTINGS, epilog=epilog)(func)

    return decorate


# Options shared by several commands, defined once.
input_argument = click.argument("input", default="-", metavar="[INPUT]")
output_option = click.option("-o", "--output", default="-", show_default=True, metavar="PATH",
                             help="Where to write Y4M: '-' for stdout, a file or a named FIFO.")


def scale_option(help: str = "Upscaling factor.") -> Callable:
    return click.option("--scale", type=click.Choice(["2", "3", "4"]), default="2", show_default=True,
                        callback=lambda ctx, param, value: int(value), help=help)


def model_option(help: str) -> Callable:
    """--model FILE: a model file given directly (``model_path``)."""
    return click.option("--model", "model_path", type=click.Path(dir_okay=False), metavar="FILE", help=help)


def poll_interval_option(default: float = 0.5, what: str = "the spool is checked for a new model") -> Callable:
    return click.option("--poll-interval", type=click.FloatRange(0.05, 60), default=default, show_default=True,
                        metavar="SECONDS", help=f"How often {what}.")


device_option = click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                             show_default=True, help="Where the network runs; auto picks CUDA when present.")


def _set_threads(ctx: click.Context, param: click.Parameter, value: int) -> int:
    if value:
        import torch

        torch.set_num_threads(value)
    return value


threads_option = click.option(
    "--threads", type=click.IntRange(0, 256), default=0, show_default=True, expose_value=False,
    callback=_set_threads, metavar="N",
    help="CPU threads of the network (0: torch's default, one per core). Where other processes share the "
         "cores (a live chain), use 1: two threads then ran 20x slower than one on a loaded 2-core machine.")


precision_option = click.option(
    "--precision", type=click.Choice(("auto", "fp32", "bf16")), default="auto", show_default=True,
    help="bf16 runs the network's convolutions in bfloat16 (output and bicubic skip stay fp32): 1.6-2.5x faster "
         "where the CPU (AVX512-BF16, AMX) or GPU supports it natively, for about 0.01 dB (docs/benchmarks.md); "
         "auto picks it there and fp32 elsewhere (emulated bf16 is slower).")


def stats_option(more_fields: str = "") -> Callable:
    """--stats FILE; ``more_fields`` describes the command's own fields, after the frame loop's."""
    return click.option(
        "--stats", "stats_path", type=click.Path(dir_okay=False), metavar="FILE",
        help="Also publish the counters (logged every 10 s and at the end) as JSON to FILE, replaced atomically "
             "every second, at each model swap and at the end: "
             "frames, seconds, model, swaps, engine_frames (frames with the model's output, whole or in part), "
             "fallbacks, probes, late, "
             "lag_ms (real time: how long the newest frame took from the start of its slot until written; one "
             "that keeps growing is a backlog), worst_lag_ms (the longest such lag)"
             + (f"; {more_fields}" if more_fields else "") + ".")


def max_pixels_option(which: str) -> Callable:
    """--max-pixels N: the largest frame a stage accepts, its input frames (``which`` "in") or the
    frames it makes of them ("out")."""
    frames = "whose frames have" if which == "in" else "whose frames, once upscaled, would have"
    return click.option(
        "--max-pixels", type=click.IntRange(1, 16384 * 16384), default=y4m.MAX_PIXELS, show_default=True,
        metavar="N", help=f"Refuse (exit status 3) a stream {frames} more than N pixels (the default is 3840x2160), "
                          "before allocating anything for it: a Y4M header may claim any size (srtools-y4m(7)).")


frame_log_option = click.option(
    "--frame-log", "frame_log_path", type=click.Path(dir_okay=False), metavar="FILE",
    help="Write one JSON line per output frame to FILE: frame (its index), model (the one in use, or null) and "
         "engine (whether the model made the frame).")


def spool_option(required: bool = True) -> Callable:
    return click.option("--spool", type=click.Path(file_okay=False), required=required, metavar="DIR",
                        help="Model spool directory (see srtools-spool(5)).")


def resolve_device(name: str) -> str:
    """'auto' -> 'cuda' when available else 'cpu'; 'cuda' without CUDA is a usage error."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise click.BadParameter("CUDA is not available on this machine", param_hint="--device")
    return name


def _raise_interrupted(signum: int, frame) -> None:
    raise Interrupted(f"interrupted by {signal.Signals(signum).name}")


def run(cmd: click.Command, argv: Sequence[str] | None = None) -> int:
    """Run ``cmd`` and return its exit status; every error becomes one line on stderr."""
    argv = list(sys.argv[1:] if argv is None else argv)
    prog = cmd.name or "srtools"
    debug = "--debug" in argv
    _configure_logging(prog, logging.DEBUG if debug else logging.INFO)
    signal.signal(signal.SIGTERM, _raise_interrupted)
    # A shell starts background jobs with SIGINT ignored, and Python then leaves it ignored; every
    # command promises that SIGINT stops it (status 130), however it was started.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        cmd.main(args=argv, prog_name=prog, standalone_mode=False)
        return ExitStatus.OK
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.UsageError as exc:
        log.error("%s (try '%s --help')", exc.format_message().rstrip("."), prog)
        return ExitStatus.USAGE
    except click.FileError as exc:
        log.error("%s", exc.format_message())
        return ExitStatus.BAD_INPUT
    except (click.Abort, KeyboardInterrupt):
        log.info("interrupted by SIGINT")
        return ExitStatus.INTERRUPTED
    except Interrupted as exc:  # asked to stop: not an error, though the status says it was cut short
        log.info("%s", exc, exc_info=exc if debug else None)
        return exc.exit_status
    except SrError as exc:
        log.error("%s", exc, exc_info=exc if debug else None)
        return exc.exit_status
    except BrokenPipeError:
        # The reader went away (`sr-serve | head`): not our failure. Silence the flush at exit.
        sys.stdout = open("/dev/null", "w")
        return ExitStatus.OK
    except Exception as exc:  # anything unexpected still gets one line
        log.error("internal error: %s: %s%s", type(exc).__name__, exc,
                  "" if debug else " (run with --debug for a traceback)", exc_info=exc if debug else None)
        return ExitStatus.ERROR


def entry_point(cmd: click.Command) -> Callable[[], None]:
    """A console_scripts entry point running ``cmd``."""

    def main() -> None:
        status = run(cmd)
        # Exiting already: a signal now (a supervisor stopping us as our input ended) would only
        # raise in the interpreter's clean-up, as a traceback.
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        sys.exit(status)

    return main

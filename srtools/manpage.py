"""Generate the man pages: section 1 from the click definitions, sections 5 and 7 from the
docstrings of the modules that own the format (written once, there).

    python -m srtools.manpage man/
"""

from __future__ import annotations

import importlib
import inspect
import re
import sys
from pathlib import Path

import click

from . import __version__
from .commands import COMMANDS
from .errors import EXIT_STATUS_DESCRIPTIONS, ExitStatus

# (page name, section, module whose docstring is the page)
FORMAT_PAGES = [("srtools-spool", 5, "srtools.spool"), ("srtools-y4m", 7, "srtools.y4m"),
                ("srtools-live", 7, "srtools.live")]
_HEADING = re.compile(r"^[A-Z][A-Z ]+$")


def _escape(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n"))


def _title(name: str, section: int) -> str:
    return f'.TH "{name.upper()}" "{section}" "" "srtools {__version__}" "srtools manual"\n'


def _prose(text: str) -> str:
    """Paragraphs, '- ' bullets and 4-space-indented literal blocks to troff. A line holding only
    '\\b' (click's mark for a paragraph not to rewrap in --help) is dropped."""
    out: list[str] = []
    literal = False
    for line in text.split("\n"):
        if line == "\b":
            continue
        if line.startswith("    ") and line.strip():
            if not literal:
                out.append(".PP\n.nf\n.RS 4")
                literal = True
            out.append(_escape(line[4:]))
            continue
        if literal:
            out.append(".RE\n.fi")
            literal = False
        if not line.strip():
            out.append(".PP")
        elif line.startswith("- "):
            out.append(".IP \\(bu 2\n" + _escape(line[2:]))
        else:
            out.append(_escape(line.strip()))
    if literal:
        out.append(".RE\n.fi")
    return re.sub(r"(\.PP\n)+", ".PP\n", "\n".join(out) + "\n")


def _exit_status() -> str:
    return "".join(f".TP\n.B {int(s)}\n{_escape(EXIT_STATUS_DESCRIPTIONS[s])}\n" for s in ExitStatus)


def command_page(cmd: click.Command) -> str:
    """The section-1 page of a click command."""
    ctx = click.Context(cmd, info_name=cmd.name)
    help_text = inspect.cleandoc(cmd.help or "")
    summary, _, description = help_text.partition("\n")
    page = [_title(cmd.name, 1), ".SH NAME\n", f"{_escape(cmd.name)} \\- {_escape(summary.strip().rstrip('.'))}\n",
            ".SH SYNOPSIS\n", f".B {_escape(cmd.name)}\n", _escape(" ".join(cmd.collect_usage_pieces(ctx))) + "\n",
            ".SH DESCRIPTION\n", _prose(description.strip("\n")), ".SH OPTIONS\n"]
    for param in cmd.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None or not record[1]:  # arguments are described in DESCRIPTION
            continue
        names, text = record
        page.append(f".TP\n\\fB{_escape(names)}\\fR\n{_escape(text)}\n")
    page += [".SH EXIT STATUS\n", _exit_status()]
    if cmd.epilog:
        page += [".SH SEE ALSO\n", _escape(cmd.epilog.removeprefix("See also:").strip()) + "\n"]
    return "".join(page)


def format_page(name: str, section: int, module: str) -> str:
    """A section-5/7 page from a module docstring: 'name - summary', then CAPITALISED headings."""
    doc = inspect.cleandoc(importlib.import_module(module).__doc__ or "")
    first, _, body = doc.partition("\n")
    page = [_title(name, section), ".SH NAME\n", _escape(first.strip()) + "\n"]
    chunk: list[str] = []
    for line in body.split("\n") + ["END"]:
        if _HEADING.match(line):
            if chunk:
                page.append(_prose("\n".join(chunk).strip("\n")))
            chunk = []
            if line != "END":
                page.append(f".SH {line}\n")
        else:
            chunk.append(line)
    return "".join(page)


def generate() -> dict[str, str]:
    """{file name: page text} for every page of the project."""
    pages = {}
    for name, module in COMMANDS.items():
        cmd = importlib.import_module(module).command
        pages[f"{name}.1"] = command_page(cmd)
    for name, section, module in FORMAT_PAGES:
        pages[f"{name}.{section}"] = format_page(name, section, module)
    return pages


def main(argv: list[str]) -> None:
    out = Path(argv[0] if argv else "man")
    out.mkdir(exist_ok=True)
    for file_name, text in generate().items():
        (out / file_name).write_text(text)
        print(out / file_name, file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1:])

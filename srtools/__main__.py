"""``python -m srtools COMMAND [ARGS]``: run any srtools command (what bin/ scripts do)."""

import importlib
import sys

from .commands import COMMANDS


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.stderr.write(f"usage: python -m srtools COMMAND [ARGS...]; commands: {', '.join(COMMANDS)}\n")
        sys.exit(2)
    name = sys.argv.pop(1)
    sys.argv[0] = name
    importlib.import_module(COMMANDS[name]).main()


main()

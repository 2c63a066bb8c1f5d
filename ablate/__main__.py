"""`ablate COMMAND ...` (the console script) and `python -m ablate COMMAND ...` = `python -m ablate.COMMAND ...`."""

from __future__ import annotations

import importlib
import sys

COMMANDS = ("sweep", "table", "report", "dashboard", "reproduce", "train", "analyze", "status")


def main(argv: list[str] | None = None) -> int:
    """Run `python -m ablate.COMMAND` with the remaining arguments."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(
            f"usage: ablate {{{','.join(COMMANDS)}}} ...\n\nablation studies of segmentation necks; "
            "`ablate COMMAND --help` for each command"
        )
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        from ablate.cli import error
        from ablate.errors import did_you_mean

        return error(f"unknown command {argv[0]!r}{did_you_mean(argv[0], COMMANDS)}; commands: {', '.join(COMMANDS)}")
    return importlib.import_module(f"ablate.{argv[0]}").main(argv[1:])


if __name__ == "__main__":
    sys.exit(main())

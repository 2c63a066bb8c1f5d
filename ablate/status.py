"""`python -m ablate.status`: a study as it stands, from any machine that reaches its storage, while it runs and after:
trials done of the total and the rounds of added seeds, each running trial (variant, seed, epoch, host, worker, GPU,
elapsed), the failed ones with their reasons, and an estimate of the time left. It only reads the storage."""

from __future__ import annotations

import sys
import time

from ablate import cli


def main(argv: list[str] | None = None) -> int:
    """Command line: read the storage, print the study (or the studies), again every --watch SECONDS."""
    p = cli.parser("status", __doc__)
    p.add_argument("--study", help="the study (default: the storage's only study; with several, one line each)")
    cli.add_storage_argument(p)
    p.add_argument(
        "--watch",
        type=_seconds,
        metavar="SECONDS",
        help="print it again every SECONDS (in place on a terminal) until Ctrl-C",
    )
    args = cli.parse(p, argv)
    return cli.guarded(lambda: _status(args))


def _seconds(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"give a number of seconds above 0, e.g. 10; got {text!r}")
    return value


def _status(args) -> int:
    from ablate.study.storage import read_storage, redact, resolve

    url = resolve(args.storage)
    storage = read_storage(url)  # nothing created, nothing written
    show = lambda: "\n".join(lines(storage, redact(url), args.study))  # noqa: E731
    out = cli.make_console(stderr=False)
    if not args.watch:
        out.print(show())
        return 0
    if not sys.stdout.isatty():  # a log or a pipe: the whole text again, after a blank line
        while True:
            out.print(show() + "\n")
            time.sleep(args.watch)
    from rich.live import Live
    from rich.text import Text

    with Live(Text(show()), console=out, auto_refresh=False) as live:
        while True:
            time.sleep(args.watch)
            live.update(Text(show()), refresh=True)


def lines(storage, where: str, name: str | None) -> list[str]:
    """The study `name` (default: the only one); several studies without a name: one line each."""
    from ablate.errors import ConfigError
    from ablate.study.snapshot import study_lines, summary_line
    from ablate.study.storage import load_study, study_names

    names = [name] if name else study_names(storage)
    if not names:
        raise ConfigError(f"storage {where} holds no study yet")
    if len(names) == 1:
        return study_lines(load_study(names[0], storage), where)
    head = f"{len(names)} studies in {where} (--study NAME for one):"
    return [head, *(f"  {summary_line(load_study(n, storage))}" for n in names)]


if __name__ == "__main__":
    sys.exit(main())

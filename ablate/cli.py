"""What every command shares: a console that prints text literally, the error ending, inputs in any order."""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import logging.handlers
import re
import shlex
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.text import Text

from ablate.errors import ConfigError

DEFAULT_STORAGE = "sqlite:///runs/ablate.db"  # --storage of every command (ablate.study.storage.resolve)


def make_console(stderr: bool = True) -> Console:
    """A rich console that never parses markup in what it prints and never wraps a line.

    Messages carry paths, keys and exception text that people copy: `[...]` in them stays, and a pipe or a file
    gets whole lines whatever $COLUMNS says (only a terminal folds a table to its width)."""
    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 100_000
    return Console(stderr=stderr, markup=False, highlight=False, emoji=False, soft_wrap=True, width=width)


console = make_console()


def error(message: object, exit_code: int = 2) -> int:
    """Print 'error: MESSAGE' (the message literally) and return the exit code."""
    console.print(Text.assemble(("error: ", "red"), str(message)))
    return exit_code


def warn(message: object) -> None:
    """Print 'warning: MESSAGE' (the message literally)."""
    console.print(Text.assemble(("warning: ", "yellow"), str(message)))


# Warnings from dependencies that a user of ablate cannot act on: kept in the run's log, never on the console.
NOISE = re.compile(
    r"`isinstance\(treespec, LeafSpec\)` is deprecated"  # Lightning's _pytree on torch >= 2.9
    r"|The `srun` command is available on your system but is not used"  # a --slurm task: ablate forks, no srun
    r"|`tensorboardX` has been removed as a dependency"  # a project's default logger: CSV without tensorboard(X)
)
RUN_LOG = "run.log"  # in each run folder: Lightning's messages and every warning of the run
_LIGHTNING = ("lightning.pytorch", "lightning.fabric")
_run_logs: list[logging.Handler] = []  # the open run's log file (a stack: runs do not nest, but stay safe)


def quiet_dependencies() -> None:
    """The console gets ablate's own lines and the warnings a user can act on; Lightning's info lines (banners,
    tips) and the dependency warnings in NOISE go only to the open run's log (`run_log`)."""
    for name in _LIGHTNING:
        for handler in logging.getLogger(name).handlers:  # Lightning's own console handler (none: root's)
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.WARNING)
    if getattr(warnings.showwarning, "__module__", None) != __name__:
        warnings.showwarning = _showwarning(warnings.showwarning)


def _showwarning(show):
    shown: set[str] = set()  # the console shows a warning once per process, however many runs raise it

    def showwarning(message, category, filename, lineno, file=None, line=None):
        text = warnings.formatwarning(message, category, filename, lineno, line).rstrip()
        for handler in _run_logs:
            handler.handle(logging.LogRecord("py.warnings", logging.WARNING, filename, lineno, text, None, None))
        if not NOISE.search(str(message)) and text not in shown:
            shown.add(text)
            show(message, category, filename, lineno, file, line)

    return showwarning


@contextlib.contextmanager
def run_log(folder: str | Path):
    """Lightning's log records and every warning raised inside go to `folder`/run.log (appended), written as the
    block ends: the run's own loggers find the folder as they left it."""
    file = logging.FileHandler(Path(folder) / RUN_LOG, encoding="utf-8", delay=True)
    file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler = logging.handlers.MemoryHandler(1_000_000, flushLevel=logging.CRITICAL + 1, target=file)
    loggers = [logging.getLogger(name) for name in _LIGHTNING]
    for logger in loggers:
        logger.addHandler(handler)
    _run_logs.append(handler)
    try:
        yield handler
    finally:
        _run_logs.remove(handler)
        for logger in loggers:
            logger.removeHandler(handler)
        if handler.buffer:
            Path(folder).mkdir(parents=True, exist_ok=True)
        handler.close()
        file.close()


_labels: list[str | None] = []  # the fit this process runs, named in its progress lines (a stack, as _run_logs)


@contextlib.contextmanager
def labelled(label: str | None):
    """Progress lines printed inside (`progress_line`) begin with `label`, e.g. 't3 s1' when several workers print
    to one console (ablate.study.progress); None: as they are."""
    _labels.append(label)
    try:
        yield
    finally:
        _labels.pop()


def progress_label() -> str | None:
    """The label of the fit this process runs (`labelled`), or None."""
    return _labels[-1] if _labels else None


def progress_bar_wanted() -> bool:
    """Whether a fit shows a live progress bar: on a terminal that no other worker prints to (a log or a pipe
    would get its every redraw; workers sharing a terminal print lines naming their run instead)."""
    return sys.stdout.isatty() and progress_label() is None


def progress_line(text: str) -> str:
    """`text` after the label of the fit it belongs to, when one is set: 't3 s1 epoch 4/8 ...'."""
    label = progress_label()
    return f"{label} {text}" if label else text


class OneLineParser(argparse.ArgumentParser):
    """argparse with its errors in one line (`error: argument --n-trials: invalid int value: 'x'; ...`), exit 2."""

    def error(self, message: str):
        error(f"{message}; {self.prog} --help lists the options")
        sys.exit(2)


def parser(prog: str, doc: str | None, inputs: str | None = None) -> argparse.ArgumentParser:
    """An ArgumentParser for `python -m ablate.PROG`; `inputs` describes its positional FILE and key=value items."""
    p = OneLineParser(
        prog=f"python -m ablate.{prog}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    if inputs:
        p.add_argument("inputs", nargs="*", metavar="[FILE] [key=value ...]", help=inputs)
    return p


def parse(p: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse flags and positional items in any order (`FILE --study x key=value` as well as `--study x FILE`)."""
    return p.parse_intermixed_args(sys.argv[1:] if argv is None else list(argv))


def split_inputs(items: list[str]) -> tuple[str | None, list[str]]:
    """[FILE] [key=value ...] -> (FILE or None, overrides): a `key=value` item is an override, the other the file."""
    files = [item for item in items if "=" not in item]
    if len(files) > 1:
        raise ConfigError(
            f"give one config file, not {len(files)}: {', '.join(files)} (an override has the form key.path=value)"
        )
    return (files[0] if files else None), [item for item in items if "=" in item]


def without_flags(argv: list[str], *flags: str) -> list[str]:
    """`argv` minus each of `flags` with its value (`--flag VALUE` or `--flag=VALUE`)."""
    out, skip = [], False
    for arg in argv:
        if skip or arg.startswith(tuple(f"{flag}=" for flag in flags)):
            skip = False
            continue
        skip = arg in flags
        if not skip:
            out.append(arg)
    return out


def command_line(command: str, argv: list[str], drop: str = "--max-seeds") -> str:
    """'python -m ablate.COMMAND ARGS' as it was run (quoted for a shell), without the flag `drop` and its value, so
    a message can print it with another value: the same command, ready to copy."""
    return shlex.join(["python", "-m", f"ablate.{command}", *without_flags(argv, drop)])


def add_storage_argument(p: argparse.ArgumentParser) -> None:
    """--storage URL; without it $ABLATE_STORAGE, else the default SQLite file (ablate.study.storage.resolve)."""
    p.add_argument(
        "--storage",
        help="Optuna storage: an RDB URL (sqlite:///PATH, postgresql+psycopg2://...) or a journal file on a shared "
        "file system (journal:///PATH.log, or a path ending in .log) "
        f"(default: $ABLATE_STORAGE, else {DEFAULT_STORAGE})",
    )


def add_metric_arguments(p: argparse.ArgumentParser) -> None:
    """--metric, --direction and --at: which recorded number a table shows, in which order, at which epoch."""
    p.add_argument(
        "--metric",
        help="default: the study's own metric (val/mIoU, or a LightningCLI sweep's `metric`), each seed's best "
        "epoch; any other key the runs recorded (every metric the module logged under its own name, "
        "params/total, gflops, ...): each seed's last epoch, or with --at best its epoch of the best objective",
    )
    p.add_argument(
        "--direction",
        choices=("maximize", "minimize"),
        help="order of --metric (default: the study's direction for its own metric; for another, inferred from "
        "its name: loss, error, mse, mae, rmse, nll, perplexity, latency, time minimize, the rest maximize)",
    )
    p.add_argument(
        "--at",
        choices=("last", "best"),
        default="last",
        help="which epoch of a --metric other than the study's own: the last (default), or the epoch where the "
        "study's metric was best (what a ModelCheckpoint on it keeps)",
    )


def add_verdict_arguments(p: argparse.ArgumentParser, until_decided: bool = False) -> None:
    """--margin, --alpha and --no-moderation of the verdicts (ablate.stats.verdicts); with `until_decided`,
    --until-decided and --max-seeds too (a sweep's: ablate.study.decide)."""
    p.add_argument(
        "--margin",
        type=float,
        metavar="POINTS",
        help="a row whose CI of Δ lies inside ±POINTS is "
        "equivalent to the baseline (TOST); default: the study's study.margin, else no equivalence",
    )
    p.add_argument(
        "--alpha",
        type=float,
        help="false-verdict rate of the verdicts (default 0.05; a study run --until-decided: its α per look)",
    )
    p.add_argument(
        "--no-moderation",
        action="store_true",
        help="compare every row by its own plain paired/Welch t (default: the moderated t across rows when 3 or "
        "more rows are compared; a sweep's study.moderate)",
    )
    if until_decided:
        p.add_argument(
            "--until-decided",
            action="store_true",
            help="after the planned trials, add seeds in rounds "
            "to the variants whose verdict against the baseline is still open",
        )
        p.add_argument(
            "--max-seeds",
            type=int,
            metavar="K",
            help="--until-decided stops at K seeds a variant (default: the sweep's study.max_seeds, 8)",
        )


INTERRUPTED = 130  # the shell's code for a command stopped by SIGINT (128 + 2)


class _NoInterruptLine(logging.Filter):
    """Lightning's 'Detected KeyboardInterrupt, attempting graceful shutdown ...': `guarded` says it in its line."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Detected KeyboardInterrupt" not in record.getMessage()


_NO_INTERRUPT_LINE = _NoInterruptLine()


def interruption(e: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt `e` is, or the one Lightning's Trainer turned into `sys.exit(1)`; None otherwise."""
    if isinstance(e, KeyboardInterrupt):
        return e
    if isinstance(e, SystemExit) and isinstance(e.__context__, KeyboardInterrupt):
        return e.__context__
    return None


def guarded(body: Callable[[], int]) -> int:
    """Run a command's body; a ConfigError ends it with 'error: ...' and exit code 2, Ctrl-C with one line,
    'interrupted' and what the KeyboardInterrupt says (what is kept), and exit code 130, never a traceback."""
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_NO_INTERRUPT_LINE)  # once: a filter is added at most once
    try:
        return body()
    except ConfigError as e:
        return error(e)
    except (KeyboardInterrupt, SystemExit) as e:
        if (stop := interruption(e)) is None:
            raise
        console.print(Text.assemble(("interrupted", "yellow"), f": {stop}" if str(stop) else " (Ctrl-C)"))
        _forget_unhandled_interrupt()
        return INTERRUPTED


def _forget_unhandled_interrupt() -> None:
    """Ctrl-C that lands in code a C extension runs through PyRun_String (Cython's module setup: scipy's, while a
    command imports it) sets CPython's 'unhandled KeyboardInterrupt' flag, and the process then ends killed by
    SIGINT (exit -2, no line kept) although `guarded` handled it. Clear the flag where CPython exports it (3.10,
    3.11); later versions keep it out of reach, and such a Ctrl-C ends the process as Python decides."""
    try:
        ctypes.c_int.in_dll(ctypes.pythonapi, "_Py_UnhandledKeyboardInterrupt").value = 0
    except (ValueError, AttributeError):
        pass

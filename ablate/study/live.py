"""A pool's workers on one terminal: one live line a worker (rich Live) instead of their progress lines interleaved.

Each worker writes its stdout and stderr into a pipe of its own (`attach`, first thing after the fork: its output is
then not a terminal, so its epoch lines are plain lines labelled `t3 s1 epoch 4/8 ...`); the command reads the pipes,
shows each worker's last progress line as that worker's live line, and prints every other line above them as it
comes (what a terminal would show of a line redrawn with carriage returns: its last part). Without a terminal nothing
of this is used: the lines go straight to the log, each labelled."""

from __future__ import annotations

import os
import re
import threading

from rich.live import Live
from rich.text import Text

from ablate.cli import console

PROGRESS = re.compile(r"t\d+ s\d+ epoch ")  # a labelled epoch line (ablate.run.fit.PlainProgress)
STARTS = re.compile(r"\s*trial (\d+) seed (\d+): (.*)")  # the engine's line as a trial's seed starts


class LiveWorkers:
    """Pipes for `n` workers made before the fork; in the command, a context that shows their live lines."""

    def __init__(self, n: int):
        self.pipes = [os.pipe() for _ in range(n)]
        self.lines = [f"worker {i}: starting" for i in range(n)]
        self.lock, self.live, self.readers = threading.Lock(), None, []

    def attach(self, i: int) -> None:
        """In worker `i`: its stdout and stderr into its own pipe; the other pipes closed."""
        for k, (read, write) in enumerate(self.pipes):
            os.close(read)
            if k == i:
                os.dup2(write, 1)
                os.dup2(write, 2)
            os.close(write)

    def __enter__(self):
        for _, write in self.pipes:
            os.close(write)  # each pipe ends when its worker (and what it started) has ended
        self.live = Live(self._render(), console=console, auto_refresh=False, transient=True).__enter__()
        for i, (read, _) in enumerate(self.pipes):
            self.readers.append(threading.Thread(target=self._read, args=(i, read), daemon=True))
            self.readers[-1].start()
        return self

    def __exit__(self, *exc) -> None:
        for reader in self.readers:
            reader.join(timeout=10)
        self.live.__exit__(*exc)

    def _render(self) -> Text:
        return Text("\n".join(self.lines), no_wrap=True, overflow="ellipsis")

    def _read(self, i: int, fd: int) -> None:
        with os.fdopen(fd, "rb") as pipe:
            for raw in pipe:
                self.show(i, raw.decode(errors="replace").rstrip("\r\n").rpartition("\r")[2])
        self.show(i, None)

    def show(self, i: int, line: str | None) -> None:
        """A line worker `i` wrote (None: it has ended): its live line, or printed above the live lines."""
        with self.lock:
            if line is None:
                self.lines[i] = f"worker {i}: ended"
            elif PROGRESS.match(line):
                self.lines[i] = f"worker {i}: {line}"
            else:
                if starts := STARTS.match(line):
                    self.lines[i] = f"worker {i}: t{starts[1]} s{starts[2]} starting: {starts[3]}"
                self.live.console.print(Text(line))
            self.live.update(self._render(), refresh=True)

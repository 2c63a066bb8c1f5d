"""`--workers N` on one machine: this process imports and checks everything once, then forks N workers.

A forked worker starts at once with what the command has imported (torch, Lightning, the model code) and the
built-in data it generated, instead of paying a whole Python start of its own. What must not cross a fork does
not: CUDA is initialized only in each worker, after the fork (an error before it otherwise); the storage's
connections are closed before it and every worker opens its own; torch runs single-threaded until then (GNU
OpenMP's thread pool does not survive a fork: a worker's first parallel op would wait on threads it lacks).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable

from ablate.cli import console, error
from ablate.study.live import LiveWorkers
from ablate.study.outage import EXIT_CODE as STORAGE_GONE
from ablate.study.outage import StorageUnavailable
from ablate.study.workers import WORKER_ENV


def cores() -> int:
    """CPU cores this process may run on: its affinity, and in a SLURM task no more than its allocation (which
    a cluster without CPU binding does not show in the affinity)."""
    from ablate.study.slurm import allocated_cpus

    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(n, allocated_cpus() or n)


def before_fork() -> int:
    """Called first by a command that may fork: torch on one thread until then (each worker sets its own), and
    torch's CUDA checks through NVML, which leaves CUDA itself untouched for the workers. Returns torch's thread
    count before, for a command that ends up training in its own process."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    return threads


def check_fork_safe() -> None:
    """Raise when CUDA is already initialized here: a forked worker could not use it."""
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise RuntimeError(
            "CUDA is initialized in the process that starts the workers, so forked workers cannot use it: "
            "nothing before the fork may touch a GPU (a CUDA tensor, torch.cuda.* calls other than "
            "device_count); please report how this happened"
        )


def check_cuda_usable(worker: int) -> None:
    """In a worker given GPUs: raise when the command used CUDA before forking (torch would refuse it later)."""
    import torch

    if torch.cuda._is_in_bad_fork():
        raise RuntimeError(
            f"worker {worker}: the command touched CUDA before forking its workers (torch.cuda.is_available() "
            "without NVML, or a CUDA call), so they cannot use their GPUs; please report how this happened"
        )


def start_workers(n: int, run: Callable[[], int], argv: list[str], gpus: list[str] | None = None) -> int:
    """Fork `n` workers, each running `run()` (the study loop) as if started by `python -m ablate.sweep ARGV`,
    worker i seeing only GPUs `gpus[i]` (None: what this process sees); the highest exit code, 0 when all
    succeed (a worker killed by signal N counts as the shell's 128 + N)."""
    check_fork_safe()
    threads = int(os.environ.get("OMP_NUM_THREADS") or max(1, cores() // n))  # no oversubscription
    ctx = multiprocessing.get_context("fork")
    live = LiveWorkers(n) if sys.stdout.isatty() and sys.stderr.isatty() else None  # one live line a worker
    procs = [
        ctx.Process(target=_worker, args=(i, run, argv, threads, gpus[i] if gpus else None, live), name=f"worker {i}")
        for i in range(n)
    ]
    for p in procs:
        p.start()
    console.print(f"started {n} workers: pids {', '.join(str(p.pid) for p in procs)}, {threads} thread(s) each")
    if gpus:
        console.print(
            "GPUs (CUDA_VISIBLE_DEVICES) of each worker: " + ", ".join(f"worker {i}: {g}" for i, g in enumerate(gpus))
        )
    with forwarding_signals(procs), live or contextlib.nullcontext():
        for p in procs:
            p.join()
    return max(c if c >= 0 else 128 - c for c in (p.exitcode for p in procs))


def _worker(i: int, run: Callable[[], int], argv: list[str], threads: int, gpus: str | None, live) -> None:
    """One forked worker: its own process group (signals come from the command), environment and threads, and on a
    terminal its output through the command (`live`: ablate.study.live)."""
    import torch

    if live is not None:
        live.attach(i)
    os.setpgid(0, 0)  # Ctrl-C reaches the command alone, which passes it on once to each worker
    os.environ.update({WORKER_ENV: str(i), "OMP_NUM_THREADS": str(threads)})
    if gpus is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus  # read by CUDA when this worker first uses it
        check_cuda_usable(i)
    torch.set_num_threads(threads)
    sys.argv = [sys.argv[0], *argv]  # what Lightning runs again for the ranks of a DDP trial
    try:
        code = run()
    except KeyboardInterrupt as e:  # its running trial is failed and queued again (ablate.study.engine)
        console.print(f"worker {i}: {e or 'interrupted'}")
        code = 130
    except StorageUnavailable as e:  # its running trial is left to the heartbeat retry (ablate.study.outage)
        code = error(f"worker {i}: {e}", STORAGE_GONE)
    sys.stdout.flush()
    sys.exit(code)


class forwarding_signals:
    """While the workers run, SIGINT and SIGTERM sent to this process go on to each living worker."""

    def __init__(self, procs: list):
        self.procs, self.saved = procs, {}

    def _forward(self, signum, frame) -> None:
        console.print(f"\n{signal.Signals(signum).name}: each worker stops at its next step (again to stop at once)")
        for p in self.procs:
            with contextlib.suppress(ProcessLookupError):  # one that has ended already
                os.kill(p.pid, signum)

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.saved[sig] = signal.signal(sig, self._forward)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)

"""Time to the first training step, and trials/hour with 1 and N workers, of this checkout vs an older one.

    git worktree add /tmp/base 1c6b20b      # the checkout before the forked worker pool (issue 22)
    python benchmarks/startup.py --base /tmp/base [--workers 2] [--repeats 3] [--trials 8]

Every figure comes from the real command, `python -m ablate.sweep`, run alternately (old, new, old, new, ...)
with PYTHONPATH naming each checkout, in fresh temp folders with their own SQLite file:
  first_step   seconds from starting `python -m ablate.sweep` (the default sweep, one trial) to the first
               optimizer step of any worker, and until every one of N workers has stepped (the command is
               killed then). A sitecustomize.py on PYTHONPATH (written here, in a temp folder) registers torch's
               global optimizer-step hook in every process as torch.optim is imported: nothing else changes.
  importtime   `python -X importtime` of one tiny trial: cumulative µs of the top-level imports and of the
               heavy packages the issue names (0: not imported at all).
  trials_hour  trials/hour of a tiny study (32 px, 16 images, 1 epoch: start-up dominates, as on a GPU) with
               1 and N workers.
Writes benchmarks/results/startup-<machine>.json. The machine may be shared: compare the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]
from workers import TINY  # noqa: E402

HOOK = """
import os, sys, time
_DIR = os.environ.get("FIRST_STEP_DIR")

def _mark(*args, **kwargs):
    path = os.path.join(_DIR, str(os.getpid()))
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(repr(time.time()))

class _Finder:
    def find_spec(self, name, path=None, target=None):
        if name != "torch.optim.optimizer":
            return None
        sys.meta_path.remove(self)
        import importlib.util
        spec = importlib.util.find_spec(name)
        run = spec.loader.exec_module
        def exec_module(module):
            run(module)
            module.register_optimizer_step_pre_hook(_mark)
        spec.loader.exec_module = exec_module
        return spec

if _DIR:
    sys.meta_path.insert(0, _Finder())
"""
HEAVY = [
    "torch",
    "torch._dynamo",
    "torch.distributed.fsdp",
    "torchvision",
    "torchmetrics",
    "transformers",
    "lightning",
    "segmentation_models_pytorch",
    "timm",
    "statsmodels",
    "pandas",
    "optuna",
    "wandb",
]


def env_for(code: Path, hook: Path, steps: Path | None = None) -> dict:
    """The environment that runs checkout `code` (with the step hook when `steps` is a folder)."""
    env = {**os.environ, "PYTHONPATH": f"{hook}{os.pathsep}{code}", "HF_HUB_OFFLINE": "1"}
    env.pop("FIRST_STEP_DIR", None)
    return {**env, "FIRST_STEP_DIR": str(steps)} if steps else env


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (Linux /proc), forked workers in their own process groups included."""
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            out += [child, *descendants(child)]
    return out


def first_step(code: Path, hook: Path, workers: int, timeout: float = 600) -> dict:
    """Seconds to the first step of any worker and to a step of every worker, of the default sweep."""
    with tempfile.TemporaryDirectory() as tmp:
        steps = Path(tmp, "steps")
        steps.mkdir()
        cmd = [sys.executable, "-m", "ablate.sweep", "--storage", f"sqlite:///{tmp}/b.db", "--n-trials", str(workers)]
        cmd += ["--workers", str(workers), "wandb.mode=disabled"]
        start = time.time()
        proc = subprocess.Popen(cmd, cwd=tmp, env=env_for(code, hook, steps), start_new_session=True, **QUIET)
        while len(list(steps.iterdir())) < workers and proc.poll() is None and time.time() - start < timeout:
            time.sleep(0.05)
        for pid in [*descendants(proc.pid), proc.pid]:
            with contextlib.suppress(ProcessLookupError):  # ended already
                os.kill(pid, signal.SIGKILL)
        proc.wait()
        times = sorted(float(p.read_text()) - start for p in steps.iterdir())
    if len(times) < workers:
        raise RuntimeError(f"{code}: {len(times)} of {workers} workers stepped within {timeout} s")
    return {"first_s": times[0], "all_workers_s": times[-1]}


QUIET = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}


def tiny_sweep(folder: Path, n_trials: int) -> Path:
    """benchmarks/workers.py's tiny study written with this checkout's writer (old ones read the same YAML)."""
    import yaml

    space = {"model.neck.out_channels": {"choices": [8, 12, 16, 20, 24, 28, 32, 36]}}
    sweep = {
        "base": str(ROOT / "experiments/base.yaml"),
        "overrides": TINY,
        "study": {"name": "bench", "sampler": "random", "pruner": "none"},
        "n_trials": n_trials,
        "seeds": [0],
        "space": space,
    }
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep, sort_keys=False))
    return path


def trials_per_hour(code: Path, hook: Path, workers: int, n_trials: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = tiny_sweep(Path(tmp), n_trials)
        cmd = [sys.executable, "-m", "ablate.sweep", str(path), "--storage", f"sqlite:///{tmp}/b.db"]
        start = time.perf_counter()
        subprocess.run([*cmd, "--workers", str(workers)], cwd=tmp, env=env_for(code, hook), check=True, **QUIET)
        return n_trials / (time.perf_counter() - start) * 3600


def importtime(code: Path, hook: Path) -> dict[str, int]:
    """Cumulative µs of each module `python -X importtime` lists for one tiny trial (its first import)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = tiny_sweep(Path(tmp), 1)
        cmd = [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "ablate.sweep",
            str(path),
            "--storage",
            f"sqlite:///{tmp}/b.db",
        ]
        done = subprocess.run(cmd, cwd=tmp, env=env_for(code, hook), capture_output=True, text=True, check=True)
    out = {}
    for line in done.stderr.splitlines():
        if m := re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line):
            out.setdefault(m.group(3), (int(m.group(1)), len(m.group(2))))
    return out


def import_table(old: dict, new: dict) -> dict:
    """The named heavy packages, and the 12 largest top-level imports of the old checkout: µs old and new."""
    top = sorted((k for k, (_, depth) in old.items() if depth == 1), key=lambda k: -old[k][0])[:12]
    rows = {k: {"old_us": old.get(k, (0, 0))[0], "new_us": new.get(k, (0, 0))[0]} for k in [*HEAVY, *top]}
    for label, table in (("old", old), ("new", new)):
        total = sum(us for us, depth in table.values() if depth == 1)
        rows.setdefault("all top-level imports", {})[f"{label}_us"] = total
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", required=True, help="an older checkout to compare with (git worktree add DIR COMMIT)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--trials", type=int, default=8, help="trials of the tiny study for trials/hour")
    p.add_argument("--skip", default="", help="comma-separated: first_step, importtime, trials_hour")
    p.add_argument("--out", default=str(ROOT / f"benchmarks/results/startup-{platform.machine()}.json"))
    args = p.parse_args()
    skip = set(args.skip.split(","))
    codes = {"old": Path(args.base).resolve(), "new": ROOT}
    base_commit = subprocess.run(
        ["git", "-C", args.base, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    results = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        "old": f"{args.base} at {base_commit.stdout.strip()}",
        "new": subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
    }
    with tempfile.TemporaryDirectory() as hook:
        Path(hook, "sitecustomize.py").write_text(HOOK)
        for name, section in (
            ("first_step", bench_first_step),
            ("importtime", bench_imports),
            ("trials_hour", bench_rates),
        ):
            if name not in skip:
                results[name] = section(codes, Path(hook), args)
                Path(args.out).write_text(json.dumps(results, indent=2))
                print(f"{name}: {json.dumps(results[name])}", file=sys.stderr, flush=True)
    summary(results, args.workers)


def bench_first_step(codes: dict, hook: Path, args) -> dict:
    runs = {f"{v} {w}w": [] for w in (1, args.workers) for v in codes}
    for _ in range(args.repeats):
        for w in (1, args.workers):
            for v, code in codes.items():
                runs[f"{v} {w}w"].append(first_step(code, hook, w))
    out = {}
    for key, samples in runs.items():
        out[key] = {k: statistics.median(s[k] for s in samples) for k in ("first_s", "all_workers_s")}
        out[key]["samples"] = samples
    return out


def bench_imports(codes: dict, hook: Path, args) -> dict:
    return import_table(importtime(codes["old"], hook), importtime(codes["new"], hook))


def bench_rates(codes: dict, hook: Path, args) -> dict:
    runs = {f"{v} {w}w": [] for w in (1, args.workers) for v in codes}
    for _ in range(max(1, args.repeats - 1)):
        for w in (1, args.workers):
            for v, code in codes.items():
                runs[f"{v} {w}w"].append(trials_per_hour(code, hook, w, args.trials))
    return {"trials": args.trials, **{k: statistics.median(s) for k, s in runs.items()}, "samples": runs}


def summary(r: dict, n: int) -> None:
    """The ratios, one line each."""
    if "first_step" in r:
        f = r["first_step"]
        for w in (1, n):
            old, new = f[f"old {w}w"], f[f"new {w}w"]
            print(
                f"{w} worker(s): first step {old['first_s']:.1f} s -> {new['first_s']:.1f} s "
                f"(new/old {new['first_s'] / old['first_s']:.2f}); every worker stepped {old['all_workers_s']:.1f} s "
                f"-> {new['all_workers_s']:.1f} s (new/old {new['all_workers_s'] / old['all_workers_s']:.2f})"
            )
    if "importtime" in r:
        for k, row in r["importtime"].items():
            print(f"  import {k}: {row['old_us'] / 1e6:.2f} s -> {row['new_us'] / 1e6:.2f} s")
    if "trials_hour" in r:
        t = r["trials_hour"]
        for v in ("old", "new"):
            print(f"{v}: tiny trials/hour 1 worker {t[f'{v} 1w']:.0f}, {n} workers {t[f'{v} {n}w']:.0f}")
        print(f"new/old: 1 worker {t['new 1w'] / t['old 1w']:.2f}, {n} workers {t[f'new {n}w'] / t[f'old {n}w']:.2f}")


if __name__ == "__main__":
    main()

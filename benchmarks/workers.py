"""How fast many workers get through a study, and what the storage costs a trial.

    python benchmarks/workers.py [--trials 8] [--postgres postgresql+psycopg2://...]

1. Trials per minute of `python -m ablate.sweep --workers W` for W = 1 and 2 on a tiny config (32 px,
   16 images, 1 epoch), measured alternately (1, 2, 1, 2, ...) on fresh SQLite files; the ratio is 2 vs 1.
2. Storage time per trial with no training at all: taking a slot (lock, stale-trial check, count, ask),
   suggesting, one heartbeat and telling, against Optuna's bare ask/tell on the same storage; on SQLite
   and, with --postgres, on PostgreSQL.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "data.image_size=32",
    "data.train_size=16",
    "data.val_size=8",
    "data.batch_size=4",
    "model.neck.out_channels=16",
    "model.neck.rates=[1,2,3]",
    "trainer.max_epochs=1",
    "trainer.enable_checkpointing=false",
    "trainer.enable_model_summary=false",
    "wandb.mode=disabled",
]


def tiny_sweep(folder: Path, n_trials: int) -> Path:
    """`folder`/sweep.yaml: 8 neck widths over the tiny config, drawn at random, one seed a trial."""
    from ablate.study.space import write_sweep

    space = {"model.neck.out_channels": {"choices": [8, 12, 16, 20, 24, 28, 32, 36]}}
    study = {"name": "bench", "sampler": "random", "pruner": "none"}
    return write_sweep(
        folder / "sweep.yaml", space, base=ROOT / "experiments/base.yaml", overrides=TINY, n_trials=n_trials, **study
    )


def trials_per_minute(workers: int, n_trials: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        path = tiny_sweep(Path(tmp), n_trials)
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "ablate.sweep",
                str(path),
                "--storage",
                f"sqlite:///{tmp}/b.db",
                "--workers",
                str(workers),
            ],
            cwd=tmp,
            check=True,
            capture_output=True,
        )
        return n_trials / ((time.perf_counter() - start) / 60)


def storage_ms_per_trial(url: str, n: int = 40) -> tuple[float, float]:
    """(ablate's slot + heartbeat + tell, Optuna's bare ask + tell), milliseconds per trial."""
    import optuna

    from ablate.study.engine import quiet
    from ablate.study.space import load_sweep, suggest
    from ablate.study.storage import open_study
    from ablate.study.workers import Slots

    quiet()
    with tempfile.TemporaryDirectory() as tmp:
        sweep = load_sweep(tiny_sweep(Path(tmp), n))
        times = {"ablate": [], "optuna": []}
        for name in ("ablate", "optuna") * 2:  # alternate, twice
            study_name = f"bench-{name}-{time.time_ns()}"
            study = open_study(dataclasses.replace(sweep, study=dataclasses.replace(sweep.study, name=study_name)), url)
            slots = Slots(url, study_name, n)
            start = time.perf_counter()
            for _ in range(n):
                if name == "ablate":
                    trial = slots.claim(study)
                    study._storage.record_heartbeat(trial._trial_id)
                else:
                    trial = study.ask()
                suggest(trial, sweep.space)
                study.tell(trial, 0.5)
            times[name].append((time.perf_counter() - start) / n * 1000)
            optuna.delete_study(study_name=study_name, storage=url)
        return statistics.median(times["ablate"]), statistics.median(times["optuna"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--postgres", help="a PostgreSQL URL to measure too (postgresql+psycopg2://...)")
    args = p.parse_args()
    rates = {1: [], 2: []}
    for _ in range(args.repeats):
        for workers in (1, 2):
            rates[workers].append(trials_per_minute(workers, args.trials))
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    print(
        f"tiny trials per minute: 1 worker {one:.1f}, 2 workers {two:.1f}, ratio {two / one:.2f} "
        f"(medians of {args.repeats}; {args.trials} trials a study)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        urls = {"sqlite": f"sqlite:///{tmp}/s.db", **({"postgresql": args.postgres} if args.postgres else {})}
        for name, url in urls.items():
            ours, bare = storage_ms_per_trial(url)
            print(
                f"storage per trial on {name}: ablate {ours:.1f} ms (slot lock, stale check, count, ask, "
                f"heartbeat, tell), Optuna ask+tell {bare:.1f} ms, ratio {ours / bare:.2f}"
            )


if __name__ == "__main__":
    main()

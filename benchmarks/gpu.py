"""The GPU figures of issues 16 and 22, in one run on one device (sized for at most ~8 minutes on one CUDA GPU).

    python benchmarks/gpu.py                        # CUDA: writes benchmarks/results/<device-name>.json
    python benchmarks/gpu.py --skip voc,peak --trials 16   # issue 22: the worker pool's trials/hour only
    python benchmarks/gpu.py --device cpu --quick   # tiny sizes: the script works end to end (not figures)

Sections (--skip any of them; the JSON is written after each, so a run cut short keeps what it measured):
  workers  trials/hour of the default study through the real `python -m ablate.sweep` (temp SQLite), one worker
           vs `--workers N` packed on this one GPU (forked from one command), as shipped, with the small-trial
           options, and with `--workers auto`; printed beside --before (default: the H200 run before the pool)
  peak     share of peak of a default-config training step (measured FLOPs / best dense kernel rate, as
           benchmarks/run.py) before vs after the small-trial options: the step as a real run takes it (data
           included), interleaved variants, and the bare step (run.py's method) with AdamW per-tensor vs fused
  voc      the experiments/voc.yaml step (resnet50, OS 16, batch 16, SGD, encoder_weights=None, random tensors):
           ablate's SegmentationModel vs smp's DeepLabV3, and the deeplabv3plus head vs smp's DeepLabV3Plus,
           interleaved: step time, images/s, peak memory (512 px: smp needs sides divisible by 16; ablate also at 513)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from pathlib import Path

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT)]  # benchmarks/run.py, and ablate without installing it
from run import dense_peak, interleaved, small_config, sync  # noqa: E402

SECTIONS = ("voc", "peak", "workers")  # the quickest first
BEFORE = "benchmarks/results/nvidia-h200-2026-12-04.json"  # before the forked worker pool (issue 22), at 1c6b20b
OPTIONS = ["data.on_device=true", "optim.fused=true"]  # what issue 16 adds for small trials
TINY = [
    "data.image_size=64",
    "data.train_size=16",
    "data.val_size=8",
    "data.batch_size=4",  # 64 px: the
    "model.neck.out_channels=16",
    "trainer.max_epochs=1",
]  # default space's rate 6 fits the 8x8 map


def log(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# --- workers: trials/hour of the real command ----------------------------------------------------------------


class GpuBusy:
    """Mean utilization of GPU `gpu` (nvidia-smi, every 0.5 s) while the block runs; None without a GPU."""

    def __init__(self, gpu: str | None):
        self.gpu, self.samples, self.stop, self.thread = gpu, [], threading.Event(), None

    def _poll(self) -> None:
        while not self.stop.wait(0.5):
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", self.gpu],
                capture_output=True,
                text=True,
            )
            if out.returncode == 0 and out.stdout.strip().isdigit():
                self.samples.append(int(out.stdout.strip()))

    def __enter__(self):
        if self.gpu is not None and shutil.which("nvidia-smi"):
            self.thread = threading.Thread(target=self._poll, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        if self.thread:
            self.thread.join()

    def mean(self) -> float | None:
        return statistics.mean(self.samples) if self.samples else None


def sweep_wall(workers: int, trials: int, overrides: list[str], device: torch.device) -> dict:
    """One study of `trials` trials of the default sweep by `python -m ablate.sweep --workers N` in a temp folder."""
    import optuna

    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{tmp}/bench.db"
        cmd = [
            sys.executable,
            "-m",
            "ablate.sweep",
            "--study",
            "bench",
            "--storage",
            storage,
            "--n-trials",
            str(trials),
            "--workers",
            str(workers),
            "wandb.mode=disabled",
            *overrides,
        ]
        gpu = None
        if device.type == "cuda":
            from ablate.study.gpus import visible_gpus

            gpu = visible_gpus()[device.index or 0]
            cmd += ["--gpus", gpu]  # every worker on this one GPU
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)  # keeps what is there
        env = {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1"}
        with GpuBusy(gpu) as busy:
            start = time.perf_counter()
            done = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - start
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr[-3000:]}")
        study = optuna.load_study(study_name="bench", storage=storage)
        complete = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
        seen = sorted({t.user_attrs.get("worker_gpus", "-") for t in complete})
    picked = re.search(r"--workers auto: (\d+) worker\(s\): (.*)", done.stderr)
    return {
        "workers": workers,
        **({"auto_picked": int(picked.group(1)), "auto_why": picked.group(2)} if picked else {}),
        "trials": len(complete),
        "wall_s": wall,
        "trials_per_hour": len(complete) / wall * 3600,
        "gpu_busy_percent": busy.mean(),
        "worker_gpus_seen": seen,
    }


def bench_workers(device: torch.device, quick: bool, n_workers: int, trials: int) -> dict:
    """1 worker vs N workers (forked from one command since issue 22), as shipped; N workers with the small-trial
    options; `--workers auto`; in that order, once each."""
    budget = TINY if quick else ["trainer.max_epochs=3"]  # the default study at a quarter of its epochs
    trials = 2 if quick else trials
    runs = {
        "1 worker": (1, []),
        f"{n_workers} workers": (n_workers, []),
        f"{n_workers} workers + options": (n_workers, OPTIONS),
        "auto workers": ("auto", []),
    }
    out = {"trial_budget": ["default study", *budget], "trials": trials, "options": OPTIONS}
    subprocess.run([sys.executable, "-c", "import ablate.sweep, ablate.run.fit"], cwd=ROOT, check=True)  # warm caches
    for label, (workers, extra) in runs.items():
        out[label] = sweep_wall(workers, trials, [*budget, *extra], device)
        log(f"workers {label}: {json.dumps(out[label])}")
    one = out["1 worker"]["trials_per_hour"]
    out["ratio_n_vs_1"] = out[f"{n_workers} workers"]["trials_per_hour"] / one
    out["ratio_n_with_options_vs_1"] = out[f"{n_workers} workers + options"]["trials_per_hour"] / one
    out["ratio_auto_vs_1"] = out["auto workers"]["trials_per_hour"] / one
    return out


# --- peak: share of peak before vs after the options -------------------------------------------------------


class StepWall(L.Callback):
    """Wall time between consecutive training-batch ends of an epoch: one step as the run takes it, data included
    (the step's finite-loss check waits for the device, so on CUDA too this is the step's real time)."""

    def __init__(self):
        self.times, self.last = [], None

    def on_train_epoch_start(self, *args) -> None:
        self.last = None

    def on_train_batch_end(self, *args) -> None:
        now = time.perf_counter()
        if self.last is not None:
            self.times.append(now - self.last)
        self.last = now


def step_flops(cfg, device: torch.device) -> float:
    """FLOPs of one training step (forward, backward, optimizer) of `cfg`'s model (torch's FLOP counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    from ablate.config import to_dict
    from ablate.run.module import SegmentationModule

    module = SegmentationModule(to_dict(cfg), [f"c{i}" for i in range(7)]).to(device).train()
    x = torch.randn(cfg.data.batch_size, 3, cfg.data.image_size, cfg.data.image_size, device=device)
    y = torch.randint(0, 7, (cfg.data.batch_size, cfg.data.image_size, cfg.data.image_size), device=device)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.cross_entropy(module(x), y).backward()
    return counter.get_total_flops()


def bare_steps(cfg, device: torch.device, quick: bool) -> dict:
    """benchmarks/run.py's step (no Lightning, no data): forward, backward, AdamW per-tensor vs fused; median s."""
    from ablate.config import to_dict
    from ablate.run.module import SegmentationModule

    steps = {}
    for name, fused in (("adamw", False), ("adamw fused", True)):
        torch.manual_seed(0)
        module = SegmentationModule(to_dict(cfg), [f"c{i}" for i in range(7)]).to(device).train()
        opt = torch.optim.AdamW(module.parameters(), lr=1e-3, **({"fused": True} if fused else {}))
        x = torch.randn(cfg.data.batch_size, 3, cfg.data.image_size, cfg.data.image_size, device=device)
        y = torch.randint(0, 7, (cfg.data.batch_size, cfg.data.image_size, cfg.data.image_size), device=device)

        def step(module=module, opt=opt, x=x, y=y):
            loss = torch.nn.functional.cross_entropy(module(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

        steps[name] = step
    return interleaved(steps, repeats=5 if quick else 20, device=device)


def bf16_peak(device: torch.device, quick: bool) -> float:
    """FLOP/s of the best bfloat16 matmul here (the ceiling of a bf16-mixed step)."""
    rates = {}
    for n in (1024,) if quick else (2048, 4096, 8192):
        a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
        rates[n] = 2 * n**3 / interleaved({"mm": lambda: a @ b}, repeats=5, device=device)["mm"]
    return max(rates.values())


def bench_peak(device: torch.device, quick: bool) -> dict:
    from ablate.run.fit import run

    variants = {
        "default": [],
        "on_device": ["data.on_device=true"],
        "on_device + fused": OPTIONS,
        "on_device + fused + bf16-mixed": [*OPTIONS, "trainer.precision=bf16-mixed"],
        "on_device + fused + compile": [*OPTIONS, "model.compile=true"],
    }
    if quick and device.type == "cpu":
        del variants["on_device + fused + compile"]  # minutes of C++ compiling on a small CPU
    base = {
        "data.val_size": 8,
        "trainer.max_epochs": 1,
        "trainer.num_sanity_val_steps": 0,
        "data.train_size": 64 if quick else 512,
    }  # quick: 8 steps an epoch; full: 64, as the default config
    cfg = small_config(device, quick, **base)
    flops = step_flops(cfg, device)
    peak = dense_peak(device, quick)
    peak_name = max(peak, key=peak.get)
    peak_bf16 = bf16_peak(device, quick) if device.type == "cuda" else None
    walls = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        for _ in range(1 if quick else 2):  # interleaved: default, on_device, ..., default, on_device, ...
            for name, extra in variants.items():
                timer = StepWall()
                cfg = small_config(device, quick, **base, **dict(o.split("=", 1) for o in extra))
                run(cfg, Path(tmp) / f"r{time.time_ns()}", callbacks=[timer])
                walls[name] += timer.times[len(timer.times) // 4 :]  # past warm-up (and compiling)
    out = {
        "step_flops": flops,
        "batch": cfg.data.batch_size,
        "image_size": cfg.data.image_size,
        "peak_flops": peak[peak_name],
        "peak_kernel": peak_name,
        "kernels": peak,
        "peak_bf16_matmul": peak_bf16,
        "variants": {},
    }
    for name, times in walls.items():
        step = statistics.median(times)
        row = {
            "options": variants[name],
            "step_s": step,
            "images_per_s": cfg.data.batch_size / step,
            "share_of_peak": flops / step / peak[peak_name],
        }
        if peak_bf16 and "bf16-mixed" in name:
            row["share_of_bf16_peak"] = flops / step / peak_bf16
        out["variants"][name] = row
        log(f"peak {name}: {json.dumps(row)}")
    best = min(out["variants"], key=lambda k: out["variants"][k]["step_s"])
    out["before"], out["after"] = out["variants"]["default"]["share_of_peak"], out["variants"][best]["share_of_peak"]
    out["after_variant"] = best
    bare = bare_steps(small_config(device, quick), device, quick)
    out["bare_step"] = {name: {"step_s": s, "share_of_peak": flops / s / peak[peak_name]} for name, s in bare.items()}
    return out


# --- voc: the recipe's step, ablate vs smp ------------------------------------------------------------------------


def voc_model(library: str, head: str, classes: int = 21) -> torch.nn.Module:
    """experiments/voc.yaml's model (encoder_weights=None), or smp's with the same encoder, rates, width, dropout.

    smp's DeepLabV3Plus keeps its own decoder: a separable 3x3 after the ASPP and a separable 3x3 after the
    concatenation, where ours has one dense 3x3 (the parameter counts are in the results)."""
    import segmentation_models_pytorch as smp
    import yaml

    from ablate.run.model import SegmentationModel

    m = yaml.safe_load((ROOT / "experiments/voc.yaml").read_text())["model"]
    torch.manual_seed(0)
    if library == "ablate":
        return SegmentationModel(
            encoder=m["encoder"],
            encoder_weights=None,
            classes=classes,
            neck=m["neck"],
            encoder_depth=m["encoder_depth"],
            output_stride=m["output_stride"],
            head=head,
        )
    return (smp.DeepLabV3 if head == "deeplabv3" else smp.DeepLabV3Plus)(
        encoder_name=m["encoder"],
        encoder_weights=None,
        encoder_output_stride=m["output_stride"],
        decoder_channels=m["neck"]["out_channels"],
        decoder_atrous_rates=tuple(m["neck"]["rates"]),
        decoder_aspp_separable=bool(m["neck"].get("separable", False)),
        decoder_aspp_dropout=m["neck"]["dropout"],
        classes=classes,
    )


def train_step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float):
    """The recipe's step: cross-entropy (ignore 255), SGD momentum 0.9, weight decay 1e-4."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)

    def step():
        loss = torch.nn.functional.cross_entropy(model(x), y, ignore_index=255)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def batch(size: int, side: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images (B, 3, S, S) and VOC-like labels (B, S, S) in 0..20."""
    return torch.randn(size, 3, side, side, device=device), torch.randint(0, 21, (size, side, side), device=device)


def training_memory(library: str, head: str, size: int, side: int, device: torch.device) -> int | None:
    """CUDA: peak bytes allocated over two steps of this model alone, above what was allocated before it came
    (weights, gradients, momentum and activations); None on a CPU."""
    if device.type != "cuda":
        return None
    torch.cuda.empty_cache()
    sync(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    model = voc_model(library, head).to(device).train()
    step = train_step(model, *batch(size, side, device), 0.007)
    step()
    step()
    sync(device)
    used = torch.cuda.max_memory_allocated(device) - before
    del model, step
    return used


def bench_voc(device: torch.device, quick: bool) -> dict:
    from ablate.callbacks.efficiency import count_params

    size, side = (2, 64) if quick else (16, 512)  # 512: smp refuses 513 (sides divisible by the stride, 16)
    out = {"batch": size, "image_size": side, "precision": "32-true (TF32 convolutions: torch's default)"}
    for head in ("deeplabv3", "deeplabv3plus"):
        contenders = {"ablate": ("ablate", side), "smp": ("smp", side)}
        if head == "deeplabv3":
            contenders["ablate@513"] = ("ablate", side + 1)  # the recipe's own crop, which smp refuses
        mem = {name: training_memory(lib, head, size, s, device) for name, (lib, s) in contenders.items()}
        models = {name: voc_model(lib, head).to(device).train() for name, (lib, _) in contenders.items()}
        steps = {name: train_step(models[name], *batch(size, s, device), 0.007) for name, (_, s) in contenders.items()}
        times = interleaved(steps, repeats=3 if quick else 10, device=device)
        row = {
            "params": {name: count_params(m) for name, m in models.items()},
            "step_s": times,
            "images_per_s": {k: size / t for k, t in times.items()},
            "training_memory_bytes": mem,
            "time ablate/smp": times["ablate"] / times["smp"],
        }
        if device.type == "cuda":
            row["memory ablate/smp"] = mem["ablate"] / mem["smp"]
        out[head] = row
        log(f"voc {head}: {json.dumps(row)}")
        del models, steps
    return out


# --- report ----------------------------------------------------------------------------------------------------


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine() or "cpu"


def default_out(device: torch.device, quick: bool) -> Path:
    """benchmarks/results/<device-name>.json, e.g. nvidia-h200.json (a --quick run: ...-quick.json)."""
    slug = re.sub(r"[^a-z0-9]+", "-", device_name(device).lower()).strip("-")
    slug = re.sub(r"-\d+gb.*$", "", slug) if device.type == "cuda" else f"cpu-{slug}"
    return ROOT / "benchmarks/results" / f"{slug}{'-quick' if quick else ''}.json"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="tiny sizes, one repeat: that it works, not figures")
    p.add_argument("--workers", type=int, default=4, help="workers on the one GPU in the workers section (default 4)")
    p.add_argument("--trials", type=int, default=8, help="trials a study in the workers section (default 8)")
    p.add_argument("--before", help=f"an earlier result of this script to compare with (default: {BEFORE})")
    p.add_argument("--out", help="JSON path (default: benchmarks/results/<device-name>.json)")
    p.add_argument("--skip", default="", help=f"comma-separated sections to leave out: {', '.join(SECTIONS)}")
    args = p.parse_args()
    skip = {s for s in args.skip.split(",") if s}
    if skip - set(SECTIONS):
        p.error(f"--skip {args.skip!r}: sections are {', '.join(SECTIONS)}")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: torch finds no CUDA device here; use --device cpu --quick for a smoke test")
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out_path = Path(args.out) if args.out else default_out(device, args.quick)
    results = {
        "device": f"{device.type}: {device_name(device)}",
        "torch": torch.__version__,
        "quick": args.quick,
        "cpu_threads": torch.get_num_threads(),
        "date": time.strftime("%Y-%m-%d"),
    }
    benches = {
        "workers": lambda: bench_workers(device, args.quick, args.workers, args.trials),
        "peak": lambda: bench_peak(device, args.quick),
        "voc": lambda: bench_voc(device, args.quick),
    }
    for name in SECTIONS:
        if name in skip:
            continue
        start = time.perf_counter()
        results[name] = benches[name]()
        results[name]["section_s"] = time.perf_counter() - start
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(results, indent=2, default=str))
        log(f"{name}: {results[name]['section_s']:.0f} s; written to {out_path}")
    before = Path(args.before) if args.before else ROOT / BEFORE
    summary(results, json.loads(before.read_text()) if before.exists() and device.type == "cuda" else None)


def summary(results: dict, before: dict | None = None) -> None:
    """The ratios issues 16 and 22 ask for, one line each; the workers' beside `before` (an earlier run)."""
    if "workers" in results:
        w = results["workers"]
        auto = w["auto workers"]
        print(
            f"trials/hour, N workers vs 1 on one device: {w['ratio_n_vs_1']:.2f}x as shipped, "
            f"{w['ratio_n_with_options_vs_1']:.2f}x with {' '.join(w['options'])}, {w['ratio_auto_vs_1']:.2f}x with "
            f"--workers auto ({auto.get('auto_picked')}: {auto.get('auto_why')}) (goal >= 3)"
        )
        if before and "workers" in before:
            b = before["workers"]
            print(
                f"  before ({before.get('device')}, {before.get('date')}, {b['trials']} trials): "
                f"{b['ratio_n_vs_1']:.2f}x; 1 worker {b['1 worker']['trials_per_hour']:.0f} trials/hour, now "
                f"{w['1 worker']['trials_per_hour']:.0f}; GPU busy {b['1 worker']['gpu_busy_percent']} % with 1 "
                f"worker, now {w['1 worker']['gpu_busy_percent']} %"
            )
    if "peak" in results:
        k = results["peak"]
        print(
            f"share of peak, default-config step as trained: before {k['before']:.3f}, after {k['after']:.3f} "
            f"({k['after_variant']})"
        )
    if "voc" in results:
        for head in ("deeplabv3", "deeplabv3plus"):
            r = results["voc"][head]
            mem = f", memory {r['memory ablate/smp']:.3f}" if "memory ablate/smp" in r else ""
            print(
                f"voc {head}: ablate/smp time {r['time ablate/smp']:.3f}{mem} (goal <= 1.0); images/s ablate "
                f"{r['images_per_s']['ablate']:.1f}, smp {r['images_per_s']['smp']:.1f}"
            )


if __name__ == "__main__":
    main()

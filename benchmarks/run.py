"""How fast ablate runs an ablation: side by side with the alternatives, and against the machine's limit.

    python benchmarks/run.py [--quick] [--device cpu|cuda] [--out results.json] [--skip sweep,options]

Every comparison runs its contenders interleaved (A, B, A, B, ...) in this one process and reports medians
and the ratio ours/theirs, so a noisy, shared machine slows both alike. Sections:
  necks     our aspp vs smp's and torchvision's ASPP, same configuration and parameter count: time of
            forward+backward and memory (saved activations on the CPU, peak allocated on CUDA)
  overhead  one trial through `ablate.run.fit.run` (real Trainer) vs a hand-written PyTorch loop doing the
            same steps and validation
  peak      achieved FLOP/s of a full training step vs the best dense float32 kernel (matmuls and a 3x3
            convolution) measured here, and the profiler's slowest operators
  data      images/s through the training DataLoader vs images/s the training step consumes
  sweep     the default sweep's space, scaled down: grid without pruning vs TPE + median vs TPE + hyperband
  options   training step time with trainer.precision=bf16-mixed, model.channels_last, model.compile
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import logging
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("necks", "overhead", "peak", "data", "sweep", "options")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved(fns: dict[str, Callable], repeats: int, device: torch.device, warmup: int = 2) -> dict[str, float]:
    """Median seconds of each function, run round-robin after `warmup` calls each."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            start = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def memory_bytes(step: Callable, device: torch.device) -> int:
    """CUDA: peak bytes allocated during `step` above what was allocated before. CPU: bytes of the distinct
    tensors autograd saves for the backward pass (what training holds between forward and backward)."""
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - before
    storages = {}

    def pack(t: torch.Tensor):
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(storages.values())


# --- necks ----------------------------------------------------------------------------------------------------


def bench_necks(device: torch.device, quick: bool) -> dict:
    from segmentation_models_pytorch.decoders.deeplabv3.decoder import ASPP as SmpASPP
    from torchvision.models.segmentation.deeplabv3 import ASPP as TorchvisionASPP

    from ablate.callbacks.efficiency import count_params
    from ablate.necks import create_neck

    rates, cin, cout = (6, 12, 18), 256, 256  # DeepLabv3's ASPP: BN, concat, image pooling, dropout 0.5
    cases = [(8, 33)] if quick else [(8, 33), (4, 65), (16, 17)]  # (batch, feature-map side)
    if device.type == "cuda":
        cases = [(16, 33), (8, 65), (32, 17)] if not quick else [(16, 33)]
    rows, vs_smp, vs_tv = [], [], []
    for batch, side in cases:
        torch.manual_seed(0)
        necks = {
            "ablate": create_neck("aspp", cin, out_channels=cout, rates=rates, dropout=0.5),
            "smp": SmpASPP(cin, cout, rates, separable=False, dropout=0.5),
            "torchvision": TorchvisionASPP(cin, list(rates), cout),
        }
        params = {name: count_params(m) for name, m in necks.items()}
        assert len(set(params.values())) == 1, f"not the same configuration: {params}"
        x = torch.randn(batch, cin, side, side, device=device)
        steps = {}
        for name, m in necks.items():
            m.to(device).train()
            steps[name] = (lambda m: lambda: m(x).sum().backward())(m)
        times = interleaved(steps, repeats=5 if quick else 15, device=device)
        mem = {name: memory_bytes(step, device) for name, step in steps.items()}
        vs_smp.append(times["ablate"] / times["smp"])
        vs_tv.append(times["ablate"] / times["torchvision"])
        rows.append(
            {
                "batch": batch,
                "side": side,
                "params": params["ablate"],
                **{f"ms/{k}": v * 1000 for k, v in times.items()},
                **{f"MiB/{k}": v / 2**20 for k, v in mem.items()},
                "time ablate/smp": vs_smp[-1],
                "time ablate/torchvision": vs_tv[-1],
                "memory ablate/smp": mem["ablate"] / mem["smp"],
                "memory ablate/torchvision": mem["ablate"] / mem["torchvision"],
            }
        )
    return {"cases": rows, "aspp_vs_smp": statistics.median(vs_smp), "aspp_vs_torchvision": statistics.median(vs_tv)}


# --- framework overhead ---------------------------------------------------------------------------------------


def small_config(device: torch.device, quick: bool, **extra):
    """experiments/base.yaml with fewer images (quick: 64 steps a trial, full: 128) and 2 epochs."""
    from ablate.config import load_config

    n = 256 if quick else 512
    overrides = [
        f"data.train_size={n}",
        "data.val_size=32",
        "trainer.max_epochs=2",
        "wandb.mode=disabled",
        f"trainer.accelerator={'gpu' if device.type == 'cuda' else 'cpu'}",
        "trainer.devices=1",
        "trainer.enable_model_summary=false",
        *[f"{k}={v}" for k, v in extra.items()],
    ]
    return load_config(ROOT / "experiments/base.yaml", overrides)


def plain_loop(cfg, device: torch.device) -> dict:
    """The same trial by hand: data, model, AdamW + poly schedule, every epoch a validation mIoU. Returns the
    seconds of its parts (setup, train, validation; as `run_time.split` names them) and the best mIoU."""
    import lightning as L
    import torch.nn.functional as F

    from ablate.data import create_datamodule
    from ablate.run.model import SegmentationModel

    start = time.perf_counter()
    dm = create_datamodule(cfg)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    m = cfg.model
    n = len(dm.classes)
    model = SegmentationModel(
        encoder=m.encoder,
        classes=n,
        neck=m.neck,
        encoder_depth=m.encoder_depth,
        output_stride=m.output_stride,
        head=m.head,
    ).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)
    train, val = dm.train_dataloader(), dm.val_dataloader()
    total = cfg.trainer["max_epochs"] * len(train)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(1 - s / total, 0) ** cfg.optim.poly_power)
    parts = {"setup": time.perf_counter() - start, "train": 0.0, "validation": 0.0, "best": 0.0}
    for _ in range(cfg.trainer["max_epochs"]):
        model.train()
        start = time.perf_counter()
        for x, y in train:
            loss = F.cross_entropy(model(x.to(device)), y.to(device), ignore_index=255)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        sync(device)
        parts["train"] += time.perf_counter() - start
        start = time.perf_counter()
        parts["best"] = max(parts["best"], validate(model, val, n, device))
        parts["validation"] += time.perf_counter() - start
    return parts


def validate(model, val, n: int, device: torch.device) -> float:
    """mIoU of `model` over the `val` batches, from the confusion matrix."""
    model.eval()
    conf = torch.zeros(n, n, dtype=torch.long, device=device)
    with torch.no_grad():
        for x, y in val:
            y = y.to(device)
            pred = model(x.to(device)).argmax(1)
            keep = y != 255
            conf += torch.bincount(y[keep] * n + pred[keep], minlength=n * n).view(n, n)
    union = conf.sum(0) + conf.sum(1) - conf.diag()
    return (conf.diag()[union > 0] / union[union > 0]).mean().item()


def bench_overhead(device: torch.device, quick: bool) -> dict:
    """One trial through `ablate.run.fit.run` vs `plain_loop`, interleaved; each part's median seconds."""
    from run_time import Marks, split

    from ablate.run.fit import run

    cfg = small_config(device, quick)
    parts = {"ablate": [], "plain": []}

    def ablate(tmp: str) -> None:
        marks, start = Marks(), time.perf_counter()
        run(cfg, Path(tmp) / f"r{time.time_ns()}", callbacks=[marks])
        parts["ablate"].append(split(marks, start, time.perf_counter()))

    with tempfile.TemporaryDirectory() as tmp:
        calls = {"ablate": lambda: ablate(tmp), "plain": lambda: parts["plain"].append(plain_loop(cfg, device))}
        with contextlib.redirect_stdout(io.StringIO()):
            times = interleaved(calls, repeats=3, device=device, warmup=1)
    steps = cfg.trainer["max_epochs"] * (cfg.data.train_size // cfg.data.batch_size)
    median = {
        name: {k: statistics.median(p[k] for p in runs[-3:]) for k in runs[-1] if k != "best"}
        for name, runs in parts.items()
    }
    return {
        "steps": steps,
        "s/ablate": times["ablate"],
        "s/plain": times["plain"],
        "overhead_vs_plain": times["ablate"] / times["plain"],
        "parts/ablate": median["ablate"],  # setup, train, validation, callbacks, end (benchmarks/run_time.py)
        "parts/plain": median["plain"],  # setup, train, validation
    }


# --- distance to the machine's limit ---------------------------------------------------------------------------


def dense_peak(device: torch.device, quick: bool) -> dict:
    """FLOP/s of float32 matmuls of several shapes and of a dense 3x3 convolution; the best is the peak."""
    kernels = {}
    for n in (1024, 2048) if quick else (1024, 2048, 4096):
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        kernels[f"matmul {n}"] = (lambda a, b: lambda: a @ b)(a, b), 2 * n**3
    for batch, c, side in ((8, 128, 64), (8, 256, 32)):
        conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False).to(device)
        x = torch.randn(batch, c, side, side, device=device)
        with torch.no_grad():
            kernels[f"conv3x3 {c}ch {side}px"] = (
                (lambda conv, x: lambda: conv(x))(conv, x),
                2 * batch * c * c * 9 * side**2,
            )
    with torch.no_grad():
        times = interleaved({k: v[0] for k, v in kernels.items()}, repeats=5, device=device)
    return {k: kernels[k][1] / t for k, t in times.items()}


def bench_peak(device: torch.device, quick: bool) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from ablate.config import to_dict
    from ablate.run.module import SegmentationModule

    cfg = small_config(device, quick)
    module = SegmentationModule(to_dict(cfg), [f"c{i}" for i in range(7)]).to(device).train()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-3)
    x = torch.randn(cfg.data.batch_size, 3, cfg.data.image_size, cfg.data.image_size, device=device)
    y = torch.randint(0, 7, (cfg.data.batch_size, cfg.data.image_size, cfg.data.image_size), device=device)

    def step():
        loss = torch.nn.functional.cross_entropy(module(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    peaks = dense_peak(device, quick)
    step_s = interleaved({"step": step}, repeats=5 if quick else 10, device=device)["step"]
    peak_name = max(peaks, key=peaks.get)
    achieved = flops / step_s
    activities = [torch.profiler.ProfilerActivity.CPU] + (
        [torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else []
    )
    with torch.profiler.profile(activities=activities, with_flops=True) as prof:
        for _ in range(3):
            step()
        sync(device)
    where = "device" if device.type == "cuda" else "cpu"
    events = [e for e in prof.key_averages() if getattr(e, f"self_{where}_time_total") > 0]
    total_us = sum(getattr(e, f"self_{where}_time_total") for e in events)
    op_flops = {str(op).split(".")[-1]: n for op, n in counter.get_flop_counts()["Global"].items()}
    slowest = []  # the operators that take the most time, and the share of peak each reaches
    backend_kernels = ("mkldnn_convolution", "cudnn_convolution", "convolution_backward")  # counted below
    for e in sorted(events, key=lambda e: getattr(e, f"self_{where}_time_total"), reverse=True)[:10]:
        if not e.key.endswith(backend_kernels):
            slowest.append({"op": e.key, "time share": getattr(e, f"self_{where}_time_total") / total_us})
    for e in prof.key_averages():  # operators that hold FLOPs: inclusive time (their backend kernels inside)
        name = e.key.removeprefix("aten::")
        if name in op_flops and getattr(e, f"{where}_time_total") > 0:
            rate = op_flops[name] * 3 / (getattr(e, f"{where}_time_total") * 1e-6)  # 3 profiled steps
            slowest.append(
                {
                    "op": f"{e.key} (with its kernels)",
                    "time share": getattr(e, f"{where}_time_total") / total_us,
                    "share_of_peak": rate / peaks[peak_name],
                }
            )
    return {
        "step_flops": flops,
        "step_s": step_s,
        "achieved_flops": achieved,
        "peak_flops": peaks[peak_name],
        "peak_kernel": peak_name,
        "kernels": peaks,
        "share_of_peak": achieved / peaks[peak_name],
        "slowest_ops": slowest,
    }


# --- data ----------------------------------------------------------------------------------------------------


def bench_data(device: torch.device, quick: bool, step_s: float | None) -> dict:
    from ablate.data import create_datamodule

    cfg = small_config(device, quick)
    start = time.perf_counter()
    dm = create_datamodule(cfg)  # generates the images
    generate_s = time.perf_counter() - start
    loader = dm.train_dataloader()
    start = time.perf_counter()
    images = sum(len(x) for x, _ in loader)
    loader_ips = images / (time.perf_counter() - start)
    out = {
        "generate_images_per_s": (cfg.data.train_size + cfg.data.val_size) / generate_s,
        "loader_images_per_s": loader_ips,
    }
    if step_s:
        out["step_images_per_s"] = cfg.data.batch_size / step_s
        out["loader_vs_step"] = loader_ips / out["step_images_per_s"]
    return out


# --- sweep efficiency ----------------------------------------------------------------------------------------


def bench_sweep(quick: bool) -> dict:
    """Full: the default sweep as shipped (512 images, 12 epochs a trial: minutes on a GPU, about 2.2 min a
    trial on 2 CPU cores, 24 trials). Quick: 64 px, 64 images, 3 epochs; on a CPU that is too little training
    for the variants to differ, so it measures compute (trials, epochs, wall) and not the search."""
    import optuna

    from ablate.results.summary import run_and_show
    from ablate.study.engine import quiet
    from ablate.study.space import load_sweep
    from ablate.study.targets import make_target

    quiet()
    scale = ["data.image_size=64", "data.train_size=64", "data.val_size=32", "trainer.max_epochs=3"] if quick else []
    overrides = [
        *scale,
        "wandb.mode=disabled",
        "trainer.enable_checkpointing=false",
        "trainer.enable_model_summary=false",
    ]
    strategies = {
        "grid, no pruning": ("grid", "none"),
        "TPE + median": ("tpe", "median"),
        "TPE + hyperband": ("tpe", "hyperband"),
    }
    out = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        base = load_sweep(ROOT / "sweeps/default.yaml", overrides)
        url = f"sqlite:///{tmp}/s.db"
        for label, (sampler, pruner) in strategies.items():
            sweep = dataclasses.replace(
                base,
                study=dataclasses.replace(base.study, name=label.replace(" ", "_"), sampler=sampler, pruner=pruner),
            )
            start = time.perf_counter()
            with contextlib.redirect_stdout(io.StringIO()):
                run_and_show(sweep, make_target(sweep), url)
            wall = time.perf_counter() - start
            trials = optuna.load_study(study_name=sweep.study.name, storage=url).get_trials()
            finished = [t for t in trials if t.value is not None]
            best = max(finished, key=lambda t: t.value if t.state.name == "COMPLETE" else -1)
            until = [t for t in trials if t.number <= best.number]
            out[label] = {
                "trials": len(trials),
                "pruned": sum(t.state.name == "PRUNED" for t in trials),
                "epochs": sum(len(t.intermediate_values) for t in trials),
                "wall_s": wall,
                "best_value": best.value,
                "best_variant": best.user_attrs.get("variant"),
                "epochs_to_best": sum(len(t.intermediate_values) for t in until),
                "s_to_best": (best.datetime_complete - trials[0].datetime_start).total_seconds(),
            }
            print(f"sweep {label}: {json.dumps(out[label])}", file=sys.stderr, flush=True)
    return out


# --- options ---------------------------------------------------------------------------------------------------


def bench_options(device: torch.device, quick: bool) -> dict:
    from ablate.run.fit import run

    variants = {
        "default": {},
        "bf16-mixed": {"trainer.precision": "bf16-mixed"},
        "channels_last": {"model.channels_last": "true"},
        "compile": {"model.compile": "true"},
    }
    n = 160 if quick else 320  # 20 / 40 steps: the median step is past compilation
    steps = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        for _ in range(1 if quick else 2):
            for name, extra in variants.items():
                cfg = small_config(
                    device, quick, **{"data.train_size": n, "trainer.max_epochs": 1, "data.val_size": 8, **extra}
                )
                steps[name].append(run(cfg, Path(tmp) / f"{name}{time.time_ns()}")["time/train_step_s"])
    med = {name: statistics.median(v) for name, v in steps.items()}
    return {name: {"step_s": s, "vs_default": s / med["default"]} for name, s in med.items()}


# --- report ----------------------------------------------------------------------------------------------------


def show(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    console.print(f"[bold]{results['device']}[/] · torch {results['torch']} · {results['quick'] and 'quick' or 'full'}")
    if "necks" in results:
        t = Table(title="neck forward+backward: ours vs the libraries (same config, same parameter count)")
        for col in (
            "batch×side",
            "params",
            "ms ablate",
            "ms smp",
            "ms tv",
            "time /smp",
            "time /tv",
            "mem /smp",
            "mem /tv",
        ):
            t.add_column(col, justify="right")
        for r in results["necks"]["cases"]:
            t.add_row(
                f"{r['batch']}×{r['side']}",
                f"{r['params']:,}",
                f"{r['ms/ablate']:.1f}",
                f"{r['ms/smp']:.1f}",
                f"{r['ms/torchvision']:.1f}",
                f"{r['time ablate/smp']:.3f}",
                f"{r['time ablate/torchvision']:.3f}",
                f"{r['memory ablate/smp']:.3f}",
                f"{r['memory ablate/torchvision']:.3f}",
            )
        console.print(t)
        console.print(
            f"median time ratio: aspp_vs_smp {results['necks']['aspp_vs_smp']:.3f}, "
            f"aspp_vs_torchvision {results['necks']['aspp_vs_torchvision']:.3f}"
        )
    if "overhead" in results:
        o = results["overhead"]
        console.print(
            f"one trial ({o['steps']} steps + validation): ablate {o['s/ablate']:.1f} s, plain loop "
            f"{o['s/plain']:.1f} s, overhead_vs_plain {o['overhead_vs_plain']:.3f}"
        )
        a, b = o["parts/ablate"], o["parts/plain"]
        console.print(
            "  parts, ablate vs plain: "
            + ", ".join(
                f"{k} {a[k]:.2f} / {b.get(k, 0.0):.2f} s ({(a[k] - b.get(k, 0.0)) / o['s/plain']:+.1%})" for k in a
            )
        )
    if "peak" in results:
        p = results["peak"]
        console.print(
            f"training step: {p['step_flops'] / 1e9:.2f} GFLOP in {p['step_s'] * 1000:.1f} ms = "
            f"{p['achieved_flops'] / 1e9:.1f} GFLOP/s; peak {p['peak_flops'] / 1e9:.1f} GFLOP/s "
            f"({p['peak_kernel']}); share_of_peak {p['share_of_peak']:.3f}"
        )
        console.print("  kernels: " + ", ".join(f"{k} {v / 1e9:.0f}" for k, v in p["kernels"].items()) + " GFLOP/s")
        t = Table(title="where the step's time goes (profiler, self time)")
        for col in ("op", "time share", "share of peak"):
            t.add_column(col, justify="right" if col != "op" else "left")
        for r in p["slowest_ops"]:
            t.add_row(
                r["op"][:60],
                f"{r['time share']:.1%}",
                f"{r['share_of_peak']:.3f}" if "share_of_peak" in r else "no matmul FLOPs",
            )
        console.print(t)
    if "data" in results:
        d = results["data"]
        line = (
            f"data: generated {d['generate_images_per_s']:.0f} images/s, loader {d['loader_images_per_s']:.0f} images/s"
        )
        if "loader_vs_step" in d:
            line += f", the step consumes {d['step_images_per_s']:.0f}/s: loader_vs_step {d['loader_vs_step']:.1f}x"
        console.print(line)
    if "sweep" in results:
        t = Table(title="sweep efficiency on the default sweep's space (scaled down)")
        for col in (
            "strategy",
            "trials",
            "pruned",
            "epochs",
            "wall s",
            "best mIoU",
            "epochs to best",
            "s to best",
            "best variant",
        ):
            t.add_column(col, justify="left" if col in ("strategy", "best variant") else "right")
        for label, r in results["sweep"].items():
            t.add_row(
                label,
                str(r["trials"]),
                str(r["pruned"]),
                str(r["epochs"]),
                f"{r['wall_s']:.0f}",
                f"{r['best_value']:.4f}",
                str(r["epochs_to_best"]),
                f"{r['s_to_best']:.0f}",
                r["best_variant"],
            )
        console.print(t)
    if "options" in results:
        console.print(
            "training step with options: "
            + ", ".join(
                f"{k} {v['step_s'] * 1000:.1f} ms ({v['vs_default']:.2f}x)" for k, v in results["options"].items()
            )
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer cases and repeats: a few minutes on 2 CPU cores")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--out", default="benchmarks/results.json")
    p.add_argument("--skip", default="", help=f"comma-separated sections to leave out: {', '.join(SECTIONS)}")
    args = p.parse_args()
    skip = {s for s in args.skip.split(",") if s}
    if skip - set(SECTIONS):
        p.error(f"--skip {args.skip!r}: sections are {', '.join(SECTIONS)}")
    warnings.filterwarnings("ignore")
    logging.getLogger("lightning").setLevel(logging.ERROR)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{platform.processor() or 'CPU'}"
    results = {
        "device": f"{device.type}: {name}, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "quick": args.quick,
    }
    if "necks" not in skip:
        results["necks"] = bench_necks(device, args.quick)
    if "overhead" not in skip:
        results["overhead"] = bench_overhead(device, args.quick)
    if "peak" not in skip:
        results["peak"] = bench_peak(device, args.quick)
    if "data" not in skip:
        results["data"] = bench_data(device, args.quick, results.get("peak", {}).get("step_s"))
    if "sweep" not in skip:
        results["sweep"] = bench_sweep(args.quick)
    if "options" not in skip:
        results["options"] = bench_options(device, args.quick)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2, default=str))
    show(results)
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()

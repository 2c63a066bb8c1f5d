"""What a model costs: parameters (total and of its necks), GFLOPs and batch-1 forward latency at the size of
the first validation image, as the tables of DeepLabv3 (Chen et al. 2017) and its ablations report them."""

from __future__ import annotations

import time
from collections.abc import Sequence

import lightning as L
import torch
import torch.nn as nn

from ablate.callbacks.convention import ConventionCallback, Misfit, log_metrics, split_batch
from ablate.callbacks.necks import find_necks


def count_params(module: nn.Module) -> int:
    """Number of parameters of `module`."""
    return sum(p.numel() for p in module.parameters())


def count_gflops(model: nn.Module, shape) -> float:
    """GFLOPs (2 x multiply-adds, `torch.utils.flop_counter`) of one forward pass on zeros of `shape`, eval mode;
    an int `shape` is a (1, 3, S, S) image."""
    from torch.utils.flop_counter import FlopCounterMode

    shape = (1, 3, shape, shape) if isinstance(shape, int) else tuple(shape)
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(shape, device=next(model.parameters()).device))
    model.train(was_training)
    return counter.get_total_flops() / 1e9


def measure_latency_ms(model: nn.Module, shape, repeats: int = 10) -> float:
    """Median wall time (ms) of a forward pass on zeros of `shape` (an int: (1, 3, S, S)) in eval mode on the
    model's device, after 3 warm-up passes. On the CPU on one thread, as sweep workers train: a batch-1 forward
    spread over threads whose cores are busy (a sweep training beside `ablate.table`) waits on them, 448 ms
    against 7 ms on one thread for the default model on a busy 2-core machine (2026-12-05)."""
    device = next(model.parameters()).device
    x = torch.zeros((1, 3, shape, shape) if isinstance(shape, int) else tuple(shape), device=device)
    was_training, threads = model.training, torch.get_num_threads()
    model.eval()
    if device.type == "cpu":
        torch.set_num_threads(1)
    times = []
    try:
        with torch.no_grad():
            for i in range(repeats + 3):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
                model(x)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if i >= 3:
                    times.append((time.perf_counter() - start) * 1000)
    finally:
        torch.set_num_threads(threads)
        model.train(was_training)
    return sorted(times)[len(times) // 2]


class Efficiency(ConventionCallback):
    """`params/total`, `params/neck` (summed over the necks `find_necks` finds: ablate's by type, ASPP-like modules
    by structure, modules marked `ablate_neck = True`; absent when there is none), `gflops` of a batch-1 forward at
    the first validation image's shape (logged once) and, when fit ends on rank 0, `latency_ms` there. `necks`:
    dotted paths of the modules to count instead of those found (as NeckAnalysis's `necks`)."""

    def __init__(self, dirpath: str | None = None, strict: bool = True, necks: Sequence[str] | None = None):
        super().__init__(dirpath, strict)
        self.shape, self.numbers, self.necks = None, {}, list(necks) if necks else None

    def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx: int, dataloader_idx: int = 0):
        if not self.active or self.shape is not None:
            return
        try:
            image, _ = split_batch(batch)
        except Misfit as e:
            return self.left_out(str(e))
        self.shape = (1, *image.shape[1:])  # (1, C, H, W)
        try:
            gflops = count_gflops(module, self.shape)
        except Exception as e:  # a forward that cannot run on one image of that shape
            return self.left_out(f"forward on one {tuple(self.shape)} image fails: {type(e).__name__}: {e}")
        necks = find_necks(module, image, self.necks).values()
        self.numbers = {"params/total": count_params(module), "gflops": gflops}
        if necks:
            self.numbers["params/neck"] = sum(count_params(n) for n in necks)
        log_metrics(trainer, self.numbers)  # not during the sanity check: then at the start of training

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        log_metrics(trainer, self.numbers)  # after the sanity check that measured them

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if self.active and self.shape is not None and trainer.is_global_zero:
            self.numbers["latency_ms"] = measure_latency_ms(module, self.shape)
            log_metrics(trainer, {"latency_ms": self.numbers["latency_ms"]})

    def summary(self) -> dict[str, float]:
        """params/total, params/neck, gflops, and latency_ms once fit has ended."""
        return dict(self.numbers)

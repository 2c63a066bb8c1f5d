"""Which GPUs each `--workers N` worker sees (its share, by CUDA_VISIBLE_DEVICES); how many `--workers auto` starts."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from ablate.errors import ConfigError

GPU_NAME = re.compile(r"\d+|(GPU|MIG)-[0-9A-Za-z-]+")  # an index as nvidia-smi numbers it, or a UUID


def visible_gpus() -> list[str]:
    """The GPUs this machine lets us use: $CUDA_VISIBLE_DEVICES when it is set, else 0..device_count-1."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        gpus = []
        for name in (g.strip() for g in env.split(",")):
            if not GPU_NAME.fullmatch(name):  # CUDA stops at the first entry it cannot read ("-1": none)
                break
            gpus.append(name)
        return gpus
    import torch  # only here: a CPU-only command never needs it for this

    return [str(i) for i in range(torch.cuda.device_count())]


def parse_gpus(text: str, visible: list[str]) -> list[str]:
    """`--gpus 0,1,2,3` -> ['0', '1', '2', '3'], each one of `visible`, none twice."""
    gpus = [g.strip() for g in text.split(",")]
    where = (
        f"visible GPUs: {','.join(visible)}"
        if visible
        else "no GPU is visible here ($CUDA_VISIBLE_DEVICES is unset or empty and torch finds no CUDA device)"
    )
    for g in gpus:
        if not GPU_NAME.fullmatch(g) or g not in visible:
            raise ConfigError(f"--gpus {text}: {g!r} is not a visible GPU; {where}")
    if len(set(gpus)) < len(gpus):
        raise ConfigError(
            f"--gpus {text}: a GPU is named twice; give each once (workers share GPUs by themselves "
            "when there are more workers than GPUs)"
        )
    return gpus


def assign_gpus(workers: int, gpus: list[str], per_trial: int) -> list[str]:
    """Each worker's CUDA_VISIBLE_DEVICES value: `per_trial` GPUs each (its DDP ranks), none shared, when
    workers * per_trial <= len(gpus); with one GPU a trial and more workers than GPUs, round-robin (packed)."""
    if per_trial > len(gpus) or (per_trial > 1 and workers * per_trial > len(gpus)):
        raise ConfigError(
            f"--workers {workers} with trainer.devices={per_trial} needs {workers * per_trial} GPUs, and "
            f"{len(gpus)} are chosen ({','.join(gpus)}): use --workers {max(1, len(gpus) // per_trial)}, or "
            "trainer.devices=1 to pack several workers on each GPU"
        )
    if per_trial == 1:
        return [gpus[i % len(gpus)] for i in range(workers)]
    return [",".join(gpus[i * per_trial : (i + 1) * per_trial]) for i in range(workers)]


def trial_devices(sweep) -> int | None:
    """GPUs one trial trains on (`trainer.devices`; 'auto' or -1 = its whole share: 1 here), or None when the
    trial does not train on GPUs (`trainer.accelerator=cpu`)."""
    if isinstance(sweep.base, dict):
        trainer = sweep.base.get("trainer") or {}
    else:  # a LightningCLI project: its config file's trainer section
        trainer = (yaml.safe_load(Path(sweep.base).read_text()) or {}).get("trainer") or {}
    if trainer.get("accelerator") == "cpu":
        return None
    devices = trainer.get("devices", "auto")
    if isinstance(devices, list):
        return len(devices)
    if isinstance(devices, str) and devices.isdigit():
        devices = int(devices)
    return devices if isinstance(devices, int) and devices > 0 else 1


def plan_gpus(workers: int, chosen: str | None, sweep) -> list[str] | None:
    """Each worker's CUDA_VISIBLE_DEVICES value, or None: no GPU here, `--gpus none`, a CPU trainer, or one
    worker without `--gpus` (it keeps what it was given). Errors come before anything trains."""
    if chosen == "none" or (chosen is None and workers == 1) or "ABLATE_WORKER" in os.environ:
        return None  # a worker process itself keeps the GPUs it was started with
    per_trial = trial_devices(sweep)
    visible = visible_gpus()
    if per_trial is None:
        if chosen is not None:
            raise ConfigError(f"--gpus {chosen}: the trials train on the CPU (trainer.accelerator=cpu)")
        return None
    gpus = parse_gpus(chosen, visible) if chosen is not None else visible
    return assign_gpus(workers, gpus, per_trial) if gpus else None


# --- `--workers auto` ----------------------------------------------------------------------------------------

GIB = 2**30
PROCESS_GPU_BYTES = GIB  # a worker's own share of a GPU before any tensor: CUDA context, cuDNN and cuBLAS handles
PROCESS_CPU_BYTES = GIB // 2  # a forked worker's own memory beyond what it shares with the command
UNKNOWN_TRIAL_BYTES = 4 * GIB  # a target that cannot estimate its trial (a user's LightningCLI project)


def gpu_free_bytes(gpus: list[str]) -> dict[str, int]:
    """Free memory of each of `gpus` (indices or UUIDs) by nvidia-smi, which leaves CUDA untouched here;
    {} when nvidia-smi is missing or fails."""
    if not shutil.which("nvidia-smi"):
        return {}
    query = ["nvidia-smi", "--query-gpu=index,uuid,memory.free", "--format=csv,noheader,nounits"]
    done = subprocess.run(query, capture_output=True, text=True)
    if done.returncode != 0:
        return {}
    free = {}
    for line in done.stdout.strip().splitlines():
        index, uuid, mib = (field.strip() for field in line.split(","))
        free[index] = free[uuid] = int(mib) * 2**20
    return {g: free[g] for g in gpus if g in free}


def available_bytes() -> int | None:
    """Memory the system can give without swapping (MemAvailable of /proc/meminfo), and in a SLURM task no more
    than its allocation (--mem); None where unknown."""
    from ablate.study.slurm import allocated_bytes

    free, limit = None, allocated_bytes()
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                free = int(line.split()[1]) * 1024
    except OSError:
        pass
    return min(free, limit) if free and limit else free or limit


def auto_workers(sweep, trial_bytes: int | None, chosen: str | None, cores: int) -> tuple[int, str]:
    """`--workers auto`: (N, why): as many workers as the trials to run, the CPU cores (one each) and the memory
    allow: with GPUs, the trials that fit in their free memory; without, in the system's."""
    todo = max(1, sweep.n_trials)
    per_trial = trial_devices(sweep)
    gpus = [] if chosen == "none" or per_trial is None else visible_gpus()
    gpus = parse_gpus(chosen, gpus) if gpus and chosen else gpus
    if gpus and per_trial > 1:
        return max(1, len(gpus) // per_trial), f"{len(gpus)} GPU(s), trainer.devices={per_trial} a trial"
    known = trial_bytes is not None
    need = trial_bytes if known else UNKNOWN_TRIAL_BYTES
    how = f"~{need / GIB:.2f} GiB a trial" + ("" if known else " (assumed: this target gives no estimate)")
    if gpus:
        free = gpu_free_bytes(gpus)
        fits = sum(f // (need + PROCESS_GPU_BYTES) for f in free.values()) if free else len(gpus)
        room = ", ".join(f"GPU {g} {f / GIB:.1f} GiB free" for g, f in free.items()) or "free memory unknown"
        why = f"{len(gpus)} GPU(s) ({room}) fit {fits} trials ({how} + {PROCESS_GPU_BYTES / GIB:.0f} GiB a process)"
    else:
        avail = available_bytes()
        fits = avail // (need + PROCESS_CPU_BYTES) if avail else cores
        why = f"no GPU here, so on the CPU: one worker a core; memory fits {fits} ({how})"
    n = max(1, min(todo, cores, fits))
    return n, f"{why}; {cores} CPU core(s), {todo} trial(s) to run"

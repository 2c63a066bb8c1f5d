"""What a trial fits: a target turns a trial's values plus a seed into one fitted run and its metric.

The study engine (`ablate.study.engine`) knows storage, workers, seeds, signals, failures, pruning and W&B naming,
and nothing of segmentation; it asks a target for four things:

- `metric`: the logged metric a trial optimizes; a run's objective is its best value over validation epochs.
- `config(params) -> dict`: the resolved run config of a trial's values (plain data; ConfigError when bad).
- `check()`: everything that can be checked before the first trial (data on disk, imports).
- `fit(config, seed, output, callbacks=..., wandb_run=...) -> dict`: one run with `seed`, its folder `output`,
  the engine's callbacks (pruning, interrupt) added to the run's own, one W&B run named by `wandb_run` (None:
  no W&B run, as on DDP ranks > 0). The summary holds at least `metric` (last epoch) and `metric + "_best"`.

ablate's own model is `ablate.study.builtin.BuiltinTarget`; a user's LightningCLI project is the other target.
"""

from __future__ import annotations

from ablate.errors import ConfigError
from ablate.study.space import SweepConfig, probes, validate_sweep


def make_target(sweep: SweepConfig):
    """The target of `sweep`, with the sweep, its base config (the target's own construction parses it: an error
    names the base, not a space value) and then every value its space can produce checked."""
    validate_sweep(sweep)
    if sweep.cli:
        from ablate.study.lightning_cli import LightningCLITarget

        target = LightningCLITarget(sweep)
    else:
        from ablate.study.builtin import BuiltinTarget

        target = BuiltinTarget(sweep)
    for params in probes(sweep.space):
        try:
            target.config(params)
        except ConfigError as e:  # named by the space key and value that made it, unless it says so itself
            ((key, value),) = params.items()
            raise ConfigError(e if key in str(e) else f"space: {key}={value!r}: {e}") from None
    return target

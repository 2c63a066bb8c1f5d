"""Writes the generated parts of the docs from the code and the measurements, so they cannot drift from them.

    python docs/gen_reference.py           # rewrite every generated region in docs/
    python docs/gen_reference.py --check   # exit 1, naming the page, when one differs (tests/test_docs.py runs this)

A generated region of a page sits between `<!-- begin generated: NAME -->` and `<!-- end generated: NAME -->`;
the prose around it is written by hand. The regions:

- `commands`: every command's options, read from its own argparse parser (the parser `main()` builds, taken at
  `ablate.cli.parse` before anything runs);
- `config`, `necks`: every run-config key from the dataclasses of `ablate.config` (type, default, the comment
  beside the field, an example that `load_config` accepts), every registered neck's options from the registry;
- `sweep`, `study`, `space`, `slurm`, `experiment`: the sweep-file keys (`ablate.study.space.SWEEP_KEYS`,
  `StudyConfig`, the space forms, `ablate.study.slurm.SLURM_KEYS`) and an experiment file's (`ablate.reproduce.KEYS`);
- `figures`: every measured figure, from `benchmarks/results/figures.yaml` and the JSON files it points into.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import io
import json
import re
import sys
import tokenize
import typing
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
FIGURES = ROOT / "benchmarks" / "results" / "figures.yaml"
PAGES = {  # page -> the regions it holds
    "reference/commands.md": ["commands"],
    "reference/config.md": ["config", "necks"],
    "reference/sweep-file.md": ["sweep", "study", "space", "slurm", "experiment"],
    "performance.md": ["figures", "run_py", "sweep_efficiency", "startup", "until_decided", "race"],
}

# Descriptions the code has no comment for (or whose comment is written for a reader of the code); a field of the
# dataclasses without one here or in the source is an error, and so is an entry here for a field that is gone.
CONFIG_DOCS = {
    "data.name": "shapes (the built-in synthetic data), or files under `root`: voc, cityscapes, ade20k, folder",
    "model.encoder": "the smp encoder (any name smp lists, or `tu-<timm model>`)",
    "model.neck": "the neck: `{name: ..., <its options>}`; the options of each neck are listed below",
    "model.output_stride": "8, 16 or 32: the encoder's stride at the feature the neck reads",
    "data.root": "the dataset's folder (files are read from it; nothing is downloaded)",
    "data.batch_size": "images a batch (per device)",
    "data.num_workers": "DataLoader worker processes (data read from files)",
    "data.val_size": "synthetic data only: validation images",
    "data.val_split": "files: the validation split; null = the dataset's standard (voc: val)",
    "optim.lr": "learning rate",
    "optim.weight_decay": "weight decay",
    "optim.poly_power": "the power of the poly schedule",
    "wandb.project": "the W&B project",
    "wandb.entity": "the W&B entity (user or team); null = W&B's default",
    "wandb.dir": "W&B's files go to `<dir>/wandb/`",
    "model": "the network: encoder, neck, head",
    "data": "the data and its loader",
    "trainer": "passed to `lightning.Trainer` as it is; any Trainer argument but `logger`, `callbacks` and "
    "`default_root_dir`, which ablate sets",
    "optim": "optimizer and schedule",
    "seed": "`seed_everything(seed, workers=True)`: the same config and seed on the CPU give the same numbers",
    "wandb": "Weights & Biases logging",
    "imports": "modules imported before the config is checked, e.g. a package whose `@register_neck` necks it uses",
}
CONFIG_EXAMPLES = {  # every one is checked by tests/test_docs.py with load_config(None, example.split())
    "model.encoder": "model.encoder=resnet34",
    "model.encoder_weights": "model.encoder_weights=imagenet",
    "model.encoder_depth": "model.encoder_depth=5",
    "model.output_stride": "model.output_stride=16",
    "model.neck": "'model.neck={name: ppm, out_channels: 64}'",
    "model.head": "model.head=deeplabv3plus",
    "model.classes": "model.classes=7",
    "model.strict": "model.strict=true",
    "model.channels_last": "model.channels_last=true",
    "model.compile": "model.compile=true",
    "data.name": "data.name=folder data.root=my_data",
    "data.root": "data.name=voc data.root=/data/pascal",
    "data.image_size": "data.image_size=64",
    "data.batch_size": "data.batch_size=16",
    "data.num_workers": "data.num_workers=4",
    "data.train_size": "data.train_size=256",
    "data.val_size": "data.val_size=64",
    "data.seed": "data.seed=1",
    "data.shape_kinds": "data.shape_kinds=1",
    "data.classes": "data.name=folder data.classes=[background,cat,dog]",
    "data.train_split": "data.name=voc data.train_split=train",
    "data.val_split": "data.name=ade20k data.val_split=validation",
    "data.scale_range": "data.scale_range=[0.75,1.5]",
    "data.hflip": "data.hflip=false",
    "data.jitter": "data.jitter=0.2",
    "data.val_mode": "data.name=cityscapes data.val_mode=slide",
    "data.on_device": "data.on_device=true",
    "trainer": "trainer.max_epochs=1 trainer.precision=bf16-mixed",
    "optim.name": "optim.name=sgd",
    "optim.lr": "optim.lr=0.007",
    "optim.weight_decay": "optim.weight_decay=0.0",
    "optim.momentum": "optim.name=sgd optim.momentum=0.95",
    "optim.schedule": "optim.schedule=cosine",
    "optim.poly_power": "optim.poly_power=1.0",
    "optim.fused": "optim.fused=true",
    "seed": "seed=3",
    "wandb.mode": "wandb.mode=online",
    "wandb.project": "wandb.project=necks",
    "wandb.entity": "wandb.entity=my-team",
    "wandb.dir": "wandb.dir=/scratch/me",
    "imports": "imports=[ablate.necks]",
}

SWEEP_DOCS = {  # SWEEP_KEYS: (type, default, what it is, example)
    "cli": (
        "str",
        "none: ablate's own model",
        "import path of a `LightningCLI` class (or subclass) that builds your project; a sweep file with `cli` "
        "sweeps that project, imported with the sweep file's folder on `sys.path`",
        "cli: lightning.pytorch.cli.LightningCLI",
    ),
    "base": (
        "str or mapping",
        "required with `cli`; else `{}` (ablate's defaults)",
        "with `cli`: a LightningCLI config file (`fit --config`); without: ablate's run config, a file or an inline "
        "mapping; paths are relative to the sweep file",
        "base: ../experiments/base.yaml",
    ),
    "overrides": (
        "list of str",
        "[]",
        "applied to `base` before any trial: dotted `key=value` (ablate's config keys, or the CLI's own keys and "
        "flags such as `--config=more.yaml` with `cli`)",
        "overrides: [trainer.max_epochs=6]",
    ),
    "metric": (
        "str",
        "val/mIoU",
        "the logged metric a trial optimizes: its best over the validation epochs, averaged over the seeds",
        "metric: val_loss",
    ),
    "callbacks": (
        "bool",
        "true",
        "with `cli`: add ablate's four callbacks (`ablate.callbacks`) to each run",
        "callbacks: false",
    ),
    "study": ("mapping", "see below", "the study's settings (the table below)", "study: {name: fusion, sampler: grid}"),
    "n_trials": (
        "int",
        "8",
        "the study-wide total of trials: running the command again resumes up to it (`--n-trials`)",
        "n_trials: 4",
    ),
    "seeds": ("list of int", "[0]", "the seeds each trial trains (`--seeds`)", "seeds: [0, 1, 2]"),
    "space": (
        "mapping",
        "required",
        "dotted key -> one of the forms in the table below; with `cli`, the CLI's own dotted keys",
        "space: {model.neck.fusion: {choices: [concat, sum]}}",
    ),
    "slurm": (
        "mapping",
        "{}",
        "sbatch settings for `--slurm N` (the table below)",
        "slurm: {partition: gpu, time: '4:00:00'}",
    ),
}
STUDY_DOCS = {
    "name": "the study's name: its folder `runs/<name>/` and its name in the storage (`--study`)",
    "direction": "maximize or minimize the metric; left out: inferred from the metric's name (losses and errors "
    "minimize)",
    "sampler": "tpe, grid, random or cmaes",
    "sampler_seed": "the sampler's seed",
    "pruner": "median, hyperband or none: stops a trial's first seed when its curve is behind",
    "max_seeds": "the most seeds a variant gets from `until_decided` or `race` (`--max-seeds`)",
    "margin": "points: a row whose interval of Δ lies inside ±margin is equivalent (TOST); none: no equivalence "
    "verdicts (`--margin`)",
    "alpha": "the verdicts' false-verdict rate (`--alpha`)",
    "until_decided": "after the planned trials, add seeds where a verdict against the baseline is open "
    "(`--until-decided`)",
    "race": "after the planned trials, race the variants to the best (`--race`)",
    "moderate": "the moderated t across rows; false: each row's own paired or Welch t (`--no-moderation`)",
    "workers": "workers this command forks: a count or auto (`--workers`)",
    "storage_timeout": "seconds a worker waits out a storage outage before it stops (`--storage-timeout`)",
}
STUDY_EXAMPLES = {
    "name": "fusion_long",
    "direction": "minimize",
    "sampler": "grid",
    "sampler_seed": 1,
    "pruner": "none",
    "heartbeat_interval": 60,
    "grace_period": 600,
    "margin": 1.0,
    "alpha": 0.01,
    "until_decided": True,
    "max_seeds": 6,
    "race": True,
    "storage_timeout": 900,
    "moderate": False,
    "workers": "auto",
}
SPACE_FORMS = [  # (form, what it draws, example); tests/test_docs.py loads each example
    (
        "{choices: [...]}",
        'one of the listed scalars (a list as a string: `"6,12,18"`)',
        '{choices: ["1,2,3", "2,4,6"]}',
    ),
    ("{low: L, high: H}", "a float in [L, H], or an int when both are ints", "{low: 0.0, high: 0.5}"),
    ("{low: L, high: H, log: true}", "a float on a log scale", "{low: 1.0e-4, high: 1.0e-2, log: true}"),
    ("{low: L, high: H, step: S}", "an int (or float) on a grid of step S", "{low: 16, high: 64, step: 16}"),
    (
        "{rates: K, low: L, high: H}",
        'K increasing distinct integers in [L, H], as `"a,b,c"`',
        "{rates: 3, low: 1, high: 15}",
    ),
]
SLURM_DOCS = {
    "partition": ("str", "the partition (`sbatch --partition`)", "gpu"),
    "time": ("quoted str", "the time limit of each task (`--time`)", "'4:00:00'"),
    "cpus_per_task": ("int", "CPUs each task gets (`--cpus-per-task`); its workers fit them", "8"),
    "gpus_per_task": ("int", "GPUs each task gets (`--gpus-per-task`)", "1"),
    "mem": ("str", "memory of each task (`--mem`)", "32G"),
    "account": ("str", "the account charged (`--account`)", "my-lab"),
    "setup": ("list of str", "shell lines each task runs first (modules, a venv)", "['module load cuda']"),
    "extra": ("list of str", "any other sbatch flag, as after `#SBATCH`", "['--qos=high']"),
}
EXPERIMENT_DOCS = {  # ablate.reproduce.KEYS
    "name": ("str", "the file's name", "the study's name"),
    "cli": ("str", "none", "as in a sweep file: rows then set the CLI's own keys"),
    "base": ("str", "base.yaml beside the file", "the run config (or the LightningCLI config) every row starts from"),
    "overrides": ("list of str", "[]", "applied to `base` first"),
    "metric": ("str", "val/mIoU", "the metric the table compares"),
    "direction": ("str", "inferred from the metric", "maximize or minimize"),
    "seeds": ("list of int", "[0]", "the seeds every row trains"),
    "tolerance": ("float", "0.01", "a row reproduces when its mean is within this of the reference's"),
    "baseline": ("str", "the best row", "the row every other is compared with"),
    "margin": ("float", "none", "points: equivalence verdicts (TOST) within ±margin"),
    "rows": ("mapping", "required", "row name -> `{dotted.key: value}` overrides of the base"),
}


def comments(cls) -> dict[str, str]:
    """field -> the comment on its line in `cls`'s source (`name: type = default  # comment`)."""
    import inspect

    out, source = {}, inspect.getsource(cls)
    lines = source.splitlines()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            m = re.match(r"\s*(\w+)\s*:", lines[tok.start[0] - 1])
            if m:
                out[m.group(1)] = tok.string.lstrip("#").strip()
    return out


def flow(value) -> str:
    """`value` as YAML flow text: null, [0.5, 2.0], {max_epochs: 12}."""
    text = yaml.safe_dump(value, default_flow_style=True, width=1000).strip()
    return text.removesuffix("...").strip()


def cell(text) -> str:
    """Text safe inside a Markdown table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def code(text) -> str:
    return f"`{text}`" if text != "" else ""


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(map(cell, r)) + " |" for r in rows)])


def default_of(f: dataclasses.Field):
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def config_fields() -> list[tuple[str, str, object, str]]:
    """(dotted key, type, default, description) of every run-config key, sections first."""
    from ablate.config import RunConfig

    hints, notes, out = typing.get_type_hints(RunConfig), comments(RunConfig), []
    for f in dataclasses.fields(RunConfig):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            out.append((f.name, "section", None, CONFIG_DOCS.get(f.name) or notes.get(f.name, "")))
            inner = comments(kind)
            for g in dataclasses.fields(kind):
                key = f"{f.name}.{g.name}"
                out.append((key, str(g.type), default_of(g), CONFIG_DOCS.get(key) or inner.get(g.name, "")))
        else:
            out.append((f.name, str(f.type), default_of(f), CONFIG_DOCS.get(f.name) or notes.get(f.name, "")))
    return out


def region_config() -> str:
    rows = []
    for key, kind, default, what in config_fields():
        shown = "" if kind == "section" else code(flow(default))
        rows.append([code(key), kind, shown, what, code(CONFIG_EXAMPLES.get(key, ""))])
    return table(["key", "type", "default", "what it is", "example (an override)"], rows)


def region_necks() -> str:
    from ablate.necks import list_necks, neck_options
    from ablate.necks.registry import _NECKS

    builtin = [name for name in list_necks() if _NECKS[name].__module__.startswith("ablate.")]  # not a user's
    rows = [[code(name), ", ".join(f"`{k}={flow(v)}`" for k, v in neck_options(name).items())] for name in builtin]
    return table(["neck (`model.neck.name`)", "options (`model.neck.<option>`) and their defaults"], rows)


def region_sweep() -> str:
    from ablate.study.space import SWEEP_KEYS

    rows = [[code(k), SWEEP_DOCS[k][0], SWEEP_DOCS[k][1], SWEEP_DOCS[k][2], code(SWEEP_DOCS[k][3])] for k in SWEEP_KEYS]
    return table(["key", "type", "default", "what it is", "example"], rows)


def region_study() -> str:
    from ablate.study.space import StudyConfig

    notes, rows = comments(StudyConfig), []
    for f in dataclasses.fields(StudyConfig):
        example = f"study: {{{f.name}: {flow(STUDY_EXAMPLES[f.name])}}}"
        what = STUDY_DOCS.get(f.name) or notes.get(f.name, "")
        rows.append([code(f"study.{f.name}"), str(f.type), code(flow(f.default)), what, code(example)])
    return table(["key", "type", "default", "what it is", "example"], rows)


def region_space() -> str:
    rows = [[code(form), what, code(f"space: {{model.neck.rates: {ex}}}")] for form, what, ex in SPACE_FORMS]
    return table(["form", "draws", "example"], rows)


def region_slurm() -> str:
    from ablate.study.slurm import SLURM_KEYS

    rows = [
        [code(f"slurm.{k}"), SLURM_DOCS[k][0], SLURM_DOCS[k][1], code(f"slurm: {{{k}: {SLURM_DOCS[k][2]}}}")]
        for k in SLURM_KEYS
    ]
    return table(["key", "type", "what it is", "example"], rows)


def region_experiment() -> str:
    from ablate.reproduce import KEYS

    rows = [[code(k), *EXPERIMENT_DOCS[k]] for k in KEYS]
    return table(["key", "type", "default", "what it is"], rows)


class Captured(Exception):
    """Raised in place of parsing: carries the parser a command's `main()` built."""

    def __init__(self, parser):
        self.parser = parser


def command_parser(name: str) -> argparse.ArgumentParser:
    """The argparse parser `python -m ablate.<name>` builds, taken at `ablate.cli.parse`; nothing else runs."""
    from ablate import cli

    def capture(p, argv):
        raise Captured(p)

    real, cli.parse = cli.parse, capture
    try:
        importlib.import_module(f"ablate.{name}").main([])
    except Captured as got:
        return got.parser
    finally:
        cli.parse = real
    raise RuntimeError(f"ablate.{name}.main() returned without parsing its arguments")


def commands() -> tuple[str, ...]:
    from ablate.__main__ import COMMANDS

    return COMMANDS


def region_commands() -> str:
    parts = []
    for name in commands():
        p = command_parser(name)
        parts.append(f"### `python -m ablate.{name}`\n\n{(p.description or '').strip()}")
        rows = []
        for a in p._actions:
            if isinstance(a, argparse._HelpAction):
                continue
            flag = ", ".join(a.option_strings) or a.metavar or a.dest
            if a.option_strings and a.nargs != 0:
                flag += f" {a.metavar or a.dest.upper()}"
            choices = f" One of: {', '.join(map(str, a.choices))}." if a.choices else ""
            default = "" if a.default in (None, False, argparse.SUPPRESS) or not a.option_strings else code(a.default)
            rows.append([code(flag), (a.help or "") + choices, default])
        parts.append(table(["option", "what it does", "default"], rows))
    return "\n\n".join(parts)


def from_json(path: list) -> object:
    """The value at `path` = [file in benchmarks/results, key, key, ...]."""
    value = json.loads((FIGURES.parent / path[0]).read_text())
    for key in path[1:]:
        value = value[key]
    return value


def figure_value(fig: dict) -> str:
    if "json" in fig:
        value = from_json(fig["json"])
        return fig.get("format", "{}").format(value) + f" ([{fig['json'][0]}](../benchmarks/results/{fig['json'][0]}))"
    return str(fig["value"])


def region_figures() -> str:
    groups = yaml.safe_load(FIGURES.read_text())
    parts = []
    for group in groups:
        parts.append(f"### {group['group']}")
        rows = [
            [f["figure"], figure_value(f), f["machine"], str(f["date"]), str(f["commit"]), code(f["command"])]
            for f in group["figures"]
        ]
        parts.append(table(["figure", "value", "machine", "date", "commit", "command"], rows))
    return "\n\n".join(parts)


def results(name: str) -> dict:
    return json.loads((FIGURES.parent / name).read_text())


def link(name: str) -> str:
    return f"[{name}](../benchmarks/results/{name})"


def region_until_decided() -> str:
    mod, plain = results("until_decided.json"), results("until_decided-plain.json")
    rows = []
    for name, s in mod["scenarios"].items():
        u, p = s["until_decided"], plain["scenarios"][name]["until_decided"]
        fixed = (
            f"{u['matched_seeds']} seeds = {u['matched_runs']} runs" if u["matched_seeds"] else "(none can be right)"
        )
        ratio = f"**{u['ratio']:.2f}**" if u["ratio"] else ""
        p_ratio = f"{p['ratio']:.2f}, " if p["ratio"] else ""
        rows.append(
            [
                code(name),
                str(len(s["scenario"]["variants"]) - 1),
                f"{s['look_alpha']:.4f}",
                f"{u['runs']:.1f}",
                fixed,
                ratio,
                f"{u['false_per_comparison']:.4f} / {u['false_per_study']:.3f}",
                f"{p_ratio}{p['false_per_comparison']:.4f} / {p['false_per_study']:.3f}",
            ]
        )
    header = [
        "scenario",
        "rows",
        "α per look",
        "until-decided runs",
        "fixed design, same verdicts",
        "ratio",
        "false verdicts: a comparison / a study",
        "plain t: ratio, false a comparison / a study",
    ]
    return f"From {link('until_decided.json')} and {link('until_decided-plain.json')}.\n\n" + table(header, rows)


def region_race() -> str:
    mod, plain = results("race.json"), results("race-plain.json")
    rows = []
    for name, s in mod["scenarios"].items():
        r, p, grid = s["race"], plain["scenarios"][name]["race"], s["full_grid_runs"]
        rows.append(
            [
                code(name),
                f"{r['right']:.3f}",
                f"{r['runs']:.1f} / {grid} = **{r['ratio']:.2f}**",
                f"{p['right']:.3f}",
                f"{p['runs']:.1f} / {grid} = {p['ratio']:.2f}",
                str(s["matched_seeds"]),
                f"{s['pruner']['right']:.2f}, {s['pruner']['ratio']:.2f}",
            ]
        )
    header = [
        "scenario",
        "race, moderated: right",
        "runs / grid x 8",
        "race, --no-moderation: right",
        "runs / grid x 8",
        "fixed seeds as right as the race",
        "median pruner: right, runs",
    ]
    return f"From {link('race.json')} and {link('race-plain.json')}.\n\n" + table(header, rows)


def region_startup() -> str:
    d = results("startup-cpu.json")
    first, hour = d["first_step"], d["trials_hour"]
    rows = [
        [
            "first step, `--workers 1`",
            f"{first['old 1w']['first_s']:.1f} s",
            f"{first['new 1w']['first_s']:.1f} s",
            f"{first['new 1w']['first_s'] / first['old 1w']['first_s']:.2f}",
        ],
        [
            "first step, `--workers 2` (first worker / every worker)",
            f"{first['old 2w']['first_s']:.1f} s / {first['old 2w']['all_workers_s']:.1f} s",
            f"{first['new 2w']['first_s']:.1f} s / {first['new 2w']['all_workers_s']:.1f} s",
            f"**{first['new 2w']['first_s'] / first['old 2w']['first_s']:.2f} / "
            f"{first['new 2w']['all_workers_s'] / first['old 2w']['all_workers_s']:.2f}**",
        ],
        [
            "tiny trials/hour, `--workers 1`",
            f"{hour['old 1w']:.0f}",
            f"{hour['new 1w']:.0f}",
            f"{hour['new 1w'] / hour['old 1w']:.2f}",
        ],
        [
            "tiny trials/hour, `--workers 2`",
            f"{hour['old 2w']:.0f}",
            f"{hour['new 2w']:.0f}",
            f"**{hour['new 2w'] / hour['old 2w']:.2f}**",
        ],
    ]
    for key, shown in (
        ("all top-level imports", "`-X importtime`, one trial: all top-level imports"),
        ("ablate.results.stats", "... `ablate.results.stats` (statsmodels, at those commits) before the first step"),
    ):
        t = d["importtime"][key]
        rows.append([shown, f"{t['old_us'] / 1e6:.2f} s", f"{t['new_us'] / 1e6:.2f} s", ""])
    old = d["old"].split()[-1]
    header = ["", f"before ({old})", f"now ({d['new']})", "now / before"]
    note = f"From {link('startup-cpu.json')} ({d['machine']}, {d['date']})."
    return note + "\n\n" + table(header, rows)


def region_run_py() -> str:
    cpu, gpu = results("cpu-quick.json"), results("h100.json")

    def both(fn) -> list[str]:
        return [fn(cpu), fn(gpu)]

    rows = [
        [
            "`aspp_vs_smp` (time, fwd+bwd, same config and params)",
            *both(lambda d: f"**{d['necks']['aspp_vs_smp']:.3f}**"),
        ],
        ["`aspp_vs_torchvision`", *both(lambda d: f"**{d['necks']['aspp_vs_torchvision']:.3f}**")],
        [
            "`overhead_vs_plain` (one trial vs a hand loop)",
            *both(lambda d: f"**{d['overhead']['overhead_vs_plain']:.3f}** ({d['overhead']['steps']} steps)"),
        ],
        [
            "training step (base config, batch 8, 128 px)",
            *both(lambda d: f"{d['peak']['step_s'] * 1e3:.1f} ms = {d['peak']['achieved_flops'] / 1e9:,.0f} GFLOP/s"),
        ],
        [
            "best dense fp32 kernel",
            *both(lambda d: f"{d['peak']['peak_flops'] / 1e9:,.0f} GFLOP/s ({d['peak']['peak_kernel']})"),
        ],
        ["`share_of_peak`", *both(lambda d: f"**{d['peak']['share_of_peak']:.3f}**")],
        [
            "DataLoader images/s vs images/s the step consumes",
            *both(lambda d: f"{d['data']['loader_images_per_s']:,.0f} vs {d['data']['step_images_per_s']:,.0f}"),
        ],
    ]
    for option in ("bf16-mixed", "channels_last", "compile"):
        rows.append([f"step time: `{option}`", *both(lambda d, o=option: f"{d['options'][o]['vs_default']:.2f}x")])
    header = ["figure", f"{cpu['device']}, torch {cpu['torch']} (`--quick`)", f"{gpu['device']}, torch {gpu['torch']}"]
    return f"From {link('cpu-quick.json')} and {link('h100.json')}.\n\n" + table(header, rows)


def region_sweep_efficiency() -> str:
    d = results("h100-sweep.json")
    rows = [
        [
            name,
            str(s["trials"]),
            str(s["pruned"]),
            str(s["epochs"]),
            f"{s['wall_s']:.0f} s",
            f"{s['best_value']:.3f}",
            code(s["best_variant"]),
        ]
        for name, s in d["sweep"].items()
    ]
    header = ["strategy", "trials", "pruned", "epochs trained", "wall", "best mIoU found", "best variant"]
    return f"From {link('h100-sweep.json')} ({d['device']}, torch {d['torch']}).\n\n" + table(header, rows)


REGIONS = {
    "commands": region_commands,
    "config": region_config,
    "necks": region_necks,
    "sweep": region_sweep,
    "study": region_study,
    "space": region_space,
    "slurm": region_slurm,
    "experiment": region_experiment,
    "figures": region_figures,
    "until_decided": region_until_decided,
    "race": region_race,
    "startup": region_startup,
    "run_py": region_run_py,
    "sweep_efficiency": region_sweep_efficiency,
}


def render(text: str, names: list[str]) -> str:
    """`text` with each named region replaced by what the code generates now."""
    for name in names:
        begin, end = f"<!-- begin generated: {name} -->", f"<!-- end generated: {name} -->"
        if text.count(begin) != 1 or text.count(end) != 1:
            raise ValueError(f"region {name!r} needs one {begin} and one {end}")
        head, rest = text.split(begin)
        _, tail = rest.split(end)
        text = f"{head}{begin}\n{REGIONS[name]()}\n{end}{tail}"
    return text


def stale() -> list[str]:
    """The pages whose generated regions differ from what the code and the measurements give now."""
    return [
        page for page, names in PAGES.items() if render((DOCS / page).read_text(), names) != (DOCS / page).read_text()
    ]


def main(argv: list[str] | None = None) -> int:
    """Rewrite the generated regions, or with --check name the pages that differ (exit 1)."""
    p = argparse.ArgumentParser(description="the generated parts of docs/")
    p.add_argument("--check", action="store_true", help="write nothing; exit 1 when a page differs")
    if p.parse_args(argv).check:
        pages = stale()
        for page in pages:
            print(f"docs/{page}: its generated regions differ from the code; run python docs/gen_reference.py")
        return 1 if pages else 0
    for page, names in PAGES.items():
        (DOCS / page).write_text(render((DOCS / page).read_text(), names))
        print(f"wrote docs/{page}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

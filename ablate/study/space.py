"""Sweep files: a base run config, a search space over dotted config keys, and the study settings."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import yaml

from ablate.config import RunConfig, apply_overrides, with_defaults
from ablate.errors import ConfigError, check_choice, check_path_name, did_you_mean, read_yaml
from ablate.stats.directions import infer_direction
from ablate.study.cli_values import encode_lists
from ablate.study.slurm import check_section as check_slurm

DEFAULT_SWEEP = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"  # ships with the package

SAMPLERS = ("tpe", "grid", "random", "cmaes")
PRUNERS = ("median", "hyperband", "none")
SCALARS = (str, int, float, bool, type(None))
SWEEP_KEYS = ("cli", "base", "overrides", "metric", "callbacks", "study", "n_trials", "seeds", "space", "slurm")


@dataclass(frozen=True)
class StudyConfig:
    name: str = "default"
    direction: str = "maximize"
    sampler: str = "tpe"
    sampler_seed: int = 0
    pruner: str = "median"
    heartbeat_interval: int = 30  # seconds between a running trial's heartbeats in the storage
    grace_period: int = 120  # a trial silent this long is failed and queued again (its worker died)
    margin: float | None = None  # points: |Δ| below it is "equivalent" (TOST); None: no equivalence verdicts
    alpha: float = 0.05  # the verdicts' false-verdict rate (ablate.stats.verdicts)
    until_decided: bool = False  # after the planned trials, add seeds where a verdict is open (ablate.study.decide)
    max_seeds: int = 8  # ... up to this many seeds a variant
    race: bool = False  # after the planned trials, race the variants to the best (ablate.study.race)
    storage_timeout: int = 300  # seconds a worker waits out a storage outage before it stops (ablate.study.outage)
    moderate: bool = True  # the moderated t across rows (ablate.stats.moderated); false: the plain paired/Welch t
    workers: int | str = 1  # workers this command forks (--workers): a count, or "auto" (cores, GPUs, memory)


@dataclass(frozen=True)
class SweepConfig:
    base: dict | str  # built-in: the run config every trial starts from (nested, defaults filled in);
    # with `cli`: the absolute path of the LightningCLI config file (`fit --config`)
    space: dict  # dotted key -> {choices: [...]} | {low, high, log?, step?} | {rates: K, low, high}
    study: StudyConfig = field(default_factory=StudyConfig)
    n_trials: int = 8
    seeds: tuple = (0,)
    rows: dict = field(default_factory=dict)  # named variants (experiments): the `row` key picks one
    baseline: dict | None = None  # settings of the table's baseline row (None: the best row)
    cli: str | None = None  # import path of a user's LightningCLI (sub)class; None = ablate's own model
    overrides: tuple = ()  # with `cli`: jsonargparse overrides of `base` (built-in ones are applied to base)
    metric: str = "val/mIoU"  # the logged metric a trial optimizes (its best over validation epochs)
    folders: tuple = ()  # with `cli`: put on sys.path to import it (the sweep file's folder, the base config's)
    callbacks: bool = True  # with `cli`: add ablate.callbacks to each run (metrics, predictions, necks, costs)
    direction_inferred: bool = False  # the sweep file gave no study.direction: inferred from the metric's name

    def space_json(self) -> str:
        """The space, named rows and direction, canonical: what a stored study is compared against."""
        target = {"cli": self.cli, "metric": self.metric} if self.cli else {}  # built-in studies stay as stored
        return json.dumps(
            {"space": self.space, "rows": self.rows, "direction": self.study.direction, **target}, sort_keys=True
        )


def load_sweep(path: str | Path | None, overrides: list[str] = ()) -> SweepConfig:
    """Read a sweep file (None = the packaged default sweep); `overrides` apply to the base run config."""
    path = Path(path) if path else DEFAULT_SWEEP
    raw = read_spec(path, SWEEP_KEYS, "sweep file")
    check_slurm(f"{path}: ", raw.get("slurm"))  # read by `--slurm N` (ablate.study.slurm), checked on every load
    target = target_fields(path, raw, [*file_overrides(path, raw), *overrides])
    study = raw.get("study") or {}
    check_keys(study, [f.name for f in dataclasses.fields(StudyConfig)], f"{path}: study.")
    inferred = "direction" not in study  # a loss is minimized without saying so (ablate.stats.directions)
    if inferred:
        study = {**study, "direction": infer_direction(target.get("metric", "val/mIoU"))}
    seeds = raw.get("seeds", [0])
    sweep = SweepConfig(
        space=encode_lists(raw.get("space") or {}, bool(target.get("cli"))),
        study=StudyConfig(**study),
        direction_inferred=inferred,
        n_trials=raw.get("n_trials", 8),
        seeds=tuple(seeds) if isinstance(seeds, list) else seeds,
        **target,
    )
    validate_sweep(sweep)
    return sweep


def file_overrides(path: Path, raw: dict) -> list[str]:
    """The file's `overrides`: a list of `key=value` strings."""
    items = raw.get("overrides") or []
    if not isinstance(items, list) or not all(isinstance(o, str) for o in items):
        raise ConfigError(
            f"{path}: overrides must be a list of key=value strings, e.g. [trainer.max_epochs=2]; got {items!r}"
        )
    return items


def check_callbacks(path: Path, value) -> bool:
    """The `callbacks` key: true (default) or false."""
    if not isinstance(value, bool):
        raise ConfigError(f"{path}: callbacks must be true or false (add ablate.callbacks to each run); got {value!r}")
    return value


def target_fields(path: Path, raw: dict, overrides: list[str], default_base="") -> dict:
    """The SweepConfig fields that say what a sweep or experiment file trains: a user's LightningCLI project (`cli`,
    or a `metric` other than val/mIoU: its config file, jsonargparse overrides) or ablate's own model (the base run
    config with `overrides` applied); `default_base` when the file names no base."""
    base = raw.get("base", default_base)
    if raw.get("cli") or raw.get("metric", "val/mIoU") != "val/mIoU":  # a user's LightningCLI project
        base = cli_base(path, base)
        return {
            "cli": raw.get("cli") or "lightning.pytorch.cli.LightningCLI",
            "metric": raw.get("metric", "val/mIoU"),
            "base": str(base),
            "overrides": tuple(overrides),
            "folders": (str(path.resolve().parent), str(base.parent)),
            "callbacks": check_callbacks(path, raw.get("callbacks", True)),
        }
    if "callbacks" in raw:
        raise ConfigError(f"{path}: callbacks applies to a sweep with `cli` (ablate's own model always has them)")
    return {"base": load_base(path, base or {}, overrides)}


def write_sweep(
    path: str | Path, space: dict, *, base: str | Path | dict, overrides=(), n_trials: int = 8, seeds=(0,), **study
) -> Path:
    """Write a sweep file that `load_sweep` reads: `base` a run config file (or its contents), `overrides` dotted
    key=value strings applied to it, `study` keys of its study section (name, sampler, pruner, ...)."""
    spec = {
        "base": str(base) if isinstance(base, Path) else base,
        "overrides": list(overrides),
        "study": study,
        "n_trials": n_trials,
        "seeds": list(seeds),
        "space": space,
    }
    Path(path).write_text(yaml.safe_dump(spec, sort_keys=False))
    return Path(path)


def read_spec(path: Path, known: tuple[str, ...], what: str) -> dict:
    """A YAML mapping from `path` whose top-level keys are all in `known`."""
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist")
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping with keys {', '.join(known)}")
    check_keys(raw, known, f"{path}: ")
    return raw


def check_keys(raw: dict, known, where: str) -> None:
    """Unknown key -> an error naming it, the closest valid key and all valid keys."""
    for key in raw:
        if key not in known:
            raise ConfigError(f"{where}unknown key {key!r}{did_you_mean(key, known)}; valid: {', '.join(known)}")


def cli_base(path: Path, base) -> Path:
    """The LightningCLI config file a `cli` sweep names, relative to the sweep file, as an absolute path."""
    if not isinstance(base, str):
        raise ConfigError(
            f"{path}: base must name a LightningCLI config file (class_path/init_args, as `fit "
            f"--config` takes), relative to {path.name}; got {base!r}"
        )
    base_path = (path.resolve().parent / base).resolve()
    if not base_path.is_file():
        raise ConfigError(f"{path}: base config {base!r} does not exist (paths are relative to {path.name})")
    return base_path


def load_base(path: Path, base, overrides: list[str]) -> dict:
    """The base run config (a path relative to `path`, or a mapping), defaults filled, overrides applied."""
    if isinstance(base, str):
        base_path = path.resolve().parent / base  # beside the file itself (sweeps/default.yaml is a link)
        if not base_path.is_file():
            raise ConfigError(f"{path}: base config {base!r} does not exist (paths are relative to {path.name})")
        base = read_yaml(base_path) or {}
    if not isinstance(base, dict):
        raise ConfigError(
            f"{path}: base must be a run config file (relative to {path.name}) or a mapping; got {base!r}"
        )
    if signs := lightning_cli_signs(base):
        raise ConfigError(
            f"{path}: its base looks like a LightningCLI config ({', '.join(signs)}), not ablate's run config: "
            f"add `cli: lightning.pytorch.cli.LightningCLI` (or the import path of your LightningCLI subclass) to "
            f"{path.name} to sweep your project; without `cli` the base must be ablate's own run config"
        )
    return apply_overrides(with_defaults(RunConfig, base), overrides)


def lightning_cli_signs(config: dict) -> list[str]:
    """The keys that mark `config` as a LightningCLI config: a top-level `seed_everything`, and the first
    `class_path` / `init_args` found anywhere in it, as dotted keys; empty for ablate's own run config."""
    signs = ["seed_everything"] if "seed_everything" in config else []
    stack = [("", config)]
    while stack and len(signs) < 2:
        prefix, node = stack.pop(0)
        for key, value in node.items():
            if key in ("class_path", "init_args"):
                signs.append(f"{prefix}{key}")
                break
            items = value if isinstance(value, list) else [value]  # trainer.callbacks: a list of class_paths
            stack += [(f"{prefix}{key}.", item) for item in items if isinstance(item, dict)]
    return signs


def validate_sweep(sweep: SweepConfig) -> None:
    """Every setting and every value the space can produce is checked before anything trains."""
    s = sweep.study
    for key, value, choices in (
        ("study.sampler", s.sampler, SAMPLERS),
        ("study.pruner", s.pruner, PRUNERS),
        ("study.direction", s.direction, ("maximize", "minimize")),
    ):
        check_choice(key, value, choices)
    check_path_name("study.name (--study)", s.name)
    if s.workers != "auto" and (type(s.workers) is not int or s.workers < 1):
        raise ConfigError(f"study.workers (--workers) must be 1 or more, or auto; got {s.workers!r}")
    for key in ("heartbeat_interval", "grace_period", "storage_timeout"):
        if type(getattr(s, key)) is not int or getattr(s, key) < 1:
            raise ConfigError(f"study.{key} must be a positive number of seconds; got {getattr(s, key)!r}")
    check_verdict_settings(s)
    if s.grace_period <= s.heartbeat_interval:
        raise ConfigError(
            f"study.grace_period={s.grace_period} must be longer than study.heartbeat_interval="
            f"{s.heartbeat_interval}, or live trials would be taken for dead ones"
        )
    if not isinstance(sweep.n_trials, int) or isinstance(sweep.n_trials, bool) or sweep.n_trials < 1:
        raise ConfigError(f"n_trials must be a positive integer; got {sweep.n_trials!r}")
    check_seeds(sweep.seeds)
    if not isinstance(sweep.space, dict) or not sweep.space:
        raise ConfigError(
            "space must map dotted config keys to {choices: [...]}, {low: .., high: ..} or {rates: K, ..}; "
            f"got {sweep.space!r}"
        )
    for key, spec in sweep.space.items():
        _check_spec(key, spec)
    if s.sampler == "grid" and any("choices" not in spec for spec in sweep.space.values()):
        raise ConfigError("study.sampler=grid needs {choices: [...]} for every key of the space")


def check_seeds(seeds) -> None:
    """seeds (--seeds): a non-empty list of distinct integers in [0, 2**32) (what numpy's and torch's seeding take)."""
    ok = isinstance(seeds, tuple) and seeds and all(type(x) is int for x in seeds)
    if not ok or len(set(seeds)) < len(seeds) or any(not 0 <= x < 2**32 for x in seeds):
        shown = list(seeds) if isinstance(seeds, tuple) else seeds
        raise ConfigError(
            f"seeds (--seeds) must be distinct integers from 0 to 4294967295, e.g. [0, 1, 2]; got {shown!r}"
        )


def check_verdict_settings(s: StudyConfig) -> None:
    """study.margin (positive points or none), study.alpha (0 < α < 0.5), study.max_seeds (a positive integer),
    study.until_decided and study.race (true or false, not both)."""
    from ablate.stats.verdicts import check_margin

    try:
        check_margin(s.margin)
    except ValueError as e:
        raise ConfigError(f"study.margin (--margin): {e}") from None
    if isinstance(s.alpha, bool) or not isinstance(s.alpha, (int, float)) or not 0 < s.alpha < 0.5:
        raise ConfigError(f"study.alpha (--alpha) must be between 0 and 0.5, e.g. 0.05; got {s.alpha!r}")
    if type(s.max_seeds) is not int or s.max_seeds < 2:
        raise ConfigError(f"study.max_seeds (--max-seeds) must be an integer of 2 or more; got {s.max_seeds!r}")
    for key in ("until_decided", "race", "moderate"):
        if type(getattr(s, key)) is not bool:
            raise ConfigError(f"study.{key} must be true or false; got {getattr(s, key)!r}")
    if s.race and s.until_decided:
        raise ConfigError(
            "study.race (--race) and study.until_decided (--until-decided) both add seeds after the planned trials; "
            "choose one: --race to find the best variant (the others only until they are decided worse), "
            "--until-decided to decide every row against the baseline"
        )


SPEC_KEYS = ("choices", "low", "high", "log", "step", "rates")


def _check_spec(key: str, spec) -> None:
    """One space entry: {choices: [scalars]}, {low, high, log?, step?} of numbers, or {rates: K, low, high} of ints."""
    if not isinstance(spec, dict) or not ({"choices"} <= spec.keys() or {"low", "high"} <= spec.keys()):
        raise ConfigError(
            f"space.{key} must be {{choices: [...]}}, {{low: .., high: .., log: false}} "
            f"or {{rates: K, low: .., high: ..}}; got {spec!r}"
        )
    check_keys(spec, SPEC_KEYS, f"space.{key}: ")
    if "choices" in spec:
        return _check_choices(key, spec)
    number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)  # noqa: E731
    for name in ("low", "high", *(("step",) if "step" in spec else ())):
        if not number(spec[name]):
            raise ConfigError(f"space.{key}: {name} must be a finite number; got {spec[name]!r}")
    if "log" in spec and not isinstance(spec["log"], bool):
        raise ConfigError(f"space.{key}: log must be true or false; got {spec['log']!r}")
    if spec["low"] >= spec["high"]:
        raise ConfigError(f"space.{key}: low={spec['low']} must be below high={spec['high']}")
    if spec.get("log") and spec["low"] <= 0:
        raise ConfigError(f"space.{key}: a log range needs low > 0; got low={spec['low']}")
    if "step" in spec and spec["step"] <= 0:
        raise ConfigError(f"space.{key}: step must be positive; got {spec['step']!r}")
    if "rates" in spec:
        k, low, high = spec["rates"], spec["low"], spec["high"]
        if not all(type(v) is int for v in (k, low, high)) or not (1 <= k <= high - low + 1 and low >= 1):
            raise ConfigError(f"space.{key}: cannot draw {k!r} distinct positive integer rates from [{low}, {high}]")


def _check_choices(key: str, spec: dict) -> None:
    """{choices: [...]}: a non-empty list of scalars and nothing else."""
    choices = spec["choices"]
    if len(spec) > 1:
        raise ConfigError(f"space.{key}: choices take no other keys; got {sorted(set(spec) - {'choices'})}")
    if not isinstance(choices, list) or not choices:
        raise ConfigError(
            f"space.{key}: choices must be a non-empty list of values (two or more to compare); got {choices!r}"
        )
    for choice in choices:
        if not isinstance(choice, SCALARS) or (isinstance(choice, float) and not math.isfinite(choice)):
            raise ConfigError(
                f"space.{key}: choice {choice!r} is not a scalar; encode lists as strings, "
                f'e.g. "6,12,18" (Optuna stores categorical choices as scalars)'
            )
    if len(set(map(repr, choices))) < len(choices):
        raise ConfigError(f"space.{key}: choices repeat a value; got {choices!r}")


def space_notes(sweep: SweepConfig) -> list[str]:
    """Lines worth saying before a study starts: a key with one choice varies nothing; a grid smaller than n_trials
    runs its points again (each time on seeds its variant has not used)."""
    notes = [
        f"space.{key} has one choice ({_text(spec['choices'][0])}): nothing varies along it"
        for key, spec in sweep.space.items()
        if len(spec.get("choices", ())) == 1
    ]
    if sweep.study.sampler == "grid":
        points = math.prod(len(spec["choices"]) for spec in sweep.space.values())
        if sweep.n_trials > points:
            notes.append(
                f"the grid has {points} point(s) and n_trials is {sweep.n_trials}: points run again, each time on "
                "seeds their variant has not used"
            )
    return notes


def probes(space: dict) -> list[dict]:
    """One {key: value} per value the space can produce at its edges: every choice, each range's bounds, and the
    largest rates of a {rates: K} key. A target checks each before anything trains."""
    out = []
    for key, spec in space.items():
        if "choices" in spec:
            out += [{key: choice} for choice in spec["choices"]]
        elif "rates" in spec:
            out.append({key: ",".join(str(r) for r in range(spec["high"] - spec["rates"] + 1, spec["high"] + 1))})
        else:
            out += [{key: spec["low"]}, {key: spec["high"]}]
    return out


def suggest(trial: optuna.Trial, space: dict) -> dict:
    """Draw one value per dotted key; a {rates: K} key draws K increasing distinct rates."""
    params = {}
    for key, spec in space.items():
        if "choices" in spec:
            params[key] = trial.suggest_categorical(key, spec["choices"])
        elif "rates" in spec:
            k, low, high, rates = spec["rates"], spec["low"], spec["high"], []
            for i in range(k):
                lo = rates[-1] + 1 if rates else low
                rates.append(trial.suggest_int(f"{key}.{i}", lo, high - (k - 1 - i)))
            params[key] = ",".join(map(str, rates))
        elif isinstance(spec["low"], int) and isinstance(spec["high"], int) and not spec.get("log"):
            params[key] = trial.suggest_int(key, spec["low"], spec["high"], step=spec.get("step", 1))
        else:
            params[key] = trial.suggest_float(key, spec["low"], spec["high"], log=bool(spec.get("log")))
    return params


def variant_label(params: dict) -> str:
    """'model.neck.fusion=sum model.neck.rates=2,4,6': the varied settings, as dotted keys."""
    return " ".join(f"{k}={_text(v)}" for k, v in sorted(params.items()))


def _text(value) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def grid_choices(space: dict) -> dict:
    """The GridSampler's search space (every key has choices; checked by validate_sweep)."""
    return {key: list(spec["choices"]) for key, spec in space.items()}


def to_plain(sweep: SweepConfig) -> dict:
    """The resolved sweep as plain data (written next to the study's runs)."""
    target = (
        {"cli": sweep.cli, "metric": sweep.metric, "overrides": list(sweep.overrides), "callbacks": sweep.callbacks}
        if sweep.cli
        else {}
    )
    return {
        **target,
        "base": sweep.base,
        "space": sweep.space,
        "study": dataclasses.asdict(sweep.study),
        "n_trials": sweep.n_trials,
        "seeds": list(sweep.seeds),
    }

"""Sweep files: a base run config, a search space over dotted config keys, and the study settings."""
from __future__ import annotations

import dataclasses
import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path

import optuna
import yaml

from ablate.analysis import config_rate_message
from ablate.config import ConfigError, RunConfig, apply_overrides, from_dict, set_dotted, with_defaults

SAMPLERS = ("tpe", "grid", "random", "cmaes")
PRUNERS = ("median", "hyperband", "none")
SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class StudyConfig:
    name: str = "default"
    direction: str = "maximize"
    sampler: str = "tpe"
    sampler_seed: int = 0
    pruner: str = "median"
    heartbeat_interval: int = 30  # seconds between a running trial's heartbeats in the storage
    grace_period: int = 120  # a trial silent this long is failed and queued again (its worker died)


@dataclass(frozen=True)
class SweepConfig:
    base: dict  # the run config every trial starts from (nested, defaults filled in)
    space: dict  # dotted key -> {choices: [...]} | {low, high, log?, step?} | {rates: K, low, high}
    study: StudyConfig = field(default_factory=StudyConfig)
    n_trials: int = 8
    seeds: tuple = (0,)
    rows: dict = field(default_factory=dict)  # named variants (experiments): the `row` key picks one
    baseline: dict | None = None  # settings of the table's baseline row (None: the best row)

    def space_json(self) -> str:
        """The space, named rows and direction, canonical: what a stored study is compared against."""
        return json.dumps({"space": self.space, "rows": self.rows, "direction": self.study.direction},
                          sort_keys=True)


def load_sweep(path: str | Path | None, overrides: list[str] = ()) -> SweepConfig:
    """Read a sweep file (None = sweeps/default.yaml); `overrides` apply to the base run config."""
    path = Path(path) if path else Path(__file__).resolve().parent.parent / "sweeps" / "default.yaml"
    raw = read_spec(path, ("base", "overrides", "space", "study", "n_trials", "seeds"), "sweep file")
    base = load_base(path, raw.get("base") or {}, list(raw.get("overrides") or []) + list(overrides))
    study = raw.get("study") or {}
    check_keys(study, [f.name for f in dataclasses.fields(StudyConfig)], f"{path}: study.")
    seeds = raw.get("seeds", [0])
    sweep = SweepConfig(base=base, space=raw.get("space") or {}, study=StudyConfig(**study),
                        n_trials=raw.get("n_trials", 8), seeds=tuple(seeds) if isinstance(seeds, list) else seeds)
    validate_sweep(sweep)
    return sweep


def read_spec(path: Path, known: tuple[str, ...], what: str) -> dict:
    """A YAML mapping from `path` whose top-level keys are all in `known`."""
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} does not exist")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping with keys {', '.join(known)}")
    check_keys(raw, known, f"{path}: ")
    return raw


def check_keys(raw: dict, known, where: str) -> None:
    """Unknown key -> an error naming it, the closest valid key and all valid keys."""
    for key in raw:
        if key not in known:
            near = difflib.get_close_matches(str(key), known, n=1)
            raise ConfigError(f"{where}unknown key {key!r}{f' (did you mean {near[0]!r}?)' if near else ''}; "
                              f"valid: {', '.join(known)}")


def load_base(path: Path, base, overrides: list[str]) -> dict:
    """The base run config (a path relative to `path`, or a mapping), defaults filled, overrides applied."""
    if isinstance(base, str):
        base_path = path.parent / base
        if not base_path.is_file():
            raise ConfigError(f"{path}: base config {base!r} does not exist (paths are relative to {path.name})")
        base = yaml.safe_load(base_path.read_text()) or {}
    return apply_overrides(with_defaults(RunConfig, base), overrides)


def validate_sweep(sweep: SweepConfig) -> None:
    """Every setting and every value the space can produce is checked before anything trains."""
    s = sweep.study
    for key, value, choices in (("study.sampler", s.sampler, SAMPLERS), ("study.pruner", s.pruner, PRUNERS),
                                ("study.direction", s.direction, ("maximize", "minimize"))):
        if value not in choices:
            raise ConfigError(f"{key}={value!r} is not valid; choose one of {', '.join(map(repr, choices))}")
    for key in ("heartbeat_interval", "grace_period"):
        if type(getattr(s, key)) is not int or getattr(s, key) < 1:
            raise ConfigError(f"study.{key} must be a positive number of seconds; got {getattr(s, key)!r}")
    if s.grace_period <= s.heartbeat_interval:
        raise ConfigError(f"study.grace_period={s.grace_period} must be longer than study.heartbeat_interval="
                          f"{s.heartbeat_interval}, or live trials would be taken for dead ones")
    if not isinstance(sweep.n_trials, int) or isinstance(sweep.n_trials, bool) or sweep.n_trials < 1:
        raise ConfigError(f"n_trials must be a positive integer; got {sweep.n_trials!r}")
    seeds = sweep.seeds
    if not isinstance(seeds, tuple) or not seeds or any(type(x) is not int for x in seeds) or len(set(seeds)) < len(seeds):
        raise ConfigError(f"seeds must be a non-empty list of distinct integers, e.g. [0, 1, 2]; got {seeds!r}")
    if not isinstance(sweep.space, dict) or not sweep.space:
        raise ConfigError("space must map dotted config keys to {choices: [...]}, {low: .., high: ..} or {rates: K, ..}")
    from_dict(sweep.base)  # the base itself must be valid, whatever the space sets
    for key, spec in sweep.space.items():
        _validate_param(key, spec, sweep)
    if s.sampler == "grid" and any("choices" not in spec for spec in sweep.space.values()):
        raise ConfigError("study.sampler=grid needs {choices: [...]} for every key of the space")


def _validate_param(key: str, spec, sweep: SweepConfig) -> None:
    if not isinstance(spec, dict) or not ({"choices"} <= spec.keys() or {"low", "high"} <= spec.keys()):
        raise ConfigError(f"space.{key} must be {{choices: [...]}}, {{low: .., high: .., log: false}} "
                          f"or {{rates: K, low: .., high: ..}}; got {spec!r}")
    if "choices" in spec:
        for choice in spec["choices"]:
            if not isinstance(choice, SCALARS):
                raise ConfigError(f"space.{key}: choice {choice!r} is not a scalar; encode lists as strings, "
                                  f"e.g. \"6,12,18\" (Optuna stores categorical choices as scalars)")
            trial_config(sweep, {key: choice})  # raises ConfigError naming the key and value
    elif "rates" in spec:
        k, low, high = spec["rates"], spec["low"], spec["high"]
        if not (isinstance(k, int) and 1 <= k <= high - low + 1 and low >= 1):
            raise ConfigError(f"space.{key}: cannot draw {k!r} distinct rates from [{low}, {high}]")
        trial_config(sweep, {key: list(range(high - k + 1, high + 1))})
    else:
        for bound in (spec["low"], spec["high"]):
            trial_config(sweep, {key: bound})
        if spec["low"] >= spec["high"]:
            raise ConfigError(f"space.{key}: low={spec['low']} must be below high={spec['high']}")


def trial_config(sweep: SweepConfig, params: dict) -> RunConfig:
    """The run config of a trial: the base with each dotted key set (rates strings decoded to lists)."""
    raw = yaml.safe_load(yaml.safe_dump(sweep.base))
    for key, value in params.items():
        for k, v in (sweep.rows[value].items() if key == "row" and sweep.rows else [(key, value)]):
            set_dotted(raw, k, decode(k, v))
    cfg = from_dict(raw)
    _reject_degenerate(cfg, params)
    return cfg


def decode(key: str, value):
    """'6,12,18' -> [6, 12, 18] for a rates key; everything else as is."""
    if key.endswith("rates") and isinstance(value, str):
        try:
            return [int(r) for r in value.split(",")]
        except ValueError:
            raise ConfigError(f"{key}={value!r} is not a comma-separated list of integers like \"6,12,18\"") from None
    return value


def _reject_degenerate(cfg: RunConfig, params: dict) -> None:
    message = config_rate_message(cfg) if any(k.endswith("rates") for k in params) else None
    if message:
        raise ConfigError(f"space: {message}")


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
    return {"base": sweep.base, "space": sweep.space, "study": dataclasses.asdict(sweep.study),
            "n_trials": sweep.n_trials, "seeds": list(sweep.seeds)}


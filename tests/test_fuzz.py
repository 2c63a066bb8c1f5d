"""Every input answered in one line, found by generating inputs (Hypothesis), not by hand.

Sweep files, run-config overrides and each command's flags are drawn from the schema of what is valid (the keys a
sweep file and a run config take, the flags each parser declares) and mutated (wrong types, out of range, empty,
unknown keys, junk text). Every run is held to: exit 0, or exit 2 with one line `error: ...` that names something
of the input; never a traceback; nothing written on exit 2 (nothing at all for a dry run); done within BOUND
seconds. Seeded and short in the suite; `ABLATE_FUZZ_CASES=2000 pytest tests/test_fuzz.py` runs longer by hand.
Every failure it found became an `@example` (the first examples of each test)."""

from __future__ import annotations

import contextlib
import io
import os
import re
import string
import time
from pathlib import Path

import optuna
import pytest
import yaml
from hypothesis import HealthCheck, Phase, event, example, given, seed, settings
from hypothesis import strategies as st
from optuna.distributions import CategoricalDistribution

from ablate.analyze import main as analyze
from ablate.report import main as report
from ablate.study.space import SWEEP_KEYS
from ablate.sweep import main as sweep
from ablate.table import main as table

ROOT = Path(__file__).resolve().parents[1]
BASE = str(ROOT / "experiments/base.yaml")
SEED = 20261206
BOUND = 30.0  # seconds one command may take on any input (a dry run, a table, an analysis: no training)
CASES = int(os.environ.get("ABLATE_FUZZ_CASES", "0"))


def cases(n: int):
    """Hypothesis settings: `n` cases in the suite (ABLATE_FUZZ_CASES by hand), seeded, no example database."""
    return settings(
        max_examples=CASES or n,
        phases=[Phase.explicit, Phase.generate] if os.environ.get("ABLATE_FUZZ_NO_SHRINK") else list(Phase),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
    )


# ---- what inputs are made of ------------------------------------------------------------------------------------
words = st.text(alphabet=string.ascii_letters + string.digits + "_-./,:[]{}=* ", min_size=0, max_size=10)
numbers = st.one_of(
    st.integers(-3, 40), st.sampled_from([0.0, -1.5, 1e-3, 0.5, 1e9, float("nan"), float("inf"), 2**32, 2**64])
)
scalars = st.one_of(st.none(), st.booleans(), numbers, words)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(words, inner, max_size=2))

CONFIG_KEYS = [  # real dotted keys of ablate's run config, and near misses
    "model.neck.fusion",
    "model.neck.norm",
    "model.neck.rates",
    "model.neck.image_pooling",
    "model.neck.out_channels",
    "model.neck",
    "model.encoder_depth",
    "model.output_stride",
    "model.head",
    "optim.lr",
    "optim.name",
    "data.image_size",
    "data.batch_size",
    "data.shape_kinds",
    "trainer.max_epochs",
    "seed",
    "wandb.mode",
    "model.nek.norm",
    "data",
]
VALUE_TEXT = ["1", "0", "-1", "2", "abc", "[1,2,3]", "[6, 12, 18]", "[]", "{name: ppm}", "null", "1e9", "nan", "true"]
VALID_OVERRIDES = [
    "model.neck.fusion=sum",
    "model.neck.norm=gn",
    "model.neck.rates=[1,2,3]",
    "model.neck={name: ppm}",
    "model.encoder_depth=2",
    "optim.lr=0.01",
    "data.image_size=64",
    "trainer.max_epochs=2",
]
overrides = st.sampled_from(VALID_OVERRIDES) | st.builds(
    lambda k, v: f"{k}={v}", st.sampled_from(CONFIG_KEYS) | words, st.sampled_from(VALUE_TEXT) | words
)

VALID_SPACE = {  # key -> specs a valid sweep of ablate's own model may give it
    "model.neck.fusion": st.sampled_from([{"choices": ["concat", "sum"]}, {"choices": ["sum"]}]),
    "model.neck.norm": st.sampled_from([{"choices": ["bn", "gn", "none"]}, {"choices": ["bn", "none"]}]),
    "model.neck.rates": st.sampled_from([{"choices": ["1,2,3", "2,4,6"]}, {"rates": 2, "low": 1, "high": 6}]),
    "model.neck.image_pooling": st.just({"choices": [True, False]}),
    "optim.lr": st.sampled_from([{"low": 1e-4, "high": 1e-2, "log": True}, {"choices": [0.001, 0.01]}]),
    "data.batch_size": st.sampled_from([{"choices": [4, 8]}, {"low": 2, "high": 8, "step": 2}]),
}
valid_space = st.lists(st.sampled_from(sorted(VALID_SPACE)), min_size=1, max_size=3, unique=True).flatmap(
    lambda keys: st.fixed_dictionaries({k: VALID_SPACE[k] for k in keys})
)
valid_study = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["s", "fuzz"]),
        "direction": st.sampled_from(["maximize", "minimize"]),
        "sampler": st.sampled_from(["grid", "tpe", "random"]),
        "pruner": st.sampled_from(["median", "none", "hyperband"]),
        "margin": st.sampled_from([None, 1.0]),
        "alpha": st.sampled_from([0.05, 0.1]),
        "max_seeds": st.integers(2, 6),
        "workers": st.sampled_from([1, 2]),
        "until_decided": st.booleans(),
    },
)
valid_sweep = st.fixed_dictionaries(
    {"base": st.just(BASE), "space": valid_space},
    optional={
        "study": valid_study,
        "n_trials": st.integers(1, 6),
        "seeds": st.lists(st.integers(0, 9), min_size=1, max_size=3, unique=True),
        "overrides": st.lists(st.sampled_from(["trainer.max_epochs=1", "data.image_size=64", "model.neck.dropout=0"])),
    },
)


def paths(node, prefix=()) -> list[tuple]:
    """Every path to a value in nested dicts and lists."""
    out = [prefix] if prefix else []
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, value in items:
        out += paths(value, (*prefix, key))
    return out


def replaced(node, path: tuple, value):
    """A copy of `node` with the value at `path` replaced (value ... DROP: the key removed)."""
    if not path:
        return value
    copy = dict(node) if isinstance(node, dict) else list(node)
    if len(path) == 1 and value is DROP:
        del copy[path[0]]
    else:
        copy[path[0]] = replaced(node[path[0]], path[1:], value)
    return copy


DROP = object()


def mutated(spec: dict) -> st.SearchStrategy[dict]:
    """`spec` with one value replaced by junk, one key dropped, or one junk key added."""
    where = st.sampled_from(paths(spec))
    return st.one_of(
        st.tuples(where, values | st.just(DROP)).map(lambda pv: replaced(spec, *pv)),
        st.tuples(words, values).map(lambda kv: {**spec, kv[0]: kv[1]}),
    )


sweep_files = valid_sweep | valid_sweep.flatmap(mutated)  # valid ones, and valid ones with one thing wrong


def flags(pairs: dict) -> st.SearchStrategy[list[str]]:
    """argv of some of `pairs`' flags, each with a value from its strategy (None: a flag without value)."""

    def one(flag):
        value = pairs[flag]
        return st.just([flag]) if value is None else value.map(lambda v, f=flag: [f, str(v)])

    return st.lists(st.sampled_from(sorted(pairs)), max_size=3, unique=True).flatmap(
        lambda chosen: st.tuples(*(one(f) for f in chosen)).map(lambda parts: [x for p in parts for x in p])
    )


# ---- the property -----------------------------------------------------------------------------------------------
def tokens(*inputs) -> set[str]:
    """Every key and scalar of the inputs as text: what an error line may name."""
    out = set()
    for item in inputs:
        if isinstance(item, dict):
            out |= tokens(*item) | tokens(*item.values())
        elif isinstance(item, (list, tuple)):
            out |= tokens(*item)
        elif item is not None:
            out |= {str(item), repr(item)} | set(str(item).replace("=", " ").replace(",", " ").split())
            out |= set(str(item).partition("=")[0].split("."))  # a dotted key's parts: 'fusion' of model.neck.fusion
    return {t for t in out if t.strip()}


def names(line: str, named: set[str]) -> bool:
    """Whether `line` names one of `named`: as a substring, or a short one (< 3 characters) as a whole word."""
    short = lambda t: re.search(rf"(?<![\w.]){re.escape(t)}(?!\w)", line)  # noqa: E731
    return any(t in line if len(t) >= 3 else short(t) for t in named)


def files() -> set[str]:
    return {str(p) for p in Path().rglob("*")}


def check(command, argv: list[str], named: set[str], may_write: bool = True) -> int:
    """Run `command(argv)` here and hold it to the property; its exit code."""
    before, out, err = files(), io.StringIO(), io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = command(argv)
        except SystemExit as e:  # argparse's own exit
            code = e.code
    seconds, out, err = time.perf_counter() - started, out.getvalue(), err.getvalue()
    event(f"exit {code}")  # --hypothesis-show-statistics: how many cases got past the checks
    shown = f"argv {argv}\nexit {code}\nstderr:\n{err[-3000:]}\nstdout:\n{out[-1500:]}"
    assert "Traceback" not in out + err, shown
    assert code in (0, 2), shown
    assert seconds < BOUND, f"{seconds:.1f} s\n{shown}"
    if code == 2:
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), shown
        assert names(lines[0], named), f"the error names nothing of the input\n{shown}"
    if code == 2 or not may_write:
        assert files() == before, f"wrote {sorted(files() - before)}\n{shown}"
    return code


@pytest.fixture(autouse=True)
def _quiet_optuna():
    optuna.logging.set_verbosity(optuna.logging.WARNING)


@contextlib.contextmanager
def fresh_folder(tmp_path: Path):
    """A new empty folder for one case, the working directory while it runs."""
    folder, back = tmp_path / f"case{time.perf_counter_ns()}", os.getcwd()
    folder.mkdir()
    os.chdir(folder)
    try:
        yield folder
    finally:
        os.chdir(back)


SWEEP_FLAGS = {
    "--n-trials": numbers,
    "--seeds": st.sampled_from(["0,1", "-1", "0,0", "a", "4294967296", ""]) | words,
    "--workers": st.sampled_from(["1", "2", "auto", "0", "x"]),
    "--study": st.sampled_from(["s", "../x", "a b"]) | words,
    "--alpha": numbers | words,
    "--margin": numbers | words,
    "--max-seeds": numbers | words,
    "--until-decided": None,
    "--race": None,
    "--gpus": st.sampled_from(["none", "0", "x"]),
    "--storage": st.sampled_from(["sqlite:///s.db", "nonsense", "journal:///x.log"]),
}


@seed(SEED)
@cases(150)
@given(spec=sweep_files, extra=st.lists(overrides, max_size=2), argv=flags(SWEEP_FLAGS))
@example(spec={"base": BASE, "space": {"model.neck.fusion": {"choices": []}}}, extra=[], argv=[])
@example(spec={"base": BASE, "space": {"model.neck.norm": {"choices": ["bn"]}}}, extra=[], argv=["--seeds", "-1"])
@example(spec={"base": BASE, "space": {"optim.lr": {"low": "a", "high": 1}}}, extra=[], argv=[])
def test_any_sweep_file_overrides_and_flags_in_a_dry_run(tmp_path, spec, extra, argv):
    with fresh_folder(tmp_path):
        Path("sweep.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
        # nothing written even on exit 0: a dry run trains nothing and opens no storage
        named = tokens(spec, extra, argv) | set(SWEEP_KEYS)  # a key the file lacks is named too
        check(sweep, ["sweep.yaml", *extra, *argv, "--dry-run"], named, may_write=False)


@seed(SEED)
@cases(60)
@given(extra=st.lists(overrides, min_size=1, max_size=3), argv=flags({"--images": numbers, "--json": None}))
@example(extra=["trainer.max_epochs=0"], argv=[])
@example(extra=["data.image_size=12"], argv=[])
def test_any_run_config_override_in_an_analysis(tmp_path, extra, argv):
    with fresh_folder(tmp_path):
        check(analyze, [BASE, *extra, *argv], tokens(extra, argv), may_write=False)


def stored_study(url: str) -> None:
    """A finished study of ablate's shape (the user attrs its engine writes), three variants x two seeds."""
    study = optuna.create_study(study_name="s", storage=url, direction="maximize")
    study.set_user_attr("sweep", {"metric": "val/mIoU"})
    for i, fusion in enumerate(["concat", "sum", "mean"]):
        values = [0.5 + 0.1 * i, 0.52 + 0.1 * i]
        metrics = [{"val/pixel_acc": v + 0.1, "val/loss": 1 - v, "gflops": 0.2} for v in values]
        study.add_trial(
            optuna.trial.create_trial(
                value=sum(values) / 2,
                params={"model.neck.fusion": fusion},
                distributions={"model.neck.fusion": CategoricalDistribution(["concat", "sum", "mean"])},
                user_attrs={
                    "variant": f"model.neck.fusion={fusion}",
                    "seeds": [0, 1],
                    "values": values,
                    "seed_metrics": metrics,
                    "seed_metrics_best": metrics,
                    "params/neck": 1000 + i,
                },
            )
        )


TABLE_FLAGS = {
    "--study": st.sampled_from(["s", "nope", "../x"]) | words,
    "--storage": st.sampled_from(["sqlite:///runs/ablate.db", "sqlite:///missing.db", "nonsense", "sqlite:///x.txt"]),
    "--format": st.sampled_from(["md", "latex", "csv", "json", "html", "xml"]),
    "--baseline": st.sampled_from(["model.neck.fusion=sum", "model.neck.fusion=x", "a", ""]) | words,
    "--metric": st.sampled_from(["val/mIoU", "val/loss", "gflops", "nope"]) | words,
    "--direction": st.sampled_from(["maximize", "minimize", "up"]),
    "--at": st.sampled_from(["last", "best", "first"]),
    "--alpha": numbers | words,
    "--margin": numbers | words,
    "--no-moderation": None,
    "--runs": st.sampled_from(["runs", "nowhere", "x.txt"]),
}


REPORT_FLAGS = {k: v for k, v in TABLE_FLAGS.items() if k != "--format"}
COMMANDS = {"table": (table, TABLE_FLAGS), "report": (report, REPORT_FLAGS)}
table_argv = st.sampled_from(sorted(COMMANDS)).flatmap(lambda c: flags(COMMANDS[c][1]).map(lambda argv: (c, argv)))


@seed(SEED)
@cases(120)
@given(command_argv=table_argv)
@example(command_argv=("table", ["--study", "nope"]))
@example(command_argv=("table", ["--storage", "sqlite:///x.txt"]))
def test_any_flags_of_table_and_report_on_a_stored_study(tmp_path, command_argv):
    which, argv = command_argv
    with fresh_folder(tmp_path):
        Path("runs").mkdir()
        stored_study("sqlite:///runs/ablate.db")
        Path("x.txt").write_text("not a database\n")
        if which == "report" and "--study" not in argv:
            argv = ["--study", "s", *argv]  # its one required flag
        check(COMMANDS[which][0], argv, tokens(argv) | {"s", "runs"})

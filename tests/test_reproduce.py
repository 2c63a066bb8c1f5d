"""`python -m ablate.reproduce`: a tiny experiment reproduces its own reference and fails on an edited one."""

import re
import shutil
from pathlib import Path

import pytest
import yaml
from helpers import TINY

from ablate.config import ConfigError
from ablate.reproduce import load_experiment, main, reference_means

ROOT = Path(__file__).resolve().parents[1]


def write_experiment(rows=None, **extra):
    Path("experiments").mkdir(exist_ok=True)
    Path("experiments/base.yaml").write_text((ROOT / "experiments/base.yaml").read_text())
    spec = {
        "name": "tiny",
        "base": "base.yaml",
        "overrides": TINY,
        "seeds": [0, 1],
        "tolerance": 0.001,
        "baseline": "full",
        "rows": rows
        or {
            "full": {},
            "sum": {"model.neck.fusion": "sum"},
            "identity": {"model.neck": {"name": "identity", "out_channels": 16}},
        },
        **extra,
    }
    Path("experiments/tiny.yaml").write_text(yaml.safe_dump(spec))
    return "experiments/tiny.yaml"


def test_reproduces_its_reference_and_fails_loudly_when_a_row_is_edited(capsys):
    path = write_experiment()
    assert main([path, "--storage", "sqlite:///runs/a.db"]) == 1  # no reference yet: runs, then says so
    assert "no reference table experiments/tiny.md yet" in capsys.readouterr().err
    Path("experiments/tiny.md").write_text("| row | val/mIoU (mean ± std) |\n|---|---|\n| full | 0.5 |\n")
    assert main([path, "--storage", "sqlite:///runs/a.db"]) == 1  # a made-up reference does not reproduce
    table = Path("runs/tiny/table.md").read_text()
    assert set(reference_means(Path("runs/tiny/table.md"))) == {"full", "sum", "identity"}
    assert "baseline" in table
    Path("experiments/tiny.md").write_text(table)  # check in the reference
    capsys.readouterr()
    assert main([path, "--storage", "sqlite:///runs/b.db"]) == 2  # runs/tiny/ holds a.db's study: kept
    assert "runs/tiny/ holds the runs of study 'tiny'" in capsys.readouterr().err
    shutil.rmtree("runs/tiny")  # as on a fresh clone
    assert main([path, "--storage", "sqlite:///runs/b.db"]) == 0  # a fresh study reproduces it exactly
    assert capsys.readouterr().err.count("reproduces") == 3
    means = reference_means(Path("experiments/tiny.md"))
    edited = table.replace(f"{means['sum']:.4f}", f"{means['sum'] + 0.01:.4f}", 1)
    Path("experiments/tiny.md").write_text(edited)
    assert main([path, "--storage", "sqlite:///runs/b.db"]) == 1  # resumed: nothing re-runs, and it fails
    err = capsys.readouterr().err
    assert "does not reproduce:" in err and "sum:" in err.split("does not reproduce:")[1]


@pytest.mark.parametrize(
    "extra, words",
    [
        ({"rows": {"full": {}, "no bn": {"model.neck.norm": "none"}}}, ["row names", "no bn"]),
        ({"baseline": "fll"}, ["baseline 'fll'", "full"]),
        ({"rows": {"full": {"model.neck.norm": "batch"}}}, ["'batch'"]),
        ({"seed": [0]}, ["'seed'", "seeds"]),
    ],
)
def test_bad_experiments_are_refused_before_training(extra, words):
    rows = extra.pop("rows", None)
    with pytest.raises(ConfigError) as e:
        load_experiment(write_experiment(rows, **extra))
    for word in words:
        assert word in str(e.value), str(e.value)


def test_shipped_experiment_loads():
    sweep, _, tolerance = load_experiment(ROOT / "experiments/aspp_components.yaml")
    assert len(sweep.rows) == 7 and sweep.seeds == (0, 1, 2) and tolerance > 0


def test_voc_experiment_mirrors_deeplabv3_and_needs_a_root(tmp_path, capsys):
    path = ROOT / "experiments/voc_aspp_components.yaml"
    sweep, _, _ = load_experiment(path, [f"data.root={tmp_path}"])
    base = sweep.base
    assert base["data"]["root"] == str(tmp_path) and base["data"]["image_size"] == 513
    assert base["data"]["batch_size"] == 16 and base["model"]["output_stride"] == 16
    assert base["model"]["encoder"] == "resnet50" and base["model"]["neck"]["rates"] == [6, 12, 18]
    assert sweep.rows["rates_6-12-18-24"]["model.neck.rates"] == [6, 12, 18, 24]
    assert main([str(path), "--storage", f"sqlite:///{tmp_path / 'o.db'}"]) == 2  # no data.root: nothing trains
    assert "set data.root" in capsys.readouterr().err


PROJECT = ROOT / "examples/lightning_project"
PROJECT_TINY = [  # the example project's experiment at a few seconds a run
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=1",
    "trainer.enable_model_summary=false",
    "data.init_args.train_size=16",
    "data.init_args.val_size=8",
    "data.init_args.batch_size=8",
]


def test_a_lightning_cli_projects_table_reproduces_with_one_command(capsys):
    path, reference = PROJECT / "neck_components.yaml", ROOT / "tests/lightning_components_tiny.md"
    sweep, _, tolerance = load_experiment(path, PROJECT_TINY)
    assert sweep.cli == "seg_project.cli.MyCLI" and set(sweep.rows) == set(reference_means(reference))
    run = [str(path), *PROJECT_TINY, "--storage", "sqlite:///runs/p.db", "--reference", str(reference)]
    assert main(run) == 0, capsys.readouterr().err  # every row x seed through the project's own CLI
    verdicts = re.findall(r"^  (reproduces|differs|missing)  (\w+):", capsys.readouterr().err, re.M)
    assert sorted(verdicts) == sorted(("reproduces", row) for row in sweep.rows)
    means = reference_means(reference)
    Path("edited.md").write_text(
        reference.read_text().replace(f"{means['identity']:.4f}", f"{means['identity'] + 2 * tolerance:.4f}", 1)
    )
    assert main([*run[:-1], "edited.md"]) == 1  # resumed: nothing trains again, and the edited row fails
    err = capsys.readouterr().err
    assert "does not reproduce: identity:" in err
    verdicts = re.findall(r"^  (reproduces|differs|missing)  (\w+):", err, re.M)
    assert sorted(verdicts) == sorted(("differs" if row == "identity" else "reproduces", row) for row in sweep.rows)

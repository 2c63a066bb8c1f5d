"""The conclusion in words (ablate.results.conclusion) on cases whose verdicts are known, and the table on terminals
of any width (ablate.results.terminal): no broken word, no line wider than $COLUMNS, constant columns said once."""

import re

import numpy as np
import optuna
import pytest

from ablate.cli import command_line
from ablate.results.conclusion import conclusion
from ablate.results.tables import finish
from ablate.study.variants import new_row, summarize
from ablate.table import main as table_main


def rows_of(means: dict, seeds: int, sd: float, rng) -> list[dict]:
    """Rows of variants 'a=<key>' with `seeds` seeds around their mean, the seeds shared (paired)."""
    shared = rng.normal(0, sd, seeds)  # a seed's own luck, common to every variant (what pairing removes)
    rows = []
    for key, mean in means.items():
        row = new_row(f"a={key}", {})
        row["seeds"] = {str(s): float(mean + shared[s] + rng.normal(0, sd / 4)) for s in range(seeds)}
        rows.append(summarize(row))
    return sorted(rows, key=lambda r: -r["mean"])


def told(means: dict, seeds: int = 6, sd: float = 0.02, stored: dict | None = None, seed: int = 0, **options):
    rows = rows_of(means, seeds, sd, np.random.default_rng(seed))
    table = finish(rows, "val/mIoU", "maximize", "given", stored or {}, **options)
    return table, conclusion(table, table.effects)


def line_of(lines: list[str], key: str) -> str:
    (line,) = [line for line in lines if line.startswith(f"- a={key} ")]
    return line


def test_a_decided_row_says_so_with_its_p_below_the_threshold():
    table, lines = told({"base": 0.70, "off": 0.50})
    assert lines[0].startswith("Conclusion on val/mIoU (higher is better), against a=base (the best row):")
    assert "a row is decided when its Holm p is below 0.05" in lines[0] and "no equivalence margin" in lines[0]
    row = next(r for r in table.rows if r["variant"] == "a=off")
    assert row["verdict"] == "worse"
    line = line_of(lines, "off")
    assert f"{row['delta']:+.1f} points [{row['ci_low']:+.1f}, {row['ci_high']:+.1f}]" in line
    assert f"worse: decided (Holm p {row['p_adjusted']:.2g} < 0.05)" in line


def test_an_open_row_says_how_many_seeds_would_decide_it_and_the_command_that_adds_them():
    table, lines = told({"base": 0.70, "near": 0.69}, seeds=3, sd=0.03)
    row = next(r for r in table.rows if r["variant"] == "a=near")
    assert row["verdict"] == "undecided" and 3 < row["seeds_needed"] < 1000
    need = row["seeds_needed"]
    assert line_of(lines, "near").endswith(f"about {need} seeds a variant would decide it with 80 % probability")
    flags = f"--until-decided --max-seeds {need}"
    assert lines[-1] == f"- Next, to decide them: the sweep's command {flags}; its finished runs are kept."
    stored = {"looks": [2, 4], "alpha": 0.01, "nominal_alpha": 0.05}  # a study that added seeds until decided
    table, lines = told({"base": 0.70, "near": 0.69}, seeds=3, sd=0.03, stored=stored)
    assert "Holm p is below 0.01 (α 0.05 spread over the looks at 2 to 4 seeds a variant" in lines[0]
    need = table.rows[1]["seeds_needed"]
    assert lines[-1].startswith(f"- Next, to decide them: the sweep's command --max-seeds {max(need, 5)} (a larger")
    again = conclusion(table, [], again=command_line("sweep", ["s.yaml", "--max-seeds", "4", "--workers", "2"]))
    assert again[-1].startswith(
        f"- Next, to decide them: python -m ablate.sweep s.yaml --workers 2 --max-seeds {max(need, 5)} "
    )


def test_an_equivalent_row_names_its_margin_and_a_row_nothing_reaches_says_so():
    table, lines = told({"base": 0.70, "same": 0.7002}, seeds=8, sd=0.002, margin=1.0)
    assert table.rows[1]["verdict"] == "equivalent" or table.rows[0]["verdict"] == "equivalent"
    assert "equivalent when its interval lies inside ±1 points" in lines[0]
    assert [line for line in lines if "equivalent: its interval lies inside ±1 points" in line]
    rows = []  # a Δ of 0.002 points against differences that spread ±1 point: no number of seeds shows it
    for key, shift in (("base", 0.0), ("tie", [-0.01, 0.01, 0.00002])):
        row = new_row(f"a={key}", {})
        row["seeds"] = {str(s): 0.70 + 0.02 * s + (shift[s] if shift else 0.0) for s in range(3)}
        rows.append(summarize(row))
    table = finish(rows, "val/mIoU", "maximize", "given", {})  # no margin: a tie is never called
    assert table.rows[1]["seeds_needed"] == 1000
    (open_,) = [line for line in conclusion(table) if line.startswith("- a=")]
    assert "no number of seeds within reach would decide it" in open_ and "a --margin would" in open_


def test_nothing_testable_with_one_seed_and_nothing_to_compare_with_one_row():
    _, lines = told({"base": 0.70, "other": 0.60}, seeds=1)
    assert lines[1].startswith("- Nothing can be decided yet: a verdict needs 2 or more seeds of each variant, and 1")
    _, lines = told({"base": 0.70})
    assert lines == ["One variant only: there is nothing to compare it with."]


def test_the_main_effects_say_which_setting_matters():
    rng, rows = np.random.default_rng(4), []
    for a in ("x", "y"):
        for b in ("p", "q"):
            row = new_row(f"k.a={a} k.b={b}", {})
            row["seeds"] = {str(s): float(0.5 + 0.2 * (a == "y") + rng.normal(0, 0.01)) for s in range(4)}
            rows.append(summarize(row))
    table = finish(sorted(rows, key=lambda r: -r["mean"]), "val/mIoU", "maximize", "given", {})
    (line,) = [line for line in conclusion(table, table.effects) if line.startswith("- Over all variants")]
    a = next(e for e in table.effects if e["term"] == "k.a")
    assert f"a: best y, {a['effect']:.1f} points between levels, decided (Holm p {a['p_adjusted']:.2g} < 0.05)" in line
    assert "b: best " in line and line.index("a: best") < line.index("b: best")  # decided first
    assert "not decided (Holm p " in line.split("b: best")[1]
    assert "no interaction decided (the largest, a × b, " in line


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """A stored 2×2×2 study like the default one (3 settings under model.neck., 2 to 4 seeds, constant GFLOPs)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('text') / 'a.db'}"
    study = optuna.create_study(study_name="default", storage=url, direction="maximize")
    study.set_user_attr("verdicts", {"alpha": 0.05, "look_alpha": 0.00233, "looks": [2, 4], "margin": 1.0})
    rng = np.random.default_rng(0)
    for rates in ("1,2,3", "2,4,6"):
        for norm in ("bn", "none"):
            for pool in ("true", "false"):
                mean, n = 0.55 + 0.17 * (pool == "true") + 0.1 * (norm == "bn"), 4 if norm == "none" else 2
                values = list(mean + rng.normal(0, 0.04, n))
                variant = f"model.neck.rates={rates} model.neck.norm={norm} model.neck.image_pooling={pool}"
                attrs = {"variant": variant, "seeds": list(range(n)), "values": values, "gflops": 0.18}
                study.add_trial(optuna.trial.create_trial(value=float(np.mean(values)), user_attrs=attrs))
    return url


@pytest.mark.parametrize("columns", [60, 80, 120, 200])
def test_the_table_fits_the_terminal_and_breaks_no_word(stored, columns, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.chdir(tmp_path)
    assert table_main(["--storage", stored, "--format", "text"]) == 0
    out = capsys.readouterr().out.splitlines()
    body = out[1 : out.index("settings under model.neck.")]  # the title, then the table down to its notes
    assert max(map(len, body)) <= columns and "…" not in "".join(body)
    words = {"rates", "norm", "image_pooling", "1,2,3", "2,4,6", "bn", "none", "true", "false", "val/mIoU"}
    if columns >= 80:
        words |= {"verdict", "undecided", "baseline"}
    for word in words:  # whole, somewhere in the table, and never a piece of it on a line of its own
        assert any(re.search(rf"(^|\s){re.escape(word)}(\s|$)", line) for line in body), word
    assert "the same in every row: " in "\n".join(out) and "GFLOPs 0.18" in "\n".join(out)
    assert "GFLOPs" not in "\n".join(body) and "model.neck." not in "\n".join(body)  # said once, under the table
    if columns == 200:
        assert "Holm p" in "\n".join(body) and "left out at this width" not in "\n".join(out)


def test_piped_the_table_is_markdown_under_its_conclusion(stored, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert table_main(["--storage", stored]) == 0  # stdout is not a terminal here
    out = capsys.readouterr().out
    assert out.startswith("**Conclusion on val/mIoU") and "\n| model.neck.rates | model.neck.norm |" in out
    assert "| Holm p (decides < 0.0023) |" in out

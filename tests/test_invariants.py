"""A study's invariants (ablate.study.check, `python -m ablate.table --check`) on a real study and on broken ones,
and a result that comes back after its trial was declared stale and run again: never a second COMPLETE."""

import json
import re
import shutil
import time
from pathlib import Path

import optuna
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

from ablate.study.faults import tell
from ablate.study.storage import make_storage
from ablate.study.variants import study_rows
from ablate.table import main as table

DIST = {"model.neck.fusion": CategoricalDistribution(["concat", "sum"])}


def complete(study, fusion: str, seeds, values, folders: bool = True) -> optuna.trial.FrozenTrial:
    """A COMPLETE trial of `fusion` as the engine records it, with its run folders."""
    trial = optuna.trial.create_trial(
        value=sum(values) / len(values),
        params={"model.neck.fusion": fusion},
        distributions=DIST,
        user_attrs={"variant": f"model.neck.fusion={fusion}", "seeds": list(seeds), "values": list(values)},
    )
    study.add_trial(trial)
    frozen = study.get_trials()[-1]
    for seed in seeds if folders else ():
        folder = Path("runs") / study.study_name / f"t{frozen.number}-s{seed}"
        folder.mkdir(parents=True)
        (folder / "summary.json").write_text(json.dumps({"val/mIoU_best": values[0]}))
    return frozen


def test_a_finished_study_holds_every_invariant(shared_study, monkeypatch, capsys):
    monkeypatch.chdir(shared_study.folder)
    assert table(["--check", "--study", "t", "--storage", shared_study.url]) == 0
    assert "study t: no problem(s) in 4 trial(s)" in capsys.readouterr().err


def test_the_check_names_each_broken_invariant_and_the_repair(tmp_path, capsys):
    url = "sqlite:///runs/s.db"
    study = optuna.create_study(study_name="s", storage=make_storage(url), direction="maximize")
    study.set_user_attr("sweep", {"study": {"grace_period": 1}})
    complete(study, "concat", [0, 1], [0.5, 0.6])
    complete(study, "concat", [1], [0.9])  # seed 1 of concat a second time
    complete(study, "sum", [0], [0.4], folders=False)
    lost = complete(study, "sum", [1], [0.4])
    shutil.rmtree(Path("runs/s") / f"t{lost.number}-s1")
    running, never = study.ask(), study.ask()  # `never` recorded no heartbeat at all
    beating = make_storage(url, (1, 1))
    beating.record_heartbeat(running._trial_id)
    time.sleep(2.5)  # its worker died: no heartbeat for longer than the grace period
    assert table(["--check", "--storage", url]) == 1
    err = capsys.readouterr().err
    for t in (running, never):
        assert re.search(rf"study s: trial {t.number} is RUNNING but silent for \d+ s \(no live heartbeat\)", err)
    assert "study s: model.neck.fusion=concat seed 1 completed 2 times" in err
    assert "study s: trial 2 seed 0: no run folder runs/s/t2-s0/summary.json" in err
    assert f"study s: trial {lost.number} seed 1: no run folder" in err
    assert "study s: 5 problem(s) in 6 trial(s)" in err and "repair: run the same `python -m ablate.sweep`" in err
    rows = {r["variant"]: r for r in study_rows(study.get_trials())}
    assert rows["model.neck.fusion=concat"]["seeds"] == {"0": 0.5, "1": 0.6}  # seed 1 counted once: the first


def test_a_late_result_after_a_stale_retry_is_not_counted(capsys):
    url = "sqlite:///runs/s.db"
    Path("runs").mkdir()
    study = optuna.create_study(study_name="s", storage=make_storage(url, (1, 1)), direction="maximize")
    trial = study.ask({"model.neck.fusion": DIST["model.neck.fusion"]})
    trial.set_user_attr("variant", "model.neck.fusion=concat")
    trial.set_user_attr("seed_plan", [0])
    study._storage.record_heartbeat(trial._trial_id)
    time.sleep(2.5)  # this worker could not reach the storage for longer than the grace period ...
    other = optuna.load_study(study_name="s", storage=make_storage(url, (1, 1)))
    assert optuna.storages.fail_stale_trials(other) is None  # ... so another worker failed it, and queued it again
    retry = other.ask()
    assert retry.params == trial.params and retry.user_attrs["seed_plan"] == [0]
    other.tell(retry, 0.7)
    assert tell(study, trial, 0.6) is None  # the first worker's late result
    assert "this worker's result for it is not counted" in capsys.readouterr().err
    states = [t.state for t in study.get_trials()]
    assert states == [TrialState.FAIL, TrialState.COMPLETE]  # one COMPLETE for (concat, seed 0)

"""`python -m ablate.status`: a running study (two workers mid-trial) and a finished one, read from another process,
nothing written; `--watch` until Ctrl-C; and the progress lines of two workers, each naming its trial and seed."""

import hashlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from helpers import write_sweep
from optuna.distributions import CategoricalDistribution
from optuna.trial import TrialState

WIDTHS = {"model.neck.out_channels": {"choices": [8, 12, 16]}}
EPOCHS = 25  # a trial's seed takes a few seconds: long enough to be seen running


def status(storage: str, *flags: str) -> subprocess.CompletedProcess:
    """`python -m ablate.status` in its own process, as from another machine."""
    cmd = [sys.executable, "-m", "ablate.status", "--storage", storage, *flags]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def trials_when(storage: str, ready, proc: subprocess.Popen, out: Path, timeout: float = 600) -> list:
    """The study's trials once `ready(trials)` holds (the storage read once the sweep says its workers started)."""
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if "started 2 workers" in out.read_text():
            trials = optuna.load_study(study_name="t", storage=storage).get_trials()
            if ready(trials):
                return trials
        time.sleep(0.2)
    raise TimeoutError(f"the study never got there; the sweep printed:\n{out.read_text()}")


def epoch_of(t) -> int:
    return (t.user_attrs.get("progress") or {}).get("epoch", 0)


@pytest.fixture(scope="module")
def pool_study(tmp_path_factory):
    """A 3-trial, 2-seed study run by `--workers 2`, and what status printed while two trials ran (`both`) and
    while the last ran alone after two completed (`last`); then the sweep's whole output, once it ended."""
    root = tmp_path_factory.mktemp("pool")
    storage = f"sqlite:///{root}/runs/s.db"
    path = write_sweep(
        root / "sweep.yaml", space=WIDTHS, n_trials=3, seeds=(0, 1), overrides=[f"trainer.max_epochs={EPOCHS}"]
    )
    out = root / "sweep.out"
    with open(out, "w") as f:
        cmd = [sys.executable, "-m", "ablate.sweep", str(path), "--storage", storage, "--workers", "2"]
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=root)
    try:
        running = lambda ts: [t for t in ts if t.state == TrialState.RUNNING and epoch_of(t) >= 1]  # noqa: E731
        both = trials_when(storage, lambda ts: len(running(ts)) == 2, proc, out)
        seen = {"both": (status(storage), both)}
        complete = lambda ts: sum(t.state == TrialState.COMPLETE for t in ts)  # noqa: E731
        last = trials_when(storage, lambda ts: complete(ts) == 2 and len(running(ts)) == 1, proc, out)
        seen["last"] = (status(storage), last)
        assert proc.wait(timeout=600) == 0, out.read_text()
    finally:
        proc.kill()
    return {"root": root, "storage": storage, "output": out.read_text(), **seen}


def test_status_of_a_study_that_two_workers_run_names_each_running_trial(pool_study):
    done, trials = pool_study["both"]
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "0 of 3 trials done (none yet), 2 running, 0 waiting; 2 seed(s) a trial" in text, text
    pattern = r"\s+t(\d+) s\d \(seed \d of 2\)"
    lines = {int(m.group(1)): line for line in text.splitlines() if (m := re.match(pattern, line))}
    running = [t for t in trials if t.state == TrialState.RUNNING]
    assert sorted(lines) == sorted(t.number for t in running), text
    for t in running:
        line = lines[t.number]
        assert re.search(rf"epoch \d+/{EPOCHS}", line) and int(re.search(r"epoch (\d+)", line).group(1)) >= 1, line
        assert f"host {socket.gethostname()}" in line and " pid " in line and "GPU none" in line, line
        assert line.endswith(t.user_attrs["variant"]), line
        assert re.search(r"  for \d+ s", line), line
    assert {re.search(r"worker (\d)", line).group(1) for line in lines.values()} == {"0", "1"}, text
    assert re.search(r"time left: not known until a trial completes \([56] run\(s\)", text), text  # 2 x 2 + 1 x 2


def test_status_estimates_the_time_left_from_the_complete_trials(pool_study):
    done, trials = pool_study["last"]
    text = done.stdout
    assert "2 of 3 trials done (2 complete), 1 running" in text, text
    (alone,) = [t for t in trials if t.state == TrialState.RUNNING]
    assert re.search(rf"t{alone.number} s\d \(seed \d of 2\)  epoch \d+/{EPOCHS}", text), text
    left = re.search(
        r"time left: about (.+) \(an estimate: (\d) run\(s\) left at (.+) a run, the mean of 2 complete", text
    )
    assert left and left.group(2) in ("1", "2") and "shared by 1 running worker(s)" in text, text


def test_status_of_a_finished_study_names_its_failed_trials_and_writes_nothing(pool_study, tmp_path):
    shutil.copy(pool_study["root"] / "runs/s.db", tmp_path / "s.db")
    storage = f"sqlite:///{tmp_path}/s.db"
    study = optuna.load_study(study_name="t", storage=storage)
    study.add_trial(
        optuna.trial.create_trial(
            state=TrialState.FAIL,
            params={"model.neck.out_channels": 12},
            distributions={"model.neck.out_channels": CategoricalDistribution([8, 12, 16])},
            user_attrs={"variant": "model.neck.out_channels=12", "fail_reason": "FloatingPointError: nan"},
        )
    )
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.rglob("*")}
    done = status(storage)
    assert done.returncode == 0, done.stderr
    assert {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in tmp_path.rglob("*")} == before  # nothing written
    text = done.stdout
    assert "4 of 3 trials done (3 complete, 1 failed), 0 running, 0 waiting" in text, text  # one added past the 3
    assert (
        "running (" not in text and "failed (1):\n    t3  FloatingPointError: nan  model.neck.out_channels=12" in text
    )
    assert re.search(r"elapsed: .+ from the first trial's start to the last one's end", text), text
    assert "time left: none" in text, text


def test_status_shows_the_rounds_of_added_seeds_and_the_runs_they_leave(pool_study, tmp_path):
    shutil.copy(pool_study["root"] / "runs/s.db", tmp_path / "s.db")
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path}/s.db")
    assert study.user_attrs["plan"] == {"n_trials": 3, "seeds": 2, "rounds": None, "max_seeds": None}  # as it ran
    study.set_user_attr("plan", {**study.user_attrs["plan"], "rounds": "seeds until decided", "max_seeds": 4})
    done = study.trials[0]
    for number, state in ((1, TrialState.COMPLETE), (2, TrialState.WAITING)):  # what decide.Rounds enqueues
        attrs = {"round": number, "seed_plan": [2 + number], "variant": done.user_attrs["variant"]}
        if state == TrialState.WAITING:
            study.enqueue_trial(done.params, user_attrs=attrs)
        else:
            study.add_trial(
                optuna.trial.create_trial(
                    state=state,
                    params=done.params,
                    distributions=done.distributions,
                    value=0.5,
                    user_attrs={**attrs, "seeds": [3]},
                )
            )
    text = status(f"sqlite:///{tmp_path}/s.db").stdout
    assert "3 of 3 trials done (3 complete), 0 running, 1 waiting" in text, text  # rounds never count towards 3
    assert "then seeds until decided, at most 4 seeds a variant: round 1: 1 of 1 runs done; round 2: 0 of 1" in text
    assert "time left: nothing runs now; about " in text and "(an estimate: 1 run(s) left at " in text, text
    assert "rounds not planned yet are not counted" in text, text


def test_status_reads_a_journal_and_lists_the_studies_of_a_storage(pool_study, tmp_path):
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    journal = tmp_path / "study.log"
    to = JournalStorage(JournalFileBackend(str(journal)))
    for name in ("t", "u"):
        optuna.copy_study(from_study_name="t", from_storage=pool_study["storage"], to_storage=to, to_study_name=name)
    before = journal.read_bytes()
    one = status(f"journal:///{journal}", "--study", "u")
    assert one.returncode == 0 and "study u in journal:///" in one.stdout, one.stderr
    assert "3 of 3 trials done (3 complete), 0 running" in one.stdout, one.stdout
    both = status(str(journal))
    assert both.returncode == 0, both.stderr
    assert both.stdout.splitlines()[1:] == [
        "  t: 3 of 3 trials done (3 complete), 0 running, 0 waiting; 2 seed(s) a trial",
        "  u: 3 of 3 trials done (3 complete), 0 running, 0 waiting; 2 seed(s) a trial",
    ], both.stdout
    assert journal.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["study.log"]  # no lock, no write


def test_watch_prints_again_until_ctrl_c_and_ends_with_one_line(pool_study):
    cmd = [sys.executable, "-m", "ablate.status", "--storage", pool_study["storage"], "--watch", "0.2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    heads = []
    while len(heads) < 2:  # printed twice; "" would be the end of its output
        line = proc.stdout.readline()
        assert line, proc.communicate(timeout=60)
        heads += [line] if line.startswith("study t in sqlite:///") else []
    proc.send_signal(signal.SIGINT)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130 and err == "interrupted (Ctrl-C)\n", (proc.returncode, err)


def test_progress_lines_of_two_workers_name_their_trial_and_seed(pool_study):
    out = pool_study["output"]
    epochs = [line for line in out.splitlines() if "train/loss" in line]
    assert len(epochs) == 3 * 2 * EPOCHS, out
    assert all(re.match(rf"t\d s[01] epoch \d+/{EPOCHS}  train/loss", line) for line in epochs), out
    assert {line[:5] for line in epochs} == {f"t{n} s{s}" for n in range(3) for s in (0, 1)}, out


def test_status_refuses_a_storage_without_studies_naming_it(tmp_path):
    done = status(f"sqlite:///{tmp_path}/none.db")
    assert done.returncode == 2 and done.stderr.startswith("error: storage sqlite:///"), done.stderr
    assert "no study has been run there" in done.stderr and not (tmp_path / "none.db").exists()


def on_a_terminal(cmd: list[str], cwd: Path, columns: int = 200) -> tuple[int, str]:
    """Run `cmd` with a pseudo-terminal as its stdin, stdout and stderr; its exit code and all it wrote, the
    terminal's control sequences taken out."""
    import fcntl
    import pty
    import select
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {**os.environ, "COLUMNS": str(columns), "LINES": "50"}
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env)
    os.close(slave)
    out = b""
    while True:  # read all along: a full terminal buffer would stop the command
        if select.select([master], [], [], 1)[0]:
            try:
                data = os.read(master, 65536)
            except OSError:  # the command and its workers closed the terminal
                break
            if not data:
                break
            out += data
        elif proc.poll() is not None:
            break
    os.close(master)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.decode(errors="replace"))
    return proc.wait(timeout=60), text


def test_on_a_terminal_each_worker_has_one_live_line_and_other_lines_print_above(tmp_path):
    path = write_sweep(space=WIDTHS, n_trials=2, seeds=(0,), overrides=["trainer.max_epochs=4"])
    cmd = [sys.executable, "-m", "ablate.sweep", path, "--storage", "sqlite:///runs/s.db", "--workers", "2"]
    code, text = on_a_terminal(cmd, tmp_path)
    assert code == 0, text
    live = set(re.findall(r"worker ([01]): t\d s0 epoch [1-4]/4  train/loss", text))
    assert live == {"0", "1"}, text  # each worker's epochs on its own live line
    shown = re.split(r"[\r\n]+", text)  # what each line, and each redraw of a live line, begins with
    assert not [s for s in shown if re.match(r"t\d s\d epoch", s)], text  # never an epoch line of its own
    assert {"  trial 0 seed 0", "  trial 1 seed 0"} <= {s[:16] for s in shown}, text  # printed above them
    assert "study t: mean ± std over seeds" in text and "worker 0: ended" in text, text

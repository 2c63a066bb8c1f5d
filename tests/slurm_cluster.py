"""A private one-node SLURM cluster on this machine for the tests: munged, slurmctld and slurmd as root, from a
generated slurm.conf, all under one temporary folder, on free ports (Debian's slurm-wlm and munge: .ci/run)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

START_TIMEOUT = 60  # seconds the node has to show up idle in sinfo


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_mb() -> int:
    """The machine's memory in MB, less a tenth (slurmd drains a node that has less than slurm.conf says)."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024 * 9 // 10
    return 1024


SLURM_CONF = """\
ClusterName={cluster}
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={root}/munge/munge.socket
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SchedulerType=sched/builtin
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
KillWait=10
MinJobAge=300
NodeName=localhost NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


class SlurmCluster:
    """munged + slurmctld + slurmd on localhost; `env` holds SLURM_CONF for the client commands (sbatch, squeue)."""

    def __init__(self):
        for tool in ("munged", "slurmctld", "slurmd", "sbatch"):
            assert shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists(), (
                f"{tool} not installed: apt-get install -y slurm-wlm munge (.ci/run does this)"
            )
        assert os.geteuid() == 0, "slurmd runs its jobs as root here: the SLURM tests need root"
        self.root = Path(tempfile.mkdtemp(prefix="ablate-slurm-"))
        for sub in ("munge", "state", "spool"):
            (self.root / sub).mkdir()
        self.conf = self.root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        """munged, then slurmctld and slurmd from a generated slurm.conf; returns once the node is idle."""
        self._munge()
        self.conf.write_text(
            SLURM_CONF.format(
                cluster=f"ablate{os.getpid()}",
                root=self.root,
                ctld_port=free_port(),
                slurmd_port=free_port(),
                cpus=os.cpu_count() or 1,
                memory=memory_mb(),
            )
        )
        self._daemon("/usr/sbin/slurmctld", "-f", str(self.conf), "-i")  # -i: no state to recover
        self._daemon("/usr/sbin/slurmd", "-f", str(self.conf), "-N", "localhost")
        self.wait_idle()

    def _munge(self) -> None:
        """A fresh munge key and munged on a socket of its own (munged runs as root here: --force)."""
        key = self.root / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        m = self.root / "munge"
        self._daemon(
            "munged",
            "--force",
            f"--key-file={key}",
            f"--socket={m}/munge.socket",
            f"--pid-file={m}/munged.pid",
            f"--log-file={m}/munged.log",
            f"--seed-file={m}/munged.seed",
        )

    def _daemon(self, *command: str) -> None:
        """Run a daemon that forks itself into the background; fail with its output when it does not start."""
        done = subprocess.run(command, capture_output=True, text=True, env=self.env, timeout=60)
        assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}{self.logs()}"

    def run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess:
        """A SLURM client command against this cluster."""
        done = subprocess.run(command, capture_output=True, text=True, env=self.env, timeout=60)
        assert done.returncode == 0 or not check, f"{' '.join(command)}: {done.stdout}{done.stderr}"
        return done

    def wait_idle(self) -> None:
        """Wait until sinfo shows the node idle; fail with the daemons' logs after START_TIMEOUT seconds."""
        deadline = time.time() + START_TIMEOUT
        while time.time() < deadline:
            state = self.run("sinfo", "-h", "-N", "-o", "%T", check=False).stdout.strip()
            if state == "idle":
                return
            time.sleep(0.5)
        raise AssertionError(f"the SLURM node is not idle after {START_TIMEOUT} s (sinfo: {state!r}){self.logs()}")

    def logs(self) -> str:
        """The tail of each daemon's log."""
        out = ""
        for log in ("slurmctld.log", "slurmd.log", "munge/munged.log"):
            path = self.root / log
            if path.exists():
                out += f"\n--- {log}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-20:])
        return out

    def jobs(self) -> list[str]:
        """Every job id squeue lists now (array tasks as JOB_TASK)."""
        return self.run("squeue", "-h", "-r", "-o", "%i").stdout.split()

    def stop(self) -> None:
        """Cancel every job of this cluster, stop its daemons (by their pid files) and delete its folder."""
        if (self.root / "slurmctld.pid").exists():
            self.run("scancel", "--user", "root", check=False)
            deadline = time.time() + 30  # KillWait (10 s) and then SIGKILL
            while time.time() < deadline and self.run("squeue", "-h", check=False).stdout.strip():
                time.sleep(0.5)
        for pid_file in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid"):
            path = self.root / pid_file
            try:
                os.kill(int(path.read_text().strip()), signal.SIGTERM)
            except (OSError, ValueError):
                continue
        time.sleep(1)
        shutil.rmtree(self.root, ignore_errors=True)

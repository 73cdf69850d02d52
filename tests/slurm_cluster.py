"""A one-node SLURM cluster on this machine, for the tests: MUNGE, slurmctld and slurmd started as root
with their configuration, key, sockets, state and logs in one temporary folder, and stopped by pid.

Debian's slurm-wlm and munge packages provide the daemons (.ci/run installs them). The node claims
more CPUs than the machine has (config_overrides), so that a few one-CPU tasks of a job array run
at once even on two cores.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scontrol", "srun")
CPUS = 4


def missing() -> str | None:
    """Why a cluster cannot be started here, or None."""
    absent = [name for name in DAEMONS if shutil.which(name) is None]
    if absent:
        return f"SLURM is not installed ({', '.join(absent)} missing): apt-get install slurm-wlm munge"
    if os.geteuid() != 0:
        return "starting slurmd needs root"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="slurm-"))
        self.folder.chmod(0o755)  # munged wants its socket's folder open to all
        self.conf = self.folder / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}
        self.pids: list[Path] = []

    def start(self) -> Cluster:
        f = self.folder
        for sub in ("state", "spool", "log", "run", "sock"):
            (f / sub).mkdir()
            (f / sub).chmod(0o755)
        key = f / "munge.key"
        key.write_bytes(os.urandom(128))
        key.chmod(0o600)
        socket_path = f / "sock" / "munge.sock"
        subprocess.run(
            [
                "munged",
                f"--socket={socket_path}",
                f"--key-file={key}",
                f"--pid-file={f / 'run' / 'munged.pid'}",
                f"--log-file={f / 'log' / 'munged.log'}",
                f"--seed-file={f / 'munge.seed'}",
            ],
            check=True,
            capture_output=True,
        )
        self.pids.append(f / "run" / "munged.pid")
        host = socket.gethostname().split(".")[0]
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES") // 2**20 // 2
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=tests",
                    f"SlurmctldHost={host}",
                    f"SlurmctldPort={_free_port()}",
                    f"SlurmdPort={_free_port()}",
                    "AuthType=auth/munge",
                    f"AuthInfo=socket={socket_path}",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_Core",
                    "SlurmdParameters=config_overrides",
                    "SlurmUser=root",
                    "MpiDefault=none",
                    "ReturnToService=2",
                    "MinJobAge=3600",
                    "KillWait=10",
                    f"StateSaveLocation={f / 'state'}",
                    f"SlurmdSpoolDir={f / 'spool'}",
                    f"SlurmctldPidFile={f / 'run' / 'slurmctld.pid'}",
                    f"SlurmdPidFile={f / 'run' / 'slurmd.pid'}",
                    f"SlurmctldLogFile={f / 'log' / 'slurmctld.log'}",
                    f"SlurmdLogFile={f / 'log' / 'slurmd.log'}",
                    f"NodeName={host} CPUs={CPUS} RealMemory={memory} State=UNKNOWN",
                    "PartitionName=tests Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([daemon, "-f", str(self.conf)], check=True, capture_output=True, env=self.env)
            self.pids.append(f / "run" / f"{daemon}.pid")
        deadline = time.monotonic() + 60
        while "idle" not in self.run("sinfo", "-h", "-o", "%T", check=False).stdout:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the SLURM node never became idle; see {f / 'log'}")
            time.sleep(0.5)
        return self

    def stop(self) -> None:
        """Every daemon started, by its pid file (the controller and node daemon first), then the folder."""
        for pid_file in reversed(self.pids):
            try:
                pid = int(pid_file.read_text())
                os.kill(pid, signal.SIGTERM)
            except (OSError, ValueError):
                continue
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
        shutil.rmtree(self.folder, ignore_errors=True)

    def run(self, *command: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
        """A SLURM command (or any) with this cluster's SLURM_CONF."""
        env = {**self.env, **kwargs.pop("env", {})}
        done = subprocess.run(command, capture_output=True, text=True, env=env, **kwargs)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(command)}: exit status {done.returncode}\n{done.stdout}\n{done.stderr}")
        return done

    def jobs(self, job: str) -> list[str]:
        """The array's tasks still in the queue (pending or running), as ``JOB_TASK STATE``."""
        return self.run("squeue", "-h", "-r", "-j", job, "-o", "%i %T", check=False).stdout.split("\n")[:-1]

    def wait(self, job: str, timeout: float = 300) -> None:
        """Until no task of ``job`` is queued or running."""
        deadline = time.monotonic() + timeout
        while self.jobs(job):
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job} still queued after {timeout} s: {self.jobs(job)}")
            time.sleep(0.5)

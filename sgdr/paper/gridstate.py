"""Where each run of a grid stands, read from its folder (lock, record, metrics, the task's log): finished,
running, interrupted, failed or not started; and, where squeue answers, whether SLURM will start an interrupted
run again (queued) or not (a cancelled task)."""

from __future__ import annotations

import getpass
import re
import shutil
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path

from sgdr.cli import RunBusy
from sgdr.paper.grid import PlannedRun, short_name
from sgdr.run import lock, settings
from sgdr.run.outputs import read_metrics
from sgdr.run.record import DamagedRecord, Record, read_record

# The lines a job script writes into a run's log around each start (slurm.py's TASK_BODY).
LOG_MARK = "== grid: "
EXIT_LINE = re.compile(re.escape(LOG_MARK) + r"exit status (\d+)")
TASK_LINE = re.compile(re.escape(LOG_MARK) + r"task (\d+_\d+) ")
BUSY = RunBusy.exit_status  # train.py's exit status when another process holds the run
STATES = ("finished", "running", "queued", "interrupted", "failed", "conflict", "not started")
TASKS = "tasks_{}.txt"  # in a grid's slurm/ folder, for each submission: "<job>_<task> <run folder>" a line
SQUEUE_SECONDS = 20  # squeue on a busy controller can be slow; past this, the states come from the folders only


@dataclass(frozen=True)
class RunState:
    state: str  # one of STATES
    epochs_done: int
    detail: str = ""  # who runs it, why it stopped, the error


def _epochs_in(metrics: Path) -> int:
    """Complete epochs on disk: metrics.jsonl has one line for each (written after the checkpoint); none when it
    cannot be read."""
    try:
        return len(read_metrics(metrics))
    except (OSError, ValueError):
        return 0


def last_exit(log: Path) -> tuple[int, str] | None:
    """The exit status of the last task that ran the run (as its job script logged it) and the last line
    the run printed before it; None without such a line. Tasks that found the run busy are passed over."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for k in range(len(lines) - 1, -1, -1):
        match = EXIT_LINE.match(lines[k])
        if match and int(match[1]) != BUSY:
            said = [line.strip() for line in lines[:k] if line.strip() and not line.startswith(LOG_MARK)]
            return int(match[1]), said[-1] if said else ""
    return None


def state(run: PlannedRun) -> RunState:
    """What the run's folder says: its lock (running), its record and metrics, and its log's last exit."""
    files = run.files
    if blocked := next((p for p in (files.run_dir, *files.run_dir.parents) if p.exists() and not p.is_dir()), None):
        return RunState("failed", 0, f"{blocked} is a file, where the run's folder {files.run_dir} goes: move it")
    done = _epochs_in(files.metrics)
    if who := lock.who_runs(files.run_dir):
        return RunState("running", done, who)
    if files.log.exists() and not files.log.is_file():
        return RunState(
            "failed", done, f"its log {files.log} is a folder, where the job writes the run's output: move it"
        )
    try:
        record: Record | None = read_record(files.record)
    except FileNotFoundError:
        record = None
    except (OSError, DamagedRecord):
        return RunState(
            "failed",
            done,
            f"its record {files.record} cannot be read: restore it, or start the run over with --overwrite",
        )
    if record is not None and (other := other_settings(record, run)):
        return RunState(
            "conflict",
            done,
            f"its folder holds a run of other settings ({other}): this grid's run needs another GRID_DIR, or that run "
            "moved away",
        )
    outcome = record.outcome if record is not None else ""
    if record is not None and record.finished:
        if done < record.epochs:  # the record says more epochs than the metrics hold: damaged or cut
            return RunState(
                "interrupted",
                done,
                f"finished {record.epochs} epochs, but {files.metrics} holds {done}: resume rewrites it",
            )
        if done == run.epochs:
            return RunState("finished", done)
        if done > run.epochs:
            return RunState("finished", done, f"trained {done} epochs, more than the {run.epochs} asked for here")
        # The grid now asks for more epochs than the run was given.
        return RunState("interrupted", done, f"finished its {done} epochs; submit again to extend it to {run.epochs}")
    exited = last_exit(files.log)
    if exited is not None and exited[0] != 0 and exited[0] <= 128:  # above 128: stopped by a signal
        return RunState("failed", done, f"exit status {exited[0]}: {exited[1]}; log {files.log}")
    if outcome == "aborted" or outcome.startswith("stopped"):
        where = f"; log {files.log}" if files.log.exists() else ""
        return RunState("failed", done, f"{outcome}{where}")
    if record is not None or files.checkpoint.exists():
        why = outcome if outcome and outcome != "running" else "ended without a word (killed?)"
        return RunState("interrupted", done, why)
    return RunState("not started", 0)


def other_settings(record: Record, run: PlannedRun) -> str:
    """How the run recorded in a planned run's folder differs from the planned run ("" when it is that run): the
    settings both say, but for those only training fixes (its images, processes, the machine's defaults)."""
    planned = settings.config_of(run.args, run.args.seed, 1)
    recorded = record.settings
    skip = {"data", "processes", *(name for name, s in settings.DECIDES.items() if s.new_run is not None)}
    keys = sorted((set(planned) | set(settings.upgrade(planned))) - skip)
    wanted = settings.upgrade(planned)
    return "; ".join(
        f"{key}: {recorded.get(key)!r} recorded, {wanted.get(key)!r} planned"
        for key in keys
        if recorded.get(key) != wanted.get(key)
    )


@dataclass(frozen=True)
class Tasks:
    """The SLURM array tasks of one run: those that started it (its log, in order) and whether each found it
    busy (another task held it, exit status BUSY), and those a submission gave it that its log may not name
    yet (the grid's slurm/ records)."""

    started: tuple[tuple[str, bool], ...] = ()
    submitted: tuple[str, ...] = ()

    @classmethod
    def of(cls, run: PlannedRun, submitted: dict[Path, list[str]]) -> Tasks:
        try:
            lines = run.files.log.read_text(errors="replace").splitlines()
        except OSError:
            lines = []
        started: list[list] = []
        for line in lines:
            if begun := TASK_LINE.match(line):
                started.append([begun[1], False])
            elif (ended := EXIT_LINE.match(line)) and int(ended[1]) == BUSY and started:
                started[-1][1] = True
        given = submitted.get(run.files.run_dir.resolve(), [])
        return cls(tuple((task, busy) for task, busy in started), tuple(given))

    @property
    def every(self) -> list[str]:
        """Every task of the run, each once: those that started it, then those only submitted."""
        return list(dict.fromkeys([*(task for task, _ in self.started), *self.submitted]))

    @property
    def last(self) -> str | None:
        """The task that last ran the run (those that found it busy passed over, as by ``last_exit``)."""
        ran = [task for task, busy in self.started if not busy]
        return ran[-1] if ran else None


def queue() -> dict[str, str] | None:
    """The state of every array task squeue lists (``"123_4": "PENDING"``), or None when squeue is not there or
    does not answer."""
    if shutil.which("squeue") is None:
        return None
    command = ["squeue", "--noheader", "--array", "--format=%i|%T"]
    try:  # this user's jobs (the array's tasks are its own): a short answer on a busy cluster
        command += ["--user", getpass.getuser()]
    except (OSError, KeyError):  # no name for this user id: every job, told apart by its id all the same
        pass
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=SQUEUE_SECONDS)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    return dict(line.strip().split("|", 1) for line in done.stdout.splitlines() if "|" in line)


def submitted_tasks(folder: Path) -> dict[Path, list[str]]:
    """Every array task ``grid.sh --submit`` gave each run of the grid in ``folder`` (its slurm/ record of each
    submission), by the run's folder."""
    tasks: dict[Path, list[str]] = {}
    for path in sorted((folder / "slurm").glob(TASKS.format("*"))):
        try:
            lines = path.read_text(errors="replace").splitlines()
        except OSError:
            continue
        for line in lines:
            task, _, run_dir = line.partition(" ")
            if run_dir:
                tasks.setdefault(Path(run_dir), []).append(task)
    return tasks


def with_queue(now: RunState, tasks: Tasks, queued: dict[str, str]) -> RunState:
    """A run not under way, as the queue tells it: queued (a task of it waits to start: a requeue, a preemption,
    a submission not started yet), or no task of it in the queue (cancelled?)."""
    mine = tasks.every
    if now.state not in ("interrupted", "not started") or not mine:
        return now
    if waiting := [task for task in mine if task in queued]:
        task = waiting[-1]
        said = f"task {task} is {queued[task]} in the queue: it continues by itself"
        return replace(now, state="queued", detail=said)
    said = f"no task of it is in the queue (the last: {tasks.last or mine[-1]}; cancelled?): submit again to continue"
    return replace(now, detail=f"{now.detail}; {said}" if now.detail else said)


def table(runs: list[PlannedRun], folder: Path) -> tuple[list[str], dict[str, int], str]:
    """One line for each run (its name under the grid's ``folder``, state, epochs and detail), the count of each
    state, and a line on what the queue said ("" when no run was started by SLURM)."""
    states = [state(run) for run in runs]
    said = ""
    submitted = submitted_tasks(folder)
    tasks = [Tasks.of(run, submitted) for run in runs]  # each log read once
    if any(now.state in ("interrupted", "not started") and mine.every for now, mine in zip(states, tasks)):
        queued = queue()
        if queued is None:
            said = (
                "(states from the run folders only: squeue did not answer here, so a run SLURM requeued and one "
                "whose task was cancelled both read as interrupted)"
            )
        else:
            states = [with_queue(now, mine, queued) for now, mine in zip(states, tasks)]
    names = [short_name(run, folder) for run in runs]
    width = max(map(len, names), default=0)
    lines = []
    for run, name, now in zip(runs, names, states):
        epochs = f"{now.epochs_done}/{run.epochs}" if now.state != "not started" else ""
        lines.append(f"{name:<{width}}  {now.state:<11}  {epochs:>9}  {now.detail}".rstrip())
    counts = {s: sum(now.state == s for now in states) for s in STATES}
    return lines, counts, said

"""Where each run of a grid stands, read from its folder alone (lock, record, metrics, the task's log), not
from SLURM's accounting: finished, running, interrupted, failed or not started."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from sgdr.cli import RunBusy
from sgdr.paper.grid import PlannedRun, short_name
from sgdr.run import lock, settings
from sgdr.run.outputs import read_metrics
from sgdr.run.record import DamagedRecord, Record, read_record

# The lines a job script writes into a run's log around each start (slurm.py's TASK_BODY).
LOG_MARK = "== grid: "
EXIT_LINE = re.compile(re.escape(LOG_MARK) + r"exit status (\d+)")
BUSY = RunBusy.exit_status  # train.py's exit status when another process holds the run
STATES = ("finished", "running", "interrupted", "failed", "conflict", "not started")


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


def table(runs: list[PlannedRun], folder: Path) -> tuple[list[str], dict[str, int]]:
    """One line for each run (its name under the grid's ``folder``, state, epochs and detail), and the count of
    each state."""
    states = [state(run) for run in runs]
    names = [short_name(run, folder) for run in runs]
    width = max(map(len, names), default=0)
    lines = []
    for run, name, now in zip(runs, names, states):
        epochs = f"{now.epochs_done}/{run.epochs}" if now.state != "not started" else ""
        lines.append(f"{name:<{width}}  {now.state:<11}  {epochs:>9}  {now.detail}".rstrip())
    counts = {s: sum(now.state == s for now in states) for s in STATES}
    return lines, counts

"""The runs of a grid, read from its train.py command lines, and what each run's folder says of it:
finished, running, interrupted, failed or not started."""

from __future__ import annotations

import json
import os
import re
import shlex
from argparse import Namespace
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sgdr.cli import UserError
from sgdr.run import layout, lock
from sgdr.run.settings import parse_args

PLAN = "grid.txt"  # in a grid's folder: its train.py commands, one a line, as grid.sh --print gives them
# The lines a job script writes into a run's log around each start (see grid.py's batch script).
LOG_MARK = "== grid: "
EXIT_LINE = re.compile(re.escape(LOG_MARK) + r"exit status (\d+)")
BUSY = 75  # train.py's exit status when another process holds the run (errors.RunBusy)
STATES = ("finished", "running", "interrupted", "failed", "not started")


@dataclass(frozen=True)
class PlannedRun:
    """One train.py command of a grid, and the files it writes."""

    command: list[str]  # the whole command line, interpreter first
    args: Namespace  # as train.py parses it
    files: layout.RunFiles

    @property
    def epochs(self) -> int:
        return self.args.epochs

    @property
    def name(self) -> str:
        """The run as its folders name it: ``<output dir>/runs/<schedule>``."""
        return str(self.files.run_dir)


@dataclass(frozen=True)
class RunState:
    state: str  # one of STATES
    epochs_done: int
    detail: str = ""  # who runs it, why it stopped, the error


def read_plan(lines: Iterable[str], source: str = "the commands") -> list[PlannedRun]:
    """The runs of ``lines`` (blank lines and ``#`` comments skipped); a ``UserError`` naming a line that
    is not a train.py command train.py accepts."""
    runs = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            words = shlex.split(line)
        except ValueError as error:
            raise UserError(f"{source}, line {number}: {error}: {line.strip()}") from None
        script = next((i for i, word in enumerate(words) if word.endswith("train.py")), None)
        if script is None:
            raise UserError(f"{source}, line {number} is not a train.py command: {line.strip()}")
        try:
            args = parse_args(words[script + 1 :])
        except SystemExit:  # argparse said why on stderr
            misplaced = [w for w in ("--sbatch", "--dry-run", "--print", "--status", "--submit") if w in words]
            hint = f" ({' and '.join(misplaced)} must come first: sh grid.sh --submit [--dry-run] [--sbatch ...] FLAGS)"
            raise UserError(
                f"{source}, line {number}: train.py refuses these flags{hint if misplaced else ''}: {line.strip()}"
            ) from None
        files = layout.files_of(args)
        runs.append(PlannedRun(words, args, files))
    return runs


def read_plan_file(path: Path) -> list[PlannedRun]:
    """The runs of a file of train.py commands. Those of a grid's own ``grid.txt`` are found from the
    file's folder: grid.sh wrote their output folders (``<grid>/seed<N>``) relative to where it ran,
    and the grid may have moved since; any other file's, as written."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise UserError(f"cannot read {path} ({error})") from None
    runs = read_plan(text.splitlines(), str(path))
    places = [_in_grid(Path(run.args.output_dir)) for run in runs]
    if path.name != PLAN or None in places or len({root for root, _ in places}) != 1:
        return runs  # a list of the user's, or not grid.sh's layout: the paths as written
    return [
        PlannedRun(run.command, run.args, layout.files_of(run.args, path.parent / inside))
        for run, (_, inside) in zip(runs, places)
    ]


def _in_grid(output_dir: Path) -> tuple[Path, Path] | None:
    """(the grid's folder, the path inside it) of a run's output folder as grid.sh names it, ``<grid>/seed<N>``
    or ``<grid>/seed<N>/<what its schedule adds>``; None for another layout."""
    parts = output_dir.parts
    seeds = [k for k, part in enumerate(parts) if re.fullmatch(r"seed\d+", part)]
    if not seeds or len(parts) - seeds[-1] > 2:
        return None
    return Path(*parts[: seeds[-1]]), Path(*parts[seeds[-1] :])


def _record(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _epochs_in(metrics: Path) -> int:
    """Complete epochs on disk: metrics.jsonl has one line for each (written after the checkpoint)."""
    try:
        return sum(1 for line in metrics.read_text().splitlines() if line.strip())
    except (OSError, UnicodeDecodeError):
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
    done = _epochs_in(files.metrics)
    if who := lock.who_runs(files.run_dir):
        return RunState("running", done, who)
    if files.log.exists() and not files.log.is_file():
        return RunState(
            "failed", done, f"its log {files.log} is a folder, where the job writes the run's output: move it"
        )
    record = _record(files.record)
    if files.record.exists() and not record:
        return RunState(
            "failed",
            done,
            f"its record {files.record} cannot be read: restore it, or start the run over with --overwrite",
        )
    sessions = record.get("sessions") if isinstance(record.get("sessions"), list) else []
    outcome = sessions[-1].get("outcome", "") if sessions and isinstance(sessions[-1], dict) else ""
    if record.get("finished"):
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
    if record or files.checkpoint.exists():
        why = outcome if outcome and outcome != "running" else "ended without a word (killed?)"
        return RunState("interrupted", done, why)
    return RunState("not started", 0)


def grid_folder(runs: Sequence[PlannedRun]) -> Path:
    """The folder that holds the runs' output folders (grid.sh's $GRID_DIR/<dataset>-<model>-<recipe>)."""
    outputs = {str(run.files.run_dir.parent.parent) for run in runs}
    return Path(os.path.commonpath(outputs)) if len(outputs) > 1 else Path(outputs.pop()).parent


def short_name(run: PlannedRun, folder: Path) -> str:
    """``seed1/wr_s10_m2``: the run's output folder under ``folder``, then its schedule."""
    output = run.files.run_dir.parent.parent
    return os.path.join(os.path.relpath(output, folder), run.files.run_dir.name)


def table(runs: list[PlannedRun]) -> tuple[list[str], dict[str, int]]:
    """One line for each run (its name, state, epochs and detail), and the count of each state."""
    states = [state(run) for run in runs]
    folder = grid_folder(runs)
    names = [short_name(run, folder) for run in runs]
    width = max(map(len, names), default=0)
    lines = []
    for run, name, now in zip(runs, names, states):
        epochs = f"{now.epochs_done}/{run.epochs}" if now.state != "not started" else ""
        lines.append(f"{name:<{width}}  {now.state:<11}  {epochs:>9}  {now.detail}".rstrip())
    counts = {s: sum(now.state == s for now in states) for s in STATES}
    return lines, counts

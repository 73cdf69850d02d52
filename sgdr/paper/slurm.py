"""The grid on a SLURM cluster: its runs as one job array, a run per task, each task requeued after preemption
or near its time limit; sbatch given the batch script, and the plan recorded once sbatch has taken it."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from sgdr import storage
from sgdr.cli import UserError
from sgdr.paper.grid import PlannedRun, record_plan
from sgdr.paper.gridstate import BUSY, LOG_MARK, TASKS

# Seconds before a task's time limit at which SLURM sends the job script SIGUSR1: the run stops at
# its next batch boundary, the checkpoint holds every complete epoch, and the task requeues itself.
SIGNAL_SECONDS = 300

# The part of the job script that is the same for every task: log the start, run the command with
# its output appended to the run's log, pass SIGTERM (requeue, preemption, scancel) and SIGUSR1 (the
# time limit is near) on to it as SIGTERM, log how it ended, and requeue the task after a time-limit
# stop. A run that finished does nothing when its task runs again (train.py --resume).
TASK_BODY = r"""
mkdir -p "$(dirname "$log")"
say() { echo "LOG_MARK$* at $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$log"; }
say "task ${SLURM_ARRAY_JOB_ID:-?}_${SLURM_ARRAY_TASK_ID} (job ${SLURM_JOB_ID:-?}) starts on $(hostname)," \
    "start $((${SLURM_RESTART_COUNT:-0} + 1))"
limit=0
child=""
trap 'limit=1; [ -z "$child" ] || kill -TERM "$child" 2>/dev/null' USR1
trap '[ -z "$child" ] || kill -TERM "$child" 2>/dev/null' TERM
"$@" >> "$log" 2>&1 < /dev/null &
child=$!
while :; do  # a trapped signal interrupts wait: wait again until the run has really ended
    wait "$child"
    status=$?
    kill -0 "$child" 2>/dev/null || break
done
case $status in
    0) say "exit status 0" ;;
    BUSY) say "exit status BUSY: another job is running this run (see its lock); this task did nothing"; exit 0 ;;
    *) say "exit status $status" ;;
esac
if [ $limit = 1 ] && [ $status != 0 ]; then
    say "the time limit is near: requeued to continue from the checkpoint"
    scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"  # this task alone, not the array
fi
exit $status
""".replace("LOG_MARK", LOG_MARK).replace("BUSY", str(BUSY))


def batch_script(runs: Sequence[PlannedRun], workdir: Path, slurm_dir: Path, signal_seconds: int) -> str:
    """The job array: task k runs the k-th command, in ``workdir``, with its output in the run's log."""
    cases = "".join(
        f"    {k}) log={shlex.quote(str(run.files.log))}; set -- {shlex.join(run.command)} ;;\n"
        for k, run in enumerate(runs)
    )
    header = [
        "#!/bin/sh",
        f"# The grid's {len(runs)} runs as one SLURM job array, a run per task (written by grid.sh --submit).",
        "#SBATCH --job-name=sgdr-grid",
        f"#SBATCH --array=0-{len(runs) - 1}",
        "#SBATCH --requeue",
        "#SBATCH --open-mode=append",
        f"#SBATCH --signal=B:USR1@{signal_seconds}",
        # (also given on sbatch's command line, which takes any path; a directive ends at a space)
        *([f"#SBATCH --output={slurm_dir}/%A_%a.out"] if not any(c.isspace() for c in str(slurm_dir)) else []),
        "set -u",
        f"cd {shlex.quote(str(workdir))}",
        'case "${SLURM_ARRAY_TASK_ID:-}" in',
    ]
    refuse = f'    *) echo "run this script with sbatch: it is a job array of {len(runs)} tasks" >&2; exit 2 ;;\n'
    return "\n".join(header) + "\n" + cases + refuse + "esac" + TASK_BODY


def tasks_beyond(options: Sequence[str], runs: int) -> str | None:
    """The --array (-a) option among sbatch's ``options`` if it names a task outside 0..runs-1, else None: such a
    task would find no run (SLURM's forms: 5, 0-9, 1,3,7-9, 0-29%8, 0-9:2)."""
    spec = None
    for k, word in enumerate(options):
        if word in ("-a", "--array") and k + 1 < len(options):
            spec = options[k + 1]
        elif word.startswith("--array=") or (word.startswith("-a") and len(word) > 2):
            spec = word.split("=", 1)[1] if word.startswith("--array=") else word[2:]
    if spec is None:
        return None
    for part in spec.split("%")[0].split(","):
        numbers = [int(n) for n in part.split(":")[0].split("-") if n.isdigit()]
        if numbers and max(numbers) >= runs:
            return spec
    return None


def time_limit(options: Sequence[str]) -> int | None:
    """Seconds of the time limit the sbatch options (or SBATCH_TIMELIMIT) ask for; None if none or unreadable.
    SLURM's forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    value = os.environ.get("SBATCH_TIMELIMIT")
    for k, word in enumerate(options):
        if word in ("-t", "--time") and k + 1 < len(options):
            value = options[k + 1]
        elif word.startswith("--time="):
            value = word.split("=", 1)[1]
    if not value or not all(part.isdigit() for part in value.replace("-", ":", 1).split(":")):
        return None  # "infinite", "UNLIMITED" or a typo: sbatch says
    days, hours, minutes, seconds = 0, 0, 0, 0
    if "-" in value:
        day, rest = value.split("-", 1)
        days, (hours, minutes, seconds) = int(day), ([int(p) for p in rest.split(":")] + [0, 0])[:3]
    else:
        parts = [int(p) for p in value.split(":")]
        if len(parts) == 3:
            hours, minutes, seconds = parts
        else:
            minutes, seconds = (parts + [0])[:2]
    return ((days * 24 + hours) * 60 + minutes) * 60 + seconds


def submit(
    runs: Sequence[PlannedRun],
    folder: Path,
    sbatch: Sequence[str],
    signal_seconds: int,
    dry_run: bool = False,
    notes: Sequence[str] = (),
) -> str:
    """Submit ``runs`` (of the grid in ``folder``) as one job array with the sbatch options in ``sbatch`` (each a
    shell-quoted string), each task warned ``signal_seconds`` before its time limit; then add them to the grid's
    plan (with its comment lines ``notes``). What to tell the user; with ``dry_run``, the batch script and the
    sbatch command, and nothing done."""
    try:
        options = [word for text in sbatch for word in shlex.split(text)]
    except ValueError as error:
        raise UserError(
            f"--sbatch {' '.join(sbatch)!r}: {error}; give sbatch's options as one quoted string."
        ) from None
    if (beyond := tasks_beyond(options, len(runs))) is not None:
        raise UserError(
            f"--array {beyond} names tasks this grid does not have: its {len(runs)} runs are tasks "
            f"0-{len(runs) - 1} (e.g. --array=0-{len(runs) - 1}%4 runs four at a time)."
        )
    limit = time_limit(options)
    if limit is not None and limit <= 2 * signal_seconds:
        raise UserError(
            f"a time limit of {limit} s leaves no time to train: each task stops {signal_seconds} s before "
            f"its limit and requeues itself. Ask for more time, or for a shorter warning "
            f"(SIGNAL_SECONDS=N sh grid.sh --submit, or --signal-seconds N)."
        )
    slurm_dir = (folder / "slurm").resolve()
    script = batch_script(runs, Path.cwd(), slurm_dir, signal_seconds)
    command = ["sbatch", "--parsable", f"--output={slurm_dir}/%A_%a.out", *options]
    if dry_run:
        return f"{script}# submitted as: {shlex.join(command)} < this script"
    if shutil.which("sbatch") is None:
        raise UserError("sbatch is not on this machine's PATH: submit from a SLURM login node (or --dry-run).")
    slurm_dir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(command, input=script, capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"sbatch refused the job array: {done.stderr.strip() or done.stdout.strip()}")
    job = done.stdout.strip().split(";")[0]
    if not job.isdigit():  # e.g. --test-only: sbatch says what it would do, and submits nothing
        said = (done.stderr.strip() or done.stdout.strip() or "nothing").splitlines()[-1]
        raise UserError(f"sbatch gave no job id (it said: {said}): nothing was submitted, nothing planned.")
    record_plan(runs, folder, notes)
    with storage.atomic_write(slurm_dir / TASKS.format(job)) as f:  # which task runs which run: for --status
        f.write("".join(f"{job}_{k} {run.files.run_dir.resolve()}\n" for k, run in enumerate(runs)).encode())
    own_array = any(word == "-a" or word.startswith("--array") for word in options)
    tasks = "the tasks your --array names" if own_array else f"tasks 0-{len(runs) - 1}"
    return "\n".join(
        [
            f"Submitted {len(runs)} runs as job array {job} ({tasks}).",
            f"  follow it:  squeue -j {job}",
            "  its runs:   sh grid.sh --status   (with the same settings and flags as --submit)",
            f"  a run's log, beside its folder: {runs[0].files.log}",
        ]
    )

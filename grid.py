"""The grid on a SLURM cluster: submit its runs as one job array, and show the state of every run.

    sh grid.sh --print | python grid.py status          (what sh grid.sh --status runs)
    sh grid.sh --print | python grid.py submit [--dry-run] [--sbatch "OPTIONS"]   (sh grid.sh --submit)

Both read the grid's train.py commands, one a line, as ``grid.sh --print`` gives them (or from
--commands FILE), so they work the same for a grid trained by grid.sh, by any launcher, or by SLURM.
The state comes from the run folders alone (lock, run record, metrics, the task's log), not from
SLURM's accounting. See docs/cluster.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from sgdr import storage
from sgdr.cli import ShowDefaults, UserError, reports_user_errors
from sgdr.paper import gridruns

# Seconds before a task's time limit at which SLURM sends the job script SIGUSR1: the run stops at
# its next batch boundary, the checkpoint holds every complete epoch, and the task requeues itself.
SIGNAL_SECONDS = 300

# The part of the job script that is the same for every task: log the start, run the command with
# its output appended to the run's log, pass SIGTERM (requeue, preemption, scancel) and SIGUSR1 (the
# time limit is near) on to it as SIGTERM, log how it ended, and requeue the task after a time-limit
# stop. A run that finished does nothing when its task runs again (train.py --resume).
TASK_BODY = r"""
mkdir -p "$(dirname "$log")"
say() { echo "== grid: $* at $(date -u +%Y-%m-%dT%H:%M:%SZ)" >> "$log"; }
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
    75) say "exit status 75: another job is running this run (see its lock); this task did nothing"; exit 0 ;;
    *) say "exit status $status" ;;
esac
if [ $limit = 1 ] && [ $status != 0 ]; then
    say "the time limit is near: requeued to continue from the checkpoint"
    scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"  # this task alone, not the array
fi
exit $status
"""


def batch_script(runs: Sequence[gridruns.PlannedRun], workdir: Path, slurm_dir: Path, signal_seconds: int) -> str:
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], epilog=__doc__.split("\n\n", 1)[1], formatter_class=ShowDefaults
    )
    parser.add_argument(
        "--commands", default="-", help="file with the grid's train.py commands, one a line; - reads stdin (default: -)"
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="{status,submit}")
    verbs.add_parser(
        "status",
        help="one line for every run: finished, running, interrupted, failed, not started",
        formatter_class=ShowDefaults,
    )
    submit = verbs.add_parser(
        "submit", help="submit the runs as one SLURM job array (sbatch)", formatter_class=ShowDefaults
    )
    submit.add_argument("--dry-run", action="store_true", help="print the batch script and the sbatch command only")
    submit.add_argument(
        "--sbatch",
        action="append",
        default=[],
        metavar="OPTIONS",
        help='sbatch options for every task, as one shell-quoted string, e.g. "--gres=gpu:1 --time=24:00:00" '
        "(SBATCH_* variables work too)",
    )
    submit.add_argument(
        "--signal-seconds",
        type=int,
        default=SIGNAL_SECONDS,
        help="how long before a task's time limit it stops and requeues itself",
    )
    return parser


def read_commands(source: str) -> list[gridruns.PlannedRun]:
    if source == "-":
        runs = gridruns.read_plan(sys.stdin.read().splitlines(), "standard input")
    else:
        runs = gridruns.read_plan_file(Path(source))
    if not runs:
        raise UserError(f"no train.py commands in {'standard input' if source == '-' else source}.")
    folders = [run.files.run_dir.resolve() for run in runs]
    if twice := sorted({str(run.files.run_dir) for run, f in zip(runs, folders) if folders.count(f) > 1}):
        raise UserError(
            f"the grid names a run more than once ({', '.join(twice)}): give each seed and schedule once "
            "in SEEDS and SCHEDULES."
        )
    return runs


def status(runs: list[gridruns.PlannedRun]) -> int:
    lines, counts = gridruns.table(runs)
    print(f"{gridruns.grid_folder(runs)}:")
    print("\n".join(lines))
    print(f"{len(runs)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    return 0


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


def record_plan(runs: list[gridruns.PlannedRun]) -> None:
    """Add the runs' commands to the grid's grid.txt (once each), which report.py reads to name the
    planned runs that did not finish. Written only once sbatch has taken them."""
    plan = gridruns.grid_folder(runs) / gridruns.PLAN
    before = plan.read_text().splitlines() if plan.is_file() else []
    # Once each by its words, not its text: grid.sh's train mode quotes its lines in its own way.
    lines = {}
    for line in [*before, *(shlex.join(run.command) for run in runs)]:
        try:
            lines.setdefault(tuple(shlex.split(line)), line)
        except ValueError:  # a line the report will name as unreadable: kept as it is
            lines.setdefault((line,), line)
    with storage.atomic_write(plan) as f:
        f.write(("\n".join(lines.values()) + "\n").encode())


def submit(runs: list[gridruns.PlannedRun], args: argparse.Namespace) -> int:
    try:
        options = [word for text in args.sbatch for word in shlex.split(text)]
    except ValueError as error:
        raise UserError(
            f"--sbatch {' '.join(args.sbatch)!r}: {error}; give sbatch's options as one quoted string."
        ) from None
    limit = time_limit(options)
    if limit is not None and limit <= 2 * args.signal_seconds:
        raise UserError(
            f"a time limit of {limit} s leaves no time to train: each task stops {args.signal_seconds} s before "
            f"its limit and requeues itself. Ask for more time, or for a shorter warning "
            f"(SIGNAL_SECONDS=N sh grid.sh --submit, or python grid.py submit --signal-seconds N)."
        )
    slurm_dir = (gridruns.grid_folder(runs) / "slurm").resolve()
    script = batch_script(runs, Path.cwd(), slurm_dir, args.signal_seconds)
    command = ["sbatch", "--parsable", f"--output={slurm_dir}/%A_%a.out", *options]
    if args.dry_run:
        print(f"{script}# submitted as: {shlex.join(command)} < this script")
        return 0
    if shutil.which("sbatch") is None:
        raise UserError("sbatch is not on this machine's PATH: submit from a SLURM login node (or --dry-run).")
    slurm_dir.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(command, input=script, capture_output=True, text=True)
    if done.returncode != 0:
        raise UserError(f"sbatch refused the job array: {done.stderr.strip() or done.stdout.strip()}")
    job = done.stdout.strip().split(";")[0]
    record_plan(runs)
    own_array = any(word == "-a" or word.startswith("--array") for word in options)
    tasks = "the tasks your --array names" if own_array else f"tasks 0-{len(runs) - 1}"
    print(f"Submitted {len(runs)} runs as job array {job} ({tasks}).")
    print(f"  follow it:  squeue -j {job}")
    print("  its runs:   sh grid.sh --status   (with the same settings and flags as --submit)")
    print(f"  a run's log, beside its folder: {runs[0].files.log}")
    return 0


@reports_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    runs = read_commands(args.commands)
    return status(runs) if args.verb == "status" else submit(runs, args)


if __name__ == "__main__":
    sys.exit(main())

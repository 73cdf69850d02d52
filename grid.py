"""The paper's grid of schedules and seeds: train it, print its commands, submit it to SLURM, show its status.

    sh grid.sh [train.py flags...]           train the runs, one after the other
    sh grid.sh --print [train.py flags...]   print their train.py commands, one a line, and train nothing
                                             (for GNU parallel or another launcher)
    sh grid.sh --submit [--dry-run] [--sbatch "OPTIONS"] [train.py flags...]
                                             submit them to SLURM as one job array, a run per task,
                                             requeued after preemption or near its time limit
                                             (--dry-run: print the batch script only)
    sh grid.sh --status [train.py flags...]  the state of every run, read from its folder (with no
                                             settings: the runs of the plan written at training or
                                             --submit)

(grid.sh hands its arguments to this script: python grid.py ... is the same.) Every run is started with
--resume: run the same command again after an interruption and it continues where it stopped. Then
`python report.py` compares the results with the paper. The grid's own options come first.

Settings, by environment variable (defaults: the paper's):
  MODEL=wrn-28-10  DATASET=cifar10  RECIPE=paper  SEEDS="1 2 3 4 5"  EPOCHS=200  GRID_DIR=outputs/grid
  SCHEDULES="default default@0.1 50:1 100:1 200:1 1:2 10:2"   (default: the multistep schedule;
      T_0:T_mult. After either, @LR: another initial lr (default@0.1 is the paper's eta_0 = 0.1 row, the
      baseline of its claim of fewer epochs); after T_0:T_mult,
      /wW /sS /dD /kK: a warmup of W epochs (from lr S), cycle decay D, K cycles; each at most once, in
      any order, and written any way: 10:2/d0.5/w5, 10:2/w5/d0.50 and 10:2/w5/d0.5/s0 are one run, in
      seed<k>/w5_d0.5/)
  COMPARE=1   (adds two comparison schedules: one cosine cycle after a 5-epoch warmup, no restart,
               $((EPOCHS - 5)):1/w5; and SGDR with cycle decay 0.5, 10:2/d0.5)
  SWA=1       (adds the word swa: SWA's own schedule, Izmailov et al. 2018, at 1.5x EPOCHS, lr 0.1,
               averaging from epoch 161 of 200 scaled to EPOCHS at 0.05: -e 300 --swa-start 161 at 200;
               its runs in seed<k>/runs/swa, read by report.py beside Table 2)
  SCALED=1    (a try-out that shows what the paper shows: every schedule's epochs, T_0, the default's
               steps and warmups, x EPOCHS/200, rounded, at least 1; EPOCHS=40 rounds
               only T_0 = 1)
  TABLE2_SEEDS=""   (seeds T_0 = 10, T_mult = 2 is also trained with, for Table 2's ensembles of 16 runs:
                     TABLE2_SEEDS="$(seq 1 16)"; off by default, 11 more runs)
  SIGNAL_SECONDS=300   (--submit: how long before its time limit a task stops and requeues itself)
  PYTHON=python   (the interpreter of the runs' commands)
--model, --dataset, --recipe and -e/--epochs among the flags work too (train.py reads them, and so does
the grid). Runs go to $GRID_DIR/$DATASET-$MODEL-$RECIPE/seed$SEED/. See docs/cluster.md.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from sgdr.cli import Parser, UserError, int_at_least, reports_user_errors
from sgdr.paper import gridstate, slurm
from sgdr.paper.grid import (
    DEFAULTS,
    PLAN,
    Grid,
    GridError,
    PlannedRun,
    grid_folder,
    read_grid,
    read_plan,
    read_plan_file,
    record_plan,
)

# The grid's own options, which come before train.py's flags, and how many words follow each.
OWN = {
    "-h": 0,
    "--help": 0,
    "--print": 0,
    "--status": 0,
    "--submit": 0,
    "--dry-run": 0,
    "--sbatch": 1,
    "--signal-seconds": 1,
    "--commands": 1,
}
USAGE = "sh grid.sh [--print | --status | --submit [--dry-run] [--sbatch OPTIONS]] [train.py flags...]"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="grid.sh",
        usage=USAGE,
        description=__doc__.splitlines()[0],
        epilog=__doc__.split("\n\n", 1)[1],
    )
    modes = parser.add_mutually_exclusive_group()
    modes.add_argument("--print", action="store_true", help="print the runs' train.py commands, train nothing")
    modes.add_argument(
        "--status",
        action="store_true",
        help="one line for every run: finished, running, interrupted, failed, not started",
    )
    modes.add_argument("--submit", action="store_true", help="submit the runs to SLURM as one job array (sbatch)")
    parser.add_argument("--dry-run", action="store_true", help="with --submit: print the batch script, submit nothing")
    parser.add_argument(
        "--sbatch",
        action="append",
        default=[],
        metavar="OPTIONS",
        help='with --submit: sbatch options for every task, as one shell-quoted string, e.g. "--gres=gpu:1 '
        '--time=24:00:00" (repeatable; SBATCH_* variables work too) (default: none)',
    )
    parser.add_argument(
        "--signal-seconds",
        type=int_at_least(1),
        help="with --submit: how long before its time limit a task stops and requeues itself "
        f"(default: SIGNAL_SECONDS, else {slurm.SIGNAL_SECONDS})",
    )
    parser.add_argument(
        "--commands",
        metavar="FILE",
        help="with --status or --submit: the runs of this file of train.py commands, one a line (- reads standard "
        "input), instead of the grid the settings plan (default: the grid)",
    )
    return parser


def split_arguments(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """(the grid's own options, the train.py flags after them); a GridError for an option out of its place."""
    k, own = 0, []
    while k < len(argv) and argv[k].split("=", 1)[0] in OWN:
        word = argv[k].split("=", 1)[0]
        if OWN[word] and "=" not in argv[k]:  # --sbatch "--gres=gpu:1": a value that starts like a flag
            if k + 1 >= len(argv):
                raise GridError(f"{word} needs a value, as one quoted word.")
            own.append(f"{word}={argv[k + 1]}")
            k += 2
        else:
            own.append(argv[k])
            k += 1
    flags = list(argv[k:])
    if flags and flags[0].startswith("--") and (meant := [o for o in OWN if o.startswith(flags[0])]):
        raise GridError(f"{flags[0]} is not an option (abbreviations are refused; {' or '.join(meant)}?): {USAGE}")
    if misplaced := next((w for w in flags if w.split("=", 1)[0] in OWN), None):
        raise GridError(f"{misplaced.split('=', 1)[0]} must come first: {USAGE}")
    modes = [w for w in own if w in ("--print", "--status", "--submit")]
    if len(modes) > 1:
        raise GridError(f"{' and '.join(modes)}: one mode at a time: {USAGE}")
    args = build_parser().parse_args(own)
    if not args.submit and (args.dry_run or args.sbatch or args.signal_seconds is not None):
        raise GridError(f"--dry-run, --sbatch and --signal-seconds go with --submit: {USAGE}")
    if args.commands is not None and not (args.status or args.submit):
        raise GridError("--commands goes with --status or --submit.")
    if args.commands is not None and flags:
        raise GridError("--commands FILE gives whole train.py commands: no train.py flags after it.")
    return args, flags


def commands_of(source: str) -> tuple[list[PlannedRun], Path]:
    """The runs of a file of train.py commands (- for standard input), and the grid's folder they name."""
    if source == "-":
        runs = read_plan(sys.stdin.read().splitlines(), "standard input")
    else:
        runs = read_plan_file(Path(source))
    if not runs:
        raise UserError(f"no train.py commands in {'standard input' if source == '-' else source}.")
    folders = [run.files.run_dir.resolve() for run in runs]
    if twice := sorted({str(run.files.run_dir) for run, f in zip(runs, folders) if folders.count(f) > 1}):
        raise UserError(f"the commands name a run folder more than once ({', '.join(twice)}): give each run once.")
    return runs, grid_folder(runs)


def status(runs: list[PlannedRun], folder: Path, said: str = "") -> None:
    lines, counts, queue = gridstate.table(runs, folder)
    there = "" if folder.is_dir() else " (no such folder here: not started, or planned from another folder or GRID_DIR)"
    print(f"{folder}:{there}")
    print("\n".join(lines))
    print(f"{len(runs)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n))
    for line in (said, queue):
        if line:
            print(line)


def given(environ: Mapping[str, str], flags: Sequence[str]) -> list[str]:
    """The settings of a grid's runs a command names (environment variables, train.py flags): not the
    interpreter, nor GRID_DIR, which says where grids are."""
    return [key for key in DEFAULTS if key in environ and key not in ("PYTHON", "GRID_DIR")] + list(flags)


def planned_runs(grid: Grid, runs: list[PlannedRun], settings: list[str]) -> tuple[list[PlannedRun], Path, str]:
    """The runs --status reports, their folder and a line on where they come from: the plan written when the
    grid was trained or submitted (its grid.txt), read when it is there. With no settings given, the plan's runs
    (the grid's folder found in GRID_DIR when it holds one plan); with settings, theirs, refused (naming the
    folder) where they name runs the plan does not have."""
    plan = grid.root / PLAN
    if (Path(grid.folder) / PLAN).is_file():  # GRID_DIR names a grid's own folder, one level too deep
        raise GridError(
            f"GRID_DIR={grid.folder} is a grid's own folder (it holds {PLAN}); GRID_DIR is the folder above it: "
            f"GRID_DIR={Path(grid.folder).parent}."
        )
    if not plan.is_file():
        plans = sorted(Path(grid.folder).glob(f"*/{PLAN}"))
        named = {"MODEL", "DATASET", "RECIPE"} & set(settings) or any(f.startswith("--") for f in settings)
        if not plans or named:
            return runs, grid.root, ""
        if len(plans) > 1:
            raise GridError(
                f"no grid planned in {grid.root}; {grid.folder} holds the plans of "
                f"{', '.join(p.parent.name for p in plans)}: name one with MODEL, DATASET and RECIPE (as submitted)."
            )
        plan = plans[0]
    every = read_plan_file(plan)  # every line: a plan grows with each submission (more seeds, more epochs)
    in_plan = unique_folders(every)
    if not settings:
        return in_plan, plan.parent, f"(the runs of its plan, {plan})"
    planned = {run.same_run for run in every}
    if missing := [run for run in runs if run.same_run not in planned]:
        raise GridError(
            f"the settings given plan {len(missing)} run(s) that the plan of {plan.parent} does not have (e.g. "
            f"{missing[0].files.run_dir}): give the settings it was submitted with (MODEL, DATASET, RECIPE, SEEDS, "
            "EPOCHS, SCHEDULES, ... and train.py flags), or none (sh grid.sh --status alone reads its plan)."
        )
    more = len(in_plan) - len({run.files.run_dir.resolve() for run in runs})
    return (
        runs,
        grid.root,
        f"({more} more run(s) in its plan {plan}: sh grid.sh --status alone shows them)" * (more > 0),
    )


def unique_folders(runs: list[PlannedRun]) -> list[PlannedRun]:
    """A plan's runs, one per folder: the last line of a folder is its latest plan (e.g. more epochs)."""
    latest = {run.files.run_dir.resolve(): run for run in runs}
    return list(latest.values())


def train(runs: list[PlannedRun], environ: Mapping[str, str]) -> int:
    """Train the runs one after the other, each in its own process; stop at the first that fails. Ctrl-C
    reaches the run too: wait for it to stop at its batch boundary and save, then stop."""
    for k, run in enumerate(runs, 1):
        # Without PYTHON, the commands say "python"; this interpreter runs them, wherever PATH leads.
        code = run_to_its_end(run.command if "PYTHON" in environ else [sys.executable, *run.command[1:]])
        if code != 0:
            print(
                f"grid: run {k} of {len(runs)} ({run.files.run_dir}) ended with exit status {code}; the runs after "
                "it were not started. Run the same command again to continue.",
                file=sys.stderr,
            )
            return code if code > 0 else 128 - code
    return 0


def refuse_conflicts(runs: list[PlannedRun]) -> None:
    """A GridError when a run of other settings holds the folder of one of ``runs`` (the same grid folder planned
    with other flags, e.g. another -b): training it there would be refused, and --overwrite would destroy it."""
    if conflicts := [(run, now) for run in runs if (now := gridstate.state(run)).state == "conflict"]:
        said = "; ".join(f"{run.files.run_dir}: {now.detail}" for run, now in conflicts)
        raise GridError(f"runs of other settings hold the folders of this grid's runs, nothing was done: {said}")


def signal_seconds(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    if args.signal_seconds is not None:
        return args.signal_seconds
    text = environ.get("SIGNAL_SECONDS", str(slurm.SIGNAL_SECONDS))
    if not text.isdigit() or int(text) < 1:
        raise GridError(f"SIGNAL_SECONDS is {text}, not a whole number of seconds (e.g. SIGNAL_SECONDS=300).")
    return int(text)


def run_to_its_end(command: list[str]) -> int:
    """Run ``command`` and wait for it to end, also after Ctrl-C (which reaches it too: a run stops at its next
    batch boundary and saves) or a SIGTERM to this process (passed on to it)."""
    process = subprocess.Popen(command)
    forward = signal.signal(signal.SIGTERM, lambda signum, frame: process.send_signal(signal.SIGTERM))
    try:
        while True:
            try:
                return process.wait()
            except KeyboardInterrupt:
                continue
    finally:
        signal.signal(signal.SIGTERM, forward)


@reports_user_errors
def main(
    argv: Sequence[str] | None = None, script_dir: str | None = None, environ: Mapping[str, str] | None = None
) -> int:
    """``script_dir``: where train.py is, as the commands name it (grid.sh's folder, as it was called)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    environ = os.environ if environ is None else environ
    args, flags = split_arguments(argv)
    notes: list[str] = []
    if args.commands is not None:
        runs, folder = commands_of(args.commands)
    else:
        script = os.path.join(script_dir or str(Path(__file__).resolve().parent), "train.py")
        grid = read_grid(environ, flags, script)
        runs, folder, notes = grid.runs(), grid.root, grid.plan_notes
    if args.print:
        print("\n".join(shlex.join(run.command) for run in runs))
    elif args.status:
        said = ""
        if args.commands is None:
            runs, folder, said = planned_runs(grid, runs, given(environ, flags))
        status(runs, folder, said)
    elif args.submit:
        if again := [str(run.files.run_dir) for run in runs if run.args.overwrite or not run.args.resume]:
            raise GridError(
                f"these commands would not continue their run when SLURM requeues their task (each needs --resume, "
                f"and --overwrite would start it over at every requeue): {', '.join(again)}."
            )
        refuse_conflicts(runs)
        print(slurm.submit(runs, folder, args.sbatch, signal_seconds(args, environ), args.dry_run, notes))
    else:
        refuse_conflicts(runs)
        record_plan(runs, folder, notes)
        if code := train(runs, environ):
            return code
        print(f"Done. Compare with the paper: python report.py --runs {grid.folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(script_dir=os.path.dirname(sys.argv[0]) or "."))

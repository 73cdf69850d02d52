"""Reproduction report: this project's test errors beside the SGDR paper's Tables 1 and 2.

    python report.py --runs outputs/grid

Reads every finished run under --runs (their run.json, metrics.jsonl and snapshots), groups
them by their complete settings but the seed and the schedule, and writes report.md and
figures to --out: for each schedule, the median over seeds of the test error of the network
the paper reports (the recommended solution, see RECOMMENDED) beside the last epoch's (Table
1), the recommended solutions against epochs (Figure 2), and snapshot ensembles for M = 1, 2,
3 (Table 2).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import checkpoint
import drawing
import gridruns
import runfiles
import snapshots
from distributed import pick_device
from errors import ShowDefaults, UserError, reports_user_errors
from schedules import cycle_ends

# Test error %, median of 5 runs, WRN-28-10: (CIFAR-10, CIFAR-100). None: the multistep default.
PAPER_TABLE1 = {
    None: (4.13, 20.21),
    (50, 1): (4.17, 19.99),
    (100, 1): (4.07, 19.87),
    (200, 1): (3.86, 19.98),
    (1, 2): (4.09, 19.74),
    (10, 2): (4.03, 19.58),
}
# Snapshot ensembles of WRN-28-10 with T_0 = 10, T_mult = 2: (runs, M) -> (CIFAR-10, CIFAR-100).
# One run, one snapshot is the epoch-150 network: Table 1's entry.
PAPER_TABLE2 = {(1, 1): PAPER_TABLE1[(10, 2)], (1, 3): (3.51, 17.75), (3, 3): (3.25, 16.64), (16, 3): (3.14, 16.21)}
COLUMN = {"cifar10": 0, "cifar100": 1}
COLORS = ("red", "green", "gray", "blue", "purple", "orange", "brown", "olive", "cyan", "black")
DEFAULT_MILESTONES = [60, 120, 160]
# The settings (besides the data set, which has its own column) under which the paper's numbers
# were measured; "epochs" is the run's planned length.
PAPER_SETUP = {
    "recipe": "paper",
    "model": "wrn-28-10",
    "epochs": 200,
    "batch_size": 128,
    "train_subset": None,
    "val_subset": None,
    "amp": "off",
}
SCHEDULE_KEYS = ("seed", "warm_restart", "t_zero", "t_mult", "milestones")  # vary inside a group
RECOMMENDED = """Each run is read where the paper reads it (Section 3): with warm restarts, the recommended
solution is the network at the end of the last completed cycle (where the rate has reached
eta_min; before the first restart, the current network); with the default schedule, the last
epoch. At 200 epochs that is epoch 200 for T_0 = 50, 100, 200, epoch 150 for T_0 = 10,
T_mult = 2 and epoch 127 for T_0 = 1, T_mult = 2. Figures are medians over seeds (the paper:
median of 5 runs), with the range over seeds; the last epoch's error is shown beside them."""
TUTORIAL_DIFFERENCES = """These runs use the tutorial's recipe, not the paper's: one epoch here is one pass over the
training images (the paper's: every image and its mirror, twice our SGD steps), PyTorch's SGD
keeps the learning rate out of the momentum buffer (the paper's eq. (3)-(4) puts it in), weight
decay 5e-4 on every parameter (the paper: an L2 penalty of 1e-3 x w on weights and BatchNorm
scales only), crops padded by reflection (the paper's with zeros), per-channel normalisation
(the paper: the mean image subtracted). `train.py --recipe paper` trains the paper's."""


@dataclass
class Run:
    folder: Path
    config: dict
    epochs: int  # planned
    metrics: list[dict]
    finished: bool

    @property
    def schedule(self) -> tuple:
        """(T_0, T_mult) for warm restarts, None for the default multistep schedule, ("multistep",
        milestones) for another."""
        c = self.config
        if c["warm_restart"]:
            return c["t_zero"], c["t_mult"]
        return None if c["milestones"] == DEFAULT_MILESTONES else ("multistep", tuple(c["milestones"]))

    @property
    def settings(self) -> tuple:
        """Every setting but the seed and the schedule: runs that share them are one experiment."""
        kept = {k: v for k, v in self.config.items() if k not in SCHEDULE_KEYS}
        return tuple(sorted({**kept, "epochs": self.epochs}.items(), key=lambda kv: kv[0]))

    @property
    def read_epoch(self) -> int:
        """The epoch (from 1) of the network the paper reports: see RECOMMENDED."""
        done = len(self.metrics)
        if not self.config["warm_restart"]:
            return done
        ends = cycle_ends(self.config["t_zero"], self.config["t_mult"], done)
        return ends[-1] if ends else done

    def error_at(self, epoch: int) -> float:
        return 100 * self.metrics[epoch - 1]["test_error"]

    @property
    def test_error(self) -> float:
        """The recommended solution's test error, %."""
        return self.error_at(self.read_epoch)


def schedule_name(schedule: tuple | None) -> str:
    if schedule is None:
        return "default (lr x 0.2 at 60, 120, 160)"
    if schedule[0] == "multistep":
        return f"multistep (lr x 0.2 at {', '.join(map(str, schedule[1]))})"
    return f"T_0 = {schedule[0]}, T_mult = {schedule[1]}"


def _order(schedule: tuple | None) -> tuple:
    """The paper's rows first, in its order, then the others."""
    known = list(PAPER_TABLE1)
    return (known.index(schedule), "") if schedule in known else (len(known), str(schedule))


def _schedule_problem(config: dict[str, Any]) -> str | None:
    """What makes a record's schedule settings unusable (how the report groups and reads the run), or None."""

    def whole(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 1

    if not isinstance(config.get("warm_restart"), bool):
        return f"warm_restart is {config.get('warm_restart')!r}, not true or false"
    if config["warm_restart"]:
        for key in ("t_zero", "t_mult"):
            if not whole(config.get(key)):
                return f"a warm-restart run with {key} {config.get(key, 'missing')!r}"
    elif not isinstance(config.get("milestones"), list) or not all(whole(m) for m in config["milestones"]):
        return f"a multistep run with milestones {config.get('milestones', 'missing')!r}"
    return None


def _read_run(record_path: Path) -> Run:
    """The run whose record is ``record_path``; ValueError saying which file is damaged and how."""
    try:
        record = json.loads(record_path.read_text())
        config, epochs = checkpoint.with_added_settings(record["config"]), int(record["epochs"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{record_path} is not a complete run record ({type(error).__name__}: {error})") from None
    if (wrong := _schedule_problem(config)) is not None:
        raise ValueError(f"{record_path} has an inconsistent schedule: {wrong}")
    metrics_path = record_path.parent / "metrics.jsonl"
    metrics = []
    for number, line in enumerate(metrics_path.read_text().splitlines(), 1):
        try:
            row = json.loads(line)
            float(row["test_error"])
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{metrics_path} line {number} is damaged ({type(error).__name__}: {error})") from None
        metrics.append(row)
    finished = record.get("finished") is not None and len(metrics) == epochs
    return Run(record_path.parent, config, epochs, metrics, finished)


def find_runs(root: Path) -> tuple[list[Run], list[str]]:
    """Every run under ``root`` with a record and metrics, and a warning for each one left out
    because a file of it is damaged (a disk that filled up, a copy cut short)."""
    runs, warnings = [], []
    for record_path in sorted(root.rglob("runs/*/run.json")):
        if not (record_path.parent / "metrics.jsonl").exists():
            continue
        try:
            runs.append(_read_run(record_path))
        except (OSError, ValueError) as error:
            warnings.append(f"left out {record_path.parent}: {error}")
    return runs, warnings


def counted_once(runs: Sequence[Run]) -> tuple[list[Run], list[str]]:
    """``runs`` with each run once: a copy of a run folder (the same settings, seed and epochs) is the
    same run, and would count twice in a median; a warning names each copy left out."""
    seen: dict[tuple, Run] = {}
    kept, warnings = [], []
    for run in runs:
        key = (json.dumps(run.config, sort_keys=True, default=str), run.epochs)
        if key in seen:
            warnings.append(
                f"{run.folder} is the same run as {seen[key].folder} (same settings and seed): counted once"
            )
        else:
            seen[key] = run
            kept.append(run)
    return kept, warnings


def by_schedule(runs: Sequence[Run]) -> dict[Any, list[Run]]:
    groups: dict = defaultdict(list)
    for run in runs:
        groups[run.schedule].append(run)
    return dict(sorted(groups.items(), key=lambda kv: _order(kv[0])))


def differences_from_paper(settings: dict[str, Any]) -> list[str]:
    """How a group's settings differ from those the paper's numbers were measured under."""
    differs = [
        f"{key} {settings.get(key)} (the paper's: {value})"
        for key, value in PAPER_SETUP.items()
        if settings.get(key) != value
    ]
    if settings["dataset"] not in COLUMN:
        differs.append(f"dataset {settings['dataset']}")
    if settings.get("processes", 1) > 1 and not settings.get("sync_bn"):  # the paper trained on one GPU
        differs.append(f"BatchNorm over each of {settings['processes']} processes' share of a batch (no --sync-bn)")
    return differs


def _spread(values: Sequence[float]) -> str:
    middle = f"{statistics.median(values):.2f}"
    return middle if len(values) == 1 else f"{middle} ({min(values):.2f}-{max(values):.2f})"


def paper_table1(schedule: tuple | None, dataset: str) -> str:
    """The paper's Table 1 entry for ``schedule``, or "" where it has none."""
    return f"{PAPER_TABLE1[schedule][COLUMN[dataset]]:.2f}" if schedule in PAPER_TABLE1 and dataset in COLUMN else ""


def table1(runs: list[Run], dataset: str, paper_header: str) -> list[str]:
    groups = by_schedule(runs)
    order = sorted(set(PAPER_TABLE1) | set(groups), key=_order)
    lines = [
        f"| schedule | runs (seeds) | read at epoch | test error %, median (range) | last epoch | {paper_header} |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for schedule in order:
        group = groups.get(schedule, [])
        paper = paper_table1(schedule, dataset)
        if not group:
            lines.append(f"| {schedule_name(schedule)} | 0 | | not run | | {paper} |")
            continue
        seeds = ", ".join(str(r.config["seed"]) for r in group)
        read = "/".join(map(str, sorted({r.read_epoch for r in group})))
        last = _spread([r.error_at(len(r.metrics)) for r in group])
        lines.append(
            f"| {schedule_name(schedule)} | {len(group)} ({seeds}) | {read} | {_spread([r.test_error for r in group])} "
            f"| {last} | {paper} |"
        )
    return lines


def paper_table2(schedule: tuple[int, int], dataset: str, runs: int, m: int) -> str:
    """The paper's Table 2 entry for an ensemble of ``runs`` x ``m`` snapshots, or "" (it has
    T_0 = 10, T_mult = 2 only)."""
    cell = PAPER_TABLE2.get((runs, m)) if schedule == (10, 2) else None
    return f"{cell[COLUMN[dataset]]:.2f}" if cell else ""


def table2(runs: list[Run], dataset: str, test: snapshots.TestSet, paper_header: str) -> tuple[list[str], dict]:
    """Snapshot-ensemble rows for each warm-restart schedule whose runs all have snapshots."""
    lines = [
        f"| schedule | ensemble | test error %, median (range) | {paper_header}, T_0 = 10, T_mult = 2 |",
        "| --- | --- | --- | --- |",
    ]
    curves = {}
    for schedule, group in by_schedule(runs).items():
        if not group[0].config["warm_restart"]:
            continue
        snapshot_sets = [snapshots.snapshots_in(run.folder) for run in group]
        if not all(snapshot_sets):
            continue
        largest = min(3, min(len(s) for s in snapshot_sets))
        single = [[100 * e for _, e in snapshots.last_m_errors([s], test, largest)] for s in snapshot_sets]
        curves[schedule] = [statistics.median(column) for column in zip(*single)]
        for m in range(1, largest + 1):
            lines.append(
                f"| {schedule_name(schedule)} | 1 run, M = {m} | {_spread([row[m - 1] for row in single])} | "
                f"{paper_table2(schedule, dataset, 1, m)} |"
            )
        if len(snapshot_sets) > 1:
            for m, error in snapshots.last_m_errors(snapshot_sets, test, largest):
                lines.append(
                    f"| {schedule_name(schedule)} | {len(snapshot_sets)} runs, M = {m} | {100 * error:.2f} | "
                    f"{paper_table2(schedule, dataset, len(snapshot_sets), m)} |"
                )
    return lines, curves


def recommended_curve(group: Sequence[Run]) -> tuple[list[float], list[int]]:
    """Figure 2's curve for one schedule: the median over seeds of the recommended solution's test
    error, at every epoch until the first cycle ends (the current network), then at each cycle end."""
    epochs = min(len(r.metrics) for r in group)
    c = group[0].config
    ends = cycle_ends(c["t_zero"], c["t_mult"], epochs) if c["warm_restart"] else []
    points = list(range(1, (ends[0] if ends else epochs) + 1)) + ends[1:]
    return [statistics.median(r.error_at(e) for r in group) for e in points], points


def figures(runs: list[Run], curves: dict, out: Path, name: str) -> list[Path]:
    error_curves = [
        (*recommended_curve(group), COLORS[i % len(COLORS)], schedule_name(schedule))
        for i, (schedule, group) in enumerate(by_schedule(runs).items())
    ]
    paths = [out / f"test_error_{name}.png"]
    drawing.line_figure(
        [(values, color, label, x) for values, x, color, label in error_curves],
        "Epochs",
        "Test error % of the recommended solutions (median over seeds)",
        paths[0],
    )
    if curves:
        paths.append(out / f"ensembles_{name}.png")
        drawing.line_figure(
            [(c, COLORS[i % len(COLORS)], schedule_name(s)) for i, (s, c) in enumerate(curves.items())],
            "Snapshots in the ensemble (M)",
            "Test error % (median over runs)",
            paths[1],
        )
    return paths


def unfinished_plan(plan: Path, runs: list[gridruns.PlannedRun], finished: set[Path]) -> list[str]:
    """Report lines naming the runs a grid planned (``runs``, from its grid.txt ``plan``) that are not among
    ``finished``, with their state: the medians of such a grid are over fewer seeds than it asked for."""
    missing = [run for run in runs if run.files.run_dir.resolve() not in finished]
    if not missing:
        return []
    folder = gridruns.grid_folder(runs)
    states = [(gridruns.short_name(run, folder), gridruns.state(run), run.epochs) for run in missing]
    said = [f"{name} ({now.state}, {now.epochs_done}/{epochs} epochs)" for name, now, epochs in states]
    return [
        f"**Incomplete grid**: {len(missing)} of the {len(runs)} planned runs in {plan.parent} are not finished, so "
        f"the rows below have fewer runs than planned (`sh grid.sh --status` tells more): {', '.join(said)}.",
        "",
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=ShowDefaults)
    parser.add_argument(
        "--runs", type=Path, default=Path("outputs/grid"), help="folder searched for runs (default: outputs/grid)"
    )
    parser.add_argument("--out", type=Path, help="folder for report.md and figures (default: <runs>/report)")
    parser.add_argument(
        "--data-dir", default="data", help="data set folder, for the ensembles' test set (default: data)"
    )
    parser.add_argument("--device", default="auto", help="as train.py's --device (default: auto)")
    parser.add_argument("--skip-ensembles", action="store_true", help="leave out Table 2 (needs no data set then)")
    return parser


def section_heading(settings: dict[str, Any], varying: Sequence[str]) -> tuple[str, str, list[str]]:
    """(heading, column header for the paper's numbers, lines under the heading) of one group."""
    title = (
        f"{settings['dataset']}, {settings['model']}, {settings['recipe']} recipe, {settings['epochs']} epochs"
        + "".join(f", {key} {settings[key]}" for key in varying)
    )
    differs = differences_from_paper(settings)
    if not differs:
        return f"## {title}: the paper's setup", "paper, WRN-28-10", []
    notes = [f"**Not the paper's setup**: {'; '.join(differs)}. The paper's numbers are shown for orientation only."]
    if settings["recipe"] == "tutorial":
        notes += ["", TUTORIAL_DIFFERENCES]
    return f"## {title}: not the paper's setup", "paper (other setup, see above)", notes


@reports_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = args.out or args.runs / "report"
    runs, warnings = find_runs(args.runs)
    runs, copies = counted_once(runs)
    for warning in [*warnings, *copies]:
        print(f"warning: {warning}", file=sys.stderr)
    finished = [r for r in runs if r.finished]
    if not finished:
        raise UserError(f"no finished runs under {args.runs}. sh grid.sh trains the paper's grid there.")
    lines = ["# SGDR reproduction report", "", RECOMMENDED, ""]
    planned: set[Path] = set()
    finished_folders = {r.folder.resolve() for r in finished}
    for plan in sorted(args.runs.rglob(gridruns.PLAN)):
        try:
            plan_runs = gridruns.read_plan_file(plan)
        except UserError as error:  # a line a user added or an older version left: said, not fatal
            lines += [f"**Grid plan not read**: {error}", ""]
            continue
        lines += unfinished_plan(plan, plan_runs, finished_folders)
        planned |= {run.files.run_dir.resolve() for run in plan_runs}
    unfinished = [r for r in runs if not r.finished and r.folder.resolve() not in planned]
    if unfinished:
        lines += [
            "Left out, not finished: " + ", ".join(f"{r.folder} ({len(r.metrics)} epochs)" for r in unfinished),
            "",
        ]
    if warnings:
        lines += ["Left out, damaged: " + "; ".join(w.removeprefix("left out ") for w in warnings), ""]
    if copies:
        lines += ["Left out, copies: " + "; ".join(copies), ""]
    groups: dict = defaultdict(list)
    for run in finished:
        groups[run.settings].append(run)
    # Settings beyond data set, network, recipe and epochs that tell the groups apart go in the headings.
    shown = {"dataset", "model", "recipe", "epochs"}
    varying = sorted(
        key
        for key in {k for settings in groups for k, _ in settings} - shown
        if len({dict(settings).get(key) for settings in groups}) > 1
    )
    written, names = [], set()
    for settings, group in sorted(groups.items(), key=lambda kv: str(kv[0])):
        settings = dict(settings)
        name = "_".join(str(settings[k]) for k in ("dataset", "model", "recipe"))
        name = name if name not in names else f"{name}_{len(names)}"
        names.add(name)
        heading, paper_header, notes = section_heading(settings, varying)
        lines += [heading, "", *notes, "", "### Table 1: test error by schedule", ""]
        lines += table1(group, settings["dataset"], paper_header) + [""]
        curves = {}
        if not args.skip_ensembles:
            test = snapshots.TestSet(args.data_dir, pick_device(args.device))  # this group's test set
            try:
                rows, curves = table2(group, settings["dataset"], test, paper_header)
            except UserError as error:  # most often: no data set here
                raise UserError(
                    f"{error}\nOnly Table 2 (the snapshot ensembles) needs the test set: pass the "
                    "--data-dir the runs used, or --skip-ensembles to leave Table 2 out."
                ) from None
            lines += ["### Table 2: snapshot ensembles (the last M cycle-end snapshots of each run)", ""] + rows + [""]
        for path in figures(group, curves, out, name):
            lines.append(f"![{path.stem}]({path.name})")
            written.append(path)
        lines.append("")
    out.mkdir(parents=True, exist_ok=True)
    report = out / "report.md"
    with runfiles.atomic_write(report) as f:
        f.write("\n".join(lines).encode())
    print(
        f"Wrote {report} and {len(written)} figure(s) from {len(finished)} finished run(s) in {len(groups)} group(s)."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

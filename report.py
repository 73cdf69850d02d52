"""Reproduction report: this project's test errors beside the SGDR paper's Tables 1 and 2.

    python report.py --runs outputs/grid

Reads every finished run under --runs (their run.json, metrics.jsonl and snapshots), groups
them by data set and network, and writes report.md and figures to --out: the median test
error over seeds for each schedule (Table 1), and snapshot ensembles for M = 1, 2, 3 (Table 2).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import ensemble
import plot
import runfiles
from errors import UserError, reports_user_errors
from train import pick_device

# Test error %, median of 5 runs, WRN-28-10: (CIFAR-10, CIFAR-100). None: the multistep default.
PAPER_TABLE1 = {
    None: (4.13, 20.21), (50, 1): (4.17, 19.99), (100, 1): (4.07, 19.87),
    (200, 1): (3.86, 19.98), (1, 2): (4.09, 19.74), (10, 2): (4.03, 19.58),
}
# Snapshot ensembles of WRN-28-10 with T_0 = 10, T_mult = 2: (runs, M) -> (CIFAR-10, CIFAR-100).
PAPER_TABLE2 = {(1, 3): (3.51, 17.75), (3, 3): (3.25, 16.64), (16, 3): (3.14, 16.21)}
COLUMN = {"cifar10": 0, "cifar100": 1}
COLORS = ("red", "green", "gray", "blue", "purple", "orange", "brown", "olive", "cyan", "black")
DIFFERENCES = """\
Setup differences from the paper: one epoch here is one pass over the 50,000 training images,
the paper's is 100,000 samples (every image and its mirror), so its 200 epochs are twice our
SGD steps; PyTorch's SGD keeps the learning rate out of the momentum buffer, the paper's code
puts it in; weight decay here is 5e-4 on every parameter, the paper's L2 penalty amounts to
1e-3 on the weights only; crops here are padded by reflection, the paper's with zeros; the
paper's numbers are for WRN-28-10. Each of our figures is the test error after the last
epoch, as a median over seeds (the paper: median of 5 runs), with the range over seeds."""


@dataclass
class Run:
    folder: Path
    config: dict
    metrics: list[dict]
    finished: bool

    @property
    def schedule(self) -> tuple[int, int] | None:
        c = self.config
        return (c["t_zero"], c["t_mult"]) if c["warm_restart"] else None

    @property
    def group(self) -> tuple[str, str]:
        return self.config["dataset"], self.config["model"]

    @property
    def test_error(self) -> float:
        return 100 * self.metrics[-1]["test_error"]


def schedule_name(schedule: tuple[int, int] | None) -> str:
    return "default (lr x 0.2 at 60, 120, 160)" if schedule is None else f"T_0 = {schedule[0]}, T_mult = {schedule[1]}"


def find_runs(root: Path) -> list[Run]:
    """Every run under ``root`` with a record and metrics."""
    runs = []
    for record_path in sorted(root.rglob("runs/*/run.json")):
        record = json.loads(record_path.read_text())
        metrics_path = record_path.parent / "metrics.jsonl"
        if not metrics_path.exists():
            continue
        metrics = [json.loads(line) for line in metrics_path.read_text().splitlines() if line]
        finished = record.get("finished") is not None and len(metrics) == record["epochs"]
        runs.append(Run(record_path.parent, record["config"], metrics, finished))
    return runs


def by_schedule(runs: Sequence[Run]) -> dict[tuple[int, int] | None, list[Run]]:
    groups: dict = defaultdict(list)
    for run in runs:
        groups[run.schedule].append(run)
    return groups


def _spread(values: Sequence[float]) -> str:
    middle = f"{statistics.median(values):.2f}"
    return middle if len(values) == 1 else f"{middle} ({min(values):.2f}-{max(values):.2f})"


def table1(runs: list[Run], dataset: str) -> list[str]:
    groups = by_schedule(runs)
    order = list(PAPER_TABLE1) + sorted((s for s in groups if s not in PAPER_TABLE1), key=str)
    lines = ["| schedule | runs (seeds) | test error %, median (range) | paper, WRN-28-10 |", "| --- | --- | --- | --- |"]
    for schedule in order:
        group = groups.get(schedule, [])
        ours = _spread([r.test_error for r in group]) if group else "not run"
        paper = f"{PAPER_TABLE1[schedule][COLUMN[dataset]]:.2f}" if schedule in PAPER_TABLE1 else ""
        seeds = ", ".join(str(r.config["seed"]) for r in group)
        lines.append(f"| {schedule_name(schedule)} | {len(group)}{f' ({seeds})' if group else ''} | {ours} | {paper} |")
    return lines


def paper_table2(schedule: tuple[int, int], dataset: str, runs: int, m: int) -> str:
    """The paper's Table 2 entry for an ensemble of ``runs`` x ``m`` snapshots, or "" (it has T_0 = 10, T_mult = 2 only)."""
    cell = PAPER_TABLE2.get((runs, m)) if schedule == (10, 2) else None
    return f"{cell[COLUMN[dataset]]:.2f}" if cell else ""


def table2(runs: list[Run], dataset: str, test: ensemble.TestSet) -> tuple[list[str], dict]:
    """Snapshot-ensemble rows for each warm-restart schedule whose runs all have snapshots."""
    lines = ["| schedule | ensemble | test error %, median (range) | paper, WRN-28-10, T_0 = 10, T_mult = 2 |",
             "| --- | --- | --- | --- |"]
    curves = {}
    for schedule, group in sorted((s, g) for s, g in by_schedule(runs).items() if s is not None):
        snapshot_sets = [ensemble.snapshots_in(run.folder) for run in group]
        if not all(snapshot_sets):
            continue
        largest = min(3, min(len(s) for s in snapshot_sets))
        single = [[100 * e for _, e in ensemble.last_m_errors([s], test, largest)] for s in snapshot_sets]
        curves[schedule] = [statistics.median(column) for column in zip(*single)]
        for m in range(1, largest + 1):
            lines.append(f"| {schedule_name(schedule)} | 1 run, M = {m} | {_spread([row[m - 1] for row in single])} | "
                         f"{paper_table2(schedule, dataset, 1, m)} |")
        if len(snapshot_sets) > 1:
            for m, error in ensemble.last_m_errors(snapshot_sets, test, largest):
                lines.append(f"| {schedule_name(schedule)} | {len(snapshot_sets)} runs, M = {m} | {100 * error:.2f} | "
                             f"{paper_table2(schedule, dataset, len(snapshot_sets), m)} |")
    return lines, curves


def figures(runs: list[Run], curves: dict, out: Path, name: str) -> list[Path]:
    error_curves = []
    for i, (schedule, group) in enumerate(sorted(by_schedule(runs).items(), key=lambda kv: str(kv[0]))):
        series = [[100 * m["test_error"] for m in run.metrics] for run in group]
        error_curves.append(([statistics.median(epoch) for epoch in zip(*series)], COLORS[i % len(COLORS)],
                             schedule_name(schedule)))
    paths = [out / f"test_error_{name}.png"]
    plot.line_figure(error_curves, "Epochs", "Test error % (median over seeds)", paths[0])
    if curves:
        paths.append(out / f"ensembles_{name}.png")
        plot.line_figure([(c, COLORS[i % len(COLORS)], schedule_name(s)) for i, (s, c) in enumerate(sorted(curves.items()))],
                         "Snapshots in the ensemble (M)", "Test error % (median over runs)", paths[1])
    return paths


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=Path, default=Path("outputs/grid"), help="folder searched for runs (default: outputs/grid)")
    parser.add_argument("--out", type=Path, help="folder for report.md and figures (default: <runs>/report)")
    parser.add_argument("--data-dir", default="data", help="data set folder, for the ensembles' test set (default: data)")
    parser.add_argument("--device", default="auto", help="as train.py's --device (default: auto)")
    parser.add_argument("--skip-ensembles", action="store_true", help="leave out Table 2 (needs no data set then)")
    return parser


@reports_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = args.out or args.runs / "report"
    runs = find_runs(args.runs)
    finished = [r for r in runs if r.finished]
    if not finished:
        raise UserError(f"no finished runs under {args.runs}. sh grid.sh trains the paper's grid there.")
    lines = ["# SGDR reproduction report", "", DIFFERENCES, ""]
    unfinished = [r for r in runs if not r.finished]
    if unfinished:
        lines += ["Left out, not finished: " + ", ".join(f"{r.folder} ({len(r.metrics)} epochs)" for r in unfinished), ""]
    groups: dict = defaultdict(list)
    for run in finished:
        groups[run.group].append(run)
    written = []
    for (dataset, model), group in sorted(groups.items()):
        name = f"{dataset}_{model}"
        epochs = sorted({len(r.metrics) for r in group})
        lines += [f"## {dataset}, {model}, {'/'.join(map(str, epochs))} epochs", "", "### Table 1: test error by schedule", ""]
        lines += table1(group, dataset) + [""]
        curves = {}
        if not args.skip_ensembles:
            test = ensemble.TestSet(args.data_dir, pick_device(args.device))
            rows, curves = table2(group, dataset, test)
            lines += ["### Table 2: snapshot ensembles (the last M cycle-end snapshots of each run)", ""] + rows + [""]
        for path in figures(group, curves, out, name):
            lines.append(f"![{path.stem}]({path.name})")
            written.append(path)
        lines.append("")
    out.mkdir(parents=True, exist_ok=True)
    report = out / "report.md"
    with runfiles.atomic_write(report) as f:
        f.write("\n".join(lines).encode())
    print(f"Wrote {report} and {len(written)} figure(s) from {len(finished)} finished run(s).")
    return 0


if __name__ == "__main__":
    sys.exit(main())

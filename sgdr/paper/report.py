"""The reproduction report: a folder of runs read, grouped by their settings, and compared with the paper's
Tables 1 and 2 (report.py prints it; the paper's numbers are tables.py's)."""

from __future__ import annotations

import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sgdr import drawing, storage
from sgdr.cli import UserError
from sgdr.paper import ensembles, gridstate
from sgdr.paper.grid import PLAN, PlannedRun, read_plan_file, short_name
from sgdr.paper.tables import (
    COLUMN,
    PAPER_CLAIM,
    PAPER_RUNS,
    PAPER_SETUP,
    PAPER_TABLE1,
    TABLE2_MODEL,
    TABLE2_NS,
    TABLE2_RUNS,
    paper_column,
    paper_points,
    paper_table1,
    paper_table2,
)
from sgdr.parallel.devices import pick_device
from sgdr.run import layout, record
from sgdr.run.outputs import read_metrics
from sgdr.run.record import read_record
from sgdr.run.settings import problem, same_run
from sgdr.training.recipes import LR
from sgdr.training.schedules import GAMMA, MILESTONES, OPTION_DEFAULTS, run_cycle_ends

# Settings that vary inside a group: the seed and the schedule's (its kind, T_0 and T_mult or milestones, the
# initial rate, and the options that shape warm restarts).
SCHEDULE_KEYS = ("seed", "warm_restart", "t_zero", "t_mult", "milestones", "lr", *OPTION_DEFAULTS)
RECOMMENDED = """Each run is read where the paper reads it (Section 3): with warm restarts, the recommended
solution is the network at the end of the last completed cycle (where the rate has reached
eta_min; before the first restart, the current network); with the default schedule, the last
epoch. At 200 epochs that is epoch 200 for T_0 = 50, 100, 200, epoch 150 for T_0 = 10,
T_mult = 2 and epoch 127 for T_0 = 1, T_mult = 2. Figures are medians over seeds (the paper:
median of 5 runs of WRN-28-10, of 2 of WRN-28-20), with the range over seeds; the last epoch's
error is shown beside them."""
TUTORIAL_DIFFERENCES = """These runs use the tutorial's recipe, not the paper's: one epoch here is one pass over the
training images (the paper's: every image and its mirror, twice our SGD steps), PyTorch's SGD
keeps the learning rate out of the momentum buffer (the paper's eq. (3)-(4) puts it in), weight
decay 5e-4 on every parameter (the paper: an L2 penalty of 1e-3 x w on weights and BatchNorm
scales only), crops padded by reflection (the paper's with zeros), per-channel normalisation
(the paper: the mean image subtracted). `train.py --recipe paper` trains the paper's."""


@dataclass
class Run:
    """A run as the report reads it: its folder, settings (as ``Record.settings``), planned epochs and metrics."""

    folder: Path
    config: dict
    epochs: int  # planned
    metrics: list[dict]
    finished: bool
    devices: frozenset[str] = frozenset()  # where its sessions trained, as run.json says
    same_run: str = ""  # settings.same_run: a copy of this run has the same

    @property
    def schedule(self) -> tuple:
        """(rate, shape), or (rate, shape, options) for warm restarts shaped beyond the paper's: the initial
        rate (eta_0, or SGDR's eta_max); (T_0, T_mult) for warm restarts, None for the default multistep
        schedule, ("multistep", milestones) for another; the shaping options set, as (name, value) pairs."""
        c = self.config
        if c["warm_restart"]:
            shape = (c["t_zero"], c["t_mult"])
        else:
            shape = None if c["milestones"] == list(MILESTONES) else ("multistep", tuple(c["milestones"]))
        options = tuple((k, c[k]) for k, default in OPTION_DEFAULTS.items() if c.get(k, default) != default)
        return (c.get("lr", LR), shape, options) if options else (c.get("lr", LR), shape)

    @property
    def settings(self) -> tuple:
        """Every setting but the seed and the schedule: runs that share them are one experiment."""
        kept = {k: v for k, v in self.config.items() if k not in SCHEDULE_KEYS}
        return tuple(sorted({**kept, "epochs": self.epochs}.items(), key=lambda kv: kv[0]))

    @property
    def read_epoch(self) -> int:
        """The epoch (from 1) of the network the paper reports: see RECOMMENDED."""
        done = len(self.metrics)
        ends = run_cycle_ends(self.config, done)
        return ends[-1] if ends else done

    def error_at(self, epoch: int) -> float:
        return 100 * self.metrics[epoch - 1]["test_error"]

    @property
    def test_error(self) -> float:
        """The recommended solution's test error, %."""
        return self.error_at(self.read_epoch)


def schedule_name(schedule: tuple) -> str:
    lr, shape, *options = schedule
    if options:  # warm restarts shaped by a warmup, a cycle decay or a limit
        said = dict(options[0])
        extra = []
        if said.get("warmup_epochs"):
            extra.append(f"warmup {said['warmup_epochs']} epochs from lr {said.get('warmup_start_lr', 0.0):g}")
        if "cycle_decay" in said:
            extra.append(f"cycle decay {said['cycle_decay']:g}")
        if "cycle_limit" in said:
            extra.append(f"{said['cycle_limit']} cycles")
        return f"{schedule_name((lr, shape))}; {', '.join(extra)} (not the paper's schedule)"
    if shape is None:
        steps = ", ".join(map(str, MILESTONES))
        return f"default{'' if lr == LR else f' with eta_0 = {lr:g}'} (lr x {GAMMA:g} at {steps})"
    rate = "" if lr == LR else f", eta_{'0' if shape[0] == 'multistep' else 'max'} = {lr:g}"
    if shape[0] == "multistep":
        return f"multistep (lr x {GAMMA:g} at {', '.join(map(str, shape[1]))}){rate}"
    return f"T_0 = {shape[0]}, T_mult = {shape[1]}{rate}"


def _order(schedule: tuple) -> tuple:
    """The paper's rows first, in its order, then the others."""
    known = list(PAPER_TABLE1[TABLE2_MODEL])
    return (known.index(schedule), "") if schedule in known else (len(known), str(schedule))


def _read_run(record_path: Path) -> Run:
    """The run whose record is ``record_path``; ValueError saying which file is damaged and how."""
    record = read_record(record_path)
    if (wrong := problem(record.config)) is not None:
        raise ValueError(f"{record_path} has an inconsistent schedule: {wrong}")
    metrics = read_metrics(layout.metrics_of(record_path.parent))
    finished = record.finished and len(metrics) == record.epochs
    return Run(record_path.parent, record.settings, record.epochs, metrics, finished, record.devices, record.same_run)


def find_runs(root: Path) -> tuple[list[Run], list[str]]:
    """Every run under ``root`` with a record and metrics, and a warning for each one left out
    because a file of it is damaged (a disk that filled up, a copy cut short)."""
    runs, warnings = [], []
    for record_path in layout.records_under(root):
        if not layout.metrics_of(record_path.parent).exists():
            continue
        try:
            runs.append(_read_run(record_path))
        except (OSError, ValueError) as error:
            warnings.append(f"left out {record_path.parent}: {error}")
    return runs, warnings


def counted_once(runs: Sequence[Run]) -> tuple[list[Run], list[str]]:
    """``runs`` with each run once: a copy of a run folder (``settings.same_run``: the same settings, seed and
    images) would count twice in a median. Of the copies, the finished one with the most epochs is kept (a
    finished run is never dropped for an unfinished copy); a warning names each copy left out."""
    kept, copies = record.counted_once(runs, lambda run: run.same_run, lambda run: (run.finished, len(run.metrics)))
    warnings = [
        f"{copy.folder} ({len(copy.metrics)} epochs{'' if copy.finished else ', not finished'}) is the same run as "
        f"{best.folder} (same settings and seed): counted once"
        for copy, best in copies
    ]
    return kept, warnings


def by_schedule(runs: Sequence[Run]) -> dict[Any, list[Run]]:
    groups: dict = defaultdict(list)
    for run in runs:
        groups[run.schedule].append(run)
    return dict(sorted(groups.items(), key=lambda kv: _order(kv[0])))


def differences_from_paper(settings: dict[str, Any], runs: Sequence[Run] = ()) -> list[str]:
    """How a group's settings differ from those the paper's numbers were measured under, arithmetic included:
    the paper computed in float32 throughout."""
    differs = [] if settings["model"] in PAPER_TABLE1 else [f"model {settings['model']} (the paper's: {TABLE2_MODEL})"]
    differs += [
        f"{key} {settings.get(key)} (the paper's: {value})"
        for key, value in PAPER_SETUP.items()
        if settings.get(key) != value
    ]
    if settings["dataset"] not in COLUMN:
        differs.append(f"dataset {settings['dataset']}")
    if settings.get("processes", 1) > 1 and not settings.get("sync_bn"):  # the paper trained on one GPU
        differs.append(f"BatchNorm over each of {settings['processes']} processes' share of a batch (no --sync-bn)")
    if settings.get("amp", "off") != "off":
        differs.append(f"bfloat16 autocast (--amp {settings['amp']}; the paper's: float32)")
    tf32 = settings.get("tf32", "conv")
    if tf32 != "off" and any(device.startswith("cuda") for run in runs for device in run.devices):
        what = "convolutions" if tf32 == "conv" else "convolutions and matrix products"
        differs.append(f"TF32 {what} on CUDA (--tf32 {tf32}; the paper's: float32, --tf32 off)")
    return differs


def _spread(values: Sequence[float]) -> str:
    middle = f"{statistics.median(values):.2f}"
    return middle if len(values) == 1 else f"{middle} ({min(values):.2f}-{max(values):.2f})"


def by_seed(group: Sequence[Run]) -> list[Run]:
    return sorted(group, key=lambda run: run.config["seed"])


def table1(runs: list[Run], dataset: str, paper_header: str, model: str = TABLE2_MODEL) -> list[str]:
    groups = by_schedule(runs)
    order = sorted(set(PAPER_TABLE1[paper_column(model)]) | set(groups), key=_order)
    lines = [
        f"| schedule | runs (seeds) | read at epoch | test error %, median (range) | last epoch | {paper_header} |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for schedule in order:
        group = by_seed(groups.get(schedule, []))
        paper = paper_table1(schedule, dataset, model)
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
    column = paper_column(model)
    others = [
        f"{schedule_name(schedule)} ({len(group)})"
        for schedule, group in groups.items()
        if paper_table1(schedule, dataset, model) and len(group) != PAPER_RUNS[column]
    ]
    if others:
        lines += [
            "",
            f"The paper's numbers are medians of {PAPER_RUNS[column]} runs; these rows' are of other numbers of "
            f"runs: {', '.join(others)}.",
        ]
    return lines


def table2_header(paper_header: str) -> str:
    """The paper's column of Table 2: its ensembles are drawn from 16 runs (not Table 1's 5)."""
    if paper_header.startswith("paper (other setup"):
        return f"{paper_header}, WRN-28-10, T_0 = 10, T_mult = 2"
    return f"paper's Table 2, WRN-28-10, T_0 = 10, T_mult = 2, from {TABLE2_RUNS} runs"


def ensemble_sizes(runs: int) -> list[tuple[int, int]]:
    """(N, the paper's N it stands for) for each ensemble size the report gives a group of ``runs`` runs: the
    paper's 1, 3 and 16; where a group has fewer runs than the paper's N, all of them, standing for the
    smallest such N (2 runs for the paper's 3, whose row they are nearest)."""
    sizes: dict[int, int] = {}
    for n in TABLE2_NS:
        sizes.setdefault(min(n, runs), n)
    return sorted(sizes.items())


def pooled(n: int, paper_n: int, runs: Sequence[Run], groups: int) -> str:
    """How a Table 2 row's ensembles are drawn from a schedule's ``runs``: its last column."""
    total = len(runs)
    if n == 1:
        said = f"median of {total} runs" if total > 1 else f"1 run (seed {runs[0].config['seed']})"
    elif groups == 1 and n == total:
        said = f"all {total} runs"
    else:
        said = (
            f"median of {groups} disjoint groups of {n} runs, in seed order"
            if groups > 1
            else f"seeds {', '.join(str(r.config['seed']) for r in runs[:n])}"
        )
        if total % n:
            said += f"; {total % n} run{'s' * (total % n != 1)} left over"
    return said + (f" (fewer than the paper's {paper_n})" if n < paper_n else "")


def table2(
    runs: list[Run],
    dataset: str,
    test: ensembles.SnapshotOutputs,
    paper_header: str,
    model: str = TABLE2_MODEL,
    grid_settings: str = "",
) -> tuple[list[str], dict]:
    """Snapshot-ensemble rows for each warm-restart schedule whose runs all have snapshots: for N = 1, 3 and 16
    runs (see ensemble_sizes) and M = 1, 2, 3 snapshots per run."""
    lines = [
        f"| schedule | ensemble | test error %, median (range) | {table2_header(paper_header)} | runs |",
        "| --- | --- | --- | --- | --- |",
    ]
    curves, notes = {}, []
    for schedule, group in by_schedule(runs).items():
        if not group[0].config["warm_restart"]:
            continue
        group = by_seed(group)
        snapshot_sets = [ensembles.run_snapshots(run.folder) for run in group]
        if not all(snapshot_sets):
            continue
        largest = min(3, min(len(s) for s in snapshot_sets))
        for n, paper_n in ensemble_sizes(len(group)):
            groups = [snapshot_sets[i : i + n] for i in range(0, len(group) - n + 1, n)]
            errors = [
                [100 * ensembles.ensemble_error([path for run in g for path in run[-m:]], test) for g in groups]
                for m in range(1, largest + 1)
            ]
            if n == 1:  # the ensembles figure: one run's M snapshots, median over runs
                curves[schedule] = [statistics.median(column) for column in errors]
            for m, column in enumerate(errors, 1):
                lines.append(
                    f"| {schedule_name(schedule)} | {n} run{'s' * (n > 1)}, M = {m} | {_spread(column)} | "
                    f"{paper_table2(schedule, dataset, paper_n, m, model)} | {pooled(n, paper_n, group, len(groups))} |"
                )
        if paper_table2(schedule, dataset, 1, 1, model) and len(group) < TABLE2_RUNS:
            notes.append(
                f"The paper's ensembles are drawn from {TABLE2_RUNS} runs of {schedule_name(schedule)}, these from "
                f'{len(group)}: `TABLE2_SEEDS="$(seq 1 {TABLE2_RUNS})" {grid_settings}sh grid.sh` trains the paper\'s '
                f"{TABLE2_RUNS} (with the grid's other settings as before)."
            )
    return lines + ([""] + notes if notes else []), curves


def recommended_curve(group: Sequence[Run]) -> tuple[list[float], list[int]]:
    """Figure 2's curve for one schedule: the median over seeds of the recommended solution's test
    error, at every epoch until the first cycle ends (the current network), then at each cycle end."""
    epochs = min(len(r.metrics) for r in group)
    ends = run_cycle_ends(group[0].config, epochs)
    points = list(range(1, (ends[0] if ends else epochs) + 1)) + ends[1:]
    return [statistics.median(r.error_at(e) for r in group) for e in points], points


def anytime(runs: list[Run]) -> list[str]:
    """The paper's claim of 2x to 4x fewer epochs, measured: for each schedule, the first recommended solution
    (Figure 2's curve) whose median test error is at or below the default schedule's final median."""
    groups = by_schedule(runs)
    reference = groups.get((LR, None))
    if not reference:
        return [f"Needs runs of the {schedule_name((LR, None))} schedule, which the others are measured against."]
    budget = min(len(r.metrics) for r in reference)
    target = statistics.median(r.error_at(budget) for r in reference)
    values, points = recommended_curve(reference)
    needed = next(e for v, e in zip(values, points) if v <= target)  # earlier than the last if it overfits
    lines = [
        f"The paper (Sections 1 and 4.2): SGDR reaches results comparable to the default schedule's with "
        f"{PAPER_CLAIM[0]}x to {PAPER_CLAIM[1]}x fewer epochs. Here: the default schedule's median test error "
        f"after its {budget} epochs is {target:.2f}%, which its median first reaches at epoch {needed}; for each "
        "schedule, the first recommended solution (the current network until the first cycle ends, then the "
        f"network at each cycle end) whose median over seeds is at or below it, and {needed} epochs divided by "
        "its epoch.",
        "",
        "| schedule | median test error % at each cycle end (epoch: error) | first at or below "
        f"{target:.2f} | fewer epochs than the default (the paper: {PAPER_CLAIM[0]}x-{PAPER_CLAIM[1]}x) |",
        "| --- | --- | --- | --- |",
    ]
    for schedule, group in groups.items():
        values, points = recommended_curve(group)
        ends = run_cycle_ends(group[0].config, points[-1])
        at_ends = "; ".join(f"{e}: {v:.2f}" for v, e in zip(values, points) if e in ends) or "(no restarts)"
        reached = next(((e, v) for v, e in zip(values, points) if v <= target), None)
        if reached:
            first, ratio = f"epoch {reached[0]} ({reached[1]:.2f})", f"{needed / reached[0]:.2f}x"
        else:
            first, ratio = f"not reached in {min(len(r.metrics) for r in group)} epochs", ""
        lines.append(f"| {schedule_name(schedule)} | {at_ends} | {first} | {ratio} |")
    return lines


def error_figure(runs: list[Run], dataset: str, model: str):
    """Figure 2: the recommended solutions' median test error against epochs for every schedule, with the
    paper's Table 1 entries as stars at the epochs it reads them, in the colour of the schedule's curve."""
    groups = by_schedule(runs)
    colors = {schedule: drawing.color(i) for i, schedule in enumerate(groups)}
    curves = [
        (*recommended_curve(group), colors[schedule], schedule_name(schedule)) for schedule, group in groups.items()
    ]
    marks = [
        (epoch, error, colors.get(schedule, "black"), "the paper's Table 1 (stars)" if k == 0 else "")
        for k, (schedule, epoch, error) in enumerate(paper_points(dataset, model, max(len(r.metrics) for r in runs)))
    ]
    return drawing.draw(
        [(values, color, label, x) for values, x, color, label in curves],
        "Epochs",
        "Test error % of the recommended solutions (median over seeds)",
        marks=marks,
    )


def figures(runs: list[Run], curves: dict, out: Path, name: str, dataset: str, model: str) -> list[Path]:
    paths = [out / f"test_error_{name}.png"]
    drawing.save_figure(error_figure(runs, dataset, model), paths[0])
    if curves:
        paths.append(out / f"ensembles_{name}.png")
        drawing.line_figure(
            [(c, drawing.color(i), schedule_name(s)) for i, (s, c) in enumerate(curves.items())],
            "Snapshots in the ensemble (M)",
            "Test error % (median over runs)",
            paths[1],
        )
    return paths


def unfinished_plan(plan: Path, runs: list[PlannedRun], finished: Sequence[Run]) -> list[str]:
    """Report lines naming the runs a grid planned (``runs``, from its grid.txt ``plan``) that did not finish,
    with their state: the medians of such a grid are over fewer seeds than it asked for. A planned run whose
    copy finished elsewhere (``settings.same_run``) is named as a copy, not as missing."""
    folders = {run.folder.resolve() for run in finished}
    done = {same_run(run.config, planned=True): run for run in finished}
    missing = [run for run in runs if run.files.run_dir.resolve() not in folders]
    copies = [run for run in missing if run.same_run in done]
    missing = [run for run in missing if run.same_run not in done]
    folder = plan.parent
    lines = []
    if missing:
        states = [(short_name(run, folder), gridstate.state(run), run.epochs) for run in missing]
        said = [f"{name} ({now.state}, {now.epochs_done}/{epochs} epochs)" for name, now, epochs in states]
        lines += [
            f"**Incomplete grid**: {len(missing)} of the {len(runs)} planned runs in {folder} are not finished, "
            f"so the rows below have fewer runs than planned (`sh grid.sh --status` tells more): {', '.join(said)}.",
            "",
        ]
    if copies:
        said = [f"{short_name(run, folder)} (finished in {done[run.same_run].folder})" for run in copies]
        lines += [f"Planned runs that finished as a copy elsewhere, counted there: {', '.join(said)}.", ""]
    return lines


def section_heading(
    settings: dict[str, Any], varying: Sequence[str], runs: Sequence[Run] = ()
) -> tuple[str, str, list[str]]:
    """(heading, column header for the paper's numbers, lines under the heading) of one group."""
    title = (
        f"{settings['dataset']}, {settings['model']}, {settings['recipe']} recipe, {settings['epochs']} epochs"
        + "".join(f", {key} {settings[key]}" for key in varying)
    )
    differs = differences_from_paper(settings, runs)
    if not differs:
        model = settings["model"]
        return f"## {title}: the paper's setup", f"paper, {model.upper()} (median of {PAPER_RUNS[model]})", []
    notes = [f"**Not the paper's setup**: {'; '.join(differs)}. The paper's numbers are shown for orientation only."]
    if settings["recipe"] == "tutorial":
        notes += ["", TUTORIAL_DIFFERENCES]
    return f"## {title}: not the paper's setup", "paper (other setup, see above)", notes


def write_report(runs_dir: Path, out: Path, data_dir: str, device: str, skip_ensembles: bool) -> str:
    """report.md and its figures in ``out``, from every run under ``runs_dir``; says what it wrote. Warnings (runs
    left out, copies) go to stderr as well as into the report."""
    if runs_dir.exists() and not runs_dir.is_dir():
        raise UserError(f"--runs {runs_dir} is a file, not a folder: name the grid's folder (sh grid.sh writes one).")
    runs, warnings = find_runs(runs_dir)
    runs, copies = counted_once(runs)
    for warning in [*warnings, *copies]:
        print(f"warning: {warning}", file=sys.stderr)
    finished = [r for r in runs if r.finished]
    if not finished:
        raise UserError(f"no finished runs under {runs_dir}. sh grid.sh trains the paper's grid there.")
    lines = ["# SGDR reproduction report", "", RECOMMENDED, ""]
    planned: set[Path] = set()
    for plan in sorted(runs_dir.rglob(PLAN)):
        try:
            plan_runs = read_plan_file(plan)
        except UserError as error:  # a line a user added or an older version left: said, not fatal
            lines += [f"**Grid plan not read**: {error}", ""]
            continue
        lines += unfinished_plan(plan, plan_runs, finished)
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
        heading, paper_header, notes = section_heading(settings, varying, group)
        dataset, model = settings["dataset"], settings["model"]
        lines += [heading, "", *notes, "", "### Table 1: test error by schedule", ""]
        lines += table1(group, dataset, paper_header, model) + [""]
        lines += ["### Anytime performance: epochs to the default schedule's result", ""] + anytime(group) + [""]
        curves = {}
        if not skip_ensembles:
            test = ensembles.SnapshotOutputs(data_dir, pick_device(device))  # this group's test set
            try:
                grid_words = (("MODEL", "model"), ("DATASET", "dataset"), ("RECIPE", "recipe"))
                grid_settings = "".join(f"{word}={settings[key]} " for word, key in grid_words)
                rows, curves = table2(group, dataset, test, paper_header, model, grid_settings)
            except UserError as error:  # most often: no data set here
                raise UserError(
                    f"{error}\nOnly Table 2 (the snapshot ensembles) needs the test set: pass the "
                    "--data-dir the runs used, or --skip-ensembles to leave Table 2 out."
                ) from None
            lines += ["### Table 2: snapshot ensembles (the last M cycle-end snapshots of each run)", ""] + rows + [""]
        for path in figures(group, curves, out, name, dataset, model):
            lines.append(f"![{path.stem}]({path.name})")
            written.append(path)
        lines.append("")
    out.mkdir(parents=True, exist_ok=True)
    report = out / "report.md"
    with storage.atomic_write(report) as f:
        f.write("\n".join(lines).encode())
    return (
        f"Wrote {report} and {len(written)} figure(s) from {len(finished)} finished run(s) in {len(groups)} group(s)."
    )

"""The reproduction report: a folder of runs read, grouped by their settings, and compared with the paper's
Tables 1 and 2 (report.py prints it; the paper's numbers are tables.py's)."""

from __future__ import annotations

import statistics
import sys
import zlib
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

from sgdr import drawing, storage
from sgdr.cli import UserError
from sgdr.data.cifar import TEST_IMAGES
from sgdr.paper import averages, ensembles, gridstate
from sgdr.paper.grid import PLAN, PlannedRun, plan_is_scaled, read_plan_file, short_name, swa_epochs
from sgdr.paper.tables import (
    ANYTIME_BASELINE,
    CLAIM_T_MULT,
    COLUMN,
    PAPER_CLAIM,
    PAPER_EPOCHS,
    PAPER_RUNS,
    PAPER_SETUP,
    PAPER_TABLE1,
    SWA_PAPER_SETUP,
    TABLE2_MODEL,
    TABLE2_NS,
    TABLE2_POOL,
    TABLE2_RUNS,
    paper_column,
    paper_swa,
    paper_table1,
    paper_table2,
    scaled_epochs,
    scaled_shape,
)
from sgdr.parallel.devices import pick_device
from sgdr.run import layout, record
from sgdr.run.outputs import read_metrics
from sgdr.run.record import read_record
from sgdr.run.settings import problem, same_run, trains_swa
from sgdr.training.recipes import LR
from sgdr.training.schedules import GAMMA, MILESTONES, OPTION_DEFAULTS, cycle_ends, run_cycle_ends

# Settings that vary inside a group: the seed and the schedule's (its kind, T_0 and T_mult or milestones, the
# initial rate, the options that shape warm restarts, SWA's schedule).
SCHEDULE_KEYS = (
    "seed", "warm_restart", "t_zero", "t_mult", "milestones", "lr", *OPTION_DEFAULTS, "swa_start", "swa_lr"
)  # fmt: skip
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
    def swa(self) -> bool:
        """Trained under SWA's schedule (train.py --swa-start): read beside a group, not in its tables."""
        return trains_swa(self.config)

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

    @property
    def image(self) -> float:
        """One test image, in points of test error %: the resolution of every error the run reports."""
        return 100 / (self.config.get("test_subset") or TEST_IMAGES)


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


def schedule_name(schedule: tuple, epochs: int | None = None) -> str:
    """A schedule as the report's rows name it; ``epochs``: the runs' length, to say which of the default's
    steps happen within it."""
    lr, shape, *options = schedule
    if options:  # warm restarts shaped by a warmup, a cycle decay or a limit
        said = dict(options[0])
        extra = []
        if said.get("warmup_epochs"):
            warmup = said["warmup_epochs"]
            extra.append(f"warmup {warmup} epoch{'s' * (warmup != 1)} from lr {said.get('warmup_start_lr', 0.0):g}")
        if "cycle_decay" in said:
            extra.append(f"cycle decay {said['cycle_decay']:g}")
        if "cycle_limit" in said:
            extra.append(f"{said['cycle_limit']} cycles")
        return f"{schedule_name((lr, shape))}; {', '.join(extra)} (not the paper's schedule)"
    if shape is None:
        return f"default{'' if lr == LR else f' with eta_0 = {lr:g}'} ({_steps(MILESTONES, epochs)})"
    rate = "" if lr == LR else f", eta_{'0' if shape[0] == 'multistep' else 'max'} = {lr:g}"
    if shape[0] == "multistep":
        return f"multistep ({_steps(shape[1], epochs)}){rate}"
    return f"T_0 = {shape[0]}, T_mult = {shape[1]}{rate}"


def _steps(milestones: Sequence[int], epochs: int | None) -> str:
    """``lr x 0.2 at 60, 120, 160``, and which of them a run of ``epochs`` epochs reaches when not all."""
    said = f"lr x {GAMMA:g} at {', '.join(map(str, milestones))}"
    if epochs is None or all(m < epochs for m in milestones):
        return said
    within = [str(m) for m in milestones if m < epochs]
    return said + (f"; {', '.join(within)} only, in {epochs} epochs" if within else f"; no step in {epochs} epochs")


# Each of the paper's schedules is drawn in one style in every figure of every report: the default with
# eta_0 = 0.1 in blue, as in the paper's Figure 2; warm restarts with T_mult = 1 dashed, T_mult = 2 dotted.
PAPER_STYLES = {
    (0.1, None): drawing.Style("blue", "-", "s"),
    (0.05, None): drawing.Style("red", "-", "o"),
    (0.05, (50, 1)): drawing.Style("green", "--", "^"),
    (0.05, (100, 1)): drawing.Style("purple", "--", "v"),
    (0.05, (200, 1)): drawing.Style("gray", "--", "D"),
    (0.05, (1, 2)): drawing.Style("orange", ":", "<"),
    (0.05, (10, 2)): drawing.Style("brown", "-.", ">"),
}
# Other schedules (shaped, other rates or T_0) take one of these by a checksum of their name: the same style
# wherever the schedule is drawn.
OTHER_STYLES = [
    drawing.Style(color, line, marker)
    for color, line, marker in zip(
        ("olive", "cyan", "magenta", "teal", "navy", "darkgoldenrod", "black", "pink"),
        ("-.", ":", "-.", ":", "-.", ":", "-.", ":"),
        ("x", "+", "p", "h", "P", "X", "d", "8"),
    )
]


@dataclass(frozen=True)
class Rows:
    """The schedules of a group of runs as the report shows them. A group of a scaled try-out (grid.sh with
    SCALED=1) trained every schedule with its epochs scaled by epochs / 200 (tables.scaled_shape): its rows
    stand for the paper's schedules they were scaled from."""

    epochs: int
    column: str  # the network whose paper column the group is shown
    scaled: bool = False

    @classmethod
    def of(cls, runs: Sequence[Run], model: str, scaled: bool = False) -> Rows:
        """The rows of a group of ``runs``; ``scaled``: they were planned as a scaled try-out (their grid's plan
        says so), which a group of the paper's 200 epochs never is."""
        epochs = max(run.epochs for run in runs)
        return cls(epochs, paper_column(model), scaled and epochs != PAPER_EPOCHS)

    def key(self, paper: tuple) -> tuple:
        """The schedule that stands for the paper's ``paper`` schedule in this group."""
        lr, shape = paper
        return (lr, scaled_shape(shape, self.epochs)) if self.scaled else paper

    def paper(self, schedule: tuple) -> tuple | None:
        """The paper's schedule that ``schedule`` stands for, or None."""
        return next((p for p in PAPER_TABLE1[self.column] if self.key(p) == schedule), None)

    @property
    def order(self) -> list[tuple]:
        return [self.key(p) for p in PAPER_TABLE1[self.column]]

    def sort_key(self, schedule: tuple) -> tuple:
        """The paper's rows first, in its order, then the others."""
        order = self.order
        return (order.index(schedule), "") if schedule in order else (len(order), str(schedule))

    def name(self, schedule: tuple) -> str:
        paper = self.paper(schedule)
        if not self.scaled or paper is None:
            return schedule_name(schedule, self.epochs)
        shape = schedule[1]
        if shape[0] == "multistep":
            plain = schedule_name(paper).split(" (")[0]
            return f"{plain} (scaled: {_steps(shape[1], self.epochs)})"
        return f"{schedule_name(paper)} (scaled: T_0 = {shape[0]})"

    def short(self, schedule: tuple) -> str:
        """The name without its parenthesis, the default's rate said: ``default with eta_0 = 0.05``."""
        name = self.name(schedule).split(" (")[0]
        return f"default with eta_0 = {schedule[0]:g}" if name == "default" else name

    def style(self, schedule: tuple, taken: Sequence[drawing.Style] = ()) -> drawing.Style:
        """The schedule's style in every figure: the paper's schedules their own; another by its name, the
        next free one where a figure already has that (``taken``)."""
        paper = self.paper(schedule)
        if paper is not None and not schedule[2:]:
            return PAPER_STYLES[paper]
        start = zlib.crc32(schedule_name(schedule).encode())
        styles = [OTHER_STYLES[(start + k) % len(OTHER_STYLES)] for k in range(len(OTHER_STYLES))]
        colors = {style.color for style in taken}
        return next((style for style in styles if style.color not in colors), styles[0])

    def styles(self, schedules: Sequence[tuple]) -> dict[tuple, drawing.Style]:
        """The style of each of a figure's ``schedules``: the paper's first, so theirs never move."""
        chosen: dict[tuple, drawing.Style] = {}
        for schedule in sorted(schedules, key=lambda s: (self.paper(s) is None or bool(s[2:]), self.sort_key(s))):
            chosen[schedule] = self.style(schedule, list(chosen.values()))
        return chosen

    def scaling(self) -> str:
        """What the scaling was, for the heading and the figures ("" for none)."""
        if not self.scaled:
            return ""
        return (
            f"a scaled try-out: every schedule's epochs (T_0, the default's steps, a warmup) are the paper's x "
            f"{self.epochs}/{PAPER_EPOCHS}, rounded (at least 1)"
        )

    def rounded(self, epochs: int | None = None) -> list[str]:
        """The paper's epoch counts that scaling to ``epochs`` (the group's) does not keep exact: ``T_0 = 50
        becomes 8 (7.5)``."""
        epochs = epochs or self.epochs
        counts = sorted({shape[0] for _, shape in PAPER_TABLE1[self.column] if shape} | set(MILESTONES))
        said = []
        for count in counts:
            exact = Fraction(count * epochs, PAPER_EPOCHS)
            if exact != scaled_epochs(count, epochs):
                what = "T_0 = " if count not in MILESTONES else "the step at "
                said.append(f"{what}{count} becomes {scaled_epochs(count, epochs)} ({float(exact):g})")
        return said

    def exactness(self) -> str:
        """Which of the paper's epochs the scaling rounds, and the fewest epochs from here that round only
        T_0 = 1 (which no scaling below 200 epochs keeps) and keep the schedules apart."""
        said = self.rounded()
        if all(r.startswith("T_0 = 1 ") for r in said):
            return ""

        def fine(epochs: int) -> bool:
            keys = [(lr, scaled_shape(shape, epochs)) for lr, shape in PAPER_TABLE1[self.column]]
            return all(r.startswith("T_0 = 1 ") for r in self.rounded(epochs)) and len(set(keys)) == len(keys)

        better = next((e for e in range(self.epochs + 1, PAPER_EPOCHS) if fine(e)), None)
        hint = f"; at EPOCHS={better} only T_0 = 1 is rounded" if better else ""
        return f"Rounded, so the cycles do not end where the paper's do: {', '.join(said)}{hint}."


def by_schedule(runs: Sequence[Run], rows: Rows | None = None) -> dict[Any, list[Run]]:
    groups: dict = defaultdict(list)
    for run in runs:
        groups[run.schedule].append(run)
    rows = rows or Rows(PAPER_EPOCHS, TABLE2_MODEL)
    return dict(sorted(groups.items(), key=lambda kv: rows.sort_key(kv[0])))


def differences_from_paper(settings: dict[str, Any], runs: Sequence[Run] = ()) -> list[str]:
    """How a group's settings differ from those the paper's numbers were measured under, arithmetic included:
    the paper computed in float32 throughout."""
    differs = [] if settings["model"] in PAPER_TABLE1 else [f"model {settings['model']} (the paper's: {TABLE2_MODEL})"]
    whole = {"train_subset": "all 50,000 training images", "test_subset": "all 10,000 test images"}
    differs += [
        f"{key} {settings.get(key)} (the paper's: {whole.get(key, value) if value is None else value})"
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


def _not_finished(runs: Sequence[Run]) -> str:
    return ", ".join(f"seed {r.config['seed']} at {len(r.metrics)} of {r.epochs} epochs" for r in by_seed(runs))


def reference(groups: dict, rows: Rows) -> tuple | None:
    """The default schedule the others are compared with: the paper's baseline (eta_0 = 0.1, Section 4.2)
    where the group has it, else the default with the project's (and SGDR's) 0.05; None without either."""
    return next((s for s in (rows.key(ANYTIME_BASELINE), rows.key((LR, None))) if s in groups), None)


def inside_spread(one: Sequence[Run], other: Sequence[Run]) -> bool:
    """Whether two rows' difference is one the seeds do not resolve: their ranges over seeds overlap, or
    their medians differ by at most one test image."""
    a, b = [r.test_error for r in one], [r.test_error for r in other]
    image = max(r.image for r in (*one, *other))
    overlap = max(min(a), min(b)) <= min(max(a), max(b))
    return overlap or abs(statistics.median(a) - statistics.median(b)) <= image + 1e-9


def table1(runs: list[Run], dataset: str, paper_header: str, rows: Rows, unfinished: Sequence[Run] = ()) -> list[str]:
    groups = by_schedule(runs, rows)
    waiting = by_schedule(unfinished, rows)
    order = sorted(set(rows.order) | set(groups) | set(waiting), key=rows.sort_key)
    base = reference(groups, rows)
    versus = f"vs {rows.short(base)}" if base else "vs the default"
    lines = [
        f"| schedule | runs (seeds) | read at epoch | test error %, median (range) | last epoch | {versus} | "
        f"{paper_header} |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for schedule in order:
        group = by_seed(groups.get(schedule, []))
        paper = paper_table1(rows.paper(schedule) or schedule, dataset, rows.column)
        later = f"not finished: {_not_finished(waiting[schedule])}" if schedule in waiting else ""
        if not group:
            lines.append(f"| {rows.name(schedule)} | 0 | | {later or 'not run'} | | | {paper} |")
            continue
        seeds = ", ".join(str(r.config["seed"]) for r in group)
        read = "/".join(map(str, sorted({r.read_epoch for r in group})))
        last = _spread([r.error_at(len(r.metrics)) for r in group])
        if base is None or schedule == base:
            against = "(the reference)" if schedule == base else ""
        else:
            gap = statistics.median(r.test_error for r in group) - statistics.median(r.test_error for r in groups[base])
            against = f"{gap:+.2f}" + (" (inside the spread)" if inside_spread(group, groups[base]) else "")
        lines.append(
            f"| {rows.name(schedule)} | {len(group)} ({seeds}){'; ' + later if later else ''} | {read} | "
            f"{_spread([r.test_error for r in group])} | {last} | {against} | {paper} |"
        )
    others = [
        f"{rows.name(schedule)} ({len(group)})"
        for schedule, group in groups.items()
        if rows.paper(schedule) and len(group) != PAPER_RUNS[rows.column]
    ]
    lines.append("")
    if others:
        lines += [
            f"The paper's numbers are medians of {PAPER_RUNS[rows.column]} runs; these rows' are of other numbers of "
            f"runs: {', '.join(others)}.",
            "",
        ]
    images = sorted({round(100 / r.image) for r in runs})
    seeds = sorted({len(group) for group in groups.values()})
    lines.append(
        f"Resolution: one test image is {max(r.image for r in runs):.2f} points of test error here "
        f"({'/'.join(map(str, images))} test images); the medians are over {'/'.join(map(str, seeds))} "
        f'seed{"s" * (seeds != [1])}. A difference marked "inside the spread" is one the seeds\' ranges overlap '
        "on, or of at most one test image: not evidence that either schedule is better."
    )
    return lines


def table2_header(paper_header: str) -> str:
    """The paper's column of Table 2 (how its ensembles were pooled: see TABLE2_PROTOCOL)."""
    if paper_header.startswith("paper (other setup"):
        return f"{paper_header}, WRN-28-10, T_0 = 10, T_mult = 2"
    return "paper's Table 2, WRN-28-10, T_0 = 10, T_mult = 2"


TABLE2_PROTOCOL = (
    f"The paper's Table 2 gives the median of {TABLE2_RUNS} runs for its N = 1, M = 1 entry only; Section 4.3 "
    f"compares with ensembles of 18 and {TABLE2_POOL} runs, so its pool of runs held at least {TABLE2_POOL}, and "
    "it does not say how it formed its ensembles of N = 3 runs. Here, N runs are disjoint groups of N runs in seed "
    "order, and a row is the median over the groups (the project's choice); a row is beside the paper's number "
    "only where its N and M are the paper's."
)


def ensemble_sizes(runs: int) -> list[int]:
    """The numbers of runs per ensemble the report gives a group of ``runs`` runs: the paper's 1, 3 and 16 that
    it has runs for, and all of them when they are fewer than 16 and not one of those."""
    sizes = [n for n in TABLE2_NS if n <= runs]
    return sizes + ([runs] if runs < TABLE2_NS[-1] and runs not in sizes else [])


def pooled(n: int, runs: Sequence[Run], groups: int) -> str:
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
    if n not in TABLE2_NS:
        gap = min(abs(n - k) for k in TABLE2_NS)
        nearest = " and ".join(str(k) for k in TABLE2_NS if abs(n - k) == gap)
        said += f" (the paper has no N = {n}; its nearest: N = {nearest})"
    return said


def no_snapshots(group: Sequence[Run], sets: Sequence[Sequence[Path]], name: str) -> str:
    """Why a warm-restart schedule's runs give no Table 2 row: said, not dropped."""
    ends = run_cycle_ends(group[0].config, group[0].epochs)
    if not ends:
        config = group[0].config
        first = (config.get("warmup_epochs") or 0) + config["t_zero"]
        return (
            f"{name}: no row: its first cycle ends at epoch {first}, after these runs' {group[0].epochs} epochs, so "
            "they left no snapshots."
        )
    missing = [f"seed {r.config['seed']}" for r, s in zip(group, sets) if not s]
    return (
        f"{name}: no row: no snapshots in {', '.join(missing)} (written at cycle ends {', '.join(map(str, ends))}; "
        "removed since?)."
    )


def table2(
    runs: list[Run],
    dataset: str,
    test: ensembles.SnapshotOutputs,
    paper_header: str,
    rows: Rows,
    grid_settings: str = "",
) -> tuple[list[str], dict]:
    """Snapshot-ensemble rows for each warm-restart schedule whose runs all have snapshots: for N = 1, 3 and 16
    runs (see ensemble_sizes) and M = 1, 2, 3 snapshots per run; a line for each schedule without a row."""
    lines = [
        f"| schedule | ensemble | test error %, median (range) | {table2_header(paper_header)} | runs |",
        "| --- | --- | --- | --- | --- |",
    ]
    curves, notes, missing = {}, [], []
    for schedule, group in by_schedule(runs, rows).items():
        if not group[0].config["warm_restart"]:
            continue
        group = by_seed(group)
        snapshot_sets = [ensembles.run_snapshots(run.folder) for run in group]
        paper = rows.paper(schedule) or schedule
        if not all(snapshot_sets):
            missing.append(no_snapshots(group, snapshot_sets, rows.name(schedule)))
            continue
        largest = min(3, min(len(s) for s in snapshot_sets))
        for n in ensemble_sizes(len(group)):
            groups = [snapshot_sets[i : i + n] for i in range(0, len(group) - n + 1, n)]
            errors = [
                [100 * ensembles.ensemble_error([path for run in g for path in run[-m:]], test) for g in groups]
                for m in range(1, largest + 1)
            ]
            if n == 1:  # the ensembles figure: one run's M snapshots, median over runs
                curves[schedule] = [statistics.median(column) for column in errors]
            for m, column in enumerate(errors, 1):
                lines.append(
                    f"| {rows.name(schedule)} | {n} run{'s' * (n > 1)}, M = {m} | {_spread(column)} | "
                    f"{paper_table2(paper, dataset, n, m, rows.column)} | {pooled(n, group, len(groups))} |"
                )
        if paper_table2(paper, dataset, 1, 1, rows.column) and len(group) < TABLE2_RUNS:
            notes.append(
                f"The paper's ensembles of {TABLE2_RUNS} runs need {TABLE2_RUNS} runs of {rows.name(schedule)}; this "
                f'group has {len(group)}: `TABLE2_SEEDS="$(seq 1 {TABLE2_RUNS})" {grid_settings}sh grid.sh` trains '
                f"{TABLE2_RUNS} (with the grid's other settings as before)."
            )
    if not curves:
        lines = ["No warm-restart schedule of this group has snapshots in every run, so no ensemble can be formed."]
    return lines + [""] + missing + ([""] if missing else []) + [TABLE2_PROTOCOL] + ([""] + notes if notes else []), (
        curves
    )


SWA_PROTOCOL = (
    "SWA's own schedule (`train.py --swa-start`, the word `swa` of grid.sh): other runs, of the same settings, "
    "trained longer under the SWA paper's schedule (the initial rate, falling linearly to the averaging rate, then "
    "constant while the weights after each epoch from the start are averaged); read at their last epoch: the "
    "network itself, and the average, BatchNorm's statistics recomputed as above, validated once after the last "
    "epoch. Their training epochs are their own (the SWA paper's budget: 1.5x its SGD baseline's); on this "
    "group's recipe, not the SWA paper's training."
)
AVERAGES_PROTOCOL = (
    "Each row's test error is the median (range) over the schedule's runs, one value per run: the single network "
    "read at the recommended solution; the ensemble of the run's last M cycle-end snapshots (softmax outputs "
    "averaged); SWA of the same M snapshots (their weights averaged, BatchNorm's statistics recomputed over the "
    "run's training images in order, without augmentation: one network); EMA (`train.py --ema`), the moving "
    "average of the weights at the recommended solution's epoch. None of them trains more than the run. "
    "See docs/averaging.md."
)


AVERAGES_HEADER = (
    "| schedule | method | test error %, median (range) | networks at test time | training epochs | paper |",
    "| --- | --- | --- | --- | --- | --- |",
)


def averages_table(
    runs: list[Run], dataset: str, test: ensembles.SnapshotOutputs, rows: Rows, swa_lines: Sequence[str] = ()
) -> tuple[list[str], dict[tuple, tuple[list[float], list[float]]]]:
    """Beside Table 2, for each warm-restart schedule whose runs all have snapshots: the single network, the
    snapshot ensemble of M, SWA of the same M snapshots and EMA where trained, each with its test error (median
    and range over the runs), the networks it evaluates at test time and its training epochs; the paper's numbers
    where they exist; then ``swa_lines`` (``swa_table``: runs of SWA's own schedule beside them). Also the figure's
    curves: per schedule, the median over runs of the ensemble's and SWA's
    error for M = 1, 2, 3."""
    lines = list(AVERAGES_HEADER)
    average = averages.AverageOutputs(test)
    curves: dict[tuple, tuple[list[float], list[float]]] = {}
    for schedule, group in by_schedule(runs, rows).items():
        if not group[0].config["warm_restart"]:
            continue
        group = by_seed(group)
        sets = [ensembles.run_snapshots(run.folder) for run in group]
        if not all(sets):
            continue  # Table 2 says why
        name, paper = rows.name(schedule), rows.paper(schedule) or schedule
        epochs = _spread_int([len(run.metrics) for run in group])
        largest = min(3, min(len(s) for s in sets))
        ensemble = [[100 * ensembles.ensemble_error(s[-m:], test) for s in sets] for m in range(1, largest + 1)]
        swa = [[100 * averages.swa_error([s[-m:]], average) for s in sets] for m in range(1, largest + 1)]
        curves[schedule] = ([statistics.median(c) for c in ensemble], [statistics.median(c) for c in swa])
        read = _spread_int([run.read_epoch for run in group])
        single = f"{_spread([run.test_error for run in group])}"
        table1_paper = paper_table2(paper, dataset, 1, 1, rows.column)
        lines.append(f"| {name} | single network (epoch {read}) | {single} | 1 | {epochs} | {table1_paper} |")
        for m, column in enumerate(ensemble, 1):
            cited = paper_table2(paper, dataset, 1, m, rows.column)
            lines.append(f"| {name} | snapshot ensemble, M = {m} | {_spread(column)} | {m} | {epochs} | {cited} |")
        for m, column in enumerate(swa, 1):
            lines.append(
                f"| {name} | SWA of the same {m} snapshot{'s' * (m > 1)} | {_spread(column)} | 1 | {epochs} |  |"
            )
        if all("ema_test_error" in run.metrics[run.read_epoch - 1] for run in group):
            ema = [100 * run.metrics[run.read_epoch - 1]["ema_test_error"] for run in group]
            decay = group[0].config["ema"]
            lines.append(f"| {name} | EMA of the weights (decay {decay:g}) | {_spread(ema)} | 1 | {epochs} |  |")
    none = "No warm-restart schedule of this group has snapshots in every run: nothing to average"
    if not curves and not swa_lines:
        return [f"{none}."], curves
    lines += swa_lines
    lines += swa_paper_row(dataset, rows.column)
    notes = ([AVERAGES_PROTOCOL] if curves else []) + ([SWA_PROTOCOL] if swa_lines else [])
    spaced = [line for note in notes for line in ("", note)]
    return ([] if curves else [f"{none} but SWA's own schedule.", ""]) + lines + spaced, curves


def swa_beside(settings: tuple, swa_runs: Sequence[Run], groups: Sequence[tuple]) -> list[Run]:
    """The runs of ``swa_runs`` (SWA's schedule) that sit beside the group of runs of ``settings``, among the
    groups of ``groups`` (their settings): those of the same settings but their epochs, trained for 1.5x the
    group's (grid.swa_epochs, as the word swa trains them), or, where no group of those settings is 1.5x shorter,
    beside the longest of them no longer than they."""
    group = dict(settings)

    def apart_from_epochs(one: tuple) -> dict:
        return {key: value for key, value in one if key != "epochs"}

    def budget(run: Run) -> int | None:
        budgets = [dict(g)["epochs"] for g in groups if apart_from_epochs(g) == apart_from_epochs(run.settings)]
        matched = [b for b in budgets if swa_epochs(b) == run.epochs]
        shorter = [b for b in budgets if b <= run.epochs]
        return matched[0] if matched else max(shorter, default=None)

    return [run for run in swa_runs if apart_from_epochs(run.settings) == apart_from_epochs(settings) and
            budget(run) == group["epochs"]]  # fmt: skip


def swa_table(swa_runs: Sequence[Run], budget: int) -> tuple[list[str], list[tuple[str, float]]]:
    """Rows of the averages table for runs trained under SWA's schedule beside a group of ``budget`` epochs: per
    setting of it (its start, rates and epochs), the network at its last epoch and SWA's average, each the median
    (range) over the runs, one network at test time, and the training epochs against the group's. Also, for the
    averages figure, (label, median test error) of each setting's SWA average."""
    lines, levels = [], []
    kinds: dict[tuple, list[Run]] = defaultdict(list)
    for run in swa_runs:
        c = run.config
        kinds[(c["swa_start"], c.get("lr", LR), c["swa_lr"], run.epochs)].append(run)
    for (start, lr, swa_lr, epochs), group in sorted(kinds.items()):
        group = by_seed(group)
        runs = f"{len(group)} run{'s' * (len(group) > 1)}"
        name = f"SWA's own schedule (lr {lr:g}, then {swa_lr:g} while averaging from epoch {start} of {epochs}; {runs})"
        spent = f"{epochs} ({epochs / budget:.3g}x these runs' {budget})"
        last = [run.error_at(epochs) for run in group]
        averaged = [100 * run.metrics[-1]["swa_test_error"] for run in group if "swa_test_error" in run.metrics[-1]]
        lines.append(f"| {name} | the network itself (epoch {epochs}) | {_spread(last)} | 1 | {spent} |  |")
        if averaged:
            said = f"SWA: the weights after epochs {start}-{epochs} averaged, BatchNorm recomputed"
            if len(averaged) < len(group):  # a run's metrics without the average's result (edited, or cut)
                said += f" ({len(averaged)} of the {len(group)} runs: the others' metrics have no swa_test_error)"
            lines.append(f"| {name} | {said} | {_spread(averaged)} | 1 | {spent} |  |")
            level = f"SWA's own schedule: SWA of epochs {start}-{epochs} (trained {epochs / budget:.3g}x as long)"
            levels.append((level, statistics.median(averaged)))
    return lines, levels


def swa_paper_row(dataset: str, column: str) -> list[str]:
    """The SWA paper's row of the averages table (its WRN-28-10 at 1.5x its budget), where it has a number."""
    cited = paper_swa(dataset, column)
    return [f"| {SWA_PAPER_SETUP} | SWA (one network) | | 1 | 1.5x the SGD budget | {cited} |"] if cited else []


def _spread_int(values: Sequence[int]) -> str:
    low, high = min(values), max(values)
    return f"{low}" if low == high else f"{low}-{high}"


SWA_LEVEL = drawing.Style("0.35", "--", "D")  # SWA's own schedule in the averages figure: one network, no M


def averages_figure(
    curves: dict[tuple, tuple[list[float], list[float]]],
    rows: Rows,
    title: str,
    styles: dict | None = None,
    levels: Sequence[tuple[str, float]] = (),
):
    """Test error against M for each schedule: its snapshot ensemble in its style (``styles``: the group's),
    SWA of the same snapshots in its colour and marker with a dotted line; ``levels``: (label, test error) of
    SWA's own schedule beside them (``swa_table``), a level line across the M axis (its runs train 1.5x longer)."""
    styles = styles or rows.styles(list(curves))
    series = []
    for schedule, (ensemble, swa) in curves.items():
        style = styles[schedule]
        dotted = replace(style, linestyle=":" if style.linestyle != ":" else "-.")
        series.append(drawing.Series(range(1, len(ensemble) + 1), ensemble, f"{rows.name(schedule)}: ensemble", style))
        series.append(drawing.Series(range(1, len(swa) + 1), swa, f"{rows.name(schedule)}: SWA", dotted))
    largest = max((len(ensemble) for ensemble, _ in curves.values()), default=1)
    for label, value in levels:
        series.append(drawing.Series([1, max(largest, 2)], [value, value], label, SWA_LEVEL))
    scaled = f" ({rows.scaling()})" if rows.scaled else ""
    return drawing.comparison_figure(
        series,
        "Snapshots (M)",
        "Test error % (median over runs)",
        f"Ensemble (M networks) and SWA (one network) of M snapshots: {title}",
        note=f"One run's last M cycle ends; schedules without snapshots have no curve.{scaled}",
        integer_x=True,
    )


def recommended_curve(group: Sequence[Run]) -> tuple[list[float], list[int]]:
    """Figure 2's curve for one schedule: the median over seeds of the recommended solution's test
    error, at every epoch until the first cycle ends (the current network), then at each cycle end."""
    epochs = min(len(r.metrics) for r in group)
    ends = run_cycle_ends(group[0].config, epochs)
    points = list(range(1, (ends[0] if ends else epochs) + 1)) + ends[1:]
    return [statistics.median(r.error_at(e) for r in group) for e in points], points


@dataclass(frozen=True)
class Target:
    """What "comparable to the default schedule's result" means for one default schedule's runs: at or below
    its final median plus a tolerance (the spread of its seeds' final errors above the median, at least one
    test image); ``needed``: the epoch its own median first gets there."""

    final: float
    tolerance: float
    needed: int
    budget: int

    @property
    def level(self) -> float:
        return self.final + self.tolerance

    @classmethod
    def of(cls, group: Sequence[Run]) -> Target:
        budget = min(len(r.metrics) for r in group)
        finals = [r.error_at(budget) for r in group]
        final = statistics.median(finals)
        tolerance = max(max(finals) - final, max(r.image for r in group))
        values, points = recommended_curve(group)
        needed = next(e for v, e in zip(values, points) if v <= final + tolerance + 1e-9)
        return cls(final, tolerance, needed, budget)

    def first(self, group: Sequence[Run]) -> tuple[int, float] | None:
        """The first recommended solution of ``group`` (epoch, median) that is comparable, or None."""
        values, points = recommended_curve(group)
        return next(((e, v) for v, e in zip(values, points) if v <= self.level + 1e-9), None)


def _claim(paper: tuple | None, schedule: tuple) -> str:
    """What the paper says of a schedule's anytime performance."""
    if paper is None or schedule[2:] or paper[1] is None:
        return ""
    if paper[1][1] == CLAIM_T_MULT:
        return f"{PAPER_CLAIM[0]}x-{PAPER_CLAIM[1]}x (against eta_0 = 0.1)"
    return "the worst anytime performance" if paper[1] == (200, 1) else ""


def anytime(runs: list[Run], rows: Rows) -> list[str]:
    """The paper's claim of 2x to 4x fewer epochs, measured: for each schedule, the first recommended solution
    (Figure 2's curve) comparable to the default schedule's result (see Target), against the paper's baseline
    (eta_0 = 0.1) and, where the group has it, the default with eta_0 = 0.05 beside it."""
    groups = by_schedule(runs, rows)
    baselines = [rows.key(ANYTIME_BASELINE), rows.key((LR, None))]
    present = [b for b in baselines if b in groups]
    if not present:
        return [
            f"Needs runs of {rows.name(baselines[0])}, the default schedule the paper measures against (the "
            f"grid's `default@0.1`), or of {rows.name(baselines[1])}."
        ]
    targets = {b: Target.of(groups[b]) for b in present}
    short = {b: rows.short(b) for b in present}
    lines = [
        "The paper (Sections 1 and 4.2): SGDR with T_mult = 2 reaches results comparable to those of the default "
        f"schedule with eta_0 = 0.1 (Zagoruyko & Komodakis') with {PAPER_CLAIM[0]}x to {PAPER_CLAIM[1]}x fewer "
        "epochs; of T_0 = 200, T_mult = 1 it says its anytime performance is the worst. Here, comparable is at or "
        "below the default's final median test error plus a tolerance: the spread of its seeds' final errors above "
        "their median (its worst seed), and at least one test image. For each schedule: the first recommended "
        "solution (the current network until the first cycle ends, then the network at each cycle end) whose median "
        "over seeds is comparable, and the epoch at which the default's own median first is, divided by it.",
        "",
    ]
    if baselines[0] not in groups:
        lines += [
            f"**No runs of {rows.name(baselines[0])}**, the paper's baseline: measured against "
            f"{rows.name(baselines[1])} instead (`default@0.1` in SCHEDULES trains it; the grid does by default).",
            "",
        ]
    for b in present:
        t = targets[b]
        lines.append(
            f"- {short[b]}: final median {t.final:.2f}% after {t.budget} epochs, tolerance {t.tolerance:.2f}, so "
            f"comparable is at or below {t.level:.2f}%, which its own median first reaches at epoch {t.needed}."
        )
    header = ["schedule", "median test error % at each cycle end (epoch: error)"]
    for b in present:
        header += [f"first at or below {targets[b].level:.2f}", f"epochs of the {short[b]} / these"]
    lines += ["", "| " + " | ".join([*header, "the paper"]) + " |", "|" + " --- |" * (len(header) + 1)]
    for schedule, group in groups.items():
        values, points = recommended_curve(group)
        ends = run_cycle_ends(group[0].config, points[-1])
        at_ends = "; ".join(f"{e}: {v:.2f}" for v, e in zip(values, points) if e in ends) or "(no restarts)"
        cells = [rows.name(schedule), at_ends]
        for b in present:
            reached = targets[b].first(group)
            if reached:
                cells += [f"epoch {reached[0]} ({reached[1]:.2f})", f"{targets[b].needed / reached[0]:.2f}x"]
            else:
                cells += [f"not reached in {min(len(r.metrics) for r in group)} epochs", ""]
        lines.append("| " + " | ".join([*cells, _claim(rows.paper(schedule), schedule)]) + " |")
    return lines


STARS = "the paper's Table 1 (stars)"


def paper_marks(rows: Rows, dataset: str, epochs: int) -> list[tuple[tuple, int, float]]:
    """(the group's schedule, epoch, test error %) of the paper's Table 1 entries in the group's column, each
    at the epoch the paper reads it (its recommended solution after 200 epochs; in a scaled try-out, where the
    scaled schedule's is), those within ``epochs``."""
    if dataset not in COLUMN:
        return []
    points = []
    for paper, cell in PAPER_TABLE1[rows.column].items():
        schedule = rows.key(paper)
        budget = rows.epochs if rows.scaled else PAPER_EPOCHS
        shape = schedule[1]
        read = cycle_ends(*shape, budget)[-1] if shape and shape[0] != "multistep" else budget
        if read <= epochs:
            points.append((schedule, read, cell[COLUMN[dataset]]))
    return points


def error_figure(
    runs: list[Run], dataset: str, model: str, rows: Rows | None = None, title: str = "", styles: dict | None = None
):
    """Figure 2: the recommended solutions' median test error against epochs for every schedule, with the
    paper's Table 1 entries as stars at the epochs it reads them, in the colour of the schedule's curve.
    ``styles``: the group's (Rows.styles of all its schedules), shared by its figures."""
    rows = rows or Rows.of(runs, model)
    groups = by_schedule(runs, rows)
    styles = styles or rows.styles(list(groups))
    series = []
    for schedule, group in groups.items():
        values, points = recommended_curve(group)
        dense = (run_cycle_ends(group[0].config, points[-1]) or [points[-1]])[0]
        marked = [k for k, e in enumerate(points) if e >= dense]  # every cycle end
        series.append(drawing.Series(points, values, rows.name(schedule), styles[schedule], marked))
    epochs = max(len(r.metrics) for r in runs)
    points = paper_marks(rows, dataset, epochs)
    values = [v for one in series for v in one.values]
    if points and all(not min(values) <= error <= max(values) for _, _, error in points):
        errors = [error for _, _, error in points]  # far from every curve (another setup): they would only squash them
        note = (
            f"The paper's Table 1 entries ({min(errors):.2f}-{max(errors):.2f}%) lie outside these curves' range "
            f"({min(values):.2f}-{max(values):.2f}%): not drawn, so that the curves keep their scale."
        )
        points = []
    else:
        note = ""
    marks = [
        (epoch, error, styles[schedule].color if schedule in styles else "black", STARS * (k == 0))
        for k, (schedule, epoch, error) in enumerate(points)
    ]
    if note:
        pass
    elif dataset not in COLUMN:
        note = f"The paper has no numbers for {dataset}."
    elif not points:
        note = f"The paper's Table 1 points (read at epochs 127-200) lie beyond these runs' {epochs} epochs."
    elif len(points) < len(PAPER_TABLE1[rows.column]):
        note = f"Stars only for the paper's entries read within these runs' {epochs} epochs."
    else:
        note = ""
    if rows.scaled:
        stars = "Stars at the scaled schedules' reading epochs: " if points else ""
        note = (note + " " if note else "") + f"{stars}{rows.scaling()[0].upper()}{rows.scaling()[1:]}."
    black = [schedule for schedule, _, _ in points if schedule not in styles]
    if black:
        note = (note + " " if note else "") + "Black stars: schedules these runs do not include."
    return drawing.comparison_figure(
        series,
        "Epochs",
        "Test error % of the recommended solution (median over seeds)",
        title or "Test error of the recommended solutions against epochs (the paper's Figure 2)",
        marks=marks,
        note=note,
    )


def ensembles_figure(curves: dict, rows: Rows, title: str, styles: dict | None = None, left_out: int = 0):
    """Table 2's N = 1 rows as curves: test error against M for each schedule, in its style (``styles``: the
    group's, as in its Figure 2); ``left_out``: how many warm-restart schedules have no snapshots."""
    styles = styles or rows.styles(list(curves))
    series = [drawing.Series(range(1, len(c) + 1), c, rows.name(s), styles[s]) for s, c in curves.items()]
    notes = [f"{left_out} warm-restart schedule(s) without snapshots: no curve (see Table 2)."] if left_out else []
    notes += [f"{rows.scaling()[0].upper()}{rows.scaling()[1:]}."] if rows.scaled else []
    return drawing.comparison_figure(
        series,
        "Snapshots in the ensemble (M)",
        "Test error % (median over runs)",
        f"Snapshot ensembles of one run's last M cycle ends (Table 2, N = 1): {title}",
        note=" ".join(notes),
        integer_x=True,
    )


def figures(
    runs: list[Run],
    curves: dict,
    out: Path,
    name: str,
    dataset: str,
    model: str,
    rows: Rows,
    title: str,
    average_curves: dict | None = None,
    swa_levels: Sequence[tuple[str, float]] = (),
) -> list[Path]:
    paths = [out / f"test_error_{name}.png"]
    title += ", a scaled try-out" if rows.scaled else ""
    groups = by_schedule(runs, rows)
    styles = rows.styles(list(groups))  # one style a schedule in both figures
    figure = error_figure(runs, dataset, model, rows, f"Figure 2 (recommended solutions): {title}", styles)
    drawing.save_figure(figure, paths[0])
    if curves:
        paths.append(out / f"ensembles_{name}.png")
        warm = [s for s, group in groups.items() if group[0].config["warm_restart"]]
        left_out = len([s for s in warm if s not in curves])
        drawing.save_figure(ensembles_figure(curves, rows, title, styles, left_out), paths[-1])
    if average_curves:
        paths.append(out / f"averages_{name}.png")
        drawing.save_figure(averages_figure(average_curves, rows, title, styles, swa_levels), paths[-1])
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
    settings: dict[str, Any], varying: Sequence[str], runs: Sequence[Run] = (), rows: Rows | None = None
) -> tuple[str, str, list[str]]:
    """(heading, column header for the paper's numbers, lines under the heading) of one group."""
    title = group_title(settings, varying)
    differs = differences_from_paper(settings, runs)
    if not differs:
        model = settings["model"]
        return f"## {title}: the paper's setup", f"paper, {model.upper()} (median of {PAPER_RUNS[model]})", []
    notes = [f"**Not the paper's setup**: {'; '.join(differs)}. The paper's numbers are shown for orientation only."]
    if rows is not None and rows.scaled:
        notes += [
            "",
            f"**Scaled**: {rows.scaling()}, so that restarts, cycle ends and snapshots happen within "
            f"{rows.epochs} epochs. Each row names the paper's schedule it stands for and its scaled form. "
            f"{rows.exactness()}".rstrip(),
        ]
    if settings["recipe"] == "tutorial":
        notes += ["", TUTORIAL_DIFFERENCES]
    return f"## {title}: not the paper's setup", "paper (other setup, see above)", notes


def group_title(settings: dict[str, Any], varying: Sequence[str]) -> str:
    """``cifar10, wrn-28-10, paper recipe, 200 epochs``, and the settings that tell this group from the others
    (a setting a group does not use is said as such: ``ema off``, ``train_subset all``, never Python's None)."""
    unset = {"train_subset": "all", "test_subset": "all"}
    said = [f", {key} {unset.get(key, 'off') if settings.get(key) is None else settings[key]}" for key in varying]
    return f"{settings['dataset']}, {settings['model']}, {settings['recipe']} recipe, {settings['epochs']} epochs" + (
        "".join(said)
    )


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
    groups: dict = defaultdict(list)
    for run in finished:
        if not run.swa:  # SWA's schedule: read beside the group of its settings (swa_beside)
            groups[run.settings].append(run)
    swa_runs = [run for run in finished if run.swa]
    beside = {settings: swa_beside(settings, swa_runs, list(groups)) for settings in groups}
    alone = [run for run in swa_runs if not any(run in placed for placed in beside.values())]
    waiting: dict = defaultdict(list)  # unfinished runs of a group: named in its Table 1
    for run in runs:
        if not run.finished and not run.swa and run.settings in groups:
            waiting[run.settings].append(run)
    lines = ["# SGDR reproduction report", "", RECOMMENDED, ""]
    planned: set[Path] = set()
    scaled: set[Path] = set()  # the runs of scaled try-outs
    for plan in sorted(runs_dir.rglob(PLAN)):
        try:
            plan_runs = read_plan_file(plan)
        except UserError as error:  # a line a user added or an older version left: said, not fatal
            lines += [f"**Grid plan not read**: {error}", ""]
            continue
        lines += unfinished_plan(plan, plan_runs, finished)
        planned |= {run.files.run_dir.resolve() for run in plan_runs}
        if plan_is_scaled(plan):
            scaled |= {run.files.run_dir.resolve() for run in plan_runs}
    unfinished = [
        r for r in runs if not r.finished and r.folder.resolve() not in planned and (r.swa or r.settings not in groups)
    ]
    if unfinished:
        lines += [
            "Left out, not finished: " + ", ".join(f"{r.folder} ({len(r.metrics)} epochs)" for r in unfinished),
            "",
        ]
    if alone:
        lines += [
            "Left out, SWA's schedule with no runs of the same settings to sit beside: "
            + ", ".join(f"{r.folder} ({r.epochs} epochs)" for r in alone)
            + ". Its rows go beside a group of runs of the same settings, 2/3 as long (the grid's other schedules: "
            'SCHEDULES="default 10:2 swa", or SWA=1 beside the default SCHEDULES).',
            "",
        ]
    if warnings:
        lines += ["Left out, damaged: " + "; ".join(w.removeprefix("left out ") for w in warnings), ""]
    if copies:
        lines += ["Left out, copies: " + "; ".join(copies), ""]
    # Settings beyond data set, network, recipe and epochs that tell the groups apart go in the headings.
    shown = {"dataset", "model", "recipe", "epochs"}
    varying = sorted(
        key
        for key in {k for settings in groups for k, _ in settings} - shown
        if len({dict(settings).get(key) for settings in groups}) > 1
    )
    written, names = [], set()
    for key, group in sorted(groups.items(), key=lambda kv: str(kv[0])):
        settings = dict(key)
        name = "_".join(str(settings[k]) for k in ("dataset", "model", "recipe"))
        name = name if name not in names else f"{name}_{len(names)}"
        names.add(name)
        dataset, model = settings["dataset"], settings["model"]
        members = [*group, *waiting[key]]
        rows = Rows.of(members, model, any(run.folder.resolve() in scaled for run in members))
        heading, paper_header, notes = section_heading(settings, varying, group, rows)
        lines += [heading, "", *notes, "", "### Table 1: test error by schedule", ""]
        lines += table1(group, dataset, paper_header, rows, waiting[key]) + [""]
        lines += ["### Anytime performance: epochs to the default schedule's result", ""] + anytime(group, rows)
        lines.append("")
        curves, average_curves = {}, {}
        swa_lines, swa_levels = swa_table(beside[key], settings["epochs"])
        if skip_ensembles and swa_lines:  # no snapshots read: SWA's own schedule alone, beside the SWA paper's
            lines += ["### Beside Table 2: SWA's own schedule", "", *AVERAGES_HEADER, *swa_lines]
            lines += [*swa_paper_row(dataset, rows.column), "", SWA_PROTOCOL, ""]
        if not skip_ensembles:
            test = ensembles.SnapshotOutputs(data_dir, pick_device(device))  # this group's test set
            try:
                grid_words = (("MODEL", "model"), ("DATASET", "dataset"), ("RECIPE", "recipe"), ("EPOCHS", "epochs"))
                grid_settings = "".join(f"{word}={settings[key]} " for word, key in grid_words)
                grid_settings = grid_settings.replace(f"EPOCHS={PAPER_EPOCHS} ", "") + "SCALED=1 " * rows.scaled
                table, curves = table2(group, dataset, test, paper_header, rows, grid_settings)
                average_table, average_curves = averages_table(group, dataset, test, rows, swa_lines)
            except UserError as error:  # most often: no data set here
                raise UserError(
                    f"{error}\nOnly Table 2 and the weight averages (the snapshots) need the data set: pass the "
                    "--data-dir the runs used, or --skip-ensembles to leave them out."
                ) from None
            lines += ["### Table 2: snapshot ensembles (the last M cycle-end snapshots of each run)", ""] + table + [""]
            heading = "### Beside Table 2: one network or M, from the same snapshots (single, ensemble, SWA, EMA)"
            lines += [heading, ""] + average_table + [""]
        title = group_title(settings, varying)
        for path in figures(group, curves, out, name, dataset, model, rows, title, average_curves, swa_levels):
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

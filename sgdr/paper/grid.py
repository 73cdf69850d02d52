"""The paper's grid, planned once: its settings (what grid.sh reads from the environment), the schedule words
of SCHEDULES, the train.py command and folder of every run, and the plan file that remembers them.

A word is ``default`` (the multistep schedule), ``T_0:T_mult`` (warm restarts) or ``swa`` (SWA's own schedule at
1.5x the grid's budget, ``swa_schedule``); ``@LR`` after either of the first two trains it with another initial
rate; after ``T_0:T_mult``, ``/wW /sS /dD /kK`` add a warmup of W epochs from rate S, a cycle decay D and a limit
of K cycles, each at most once, in any order. Values are read as train.py's flags
read them, and a word is the run it names: options at their defaults are dropped and numbers written one way
(``10:2/d0.50/w0`` is ``10:2/d0.5``), so that one run has one folder, ``<grid>/seed<k>/<what the word adds>``.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any

from sgdr import storage
from sgdr.cli import UserError
from sgdr.data import cifar
from sgdr.paper.tables import (
    PAPER_EPOCHS,
    SWA_PAPER_BUDGET,
    SWA_PAPER_LR,
    SWA_PAPER_RATE,
    SWA_PAPER_START,
    scaled_epochs,
    scaled_shape,
)
from sgdr.paper.tables import TABLE2_SCHEDULE as TABLE2_RATE_AND_SHAPE
from sgdr.run import layout, settings
from sgdr.training.recipes import LR, RECIPES
from sgdr.training.schedules import MILESTONES, OPTION_DEFAULTS

PLAN = "grid.txt"  # in a grid's folder: its train.py commands, one a line, as grid.sh --print gives them
SEED_FOLDER = "seed{}"  # in a grid's folder: each seed's runs
GRID_NAME = "{dataset}-{model}-{recipe}"  # a grid's folder in GRID_DIR
# The grid's settings (grid.sh's environment) and their defaults: the paper's grid, its Table 1 (the default
# schedule with eta_0 = 0.1 too: the baseline of its claim of fewer epochs), 5 seeds (its medians are of 5
# runs), with the SGDR authors' recipe and network.
DEFAULTS = {
    "MODEL": RECIPES["paper"].model,
    "DATASET": "cifar10",
    "RECIPE": "paper",
    "EPOCHS": str(PAPER_EPOCHS),
    "GRID_DIR": "outputs/grid",
    "SEEDS": "1 2 3 4 5",
    "SCHEDULES": "default default@0.1 50:1 100:1 200:1 1:2 10:2",
    "TABLE2_SEEDS": "",
    "COMPARE": "",
    "SWA": "",
    "SCALED": "",
    "PYTHON": "python",
}
# The schedule of the paper's snapshot ensembles (Table 2), trained for TABLE2_SEEDS too.
TABLE2_SCHEDULE = "{}:{}".format(*TABLE2_RATE_AND_SHAPE[1])
COMPARE_WARMUP = 5  # COMPARE=1: one cosine after a warmup of this many epochs, and SGDR with cycle decay 0.5
# The word of the SWA paper's schedule (tables.SWA_PAPER_*): trained at 1.5x EPOCHS, its start scaled as every
# epoch count of the paper's (tables.scaled_epochs).
SWA_WORD = "swa"
# In the plan of a grid planned with SCALED=1 (a comment: train.py commands are the other lines); report.py
# reads it to show each run as the paper's schedule it was scaled from.
SCALED_MARK = "# scaled:"
# The options of a word, by letter, in the one order of its flags, its folder and its text.
OPTIONS = {"w": "warmup_epochs", "s": "warmup_start_lr", "d": "cycle_decay", "k": "cycle_limit"}
WORD = re.compile(r"(?P<shape>default|\d+:\d+)(?:@(?P<lr>[^/@]*))?(?P<options>(?:/[^/]*)*)")
WORD_HELP = (
    "is neither default nor T_0:T_mult (e.g. 10:2), with @LR for another initial lr (default@0.1) and, after "
    "T_0:T_mult, /wW /sS /dD /kK, each at most once (10:2/w5/d0.5), nor swa (SWA's own schedule, alone)."
)


class GridError(UserError):
    """A grid setting or flag that cannot make a grid: exit status 2, as for a flag train.py refuses."""

    exit_status = 2


def number_text(value: float | int) -> str:
    """A number as a word and a folder write it: the shortest decimal, no exponent, no trailing zeros."""
    return format(Decimal(repr(value)).normalize(), "f")


@dataclass(frozen=True)
class Schedule:
    """A word of SCHEDULES, read: the schedule's kind and T_0, T_mult, its initial rate if not the default,
    and the shaping options set away from their defaults, in OPTIONS' order."""

    warm_restart: bool
    t_zero: int = 0
    t_mult: int = 0
    lr: float | None = None
    options: tuple[tuple[str, Any], ...] = ()
    milestones: tuple[int, ...] | None = None  # the default's, scaled (SCALED=1); None: train.py's
    swa: tuple[int, int] | None = None  # SWA's schedule: (its epochs, the epoch averaging starts at)

    @property
    def word(self) -> str:
        """The word in its one spelling."""
        if self.swa is not None:
            return SWA_WORD
        text = f"{self.t_zero}:{self.t_mult}" if self.warm_restart else "default"
        text += f"@{number_text(self.lr)}" if self.lr is not None else ""
        return text + "".join(f"/{letter}{number_text(value)}" for letter, value in self._lettered())

    @property
    def tag(self) -> str:
        """The folder its runs get inside a seed's ("" for T_0:T_mult or default alone): ``lr0.1_w5_d0.5``."""
        if self.swa is not None:
            return ""  # its run folder is its own (runs/swa), beside the others'
        parts = [f"lr{number_text(self.lr)}"] if self.lr is not None else []
        return "_".join(parts + [f"{letter}{number_text(value)}" for letter, value in self._lettered()])

    @property
    def flags(self) -> list[str]:
        """train.py's flags for it."""
        if self.swa is not None:
            epochs, start = self.swa
            return [
                "-e",
                str(epochs),
                "--lr",
                number_text(self.lr),
                "--swa-start",
                str(start),
                "--swa-lr",
                str(SWA_PAPER_RATE),
            ]
        words = ["--lr", number_text(self.lr)] if self.lr is not None else []
        if self.warm_restart:
            words += ["--warm-restart", "-t0", str(self.t_zero), "-tm", str(self.t_mult)]
        if self.milestones is not None:
            words += ["--milestones", *map(str, self.milestones)]
        for name, value in self.options:
            words += ["--" + name.replace("_", "-"), number_text(value)]
        return words

    def _lettered(self) -> list[tuple[str, Any]]:
        letters = {name: letter for letter, name in OPTIONS.items()}
        return [(letters[name], value) for name, value in self.options]


def read_word(word: str, baseline: Mapping[str, Any] | None = None, budget: int = PAPER_EPOCHS) -> Schedule:
    """The schedule a SCHEDULES word names; a GridError saying what is wrong with it. ``baseline``: the rate and
    shaping options every run of the grid has without the word (its flags, else train.py's defaults): a value
    the word gives that is already the baseline's is no part of the schedule (one run, one folder). ``budget``:
    the grid's epochs, which SWA's schedule is 1.5x of (``swa_schedule``)."""
    baseline = baseline if baseline is not None else {"lr": LR, **OPTION_DEFAULTS}
    if word == SWA_WORD:
        return swa_schedule(budget)
    match = WORD.fullmatch(word)
    if match is None or (match["lr"] is not None and not match["lr"]):
        raise GridError(f"SCHEDULES: {word} {WORD_HELP}")
    flags = {action.dest: action for action in settings.build_parser()._actions}

    def value(name: str, text: str) -> Any:
        # Unsigned numbers as train.py reads them (0.05, .05, 5e-2); no signs or words (nan, inf).
        if not re.fullmatch(r"(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", text):
            raise GridError(f"SCHEDULES: {word} {WORD_HELP}")
        try:
            return flags[name].type(text)
        except argparse.ArgumentTypeError as error:
            raise GridError(f"SCHEDULES: {word}: argument {'/'.join(flags[name].option_strings)}: {error}") from None

    warm = match["shape"] != "default"
    t_zero, t_mult = (value(n, t) for n, t in zip(("t_zero", "t_mult"), match["shape"].split(":"))) if warm else (0, 0)
    lr = value("lr", match["lr"]) if match["lr"] is not None else None
    given: dict[str, Any] = {}
    for option in filter(None, match["options"].split("/")):
        name = OPTIONS.get(option[0])
        if not warm or name is None or name in given:  # shaping is for warm restarts, each option once
            raise GridError(f"SCHEDULES: {word} {WORD_HELP}")
        given[name] = value(name, option[1:])
    set_ = [name for name in OPTIONS.values() if name in given and given[name] != baseline[name]]
    options = tuple((name, given[name]) for name in set_)
    return Schedule(warm, t_zero, t_mult, None if lr == baseline["lr"] else lr, options)


def swa_schedule(budget: int) -> Schedule:
    """The SWA paper's schedule for a grid of ``budget`` epochs: 1.5x as many (rounded half up), averaging from its
    epoch 161 of 200 scaled to the budget, lr 0.1 then 0.05: at 200, -e 300 --swa-start 161, as the paper."""
    return Schedule(False, lr=SWA_PAPER_LR, swa=(swa_epochs(budget), scaled_epochs(SWA_PAPER_START, budget)))


def swa_epochs(budget: int) -> int:
    """The epochs of SWA's schedule beside runs of ``budget`` epochs: 1.5x as many, rounded half up."""
    return math.floor(SWA_PAPER_BUDGET * budget + Fraction(1, 2))


def scaled(schedule: Schedule, epochs: int) -> Schedule:
    """``schedule`` with its epochs (T_0, the default's milestones, a warmup) scaled from the paper's 200 to
    ``epochs`` (tables.scaled_epochs: rounded half up, at least 1); SWA's is scaled already (``swa_schedule``)."""
    if schedule.swa is not None:
        return schedule
    options = tuple(
        (name, scaled_epochs(value, epochs) if name == "warmup_epochs" and value else value)
        for name, value in schedule.options
    )
    # The rule the report reads the runs back by (tables.scaled_shape): T_0 scaled, or the default's milestones.
    shape = scaled_shape((schedule.t_zero, schedule.t_mult) if schedule.warm_restart else None, epochs)
    if schedule.warm_restart:
        return Schedule(True, shape[0], shape[1], schedule.lr, options)
    return Schedule(False, lr=schedule.lr, options=options, milestones=shape[1])


def scaled_words(words: Sequence[str], schedules: Sequence[Schedule], epochs: int) -> list[Schedule]:
    """The schedules of ``words`` scaled to ``epochs``; a GridError where two of them become one run, or the
    default's steps fall on one epoch, naming the fewest epochs (up to 200) at which they stay apart."""

    def problem(budget: int) -> str:
        seen: dict[Schedule, str] = {}
        for word, schedule in zip(words, schedules):
            now = scaled(schedule, budget)
            if now.milestones is not None and len(set(now.milestones)) < len(now.milestones):
                steps = ", ".join(map(str, MILESTONES))
                return f"{word}'s steps after epochs {steps} fall on epochs {', '.join(map(str, now.milestones))}"
            if now in seen and seen[now] != word:
                return f"{seen[now]} and {word} both become {now.word}"
            seen[now] = word
        return ""

    if wrong := problem(epochs):
        fewest = next((e for e in range(epochs + 1, PAPER_EPOCHS + 1) if not problem(e)), None)
        hint = f"EPOCHS={fewest} or more" if fewest else "fewer SCHEDULES"
        raise GridError(f"SCALED=1 at {epochs} epochs: {wrong}, so the try-out cannot tell them apart: {hint}.")
    return [scaled(schedule, epochs) for schedule in schedules]


@dataclass(frozen=True)
class PlannedRun:
    """One train.py command of a grid, and the files it writes."""

    command: list[str]  # the whole command line, interpreter first
    args: argparse.Namespace  # as train.py parses it
    files: layout.RunFiles

    @property
    def epochs(self) -> int:
        return self.args.epochs

    @property
    def same_run(self) -> str:
        """What this run shares with its copies (``settings.same_run`` of a run not trained yet), from its flags."""
        return settings.same_run(settings.config_of(self.args, self.args.seed, 1), planned=True)


@dataclass
class Grid:
    """The settings of a grid (grid.sh's environment variables, then the train.py flags given to it) and its runs."""

    flags: list[str]  # train.py flags for every run
    model: str
    dataset: str
    recipe: str
    epochs: int
    folder: str  # GRID_DIR: the grid's folder is <folder>/<dataset>-<model>-<recipe>
    python: list[str]  # the interpreter's words
    script: str  # the train.py the commands run
    baseline: dict[str, Any]  # the rate and shaping options of every run, but for what its word says
    schedules: list[Schedule] = field(default_factory=list)
    seeds: list[int] = field(default_factory=list)
    table2_seeds: list[int] = field(default_factory=list)
    scaled: bool = False  # SCALED=1: every schedule's epochs x epochs / 200

    @property
    def root(self) -> Path:
        """The grid's folder, where its seeds' folders, its plan and its SLURM output go."""
        return Path(self.folder) / GRID_NAME.format(dataset=self.dataset, model=self.model, recipe=self.recipe)

    def runs(self) -> list[PlannedRun]:
        """Every run, seed by seed (SEEDS, then the other TABLE2_SEEDS), schedule by schedule, each run once."""
        table2 = self.table2_schedule
        seeds = self.seeds + [s for s in self.table2_seeds if s not in self.seeds]
        planned: dict[str, PlannedRun] = {}
        for seed in seeds:
            schedules = list(self.schedules) if seed in self.seeds else []
            schedules += [table2] if seed in self.table2_seeds else []
            for schedule in schedules:
                run = self.run(schedule, seed)
                planned.setdefault(run.same_run, run)
        return list(planned.values())

    @property
    def table2_schedule(self) -> Schedule:
        """The schedule of Table 2's runs (T_0 = 10, T_mult = 2, scaled with the rest under SCALED=1)."""
        table2 = read_word(TABLE2_SCHEDULE, self.baseline)
        return scaled(table2, self.epochs) if self.scaled else table2

    @property
    def plan_notes(self) -> list[str]:
        """The comment lines of its plan: how a scaled try-out was scaled (report.py reads it)."""
        if not self.scaled:
            return []
        return [f"{SCALED_MARK} every schedule's epochs x {self.epochs}/{PAPER_EPOCHS} (grid.sh SCALED=1)"]

    def run(self, schedule: Schedule, seed: int) -> PlannedRun:
        output = self.root / SEED_FOLDER.format(seed)
        output = output / schedule.tag if schedule.tag else output
        words = [
            *self.python,
            self.script,
            *(() if schedule.swa else ("-e", str(self.epochs))),  # SWA's schedule gives its own
            *("--model", self.model, "--dataset", self.dataset, "--recipe", self.recipe),
            *("--seed", str(seed), "--output-dir", str(output), "--resume", *self.flags, *schedule.flags),
        ]
        return planned_run(words, "the grid")


def read_grid(environ: Mapping[str, str], flags: Sequence[str], script: str) -> Grid:
    """The grid that grid.sh's environment (MODEL, DATASET, RECIPE, EPOCHS, GRID_DIR, SEEDS, SCHEDULES, COMPARE,
    TABLE2_SEEDS, PYTHON) and the train.py ``flags`` given to it describe; a GridError for a setting or flag
    that cannot make one. The flags that name a run's folder (--model, --dataset, --recipe, -e) are read as
    train.py reads them; --seed, --output-dir, the schedule's flags and --overwrite are the grid's own."""
    given = _given(flags)
    schedule_flags = ("warm_restart", "t_zero", "t_mult", "milestones", *OPTION_DEFAULTS, "swa_start", "swa_lr")
    for own in ("seed", "output_dir", *schedule_flags, "overwrite"):
        if own in given:
            flag = "-wr (--warm-restart)" if own == "warm_restart" else f"--{own.replace('_', '-')}"
            instead = {
                "seed": 'set SEEDS="..." instead',
                "output_dir": "set GRID_DIR=... instead",
                "overwrite": "every run resumes (a requeued task would start its run over); remove the run's "
                "folder to start it over",
            }.get(own, 'set SCHEDULES="..." instead (a word a schedule, e.g. 10:2/w5, or swa)')
            raise GridError(f"{flag} is the grid's own: {instead}.")
    setting = {**DEFAULTS, **{key: value for key, value in environ.items() if key in DEFAULTS}}
    parser = settings.build_parser()
    epochs_flag = next(action for action in parser._actions if action.dest == "epochs")
    try:  # read as -e reads it
        epochs = given["epochs"] if "epochs" in given else epochs_flag.type(setting["EPOCHS"])
    except argparse.ArgumentTypeError as error:
        said = f"EPOCHS is {setting['EPOCHS']}, not a whole number of epochs ({error}; e.g. EPOCHS=200)."
        raise GridError(said) from None
    defaults = parser.parse_args([])
    grid = Grid(
        list(flags),
        model=given.get("model") or _model(setting["MODEL"]),
        dataset=given.get("dataset", setting["DATASET"]),
        recipe=given.get("recipe", setting["RECIPE"]),
        epochs=epochs,
        folder=setting["GRID_DIR"],
        python=setting["PYTHON"].split() or ["python"],
        script=script,
        baseline={name: given.get(name, getattr(defaults, name)) for name in ("lr", *OPTION_DEFAULTS)},
    )
    grid.seeds = _seeds(setting["SEEDS"])
    grid.table2_seeds = _seeds(setting["TABLE2_SEEDS"])
    words = setting["SCHEDULES"].split()
    if not grid.seeds or not words:
        raise GridError('SEEDS and SCHEDULES must each name at least one (e.g. SEEDS="1 2 3").')
    compare, scale, swa = setting["COMPARE"], setting["SCALED"], setting["SWA"]
    if compare not in ("", "1"):
        raise GridError(f"COMPARE is {compare}; COMPARE=1 adds the comparison schedules, unset it for none.")
    if swa not in ("", "1"):
        raise GridError(f"SWA is {swa}; SWA=1 adds SWA's own schedule (the word swa), unset it for none.")
    if scale not in ("", "1"):
        raise GridError(f"SCALED is {scale}; SCALED=1 scales every schedule to EPOCHS, unset it for none.")
    grid.scaled = scale == "1" and grid.epochs != PAPER_EPOCHS
    if compare == "1":
        words.append(f"{TABLE2_SCHEDULE}/d0.5")
    if swa == "1":
        words.append(SWA_WORD)
    schedules = [read_word(word, grid.baseline, grid.epochs) for word in words]
    if "lr" in given and any(s.swa is not None for s in schedules):
        raise GridError(
            "--lr goes to every run, and the word swa trains SWA's own rates (--lr 0.1, then --swa-lr 0.05), which "
            "would override it: leave --lr out (default@LR or T_0:T_mult@LR gives a schedule its rate), or leave "
            "swa out of SCHEDULES and SWA=1 unset."
        )
    if grid.scaled:
        schedules = scaled_words(words, schedules, grid.epochs)
    if compare == "1":  # one cycle after a warmup, to the end: built at the grid's length, scaled or not
        warmup = scaled_epochs(COMPARE_WARMUP, grid.epochs) if grid.scaled else COMPARE_WARMUP
        if grid.epochs <= warmup:
            raise GridError(
                f"COMPARE=1 adds a {warmup}-epoch warmup before one cycle, which needs more than {warmup} epochs "
                "(SCALED=1 scales the warmup with the rest)."
            )
        schedules.insert(-1, read_word(f"{grid.epochs - warmup}:1/w{warmup}", grid.baseline))
    for schedule in schedules:
        if schedule not in grid.schedules:  # one spelling of one run: 10:2/d0.5/w5 is 10:2/w5/d0.5
            grid.schedules.append(schedule)
    table2 = grid.table2_schedule
    if grid.table2_seeds and table2.t_zero > grid.epochs:  # its runs would end no cycle: no snapshot, no ensemble
        raise GridError(
            f"TABLE2_SEEDS trains T_0 = {table2.t_zero}, T_mult = {table2.t_mult} for Table 2's ensembles, whose first "
            f"cycle ends after epoch {table2.t_zero}, beyond EPOCHS={grid.epochs}: those runs would leave no "
            "snapshots. Train more epochs, or SCALED=1 to scale the schedules to these."
        )
    return grid


def _given(flags: Sequence[str]) -> dict[str, Any]:
    """The train.py flags among ``flags`` and their values, as train.py reads them (the last of a flag wins);
    a GridError, with train.py's message, for flags it refuses."""
    parser = settings.build_parser()
    for action in parser._actions:
        action.default = argparse.SUPPRESS
    try:
        return vars(parser.parse_args(list(flags)))
    except SystemExit:  # argparse said why on stderr
        raise GridError("train.py refuses these flags (above); they go to every run of the grid.") from None


def _model(name: str) -> str:
    try:
        return settings.model_name(name)
    except argparse.ArgumentTypeError as error:
        raise GridError(f"MODEL is {name}: {error}.") from None


def _seeds(text: str) -> list[int]:
    """The seeds of SEEDS or TABLE2_SEEDS, each once, in order."""
    seeds: list[int] = []
    for word in text.split():
        if not re.fullmatch(r"0|[1-9]\d*", word):
            raise GridError(
                f'SEEDS or TABLE2_SEEDS: {word} is not a whole number without leading zeros (e.g. SEEDS="1 2 3").'
            )
        if int(word) not in seeds:
            seeds.append(int(word))
    return seeds


def planned_run(words: list[str], source: str, output_dir: Path | None = None) -> PlannedRun:
    """The run of a train.py command line (interpreter and script first); a UserError naming ``source`` when
    train.py refuses it. ``output_dir``: where its files are, if not where the command says."""
    script = next((i for i, word in enumerate(words) if word.endswith("train.py")), None)
    if script is None:
        raise UserError(f"{source} is not a train.py command: {shlex.join(words)}")
    try:
        args = settings.parse_args(words[script + 1 :])
    except SystemExit:  # argparse said why on stderr
        raise GridError(f"{source}: train.py refuses these flags: {shlex.join(words)}") from None
    return PlannedRun(words, args, layout.files_of(args, output_dir))


def read_plan(lines: Iterable[str], source: str = "the commands") -> list[PlannedRun]:
    """The runs of ``lines`` of train.py commands (blank lines and ``#`` comments skipped); a UserError naming
    a line that is not a train.py command train.py accepts."""
    runs = []
    for number, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            words = shlex.split(line)
        except ValueError as error:
            raise UserError(f"{source}, line {number}: {error}: {line.strip()}") from None
        runs.append(planned_run(words, f"{source}, line {number}"))
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
    seeds = [k for k, part in enumerate(parts) if re.fullmatch(SEED_FOLDER.format(r"\d+"), part)]
    if not seeds or len(parts) - seeds[-1] > 2:
        return None
    return Path(*parts[: seeds[-1]]), Path(*parts[seeds[-1] :])


def grid_folder(runs: Sequence[PlannedRun]) -> Path:
    """The folder of a list of runs that grid.sh did not plan here (``--commands``): the grid's, where their
    output folders are grid.sh's ``<grid>/seed<N>...``, else the folder that holds them all."""
    places = {_in_grid(run.files.run_dir.parent.parent) for run in runs}  # where they are, if the plan moved
    if None not in places and len({root for root, _ in places}) == 1:
        return places.pop()[0]
    outputs = {str(run.files.run_dir.parent.parent) for run in runs}
    return Path(os.path.commonpath(outputs)) if len(outputs) > 1 else Path(outputs.pop()).parent


def short_name(run: PlannedRun, folder: Path) -> str:
    """``seed1/wr_s10_m2``: the run's output folder under ``folder``, then its schedule."""
    output = run.files.run_dir.parent.parent
    return os.path.join(os.path.relpath(output, folder), run.files.run_dir.name)


def record_plan(runs: Sequence[PlannedRun], folder: Path, notes: Sequence[str] = ()) -> None:
    """Add the runs' commands to ``folder``'s grid.txt, each line once (by its words, however it is quoted),
    and the comment lines ``notes`` (Grid.plan_notes); report.py reads it to name the planned runs that did not
    finish, and to know a scaled try-out."""
    plan = folder / PLAN
    before = plan.read_text().splitlines() if plan.is_file() else []
    lines: dict[tuple[str, ...], str] = {}
    for line in [*before, *notes, *(shlex.join(run.command) for run in runs)]:
        try:
            lines.setdefault(tuple(shlex.split(line)), line)
        except ValueError:  # a line the report will name as unreadable: kept as it is
            lines.setdefault((line,), line)
    with storage.atomic_write(plan) as f:
        f.write(("\n".join(lines.values()) + "\n").encode())


def plan_is_scaled(plan: Path) -> bool:
    """Whether the grid whose plan (grid.txt) is ``plan`` was planned as a scaled try-out (SCALED=1)."""
    try:
        return any(line.startswith(SCALED_MARK) for line in plan.read_text(errors="replace").splitlines())
    except OSError:
        return False


def part_of_grid(folder: Path) -> bool:
    """Whether ``folder`` holds a grid or is part of one, by the names grid.sh gives (``<GRID_DIR>/<dataset>-
    <model>-<recipe>/seed<k>/[<options>/]``) or the plan it writes: GRID_DIR, a grid, a seed's folder, a folder
    of a schedule's options in one. (plot.py, which draws the reference runs, tells a grid from them.)"""
    seed = re.compile(SEED_FOLDER.format(r"\d+"))
    names = GRID_NAME.format(
        dataset="(" + "|".join(cifar.DATASETS) + ")", model=".+", recipe="(" + "|".join(RECIPES) + ")"
    )

    def a_grid(place: Path) -> bool:
        if (place / PLAN).is_file():
            return True
        return bool(re.fullmatch(names, place.name)) and any(seed.fullmatch(p.name) for p in place.glob("seed*"))

    return (
        a_grid(folder)  # a grid
        or any(a_grid(inside) for inside in folder.glob("*") if inside.is_dir())  # GRID_DIR
        or any(a_grid(above) for above in (folder.parent, folder.parent.parent))  # a seed's folder, its options'
    )

"""The settings of a run: train.py's flags and their checks (also against the processes that share the run),
and which of them a resumed run must match."""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from sgdr.cli import Parser, UserError, int_at_least, number_in
from sgdr.data import cifar, loaders
from sgdr.parallel import devices
from sgdr.run import layout
from sgdr.training.networks import check_model_name, trains_on_single_images
from sgdr.training.recipes import LR, RECIPES
from sgdr.training.schedules import GAMMA, MILESTONES, OPTION_DEFAULTS

DESCRIPTION = (
    "Train a network on CIFAR with the multistep schedule or SGDR's cosine annealing with warm restarts: by "
    "default the tutorial's ResNet34 on CIFAR-10 (--model, --dataset and --recipe for the paper's)."
)
# The optimiser computes in float32: a larger rate cannot even be represented (every step would fail).
RATE_MAX = float(torch.finfo(torch.float32).max)
# torch's generators take seeds of 64 bits.
SEED_MAX = 2**64 - 1
# Worker processes of the torchvision loader: each holds a copy of the data set, so thousands exhaust any
# machine's memory before they help; a DataLoader gains nothing past the cores that feed it.
WORKERS_MAX = 64


def subset_of(total: int, what: str):
    parse_positive = int_at_least(1)

    def parse(text: str) -> int:
        value = parse_positive(text)
        if value > total:
            raise argparse.ArgumentTypeError(f"CIFAR has {total:,} {what} images, got {value:,}")
        return value

    return parse


def model_name(text: str) -> str:
    try:
        return check_model_name(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    """The reference flags (-wr, -t0, -tm, -e) with their defaults, and options added beside them."""
    parser = Parser(prog="train.py", description=DESCRIPTION)
    positive = int_at_least(1)
    ref = parser.add_argument_group("reference flags")
    ref.add_argument(
        "-wr",
        "--warm-restart",
        action="store_true",
        help="cosine annealing with warm restarts, stepped every batch (default: multistep)",
    )
    ref.add_argument(
        "-t0", "--t-zero", type=positive, default=50, help="T_0: epochs until the first restart (default: 50)"
    )
    ref.add_argument(
        "-tm", "--t-mult", type=positive, default=1, help="T_mult: factor by which each cycle grows (default: 1)"
    )
    ref.add_argument("-e", "--epochs", type=positive, default=100, help="epochs to train (default: 100)")
    shape = parser.add_argument_group("shaping warm restarts (with -wr only; see docs/experiment.md)")
    shape.add_argument(
        "--warmup-epochs",
        type=int_at_least(0),
        default=OPTION_DEFAULTS["warmup_epochs"],
        metavar="W",
        help="a linear warmup of W epochs before the first cycle, stepped every batch; T_0 counts from its end "
        "(default: 0, none)",
    )
    shape.add_argument(
        "--warmup-start-lr",
        type=number_in(0.0, RATE_MAX),
        default=OPTION_DEFAULTS["warmup_start_lr"],
        metavar="LR",
        help="the rate the warmup starts from; it ends at the optimiser's initial rate (default: 0)",
    )
    shape.add_argument(
        "--cycle-decay",
        type=number_in(0.0, 1.0, low_included=False),
        default=OPTION_DEFAULTS["cycle_decay"],
        metavar="D",
        help="cycle k (from 0) peaks at the initial rate x D**k (default: 1, every cycle the same)",
    )
    shape.add_argument(
        "--cycle-limit",
        type=int_at_least(1),
        default=OPTION_DEFAULTS["cycle_limit"],
        metavar="K",
        help="after K cycles the rate stays at 0, with no more restarts (default: none, restarts to the end)",
    )
    extra = parser.add_argument_group("added options")
    extra.add_argument(
        "--recipe",
        choices=sorted(RECIPES),
        default="tutorial",
        help="tutorial: the tutorial's training (the reference); paper: the SGDR authors' own script's "
        "(epochs of every image plain and mirrored, zero-padded crops, mean-image inputs, eq. (3)-(4) "
        "momentum, its L2 penalty and per-sample SGDR stepping; network wrn-28-10 unless --model) "
        "(default: tutorial)",
    )
    extra.add_argument(
        "--milestones",
        type=positive,
        nargs="+",
        default=list(MILESTONES),
        metavar="EPOCH",
        help=f"epochs at which the multistep schedule multiplies the lr by {GAMMA:g} "
        f"(default: {' '.join(map(str, MILESTONES))})",
    )
    extra.add_argument(
        "--lr",
        type=number_in(0.0, RATE_MAX, low_included=False),
        default=LR,
        help="the initial learning rate: the multistep schedule's eta_0, SGDR's eta_max (the paper's Table 1 "
        f"also reports the default schedule with 0.1) (default: {LR:g})",
    )
    extra.add_argument(
        "--dataset",
        choices=sorted(cifar.DATASETS),
        default="cifar10",
        help="cifar10 or cifar100 (its own normalisation, a 100-way head) (default: cifar10)",
    )
    extra.add_argument(
        "--model",
        type=model_name,
        help="resnet34 (the reference) or wrn-D-K, a Wide ResNet of depth D and widen factor K "
        "(the paper's: wrn-28-10) (default: resnet34; wrn-28-10 with --recipe paper)",
    )
    extra.add_argument("-b", "--batch-size", type=positive, default=128, help="images per batch (default: 128)")
    extra.add_argument("--data-dir", default=cifar.DATA_DIR, help="folder holding cifar-10-batches-py")
    extra.add_argument("--output-dir", default=layout.OUTPUT_DIR, help="folder for figures and pickles")
    extra.add_argument(
        "--train-subset",
        type=subset_of(cifar.TRAIN_IMAGES, "training"),
        metavar="N",
        help="train on the first N training images only (default: all 50,000)",
    )
    extra.add_argument(
        "--test-subset",
        "--val-subset",
        type=subset_of(cifar.TEST_IMAGES, "test"),
        metavar="N",
        help="validate on the first N test images only (--val-subset: its older name) (default: all 10,000)",
    )
    fast = parser.add_argument_group("speed (see docs/performance.md)")
    fast.add_argument(
        "--loader",
        choices=loaders.LOADERS,
        default="device",
        help="device: the data set held on the training device, augmented there in batches; "
        "torchvision: the reference DataLoader with PIL transforms (default: device)",
    )
    fast.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        help="channels-last memory format for images and weights (default: on CUDA on; on the CPU off where it "
        "has AVX-512, on where it has not, the faster on the processors measured, see docs/performance.md; a "
        "resumed run keeps its checkpoint's)",
    )
    fast.add_argument(
        "--amp",
        choices=["off", "bf16"],
        default="off",
        help="bf16 autocast: faster on recent GPUs, changes the numerics; slow on most CPUs (default: off)",
    )
    fast.add_argument(
        "--tf32",
        choices=["off", "conv", "on"],
        default=None,
        help="TensorFloat-32 on Ampere and newer GPUs: off (true fp32), conv (cuDNN convolutions only, "
        "PyTorch's own default), on (convolutions and matrix products); no effect on the CPU "
        "(default: conv for a new run; a resumed run keeps its checkpoint's)",
    )
    fast.add_argument(
        "--deterministic",
        action="store_true",
        help="on CUDA, the same numbers every time, so that resume is bit-exact there too: no cuDNN "
        "autotuning, deterministic algorithms only (slower); the CPU is deterministic anyway (default: off)",
    )
    fast.add_argument("--compile", action="store_true", help="torch.compile the network (default: off)")
    fast.add_argument(
        "--sync-bn",
        action="store_true",
        help="under torchrun on CUDA: BatchNorm statistics over the whole batch, not each process's share",
    )
    extra.add_argument(
        "--recompute-bn",
        action="store_true",
        help="before each validation, recompute BatchNorm's running statistics from the training images (as "
        "validation reads images: in order, not augmented; an equal-weight average over the batches), so "
        "that validation reads the network as it is and not statistics that lag it; training is unchanged. "
        "The quick mode's, where 16 batches an epoch leave the statistics far behind, see docs/quick-mode.md "
        "(default: off, as the reference)",
    )
    extra.add_argument(
        "--ema",
        type=number_in(0, 1),
        default=None,
        metavar="DECAY",
        help="keep an exponential moving average of the weights and BatchNorm buffers, updated after every "
        "optimiser step (torch's AveragedModel with get_ema_multi_avg_fn(DECAY), use_buffers=True; e.g. 0.999), "
        "saved in the checkpoint and validated after every epoch: ema_test_loss and ema_test_error in "
        "metrics.jsonl, see docs/averaging.md. Training is unchanged (default: off)",
    )
    swa = parser.add_argument_group("SWA's own schedule (Izmailov et al. 2018; see docs/averaging.md)")
    swa.add_argument(
        "--swa-start",
        type=positive,
        metavar="EPOCH",
        help="train under SWA's schedule in place of the multistep one: the initial rate (--lr) for the first "
        "EPOCH/2 epochs, falling linearly to --swa-lr by 0.9 x EPOCH, then constant; from epoch EPOCH on, the "
        "weights after each epoch join an equal-weight average (torch's AveragedModel), whose BatchNorm "
        "statistics are recomputed (update_bn) and which is validated after the last epoch: swa_test_error in "
        "metrics.jsonl. The SWA paper's WRN-28-10: -e 300 --lr 0.1 --swa-start 161 --swa-lr 0.05, 1.5x its "
        "200-epoch budget (default: off)",
    )
    swa.add_argument(
        "--swa-lr",
        type=number_in(0.0, RATE_MAX, low_included=False),
        metavar="LR",
        help="the constant rate while the weights are averaged (default: half of --lr, the SWA paper's 0.05 of 0.1)",
    )
    extra.add_argument(
        "--seed",
        type=int_at_least(0, SEED_MAX),
        help="seed for a reproducible run, 0 to 2**64 - 1 (default: a fresh one, printed)",
    )
    extra.add_argument(
        "--workers",
        type=int_at_least(0, WORKERS_MAX),
        help=f"worker processes of --loader torchvision, 0 to {WORKERS_MAX} (each holds a copy of the data set; "
        "default: min(4, CPUs) for a new run; a resumed run keeps its checkpoint's)",
    )
    extra.add_argument(
        "--device",
        type=devices.device_name,
        default=devices.AUTO,
        help="auto (CUDA when available), cpu, cuda or cuda:N",
    )
    again = extra.add_mutually_exclusive_group()
    again.add_argument(
        "--resume",
        action="store_true",
        help="continue this run from its checkpoint (start it if it has none; nothing to do if it finished)",
    )
    again.add_argument("--overwrite", action="store_true", help="start this run over, replacing its existing files")
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.model = args.model or RECIPES[args.recipe].model
    if args.recipe == "paper" and args.loader != "device":
        parser.error(
            "argument --loader: --recipe paper runs on the default --loader device "
            "(its mirrored epochs and zero padding are not in the torchvision pipeline)"
        )
    if any(b <= a for a, b in zip(args.milestones, args.milestones[1:])):
        parser.error(f"argument --milestones: must increase strictly, got {' '.join(map(str, args.milestones))}")
    for key, default in OPTION_DEFAULTS.items():
        flag = "--" + key.replace("_", "-")
        if not args.warm_restart and getattr(args, key) != default:
            if args.swa_start is not None:
                parser.error(
                    f"argument {flag}: shapes warm restarts only, and this run uses SWA's schedule: leave it out"
                )
            parser.error(
                f"argument {flag}: shapes warm restarts only, and this run uses the multistep schedule: "
                "add -wr (--warm-restart), or leave it out"
            )
    if args.swa_start is None and args.swa_lr is not None:
        fix = "leave it out (warm restarts have no SWA phase)" if args.warm_restart else "add --swa-start"
        parser.error(f"argument --swa-lr: is the rate of SWA's schedule, which this run does not use: {fix}")
    if args.swa_start is not None:
        if args.warm_restart:
            parser.error(
                "argument --swa-start: SWA's schedule replaces the multistep one, and -wr asks for warm restarts: "
                "leave one out (ensemble.py averages a warm-restart run's snapshots without training again)"
            )
        if args.milestones != list(MILESTONES):
            parser.error(
                "argument --milestones: are the multistep schedule's, and --swa-start asks for SWA's: leave "
                "--milestones out"
            )
        if args.swa_start > args.epochs:
            parser.error(
                f"argument --swa-start: epoch {args.swa_start} is after the run's last ({args.epochs}), so no "
                f"weights would be averaged: give -e {args.swa_start} or more, or an earlier --swa-start"
            )
        args.swa_lr = args.lr / 2 if args.swa_lr is None else args.swa_lr
    if args.warmup_start_lr != OPTION_DEFAULTS["warmup_start_lr"] and not args.warmup_epochs:
        parser.error(
            "argument --warmup-start-lr: is where a warmup starts, and this run has none: "
            "add --warmup-epochs W (W >= 1), or leave it out"
        )
    return args


# The settings that may change between a run and its resumption: where it runs, where its files
# go, and for how long (a finished run can be extended).
MAY_CHANGE_ON_RESUME = frozenset({"epochs", "data_dir", "output_dir", "device", "resume", "overwrite"})
FIRST = "in every record"  # a setting that runs have recorded since the first format of checkpoints


def _always(config: dict[str, Any]) -> bool:
    return True


def _warm(config: dict[str, Any]) -> bool:
    return bool(config["warm_restart"])


def _multistep(config: dict[str, Any]) -> bool:
    return not config["warm_restart"] and not trains_swa(config)


def trains_swa(config: dict[str, Any]) -> bool:
    """Whether the run of the settings ``config`` (a record's or a checkpoint's) trains under SWA's schedule
    (--swa-start), which keeps no snapshots and is read beside the other runs, not among them."""
    return config.get("swa_start") is not None


def _torchvision(config: dict[str, Any]) -> bool:
    return config["loader"] == "torchvision"  # its worker processes each draw their own augmentation stream


@dataclass(frozen=True)
class Decides:
    """A setting that decides a run's numbers: a resumed run must match its checkpoint on it.

    ``before``: the value of the runs recorded before the setting existed (``FIRST`` for those recorded
    since the first format), which a record without it is read as. ``acts``: whether it acts on a run
    of these settings; where it does not (the other schedule's settings), it is not recorded.
    ``only_when_set``: recorded only away from ``before``, so that records of runs that leave it alone
    stay as they were before it existed. ``new_run``: for a flag whose default is None, the value a new
    run takes; a resumed run takes its checkpoint's (a default that depends on the machine must not
    make a run refuse to resume on another machine).
    """

    before: Any = FIRST
    acts: Callable[[dict[str, Any]], bool] = _always
    only_when_set: bool = False
    new_run: Callable[[torch.device], Any] | None = None  # given the device the run trains on


# Every setting of a run but those that may change on resume, in the parser's order: a flag added to
# the parser must be declared here (tests/test_resume.py holds it, and ``config_of`` refuses to run
# without), with the value runs trained before it existed had.
DECIDES: dict[str, Decides] = {
    "warm_restart": Decides(),
    "t_zero": Decides(acts=_warm),
    "t_mult": Decides(acts=_warm),
    **{name: Decides(before=default, acts=_warm, only_when_set=True) for name, default in OPTION_DEFAULTS.items()},
    "recipe": Decides(before="tutorial"),
    "milestones": Decides(acts=_multistep),
    "lr": Decides(before=0.05),  # before --lr every run started at 0.05 (whatever LR may become)
    "dataset": Decides(),
    "model": Decides(),
    "batch_size": Decides(),
    "train_subset": Decides(),
    "test_subset": Decides(),
    "loader": Decides(),
    "channels_last": Decides(new_run=devices.channels_last_is_faster),
    "amp": Decides(),
    # Before --tf32, runs left PyTorch's default: on Ampere and newer GPUs TF32 convolutions, fp32
    # matrix products. "conv" is that; on the CPU all three choices compute the same fp32 numbers.
    "tf32": Decides(before="conv", new_run=lambda device: "conv"),
    "deterministic": Decides(before=False),
    "compile": Decides(),
    "sync_bn": Decides(),
    "recompute_bn": Decides(before=False),
    # Off (None) before --ema, and recorded only when on: the runs without it keep their records and checkpoints.
    "ema": Decides(before=None, only_when_set=True),
    # Off (None) before SWA's schedule, and recorded only when on, as --ema.
    "swa_start": Decides(before=None, acts=lambda config: not config["warm_restart"], only_when_set=True),
    "swa_lr": Decides(before=None, acts=trains_swa, only_when_set=True),
    "seed": Decides(),
    "workers": Decides(acts=_torchvision, new_run=lambda device: min(4, os.cpu_count() or 1)),
    "processes": Decides(),  # not a flag: how many processes share the run (each normalises its share of a batch)
}


def undeclared(names: Iterable[str]) -> list[str]:
    """The settings among ``names`` (a run's parsed flags) that are neither declared in DECIDES nor free to change."""
    return sorted(set(names) - DECIDES.keys() - MAY_CHANGE_ON_RESUME)


# Settings recorded under another name before: the test set's subset was val_subset until it took the name
# the metrics give the test set (test_loss, test_error).
RENAMED = {"val_subset": "test_subset"}


def upgrade(config: dict[str, Any]) -> dict[str, Any]:
    """A recorded run's settings, with those it predates at the values it was trained under, and older names
    read as today's."""
    current = {RENAMED.get(name, name): value for name, value in config.items()}
    return {**{name: s.before for name, s in DECIDES.items() if s.before is not FIRST}, **current}


def resolve_defaults(args: argparse.Namespace, saved: dict[str, Any] | None, device: torch.device) -> None:
    """Fill the flags left to the run (default None): the checkpoint's ``saved`` settings' value, or for a new run
    the one its declaration gives on ``device``."""
    for name, setting in DECIDES.items():
        if setting.new_run is not None and getattr(args, name) is None:
            known = upgrade(saved) if saved is not None else {}
            setattr(args, name, known[name] if name in known else setting.new_run(device))


def config_of(args: argparse.Namespace, seed: int, processes: int) -> dict[str, Any]:
    """The settings that decide the run's numbers (``DECIDES``), which a resumed run must match.

    The parsed flags, with the seed as drawn and the number of processes; those that do not act in
    this run, or are recorded only when set and are not, are left out.
    """
    values = {**vars(args), "seed": seed, "processes": processes}
    if missing := undeclared(values):
        raise RuntimeError(f"settings.DECIDES does not declare {', '.join(missing)}: say how each enters the run")
    return {
        name: values[name]
        for name, setting in DECIDES.items()
        if setting.acts(values) and not (setting.only_when_set and values[name] == setting.before)
    }


def differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """The settings on which a resumed run contradicts its checkpoint, as ``name: saved -> now``. A setting
    either side lacks is at its ``before`` value (the current run leaves out unset shaping options)."""
    saved, current = upgrade(saved), upgrade(current)
    return [
        f"{key}: {saved.get(key)!r} in the checkpoint, {current.get(key)!r} now"
        for key in sorted(set(saved) | set(current))
        if saved.get(key) != current.get(key)
    ]


def same_run(config: dict[str, Any], planned: bool = False) -> str:
    """What makes two runs the same run (two folders, a copy of one): every setting that decides its
    numbers, seed and images included, as its record holds them. Used by the report, the ensembles and
    the grid. ``planned``: of runs not all trained yet (a grid's plan), without what only training knows:
    the digest of the images, the number of processes, the defaults a run takes from its machine."""
    known = upgrade(config)
    if planned:  # nor the settings a run resolves when it starts (the machine's defaults)
        left = {"data", "processes", *(name for name, s in DECIDES.items() if s.new_run is not None)}
        known = {key: value for key, value in known.items() if key not in left}
    return json.dumps(known, sort_keys=True, default=str)


# What a recorded run must hold for its numbers to be read (the report, the ensembles): its schedule, what
# groups it, and its test set.
READ = ("warm_restart", "t_zero", "t_mult", "milestones", "seed", "dataset", "model", "test_subset")


def problem(config: dict[str, Any]) -> str | None:
    """What makes a recorded run's settings ones train.py could not have written, or None. Each value is
    checked as the flag's own parser checks it; a setting that does not act on the run (a warmup on a
    multistep run) must be absent; those the report reads (``READ``) must be there."""
    config = upgrade(config)
    if not isinstance(config.get("warm_restart"), bool):
        return f"warm_restart is {config.get('warm_restart')!r}, not true or false"
    kind = "warm-restart" if config["warm_restart"] else "SWA-schedule" if trains_swa(config) else "multistep"
    flags = {action.dest: action for action in build_parser()._actions}
    for name, setting in DECIDES.items():
        if name not in flags or (name not in config and name not in READ):
            continue
        if not setting.acts(config):
            if name in config and config[name] != setting.before and setting.only_when_set:
                return f"{name} {config[name]!r} on a {kind} run"
            continue
        if name not in config:
            return f"a {kind} run without {name}"
        if (refused := _refused(flags[name], config[name])) is not None:
            return f"{name} {config[name]!r} on a {kind} run, which train.py refuses: {refused}"
    return None


def _refused(flag: argparse.Action, value: Any) -> str | None:
    """Why ``flag`` could not have taken ``value`` (as its parser reads the value's text), or None."""
    if flag.const is not None or isinstance(flag, argparse.BooleanOptionalAction):  # store_true, --x/--no-x
        return None if isinstance(value, bool) else "not true or false"
    if value is None:
        return None if flag.default is None else "missing"
    values = value if flag.nargs == "+" and isinstance(value, list) else [value]
    for item in values:
        if isinstance(item, bool) or (flag.nargs == "+") != isinstance(value, list):
            return "not of its kind"
        if flag.choices is not None and item not in flag.choices:
            return f"not one of {', '.join(map(str, flag.choices))}"
        if flag.type is not None:
            try:
                parsed = flag.type(str(item))
            except (argparse.ArgumentTypeError, ValueError) as error:
                return str(error)
            if parsed != item or (isinstance(parsed, int) and not isinstance(item, int)):
                return f"not of its kind ({type(item).__name__})"
    return None


def check_team(args: argparse.Namespace, team_size: int) -> None:
    """What several processes need: an even split of every batch, and --sync-bn only on CUDA."""
    if team_size == 1:
        if args.sync_bn:
            raise UserError("--sync-bn needs several processes: start the run with torchrun.")
        return
    if args.sync_bn and args.compile:
        raise UserError(
            "--compile and --sync-bn do not go together: the compiled graph breaks at every SyncBatchNorm "
            "layer (open PyTorch issues), which undoes what compiling gains. Drop one of them."
        )
    if args.batch_size % team_size:
        share = _split(args.batch_size, team_size)
        raise UserError(f"{team_size} processes cannot share a batch of {args.batch_size} evenly: {share}.")
    if args.sync_bn and (args.device == "cpu" or not torch.cuda.is_available()):
        raise UserError("--sync-bn works on CUDA only; on the CPU each process normalises its own share.")


def _split(batch: int, processes: int) -> str:
    """What shares a batch evenly: counts of processes that divide it, or batch sizes these processes divide."""
    counts = [n for n in range(2, batch + 1) if batch % n == 0][:3]
    lower, upper = batch - batch % processes, batch - batch % processes + processes
    sizes = " or ".join(f"-b {b}" for b in (lower, upper) if b >= processes)
    said = f"give a batch size that {processes} processes share ({sizes})"
    if counts:
        ways = ", ".join(f"--nproc_per_node={n}" for n in counts)
        said = f"start torchrun with a number of processes that divides {batch} ({ways}), or {said}"
    return said


def check_batch_size(args: argparse.Namespace, team_size: int) -> None:
    """Refuse batches of one image per process for a network BatchNorm cannot train on them (ResNet34)."""
    classes = cifar.DATASETS[args.dataset].classes
    if args.batch_size // team_size == 1 and not trains_on_single_images(args.model, classes):
        raise UserError(
            f"{args.model} cannot train on batches of one image{' per process' if team_size > 1 else ''}: "
            "one of its BatchNorm layers would see a single value per channel. "
            f"Use -b {2 * team_size} or more."
        )

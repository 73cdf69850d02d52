"""The settings of a run: train.py's flags and their checks, and which of them a resumed run must match."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from typing import Any

from sgdr.cli import ShowDefaults
from sgdr.data import cifar
from sgdr.training.networks import check_model_name
from sgdr.training.recipes import LR, RECIPES
from sgdr.training.schedules import OPTION_DEFAULTS

DESCRIPTION = "Train ResNet34 on CIFAR-10 with the multistep schedule or SGDR's cosine annealing with warm restarts."
# torch's generators take seeds of 64 bits.
SEED_MAX = 2**64 - 1


def int_at_least(minimum: int, maximum: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {value}")
        return value

    return parse


def number_in(low: float, high: float = math.inf, low_included: bool = True):
    """A finite number from ``low`` (or just above it) up to ``high``."""
    bounds = f"{'at least' if low_included else 'above'} {low:g}"
    bounds += f" and at most {high:g}" if high < math.inf else ""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < low or (value == low and not low_included) or value > high:
            raise argparse.ArgumentTypeError(f"must be a number {bounds}, got {text}")
        return value

    return parse


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
    parser = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=ShowDefaults)
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
        type=number_in(0.0),
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
        default=[60, 120, 160],
        metavar="EPOCH",
        help="epochs at which the multistep schedule multiplies the lr by 0.2 (default: 60 120 160)",
    )
    extra.add_argument(
        "--lr",
        type=number_in(0.0, low_included=False),
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
    extra.add_argument("--data-dir", default="data", help="folder holding cifar-10-batches-py (default: data)")
    extra.add_argument("--output-dir", default="outputs", help="folder for figures and pickles (default: outputs)")
    extra.add_argument(
        "--train-subset",
        type=subset_of(cifar.TRAIN_IMAGES, "training"),
        metavar="N",
        help="train on the first N training images only (default: all 50,000)",
    )
    extra.add_argument(
        "--val-subset",
        type=subset_of(cifar.TEST_IMAGES, "test"),
        metavar="N",
        help="validate on the first N test images only (default: all 10,000)",
    )
    fast = parser.add_argument_group("speed (see docs/performance.md)")
    fast.add_argument(
        "--loader",
        choices=cifar.LOADERS,
        default="device",
        help="device: the data set held on the training device, augmented there in batches; "
        "torchvision: the reference DataLoader with PIL transforms (default: device)",
    )
    fast.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="channels-last memory format for images and weights (default: on)",
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
        "--seed",
        type=int_at_least(0, SEED_MAX),
        help="seed for a reproducible run, 0 to 2**64 - 1 (default: a fresh one, printed)",
    )
    extra.add_argument(
        "--workers",
        type=int_at_least(0),
        default=min(4, os.cpu_count() or 1),
        help="worker processes of --loader torchvision (default: min(4, CPUs))",
    )
    extra.add_argument(
        "--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N (default: auto)"
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
            parser.error(
                f"argument {flag}: shapes warm restarts only, and this run uses the multistep schedule: "
                "add -wr (--warm-restart), or leave it out"
            )
    if args.warmup_start_lr != OPTION_DEFAULTS["warmup_start_lr"] and not args.warmup_epochs:
        parser.error(
            "argument --warmup-start-lr: is where a warmup starts, and this run has none: "
            "add --warmup-epochs W (W >= 1), or leave it out"
        )
    return args


# The settings that may change between a run and its resumption: where it runs, where its files
# go, and for how long (a finished run can be extended). Every other setting the parser holds
# decides the run's numbers, so a new flag is protected on resume without being listed anywhere.
MAY_CHANGE_ON_RESUME = frozenset({"epochs", "data_dir", "output_dir", "device", "resume", "overwrite"})


def trajectory(args: argparse.Namespace, seed: int, processes: int) -> dict[str, Any]:
    """The settings that decide a run's numbers; a resumed run must match its checkpoint on each.

    Every parsed setting but ``MAY_CHANGE_ON_RESUME``, with the seed as drawn and the number of
    processes (each normalises its BatchNorm layers over its share of a batch). Settings that
    cannot act in this run are left out: the other schedule's, and the worker count of the
    torchvision loader when the on-device loader (which has no workers) is used; so are the options
    that shape warm restarts while they are at their defaults.
    """
    config = {key: value for key, value in vars(args).items() if key not in MAY_CHANGE_ON_RESUME}
    config.update(seed=seed, processes=processes)
    for unused in ("milestones",) if args.warm_restart else ("t_zero", "t_mult", *OPTION_DEFAULTS):
        del config[unused]
    # The options that shape warm restarts are recorded only when set: the settings of a run without
    # them (run.json, the checkpoint) stay as they were before the options existed, and a setting that
    # is absent reads as its default (checkpoint.ADDED_SETTINGS, schedules.run_cycle_ends).
    for key, default in OPTION_DEFAULTS.items():
        if key in config and config[key] == default:
            del config[key]
    if args.loader != "torchvision":  # worker processes each draw their own augmentation stream
        del config["workers"]
    return config

"""Train ResNet34 on CIFAR-10 with the multistep schedule or SGDR's cosine annealing with warm restarts."""

from __future__ import annotations

import argparse
import errno
import os
import random
import secrets
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import checkpoint
import cifar
import distributed
import plot
import runfiles
from distributed import Team, pick_device, set_precision
from errors import ShowDefaults, UserError, reports_user_errors
from models import build_network, check_model_name, count_parameters, top1_correct, trains_on_single_images
from recipes import RECIPES
from schedules import Schedule, build_schedule, ends_a_cycle

# torch's generators take seeds of 64 bits.
SEED_MAX = 2**64 - 1
# Drawing the figures takes ~0.3 s; pickles are written every epoch, figures at most this
# often (in seconds) and after the last epoch.
FIGURE_INTERVAL = 60.0


def _int_at_least(minimum: int, maximum: int | None = None):
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


def _subset_of(total: int, what: str):
    parse_positive = _int_at_least(1)

    def parse(text: str) -> int:
        value = parse_positive(text)
        if value > total:
            raise argparse.ArgumentTypeError(f"CIFAR has {total:,} {what} images, got {value:,}")
        return value

    return parse


def _model_name(text: str) -> str:
    try:
        return check_model_name(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    """The reference flags (-wr, -t0, -tm, -e) with their defaults, and options added beside them."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=ShowDefaults)
    positive = _int_at_least(1)
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
        "--dataset",
        choices=sorted(cifar.DATASETS),
        default="cifar10",
        help="cifar10 or cifar100 (its own normalisation, a 100-way head) (default: cifar10)",
    )
    extra.add_argument(
        "--model",
        type=_model_name,
        help="resnet34 (the reference) or wrn-D-K, a Wide ResNet of depth D and widen factor K "
        "(the paper's: wrn-28-10) (default: resnet34; wrn-28-10 with --recipe paper)",
    )
    extra.add_argument("-b", "--batch-size", type=positive, default=128, help="images per batch (default: 128)")
    extra.add_argument("--data-dir", default="data", help="folder holding cifar-10-batches-py (default: data)")
    extra.add_argument("--output-dir", default="outputs", help="folder for figures and pickles (default: outputs)")
    extra.add_argument(
        "--train-subset",
        type=_subset_of(cifar.TRAIN_IMAGES, "training"),
        metavar="N",
        help="train on the first N training images only (default: all 50,000)",
    )
    extra.add_argument(
        "--val-subset",
        type=_subset_of(cifar.TEST_IMAGES, "test"),
        metavar="N",
        help="validate on the first N test images only (default: all 10,000)",
    )
    fast = parser.add_argument_group("speed (see Performance in the README)")
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
        default="off",
        help="TensorFloat-32 on Ampere and newer GPUs: off (true fp32), conv (cuDNN convolutions only, "
        "PyTorch's own default), on (convolutions and matrix products); no effect on the CPU (default: off)",
    )
    fast.add_argument("--compile", action="store_true", help="torch.compile the network (default: off)")
    fast.add_argument(
        "--sync-bn",
        action="store_true",
        help="under torchrun on CUDA: BatchNorm statistics over the whole batch, not each process's share",
    )
    extra.add_argument(
        "--seed",
        type=_int_at_least(0, SEED_MAX),
        help="seed for a reproducible run, 0 to 2**64 - 1 (default: a fresh one, printed)",
    )
    extra.add_argument(
        "--workers",
        type=_int_at_least(0),
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
    return args


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return optimizer.param_groups[0]["lr"]


class Interrupted(Exception):
    """Raised at the first batch boundary after SIGINT or SIGTERM; SIGPIPE stands for a closed output."""

    def __init__(self, signum: int, why: str = ""):
        super().__init__(why or signal.Signals(signum).name)
        self.signum = signum


class StopRequest:
    """Set by a signal handler; ``Guard.check`` stops every process at the next batch boundary."""

    def __init__(self) -> None:
        self.signum: int | None = None


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """While inside, SIGINT and SIGTERM ask the run to stop at the next batch boundary.

    After the first, a second Ctrl-C raises KeyboardInterrupt at once. Previous handlers
    come back on exit (signals can only be handled from the main thread).
    """
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handle(signum: int, frame: Any) -> None:
        stop.signum = signum
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print(
            f"\n{signal.Signals(signum).name}: stopping at the next batch boundary (Ctrl-C again aborts at once).",
            file=sys.stderr,
            flush=True,
        )

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


class NonFiniteLoss(Exception):
    def __init__(self, epoch: int, batch: int):
        super().__init__(f"epoch {epoch + 1}, batch {batch + 1}")
        self.epoch, self.batch = epoch, batch


class NonFiniteWatch:
    """Notes the first batch whose loss is not finite, without making the host wait.

    The index is kept on the device; on CUDA a non-blocking copy to pinned memory lets
    the loop look at it every batch (a batch or two late) without a sync. On the CPU the
    look is immediate.
    """

    def __init__(self, device: torch.device):
        self.first = torch.full((), -1, dtype=torch.long, device=device)
        self.host = self.first if device.type == "cpu" else torch.full((), -1, dtype=torch.long).pin_memory()

    def update(self, loss: torch.Tensor, batch: int) -> None:
        self.first.masked_fill_((self.first < 0) & ~torch.isfinite(loss), batch)
        if self.host is not self.first:
            self.host.copy_(self.first, non_blocking=True)

    def first_seen(self) -> int | None:
        first = int(self.host)
        return first if first >= 0 else None


class Guard:
    """Decides at each batch boundary whether the run goes on, the same way in every process:
    a stop request (a signal) or a non-finite loss in any process stops all of them there."""

    def __init__(self, stop: StopRequest | None = None, team: Team | None = None):
        self.stop = stop or StopRequest()
        self.team = team or Team()

    def check(self, epoch: int = 0, bad_batch: int | None = None) -> None:
        signum, bad = self.team.agree([self.stop.signum or 0, -1 if bad_batch is None else bad_batch])
        if bad >= 0:
            raise NonFiniteLoss(epoch, bad)
        if signum:
            raise Interrupted(signum)


def train_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    schedule: Schedule,
    epoch: int,
    device: torch.device,
    lrs: list[float],
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    guard: Guard | None = None,
) -> tuple[float, float]:
    """One pass over ``loader`` (batches already on ``device``); returns the mean training loss per
    sample and the top-1 accuracy, both of each batch as it was trained (over all processes).

    Appends to ``lrs`` the rate each batch is trained with. The loss is summed on the
    device and read once at the end, so the loop never waits for the device. After each
    batch ``guard`` may stop the epoch: ``NonFiniteLoss`` as soon as a loss is seen to be NaN
    or infinite, ``Interrupted`` after a signal.
    """
    guard = guard or Guard()
    model.train()
    batches = len(loader)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    samples = torch.zeros((), dtype=torch.long, device=device)
    watch = NonFiniteWatch(device)
    for i, (images, labels) in enumerate(tqdm(loader, desc="Training", total=batches, disable=None, file=sys.stdout)):
        lrs.append(current_lr(optimizer))
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            logits = model(images)
            loss = F.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()
        schedule.after_batch(epoch, i, batches)
        loss_sum += loss.detach() * labels.size(0)
        correct += top1_correct(logits.detach(), labels)
        samples += labels.size(0)
        watch.update(loss.detach(), i)
        guard.check(epoch, watch.first_seen())
    guard.team.sum(loss_sum, correct, samples)
    mean = (loss_sum / samples).item()
    guard.check(epoch, watch.first_seen())  # exact now: the device has caught up
    return mean, correct.item() / samples.item()


@torch.inference_mode()
def validate(
    model: nn.Module,
    loader,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    guard: Guard | None = None,
) -> tuple[float, float]:
    """Mean cross-entropy per sample over ``loader`` (the reference averaged batch means), and top-1
    accuracy: sums and counts over all processes, then divided."""
    guard = guard or Guard()
    model.eval()
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    samples = torch.zeros((), dtype=torch.long, device=device)
    for images, labels in tqdm(loader, desc="Validation", total=len(loader), disable=None, file=sys.stdout):
        with autocast():
            logits = model(images)
            loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        correct += top1_correct(logits, labels)
        samples += labels.size(0)
        guard.check()
    guard.team.sum(loss_sum, correct, samples)
    return (loss_sum / samples).item(), correct.item() / samples.item()


def metrics_rows(history: dict[str, list[float]]) -> list[dict[str, float]]:
    """One row per epoch for ``metrics.jsonl``: losses, top-1 accuracies, test error, and the
    learning rates of the epoch's first and last batch."""
    per_epoch = len(history["lr"]) // len(history["train_loss"]) if history["train_loss"] else 0
    return [
        {
            "epoch": k + 1,
            "train_loss": history["train_loss"][k],
            "train_accuracy": history["train_acc"][k],
            "test_loss": history["val_loss"][k],
            "test_accuracy": history["val_acc"][k],
            "test_error": 1 - history["val_acc"][k],
            "lr_first": history["lr"][k * per_epoch],
            "lr_last": history["lr"][(k + 1) * per_epoch - 1],
        }
        for k in range(len(history["train_loss"]))
    ]


def save_outputs(files: runfiles.RunFiles, history: dict[str, list[float]], figures: bool) -> None:
    """Write the reference files for the epochs so far, each atomically; figures only if asked."""
    runfiles.save_floats(files.train_loss, history["train_loss"])
    runfiles.save_floats(files.val_loss, history["val_loss"])
    if files.lr_values is not None:
        runfiles.save_floats(files.lr_values, history["lr"])
    runfiles.save_jsonl(files.metrics, metrics_rows(history))
    if figures:
        plot.save_loss_figure(history["train_loss"], history["val_loss"], files.loss_figure)
        if files.lr_figure is not None:
            plot.save_lr_figure(history["lr"], files.lr_figure)


# The settings that may change between a run and its resumption: where it runs, where its files
# go, and for how long (a finished run can be extended). Every other setting the parser holds
# decides the run's numbers, so a new flag is protected on resume without being listed anywhere.
MAY_CHANGE_ON_RESUME = frozenset({"epochs", "data_dir", "output_dir", "device", "resume", "overwrite"})


def trajectory(args: argparse.Namespace, seed: int, processes: int) -> dict[str, Any]:
    """The settings that decide a run's numbers; a resumed run must match its checkpoint on each.

    Every parsed setting but ``MAY_CHANGE_ON_RESUME``, with the seed as drawn and the number of
    processes (each normalises its BatchNorm layers over its share of a batch). Settings that
    cannot act in this run are left out: the other schedule's, and the worker count of the
    torchvision loader when the on-device loader (which has no workers) is used.
    """
    config = {key: value for key, value in vars(args).items() if key not in MAY_CHANGE_ON_RESUME}
    config.update(seed=seed, processes=processes)
    for unused in ("milestones",) if args.warm_restart else ("t_zero", "t_mult"):
        del config[unused]
    if args.loader != "torchvision":  # worker processes each draw their own augmentation stream
        del config["workers"]
    return config


def open_checkpoint(args: argparse.Namespace, files: runfiles.RunFiles) -> dict[str, Any] | None:
    """The checkpoint to continue from, or None to start afresh; refuses to overwrite a run.

    Runs before anything is written, so a refusal changes no file.
    """
    if args.overwrite:
        runfiles.check_removable(files.all())
        return None
    if args.resume and files.checkpoint.exists():
        return checkpoint.load(files.checkpoint)
    existing = [str(p) for p in files.all() if p.exists()]
    if args.resume and existing:
        raise UserError(
            f"there is no checkpoint to resume from ({files.checkpoint}), but this run has outputs: "
            f"{', '.join(existing)}. Start it over with --overwrite, or use another --output-dir."
        )
    if existing:
        raise UserError(
            f"this run already has files: {', '.join(existing)}. Continue it with --resume, "
            "start it over with --overwrite (replaces them), or use another --output-dir."
        )
    if args.resume:
        print(f"No checkpoint at {files.checkpoint}: starting the run.")
    return None


def disk_full(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def resume_command(command: Sequence[str]) -> str:
    words = [w for w in command if w != "--overwrite"]
    return shlex.join(["python", *words] + ([] if "--resume" in words else ["--resume"]))


@dataclass
class Experiment:
    """What a run trains with, and how far it got: built from the settings, restored from a checkpoint."""

    config: dict[str, Any]
    device: torch.device
    files: runfiles.RunFiles
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    generator: torch.Generator
    train_loader: Any
    val_loader: Any
    net: nn.Module  # what training calls: ``model``, or wrapped (DDP) and compiled; files hold ``model``
    eval_net: nn.Module  # what validation calls: ``model``, or compiled
    autocast: Callable[[], AbstractContextManager]
    team: Team = field(default_factory=Team)
    history: dict[str, list[float]] = field(
        default_factory=lambda: {"train_loss": [], "val_loss": [], "train_acc": [], "val_acc": [], "lr": []}
    )
    epochs_done: int = 0
    resumed: bool = False
    saved_epochs: int | None = None  # the epochs the checkpoint on disk holds (None: none written yet)

    def state(self) -> dict[str, Any]:
        """The checkpoint: everything ``restore`` needs to continue exactly from here."""
        return {
            "config": self.config,
            "epoch": self.epochs_done,
            "history": self.history,
            "rng": checkpoint.capture_rng(self.generator),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.scheduler.state_dict(),
        }

    def restore(self, saved: dict[str, Any]) -> None:
        try:
            self.model.load_state_dict(saved["model"])
        except RuntimeError as error:  # e.g. a Wide ResNet saved before it took the SGDR script's structure
            raise UserError(
                f"the checkpoint {self.files.checkpoint} holds a {self.config['model']} of another "
                f"structure than this version builds ({str(error).splitlines()[0]}). Start the run over "
                "with --overwrite, or resume it with the version of this project that started it."
            ) from None
        self.optimizer.load_state_dict(saved["optimizer"])
        self.schedule.scheduler.load_state_dict(saved["scheduler"])
        self.history, self.epochs_done = saved["history"], saved["epoch"]
        self.saved_epochs = saved["epoch"]
        checkpoint.restore_rng(saved["rng"], self.generator)  # last: building the model drew from them
        self.resumed = True

    def save(self) -> None:
        if self.team.is_main:
            checkpoint.save(self.files.checkpoint, self.state())
        self.saved_epochs = self.epochs_done

    def catch_up(self, figures: bool) -> None:
        """On resume, the outputs as of the checkpoint: pickles and metrics (figures if asked), and the snapshot
        if one is due and missing, in case the last session stopped between writing the checkpoint and them."""
        if self.team.is_main and self.epochs_done:
            save_outputs(self.files, self.history, figures)
            if not self.files.snapshot(self.epochs_done).exists():
                self.snapshot_if_cycle_ends()

    def snapshot_if_cycle_ends(self) -> None:
        """With warm restarts, keep the network as it is at the end of each cycle, just before the
        restart: the members of the paper's snapshot ensembles, at no extra training cost."""
        c = self.config
        if self.team.is_main and c["warm_restart"] and ends_a_cycle(self.epochs_done, c["t_zero"], c["t_mult"]):
            classes = cifar.DATASETS[c["dataset"]].classes
            inputs = {
                "mean": self.val_loader.mean.cpu(),
                "std": self.val_loader.std.cpu(),
            }  # how to normalise test images
            checkpoint.save_snapshot(
                self.files.snapshot(self.epochs_done), self.model, c, self.epochs_done, classes, inputs
            )


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
        raise UserError(
            f"{team_size} processes cannot share a batch of {args.batch_size} evenly: use a number of "
            f"processes that divides {args.batch_size} (e.g. torchrun --nproc_per_node=2, 4 or 8)."
        )
    if args.sync_bn and (args.device == "cpu" or not torch.cuda.is_available()):
        raise UserError("--sync-bn works on CUDA only; on the CPU each process normalises its own share.")


def check_batch_size(args: argparse.Namespace, team_size: int) -> None:
    """Refuse batches of one image per process for a network BatchNorm cannot train on them (ResNet34)."""
    classes = cifar.DATASETS[args.dataset].classes
    if args.batch_size // team_size == 1 and not trains_on_single_images(args.model, classes):
        raise UserError(
            f"{args.model} cannot train on batches of one image{' per process' if team_size > 1 else ''}: "
            "one of its BatchNorm layers would see a single value per channel. "
            f"Use -b {2 * team_size} or more."
        )


def setup(args: argparse.Namespace, team: Team | None = None, device: torch.device | None = None) -> Experiment:
    """Check the request (nothing is written before it passes), then build or restore the run."""
    team = team or Team()
    # Every process checks its own request and data; a refusal by any of them reaches all before the
    # first collective (DDP's), so no process waits for one that has gone.
    with team.refusals():
        device = device or pick_device(args.device)
        files = runfiles.run_files(args.output_dir, args.warm_restart, args.t_zero, args.t_mult)
        saved = open_checkpoint(args, files)
        if args.seed is not None:
            seed = args.seed
        else:
            seed = saved["config"]["seed"] if saved is not None else secrets.randbelow(2**31)
        config = trajectory(args, seed, team.world)
        if saved is not None and (differences := checkpoint.differences(saved["config"], config)):
            raise UserError(
                f"this run's checkpoint {files.checkpoint} was made with other settings: "
                f"{'; '.join(differences)}. Resume with the original settings, or start over with --overwrite."
            )
        random.seed(seed)
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        set_precision(args.tf32)
        if device.type == "cuda":
            # Convolution algorithms picked by timing: faster, but the pick (and so the rounding) can differ
            # from run to run, so CUDA runs are not bit-for-bit repeatable.
            torch.backends.cudnn.benchmark = True
        recipe = RECIPES[args.recipe]
        train_set, val_set = cifar.load_splits(args.data_dir, args.train_subset, args.val_subset, args.dataset)
        remainder = 0 if recipe.drop_last else len(train_set) % args.batch_size  # images in a last partial batch
        if remainder % team.world:
            raise UserError(
                f"the last training batch ({remainder} images) does not split evenly "
                f"over {team.world} processes; choose a --train-subset whose remainder does."
            )
        train_loader, val_loader = cifar.make_loaders(
            train_set,
            val_set,
            args.loader,
            args.batch_size,
            generator,
            device,
            args.workers,
            args.channels_last,
            args.dataset,
            team.rank,
            team.world,
            recipe,
        )
        if len(train_loader) == 0:  # the paper's recipe drops a last partial batch, here the only one
            raise UserError(
                f"an epoch of --recipe {recipe.name} drops its last partial batch, and {len(train_set)} images "
                f"give no full batch of {args.batch_size}: use a larger --train-subset or a smaller --batch-size."
            )
        classes = cifar.DATASETS[args.dataset].classes
        if remainder == team.world and not trains_on_single_images(args.model, classes):
            train_loader = cifar.WithoutLastBatch(train_loader)  # one image per process: left out, said in the header
    model = build_network(args.model, num_classes=cifar.DATASETS[args.dataset].classes).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = recipe.optimizer(model)
    # The script's SGDR counts samples: T_cur grows by batch / samples per epoch after each batch.
    by_samples = (len(train_loader), args.batch_size / train_loader.samples) if recipe.sgdr_by_samples else None
    schedule = build_schedule(
        optimizer, args.warm_restart, args.t_zero, args.t_mult, args.milestones, by_samples=by_samples
    )
    # Compile the module, then wrap it in DDP: PyTorch's documented order (compiling the wrapper traces DDP's hooks).
    compiled = torch.compile(model) if args.compile else model
    net = compiled
    if team.world > 1:
        if args.sync_bn:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)  # same parameters, shared statistics
        net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    autocast = partial(torch.autocast, device.type, dtype=torch.bfloat16) if args.amp == "bf16" else nullcontext
    exp = Experiment(
        config,
        device,
        files,
        model,
        optimizer,
        schedule,
        generator,
        train_loader,
        val_loader,
        net,
        compiled,
        autocast,
        team,
    )
    if saved is not None:
        exp.restore(saved)
    team.barrier()  # every process has read what it needs before the first process writes
    if team.is_main:
        if args.overwrite:
            runfiles.remove(files.all())
            if kept := runfiles.snapshots_in(files.run_dir)[1]:
                print(f"Kept {', '.join(map(str, kept))}: not files of this project.")
        runfiles.remove_stale_temporaries(files.reference(), [files.run_dir, files.run_dir / "snapshots"])
    return exp


def print_header(exp: Experiment) -> None:
    total, trainable = count_parameters(exp.model)
    print(f"Computation device: {exp.device}")
    print(f"{total:,} total parameters.")
    print(f"{trainable:,} training parameters.")
    print(f"Seed: {exp.config['seed']} (--seed {exp.config['seed']} repeats this run)")
    print(exp.schedule.describe())
    recipe = RECIPES[exp.config["recipe"]]
    if recipe.header:  # the tutorial's recipe prints the reference's lines only
        loader = exp.train_loader
        print(
            f"Recipe: {recipe.header}; an epoch is {loader.samples:,} samples in {len(loader)} batches "
            f"({loader.samples - len(loader) * loader.batch_size} dropped)."
        )
    print(
        f"{len(exp.train_loader.dataset):,} training images in {len(exp.train_loader)} batches, "
        f"{len(exp.val_loader.dataset):,} validation images in {len(exp.val_loader)} batches."
    )
    if isinstance(exp.train_loader, cifar.WithoutLastBatch):
        print(
            f"The last training batch, of one image{' per process' if exp.team.world > 1 else ''}, is left out of "
            f"every epoch: one of {exp.config['model']}'s BatchNorm layers would see a single value per channel."
        )


def run_epoch(exp: Experiment, epoch: int, epochs: int, guard: Guard) -> tuple[float, float]:
    """Train and validate one epoch, step the schedule, and add the results to the history."""
    print(f"[INFO]: Epoch {epoch + 1} of {epochs}")
    print(f"LR at beginning of epoch: {current_lr(exp.optimizer)}")
    lrs: list[float] = []  # joins the history only once the epoch is complete
    guard.check(epoch)  # a stop asked for between epochs
    train_loss, train_acc = train_epoch(
        exp.net, exp.train_loader, exp.optimizer, exp.schedule, epoch, exp.device, lrs, exp.autocast, guard
    )
    exp.team.share_buffers(exp.model)  # every process validates the network rank 0 saves
    val_loss, val_acc = validate(exp.eval_net, exp.val_loader, exp.device, exp.autocast, guard)
    exp.schedule.after_epoch()
    for key, value in (
        ("train_loss", train_loss),
        ("val_loss", val_loss),
        ("train_acc", train_acc),
        ("val_acc", val_acc),
    ):
        exp.history[key].append(value)
    exp.history["lr"].extend(lrs)
    exp.epochs_done = epoch + 1
    print(f"Training accuracy: {train_acc:.2%}, test error: {1 - val_acc:.2%}")
    return train_loss, val_loss


def train_epochs(exp: Experiment, epochs: int, record: checkpoint.RunRecord, command: Sequence[str]) -> None:
    """Epochs until ``epochs``; after each, the outputs, then the checkpoint. Handles every way of stopping."""
    figures_due = time.monotonic() + FIGURE_INTERVAL
    with stop_on_signals() as stop:
        guard = Guard(stop, exp.team)
        try:
            for epoch in range(exp.epochs_done, epochs):
                started = time.perf_counter()
                train_loss, val_loss = run_epoch(exp, epoch, epochs, guard)
                figures = epoch == epochs - 1 or time.monotonic() >= figures_due
                exp.save()  # first: the other files never describe more epochs than the checkpoint
                if exp.team.is_main:
                    save_outputs(exp.files, exp.history, figures)
                if figures:
                    figures_due = time.monotonic() + FIGURE_INTERVAL
                exp.snapshot_if_cycle_ends()
                record.epoch_done(exp.epochs_done)
                print(f"LR at end of epoch: {current_lr(exp.optimizer)}")
                print(f"Training loss: {train_loss:.3f}")
                print(f"Validation loss: {val_loss:.3f}")
                print(f"Epoch time: {time.perf_counter() - started:.1f} s")
                print("-" * 50)
        except (Interrupted, BrokenPipeError) as error:
            # Printing to a closed pipe (`python train.py | head`) stops the run as a signal does.
            closed = Interrupted(signal.SIGPIPE, "SIGPIPE (output closed)")
            stopped = error if isinstance(error, Interrupted) else closed
            record.end(f"interrupted by {stopped}")
            if not exp.team.is_main:
                raise stopped from None
            if exp.saved_epochs != exp.epochs_done:  # the pipe closed between an epoch's end and its checkpoint
                exp.save()
            if exp.epochs_done:
                save_outputs(exp.files, exp.history, figures=True)
            print(
                f"Stopped by {stopped}. {exp.files.checkpoint} holds {exp.epochs_done} complete epochs; "
                f"the rest is redone on resume. Resume with:\n  {resume_command(command)}",
                file=sys.stderr,
            )
            raise stopped from None
        except NonFiniteLoss as diverged:
            record.end(f"stopped: non-finite loss at {diverged}")
            raise UserError(
                f"the training loss is not finite (NaN or infinite) at {diverged}; stopped before saving "
                f"that epoch. {exp.files.checkpoint} still holds the {exp.epochs_done} epochs before it."
            ) from None
        except BaseException as error:
            with suppress(OSError):  # the record may not fit on the disk either: the first error is the one to report
                record.end("stopped: the disk is full" if disk_full(error) else "aborted")
            raise
    record.end("finished")


def run(
    args: argparse.Namespace,
    command: Sequence[str] = ("train.py",),
    team: Team | None = None,
    device: torch.device | None = None,
) -> dict[str, list[float]]:
    """The whole experiment for parsed ``args``; returns the per-epoch losses and per-batch rates.

    ``command`` is the command line (script first), for the run record and resume hints;
    ``team`` and ``device`` this process's place under torchrun.
    """
    team = team or Team()
    with hold_run_folder(args, team, command):
        return _run(args, command, team, device)


@contextmanager
def hold_run_folder(args: argparse.Namespace, team: Team, command: Sequence[str]) -> Iterator[None]:
    """While inside, rank 0 holds the run's folder (``runfiles.RunLock``); if it cannot, every process stops."""
    with ExitStack() as held:
        with team.refusals():
            if team.is_main:
                run_dir = runfiles.run_files(args.output_dir, args.warm_restart, args.t_zero, args.t_mult).run_dir
                held.enter_context(runfiles.RunLock(run_dir, shlex.join(["python", *command])))
        yield


def _run(
    args: argparse.Namespace, command: Sequence[str], team: Team, device: torch.device | None
) -> dict[str, list[float]]:
    exp = setup(args, team, device)
    print_header(exp)
    try:
        if exp.resumed:
            exp.catch_up(figures=exp.epochs_done >= args.epochs)
        if exp.epochs_done >= args.epochs:
            print(f"This run has finished all {exp.epochs_done} epochs already; nothing to do.")
            return exp.history
        if exp.resumed:
            print(f"Resuming after epoch {exp.epochs_done} from {exp.files.checkpoint}.")
        else:
            exp.save()  # so that even an interruption inside epoch 1 resumes exactly
        record = checkpoint.RunRecord(
            exp.files.record,
            shlex.join(["python", *command]),
            exp.config,
            args.epochs,
            exp.device,
            exp.epochs_done,
            resumed=exp.resumed,
            writes=exp.team.is_main,
        )
        train_epochs(exp, args.epochs, record, command)
    except OSError as error:
        if not disk_full(error):
            raise
        held = (
            "no checkpoint yet"
            if exp.saved_epochs is None
            else f"{exp.files.checkpoint} holds {exp.saved_epochs} complete epochs; the pickles, metrics, figures and "
            "snapshots hold no more, and are brought up to it on resume"
        )
        where = f": {error.filename}" if error.filename else ""
        raise UserError(
            f"the disk is full ({error.strerror}{where}). On disk: {held}. Free some space, "
            f"then resume with:\n  {resume_command(command)}"
        ) from None
    print("Finished Training")
    print(f"Saved {', '.join(str(p) for p in exp.files.reference())}")
    return exp.history


def drop_stdout() -> None:
    """Send what is left of stdout to /dev/null, once its pipe is closed: Python's last flush at exit would
    otherwise fail on it again and print a warning."""
    with suppress(OSError, ValueError):  # not a real file (tests): nothing to do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


@reports_user_errors
def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    try:
        check_team(args, distributed.world_size())  # before joining: a refusal needs no process group
        check_batch_size(args, distributed.world_size())
        team, device = distributed.join(args.device)
    except UserError:
        if distributed.local_rank() == 0:
            raise  # every process of the machine found the same: said once per machine
        return 1
    if not team.is_main:
        sys.stdout = open(os.devnull, "w")  # one voice: rank 0 prints, and writes every file
    try:
        run(args, ["train.py", *argv], team, device)
        sys.stdout.flush()  # a closed pipe shows here at the latest, rather than in Python's flush at exit
    except UserError:
        if team.is_main:
            raise  # reported once
        return 1
    except Interrupted as stopped:
        if stopped.signum == signal.SIGPIPE:
            drop_stdout()
        return 128 + stopped.signum
    except BrokenPipeError:  # the output closed outside the epochs (before the first, after the last)
        drop_stdout()
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt:
        if team.is_main:
            print(
                "\nAborted. Every file on disk is complete; the checkpoint holds the last finished epoch.",
                file=sys.stderr,
            )
        return 130
    finally:
        distributed.leave(team)
    return 0


if __name__ == "__main__":
    sys.exit(main())

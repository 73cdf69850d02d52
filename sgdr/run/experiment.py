"""A run, built from its settings: the network, data, optimiser and schedule (``setup``), or all of it
restored from the checkpoint, as an ``Experiment``, which train.py's loop drives epoch by epoch."""

from __future__ import annotations

import argparse
import errno
import random
import secrets
import shlex
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn, update_bn

from sgdr import storage
from sgdr.cli import UserError
from sgdr.data import cifar, loaders
from sgdr.parallel.devices import autocast_of, pick_device, set_determinism, set_precision
from sgdr.parallel.distributed import Team
from sgdr.run import checkpoint, layout, lock, settings
from sgdr.run.epoch import train_epoch, validate
from sgdr.run.outputs import save_outputs
from sgdr.run.stopping import Guard
from sgdr.training.networks import build_network, deterministic_pooling, trains_on_single_images
from sgdr.training.recipes import RECIPES
from sgdr.training.schedules import Schedule, build_schedule, run_cycle_ends


def open_checkpoint(args: argparse.Namespace, files: layout.RunFiles) -> dict[str, Any] | None:
    """The checkpoint to continue from, or None to start afresh; refuses to overwrite a run.

    Runs before anything is written, so a refusal changes no file.
    """
    if args.overwrite:
        storage.check_removable(files.all())
        return None
    if wrong := layout.in_the_way(files):
        raise UserError(f"{'; '.join(wrong)}. Move or remove {'it' if len(wrong) == 1 else 'them'}, then run again.")
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
        others = sorted(p.parent.name for p in files.run_dir.parent.glob(f"*/{layout.CHECKPOINT}"))
        if others:  # the flags that name this run's folder may have been forgotten (-wr, -t0, --swa-start)
            print(
                f"(Beside it, {files.run_dir.parent} holds the checkpoints of {', '.join(others)}: to resume one of "
                "those, give the flags it was started with.)"
            )
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
    files: layout.RunFiles
    model: nn.Module
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    generator: torch.Generator
    train_loader: Any
    test_loader: Any
    net: nn.Module  # what training calls: ``model``, or wrapped (DDP) and compiled; files hold ``model``
    eval_net: nn.Module  # what validation calls: ``model``, or compiled
    autocast: Callable[[], AbstractContextManager]
    team: Team = field(default_factory=Team)
    history: dict[str, list[float]] = field(
        default_factory=lambda: {"train_loss": [], "test_loss": [], "train_acc": [], "test_acc": [], "lr": []}
    )
    epochs_done: int = 0
    resumed: bool = False
    saved_epochs: int | None = None  # the epochs the checkpoint on disk holds (None: none written yet)
    batch_norm_images: Any = None  # the training images as validation reads them (--recompute-bn), made once
    ema: AveragedModel | None = None  # --ema: the moving average of ``model``'s weights and buffers
    swa: AveragedModel | None = None  # --swa-start: the equal-weight average of ``model``'s weights, epoch by epoch

    def start_ema(self, decay: float) -> None:
        """--ema: an exponential moving average of the network's parameters and buffers (BatchNorm's
        statistics among them), torch's ``AveragedModel`` with ``get_ema_multi_avg_fn(decay)``, updated after
        every optimiser step; validated after every epoch beside the network."""
        self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
        self.history.setdefault("ema_test_loss", [])
        self.history.setdefault("ema_test_acc", [])

    def start_swa(self) -> None:
        """--swa-start: SWA's average of the network's parameters (torch's ``AveragedModel``, equal weights),
        joined by the weights after each epoch from --swa-start on (``average_weights``); its BatchNorm
        statistics are recomputed before it is validated, after the run's last epoch (``validate_swa``)."""
        self.swa = AveragedModel(self.model)
        self.history.setdefault("swa_test_loss", [])
        self.history.setdefault("swa_test_acc", [])

    def average_weights(self, epoch: int) -> None:
        """--swa-start: after epoch ``epoch`` (from 0) has trained, its weights join the average if it is
        --swa-start's epoch or later."""
        if self.swa is not None and epoch + 1 >= self.config["swa_start"]:
            self.swa.update_parameters(self.model)

    def validate_swa(self, guard: Guard) -> tuple[float, float] | None:
        """--swa-start, after the run's last epoch: the average, its BatchNorm statistics recomputed from the
        training images as --recompute-bn recomputes the network's (then rank 0's taken by every process),
        validated as the network is. None without --swa-start."""
        if self.swa is None:
            return None
        self.recompute_batch_norm(self.swa.module)
        self.team.share_buffers(self.swa.module)
        return validate(self.swa.module, self.test_loader, self.device, self.autocast, guard)

    def validate_late_average(self, guard: Guard) -> tuple[float, float] | None:
        """--swa-start, a run ended at the epoch its checkpoint holds though it was planned longer: the average
        validated as after a last epoch, its result recorded for that epoch; None where there is nothing to do
        (no --swa-start, or the last epoch's result is there)."""
        if self.swa is None or self.history["swa_test_acc"][-1] is not None:
            return None
        result = self.validate_swa(guard)
        self.history["swa_test_loss"][-1], self.history["swa_test_acc"][-1] = result
        return result

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
            **({"ema": self.ema.state_dict()} if self.ema is not None else {}),
            **({"swa": self.swa.state_dict()} if self.swa is not None else {}),
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
        per_epoch = len(saved["history"]["lr"]) // saved["epoch"] if saved["epoch"] else len(self.train_loader)
        if per_epoch != len(self.train_loader):
            raise self._damaged(
                f"it holds {per_epoch} learning rates an epoch, but an epoch of this run is "
                f"{len(self.train_loader)} batches"
            )
        try:
            self.optimizer.load_state_dict(saved["optimizer"])
            self.schedule.scheduler.load_state_dict(saved["scheduler"])
        except (KeyError, ValueError, TypeError, IndexError) as error:
            raise self._damaged("its optimiser or schedule state does not fit this run", error) from None
        averages = (("ema", self.ema, "moving average", "--ema"), ("swa", self.swa, "average", "--swa-start"))
        for key, average, what, flag in averages:
            if average is None:
                continue
            if not isinstance(saved.get(key), dict) or f"{key}_test_acc" not in saved["history"]:
                raise self._damaged(f"it has no {what} of the weights, which its settings ({flag}) keep")
            try:
                average.load_state_dict(saved[key])
            except (KeyError, RuntimeError) as error:
                raise self._damaged(f"its {what} of the weights does not fit this network", error) from None
        self.history, self.epochs_done = saved["history"], saved["epoch"]
        self.saved_epochs = saved["epoch"]
        try:
            checkpoint.restore_rng(saved["rng"], self.generator)  # last: building the model drew from them
        except (TypeError, ValueError, RuntimeError) as error:
            raise self._damaged("its random states cannot be restored", error) from None
        self.resumed = True

    def _damaged(self, what: str, error: Exception | None = None) -> UserError:
        """The refusal of a checkpoint whose ``what`` is wrong (with the error that showed it)."""
        why = f" ({type(error).__name__}: {(str(error) or '-').splitlines()[0]})" if error is not None else ""
        return UserError(f"the checkpoint {self.files.checkpoint} is damaged: {what}{why}.{checkpoint.RESTORE}")

    def save(self) -> None:
        if self.team.is_main:
            checkpoint.save(self.files.checkpoint, self.state())
        self.saved_epochs = self.epochs_done

    def settle_buckets(self) -> None:
        """One training step through the DDP wrapper whose every effect is undone, taken at the start of
        every session before its first batch, so that each session sums its gradients in the same layout.

        DDP sums a session's first backward pass in buckets of the parameters in reverse order, then lays
        its buckets out again in the order the gradients became ready. With three or more processes a
        ring all-reduce adds an element's terms in an order set by its place in the bucket, so a session
        resumed at an epoch would sum its first batch otherwise than the uninterrupted run summed that
        batch, and the bits would differ. This step (zero images of the first batch's shape, in train
        mode, as batches train, so a compiled network meets no new graph) gives DDP that first pass.
        Undone: the random states (dropout would draw), BatchNorm's running statistics and the
        gradients; the optimiser does not step. With one or two processes the layout changes no sum
        (two terms add alike in either order), so their numbers are unchanged."""
        first = min(self.config["batch_size"], self.train_loader.samples) // self.team.world
        memory = torch.channels_last if self.config["channels_last"] else torch.contiguous_format
        images = torch.zeros(first, 3, 32, 32, device=self.device).contiguous(memory_format=memory)
        buffers = [buffer.clone() for buffer in self.model.buffers()]
        was_training = self.net.training
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            self.net.train()
            with self.autocast():
                outputs = self.net(images)
            outputs.float().sum().backward()  # the gradients' order is the network's, whatever the loss
        self.net.train(was_training)
        with torch.no_grad():
            for buffer, saved in zip(self.model.buffers(), buffers):
                buffer.copy_(saved)
        self.optimizer.zero_grad(set_to_none=True)

    def train_epoch(self, epoch: int, guard: Guard) -> tuple[float, float, list[float]]:
        """The module's ``train_epoch`` on this run's network, data, optimiser and schedule: the epoch's
        mean loss, accuracy, and each batch's rate."""
        after_step = (lambda: self.ema.update_parameters(self.model)) if self.ema is not None else None
        return train_epoch(
            self.net,
            self.train_loader,
            self.optimizer,
            self.schedule,
            epoch,
            self.device,
            self.autocast,
            guard,
            after_step,
        )

    def validate(self, guard: Guard) -> tuple[float, float]:
        """The module's ``validate`` on this run's test set: mean loss and accuracy. With --recompute-bn the
        BatchNorm statistics are first recomputed from the training images; then every process takes rank
        0's, so that all of them validate the network rank 0 saves."""
        if self.config.get("recompute_bn"):
            self.recompute_batch_norm()
        self.team.share_buffers(self.model)
        return validate(self.eval_net, self.test_loader, self.device, self.autocast, guard)

    def validate_ema(self, guard: Guard) -> tuple[float, float] | None:
        """--ema: the moving average validated as the network is (with its own averaged BatchNorm buffers,
        rank 0's under torchrun); None without --ema."""
        if self.ema is None:
            return None
        self.team.share_buffers(self.ema.module)
        return validate(self.ema.module, self.test_loader, self.device, self.autocast, guard)

    def recompute_batch_norm(self, network: nn.Module | None = None) -> None:
        """BatchNorm's running statistics of ``network`` (the run's, by default), replaced by their averages over
        the training images as they pass it now (torch's ``update_bn``: one pass in train mode, momentum None).
        Training reads the batch's own statistics, never these, so the weights train exactly as without; the
        checkpoint holds the recomputed statistics, and a resumed run recomputes the same ones."""
        if self.batch_norm_images is None:
            self.batch_norm_images = loaders.in_order(
                self.train_loader.dataset, self.test_loader, self.config["batch_size"]
            )
        with self.autocast():
            update_bn(self.batch_norm_images, self.model if network is None else network)

    def add_epoch(
        self,
        train_loss: float,
        test_loss: float,
        train_acc: float,
        test_acc: float,
        lrs: list[float],
        ema: tuple[float, float] | None = None,
        swa: tuple[float, float] | None = None,
    ) -> None:
        """One more complete epoch: its losses and accuracies, and the rate of each of its batches. Called
        only once the epoch is complete, so the history (and every file written from it) never holds part
        of an epoch."""
        for key, value in (
            ("train_loss", train_loss),
            ("test_loss", test_loss),
            ("train_acc", train_acc),
            ("test_acc", test_acc),
        ):
            self.history[key].append(value)
        if ema is not None:  # --ema: the moving average's test loss and accuracy
            self.history["ema_test_loss"].append(ema[0])
            self.history["ema_test_acc"].append(ema[1])
        if self.swa is not None:  # --swa-start: the average's, after the last epoch; None (null) before
            self.history["swa_test_loss"].append(None if swa is None else swa[0])
            self.history["swa_test_acc"].append(None if swa is None else swa[1])
        self.history["lr"].extend(lrs)
        self.epochs_done += 1

    def write_outputs(self, figures: bool) -> None:
        """The pickles and metrics of the epochs so far (figures if asked), from rank 0."""
        if self.team.is_main:
            save_outputs(self.files, self.history, figures)

    def catch_up(self, figures: bool) -> None:
        """On resume, the outputs as of the checkpoint: pickles and metrics (figures if asked), and the snapshot
        if one is due and missing or damaged (the last session may have stopped between writing the checkpoint
        and it). Earlier snapshots cannot be made again: a damaged one is named in a warning."""
        if self.epochs_done and self.team.is_main:
            self.write_outputs(figures)
            due = self.files.snapshot(self.epochs_done)
            if not checkpoint.looks_whole(due):
                self.snapshot_if_cycle_ends()
            damaged = [str(p) for p in layout.snapshots_in(self.files.run_dir)[0] if not checkpoint.looks_whole(p)]
            if damaged:
                print(
                    f"warning: {', '.join(damaged)} cannot be read and cannot be made again (the networks they held "
                    "are gone): the snapshot ensembles of this run will lack them. Restore them from a backup if "
                    "there is one.",
                    file=sys.stderr,
                )

    def snapshot_if_cycle_ends(self) -> None:
        """With warm restarts, keep the network as it is at the end of each cycle, just before the
        restart: the members of the paper's snapshot ensembles, at no extra training cost. (After a
        warmup the cycles end that much later; with a cycle limit there are no more after the last.)"""
        c = self.config
        if self.team.is_main and self.epochs_done in run_cycle_ends(c, self.epochs_done):
            classes = cifar.DATASETS[c["dataset"]].classes
            inputs = {
                "mean": self.test_loader.mean.cpu(),
                "std": self.test_loader.std.cpu(),
            }  # how to normalise test images
            checkpoint.save_snapshot(
                self.files.snapshot(self.epochs_done), self.model, c, self.epochs_done, classes, inputs
            )


def setup(
    args: argparse.Namespace,
    team: Team | None = None,
    device: torch.device | None = None,
    data: tuple[Any, Any] | None = None,
) -> Experiment:
    """Check the request (nothing is written before it passes), then build or restore the run.

    ``data``: the (training, test) sets to use instead of those in ``args.data_dir`` (bench.py's
    synthetic ones); ``args.train_subset`` and ``args.test_subset`` do not apply to them.
    """
    team = team or Team()
    # A seed drawn here is rank 0's in every process: each draws from the same permutation its share
    # of every batch, and the seed printed repeats the run. (Before the refusals: a collective.)
    drawn = team.from_main(secrets.randbelow(2**31)) if args.seed is None else None
    # Every process checks its own request and data; a refusal by any of them reaches all before the
    # first collective (DDP's), so no process waits for one that has gone.
    with team.refusals():
        device = device or pick_device(args.device)
        files = layout.files_of(args)
        saved = open_checkpoint(args, files)
        if args.seed is not None:
            seed = args.seed
        else:
            seed = saved["config"]["seed"] if saved is not None else drawn
        settings.resolve_defaults(args, saved["config"] if saved is not None else None, device)
        config = settings.config_of(args, seed, team.world)
        known = {k: v for k, v in saved["config"].items() if k != "data"} if saved is not None else {}
        if saved is not None and (differences := settings.differences(known, config)):
            raise UserError(
                f"this run's checkpoint {files.checkpoint} was made with other settings: "
                f"{'; '.join(differences)}. Resume with the original settings, or start over with --overwrite."
            )
        random.seed(seed)
        torch.manual_seed(seed)
        generator = torch.Generator().manual_seed(seed)
        set_precision(args.tf32)
        set_determinism(args.deterministic, device)
        recipe = RECIPES[args.recipe]
        if data is None:
            data = cifar.load_splits(args.data_dir, args.train_subset, args.test_subset, args.dataset)
        train_set, test_set = data
        # What identifies the images (not their folder): runs on other data are other experiments.
        digest = cifar.data_digest(train_set, test_set)
        if saved is not None and saved["config"].get("data", digest) != digest:
            raise UserError(
                f"this run's checkpoint {files.checkpoint} was trained on other images than those in "
                f"{args.data_dir} (data {saved['config']['data']}, here {digest}). Resume with the data it "
                "trained on, or start over with --overwrite."
            )
        # A run from before the digest keeps none: nothing says which images it had.
        config["data"] = digest if saved is None or "data" in saved["config"] else None
        remainder = 0 if recipe.drop_last else len(train_set) % args.batch_size  # images in a last partial batch
        if remainder % team.world:
            raise UserError(
                f"the last training batch ({remainder} images) does not split evenly "
                f"over {team.world} processes; choose a --train-subset whose remainder does."
            )
        train_loader, test_loader = loaders.make_loaders(
            train_set,
            test_set,
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
            train_loader = loaders.WithoutLastBatch(train_loader)  # one image per process: left out, said in the header
            if len(train_loader) == 0:
                raise UserError(
                    f"{args.model} cannot train on a batch of one image per process (BatchNorm needs two), and "
                    f"{len(train_set)} training image(s) give no other batch: use a larger --train-subset."
                )
    model = build_network(args.model, num_classes=cifar.DATASETS[args.dataset].classes).to(device)
    if args.deterministic:
        deterministic_pooling(model)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = recipe.optimizer(model, args.lr)
    # The script's SGDR counts samples: T_cur grows by batch / samples per epoch after each batch.
    by_samples = (len(train_loader), args.batch_size / train_loader.samples) if recipe.sgdr_by_samples else None
    schedule = build_schedule(
        optimizer,
        args.warm_restart,
        args.t_zero,
        args.t_mult,
        args.milestones,
        by_samples=by_samples,
        warmup=args.warmup_epochs,
        warmup_start=args.warmup_start_lr,
        decay=args.cycle_decay,
        limit=args.cycle_limit,
        swa=(args.swa_start, args.swa_lr) if args.swa_start is not None else None,
    )
    # Compile the module, then wrap it in DDP: PyTorch's documented order (compiling the wrapper traces DDP's hooks).
    # Static shapes: one graph for each batch shape the network meets (train.py's header counts them),
    # each as fast as a graph for one shape can be, rather than one graph made dynamic on the way.
    compiled = torch.compile(model, dynamic=False) if args.compile else model
    net = compiled
    if team.world > 1:
        if args.sync_bn:
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)  # same parameters, shared statistics
        net = DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None)
    autocast = autocast_of(args.amp, device)
    exp = Experiment(
        config,
        device,
        files,
        model,
        optimizer,
        schedule,
        generator,
        train_loader,
        test_loader,
        net,
        compiled,
        autocast,
        team,
    )
    if args.ema is not None:
        exp.start_ema(args.ema)
    if args.swa_start is not None:
        exp.start_swa()
    if saved is not None:
        exp.restore(saved)
    if team.world > 1:
        exp.settle_buckets()
    team.barrier()  # every process has read what it needs before the first process writes
    if team.is_main:
        if args.overwrite:
            storage.remove(files.all())
            if kept := layout.snapshots_in(files.run_dir)[1]:
                print(f"Kept {', '.join(map(str, kept))}: not files of this project.")
        storage.remove_stale_temporaries(files.reference(), [files.run_dir, files.run_dir / layout.SNAPSHOTS])
    return exp


@contextmanager
def hold_run_folder(args: argparse.Namespace, team: Team, command: Sequence[str]) -> Iterator[None]:
    """While inside, rank 0 holds the run's folder (``lock.RunLock``); if it cannot, every process stops."""
    with ExitStack() as held:
        with team.refusals():
            if team.is_main:
                run_dir = layout.files_of(args).run_dir
                held.enter_context(lock.RunLock(run_dir, shlex.join(["python", *command])))
        yield

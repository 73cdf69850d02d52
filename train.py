"""Train a network on CIFAR with the multistep schedule or SGDR's cosine annealing with warm restarts: by
default the tutorial's ResNet34 on CIFAR-10 (--model, --dataset and --recipe for the paper's).

``run`` is the whole run, read top to bottom: set up (sgdr/run/experiment.py), then for each epoch train,
validate, step the schedule, save the checkpoint and then the outputs, printing every line of the
epoch from the loop itself (the accuracy before saving, the rest once the epoch is on disk).
The ways a run can stop early (a signal, a closed pipe, a non-finite loss, a full disk) are
handled around the loop, by ``stopping_cleanly`` and ``full_disk_is_a_message``. ``main`` reads
the flags (sgdr/run/settings.py) and joins the other processes under torchrun.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

import torch

from sgdr.cli import UserError, drop_stdout, reports_user_errors
from sgdr.data import loaders
from sgdr.parallel import distributed
from sgdr.parallel.distributed import Team
from sgdr.run.epoch import current_lr
from sgdr.run.experiment import Experiment, disk_full, hold_run_folder, resume_command, setup
from sgdr.run.record import DamagedRecord, RunRecord, read_record
from sgdr.run.settings import check_batch_size, check_team, parse_args
from sgdr.run.stopping import Guard, Interrupted, NonFiniteLoss, stop_on_signals
from sgdr.training.networks import count_parameters
from sgdr.training.recipes import RECIPES

# Drawing the figures takes ~0.3 s; pickles are written every epoch, figures at most this
# often (in seconds) and after the last epoch.
FIGURE_INTERVAL = 60.0


def run(
    args: argparse.Namespace,
    command: Sequence[str] = ("train.py",),
    team: Team | None = None,
    device: torch.device | None = None,
) -> dict[str, list[float]]:
    """The whole run for parsed ``args``; returns its history (per-epoch losses, per-batch rates).

    ``command`` is the command line (script first), for the run record and resume hints;
    ``team`` and ``device`` this process's place under torchrun.
    """
    team = team or Team()
    with hold_run_folder(args, team, command):
        exp = setup(args, team, device)
        print_header(exp)
        with full_disk_is_a_message(exp, command):
            if exp.resumed:  # bring the outputs up to the checkpoint (with the figures, if no epoch follows)
                exp.catch_up(figures=exp.epochs_done >= args.epochs)
            if exp.epochs_done >= args.epochs:
                if exp.resumed and not finished_at(exp.files.record, exp.epochs_done):
                    end_early(exp, args, command)
                else:
                    print(f"This run has finished all {exp.epochs_done} epochs already; nothing to do.")
                return exp.history
            if exp.resumed:
                print(f"Resuming after epoch {exp.epochs_done} from {exp.files.checkpoint}.")
            else:
                exp.save()  # so that even an interruption inside epoch 1 resumes exactly
            record = RunRecord(
                exp.files.record,
                shlex.join(["python", *command]),
                exp.config,
                args.epochs,
                exp.device,
                exp.epochs_done,
                resumed=exp.resumed,
                writes=team.is_main,
            )
            figures_due = time.monotonic() + FIGURE_INTERVAL
            # At each batch boundary ``guard`` stops every process after a signal or a non-finite loss.
            with stopping_cleanly(exp, record, command) as guard:
                for epoch in range(exp.epochs_done, args.epochs):
                    started = time.perf_counter()
                    print(f"[INFO]: Epoch {epoch + 1} of {args.epochs}")
                    print(f"LR at beginning of epoch: {current_lr(exp.optimizer)}")
                    guard.check(epoch)  # a stop asked for between epochs
                    train_loss, train_acc, lrs = exp.train_epoch(epoch, guard)
                    test_loss, test_acc = exp.validate(guard)
                    ema = exp.validate_ema(guard)
                    exp.average_weights(epoch)
                    swa = exp.validate_swa(guard) if epoch == args.epochs - 1 else None
                    exp.schedule.after_epoch()
                    exp.add_epoch(train_loss, test_loss, train_acc, test_acc, lrs, ema, swa)
                    print(f"Training accuracy: {train_acc:.2%}, test error: {1 - test_acc:.2%}")
                    if ema is not None:
                        print(f"Moving average of the weights (--ema): test error {1 - ema[1]:.2%}")
                    if exp.swa is not None:
                        print(swa_line(exp, swa))

                    figures = epoch == args.epochs - 1 or time.monotonic() >= figures_due
                    exp.save()  # first: the other files never describe more epochs than the checkpoint
                    exp.write_outputs(figures)
                    if figures:
                        figures_due = time.monotonic() + FIGURE_INTERVAL
                    exp.snapshot_if_cycle_ends()
                    record.epoch_done(exp.epochs_done)

                    print(f"LR at end of epoch: {current_lr(exp.optimizer)}")  # the rate the next epoch starts at
                    print(f"Training loss: {train_loss:.3f}")
                    print(f"Validation loss: {test_loss:.3f}")
                    print(f"Epoch time: {time.perf_counter() - started:.1f} s")
                    print("-" * 50)
            record.end("finished")
        print("Finished Training")
        print(f"Saved {', '.join(str(p) for p in exp.files.reference())}")
        return exp.history


@contextmanager
def stopping_cleanly(exp: Experiment, record: RunRecord, command: Sequence[str]) -> Iterator[Guard]:
    """Around the epochs: SIGINT and SIGTERM ask them to stop at the next batch boundary. A signal or a
    closed output leaves complete files and says how to resume; a non-finite loss becomes a message; any
    other error is recorded as the reason the session ended (a full disk is then reported by
    ``full_disk_is_a_message``). Gives the ``Guard`` that checks for a stop at each batch boundary."""
    with stop_on_signals() as stop:
        try:
            yield Guard(stop, exp.team)
        except (Interrupted, BrokenPipeError) as error:
            # Printing to a closed pipe (`python train.py | head`) stops the run as a signal does.
            closed = Interrupted(signal.SIGPIPE, "SIGPIPE (output closed)")
            stopped = error if isinstance(error, Interrupted) else closed
            try:
                record.end(f"interrupted by {stopped}")
                if not exp.team.is_main:
                    raise stopped from None
                if exp.saved_epochs != exp.epochs_done:  # the pipe closed between an epoch's end and its checkpoint
                    exp.save()
                if exp.epochs_done:
                    exp.write_outputs(figures=True)
            except KeyboardInterrupt:  # a second Ctrl-C while this one closes the run down (even the record)
                with suppress(OSError):
                    record.end("aborted")
                raise
            print(
                f"Stopped by {stopped}. {exp.files.checkpoint} holds {epochs(exp.epochs_done)}; "
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


def finished_at(path: Path, epochs_done: int) -> bool:
    """Whether the run record at ``path`` says the run finished, at ``epochs_done`` epochs."""
    try:
        record = read_record(path)
    except (OSError, DamagedRecord):
        return False
    return record.finished and record.epochs == epochs_done


def end_early(exp: Experiment, args: argparse.Namespace, command: Sequence[str]) -> None:
    """A run resumed with -e at or below the epochs its checkpoint holds, which its record does not say it finished
    at (it was planned longer): it ends there, as if planned so, and is recorded finished. With --swa-start, its
    average is validated now, if the last session stopped before its last epoch could."""
    done = exp.epochs_done
    command_line = shlex.join(["python", *command])
    record = RunRecord(
        exp.files.record, command_line, exp.config, done, exp.device, done, resumed=True, writes=exp.team.is_main
    )
    asks = "as many as" if done == args.epochs else "more than"
    print(f"This run holds {epochs(done)}, {asks} -e {args.epochs} asks: it ends there, and is recorded finished.")
    with stopping_cleanly(exp, record, command) as guard:
        if (swa := exp.validate_late_average(guard)) is not None:
            print(swa_line(exp, swa))
            exp.save()
            exp.write_outputs(figures=True)
    record.end("finished")


def swa_line(exp: Experiment, validated: tuple[float, float] | None) -> str:
    """--swa-start: how many epochs' weights the average holds, and its test error once validated."""
    start, count = exp.config["swa_start"], int(exp.swa.n_averaged)
    if not count:
        return f"SWA (--swa-start): averaging starts after epoch {start}"
    epochs_in = f"epoch {start}" if count == 1 else f"epochs {start}-{start + count - 1}"
    held = f"SWA (--swa-start): the average of the weights after {epochs_in}"
    if validated is None:
        return f"{held}; validated after the last epoch"
    return f"{held}, BatchNorm recomputed: test error {1 - validated[1]:.2%}"


def epochs(count: int) -> str:
    """``1 complete epoch``, ``3 complete epochs``."""
    return f"{count} complete epoch{'s' * (count != 1)}"


@contextmanager
def full_disk_is_a_message(exp: Experiment, command: Sequence[str]) -> Iterator[None]:
    """A full disk while writing stops the run with what is on disk and how to resume, not a traceback."""
    try:
        yield
    except OSError as error:
        if not disk_full(error):
            raise
        held = (
            "no checkpoint yet"
            if exp.saved_epochs is None
            else f"{exp.files.checkpoint} holds {epochs(exp.saved_epochs)}; the pickles, metrics, figures and "
            "snapshots hold no more, and are brought up to it on resume"
        )
        where = f": {error.filename}" if error.filename else ""
        raise UserError(
            f"the disk is full ({error.strerror}{where}). On disk: {held}. Free some space, "
            f"then resume with:\n  {resume_command(command)}"
        ) from None


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
        f"{len(exp.test_loader.dataset):,} validation images in {len(exp.test_loader)} batches."
    )
    if exp.config["compile"]:
        train, val = loaders.batch_sizes(exp.train_loader), loaders.batch_sizes(exp.test_loader)
        sizes = (
            f"training batches of {' and '.join(map(str, train))}, validation batches of {' and '.join(map(str, val))}"
        )
        print(
            f"torch.compile: {len(train) + len(val)} compilations in the first epoch, one for each batch shape: "
            f"{sizes} images{' per process' if exp.team.world > 1 else ''}."
        )
    if isinstance(exp.train_loader, loaders.WithoutLastBatch):
        print(
            f"The last training batch, of one image{' per process' if exp.team.world > 1 else ''}, is left out of "
            f"every epoch: one of {exp.config['model']}'s BatchNorm layers would see a single value per channel."
        )


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

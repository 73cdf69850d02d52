"""One epoch of a run: training over every batch, and validation on the test set."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from sgdr.run.stopping import Guard, NonFiniteWatch
from sgdr.training.networks import top1_correct
from sgdr.training.schedules import Schedule


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return optimizer.param_groups[0]["lr"]


def train_epoch(
    model: nn.Module,
    loader,
    optimizer: torch.optim.Optimizer,
    schedule: Schedule,
    epoch: int,
    device: torch.device,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    guard: Guard | None = None,
    after_step: Callable[[], None] | None = None,
) -> tuple[float, float, list[float]]:
    """One pass over ``loader`` (batches already on ``device``); returns the mean training loss per
    sample and the top-1 accuracy, both of each batch as it was trained (over all processes), and
    the rate each batch was trained with.

    The loss is summed on the device and read once at the end, so the loop never waits for the
    device. ``after_step``, if given, is called after every optimiser step (the weights' moving average).
    After each batch ``guard`` may stop the epoch: ``NonFiniteLoss`` as soon as a loss is seen to be NaN
    or infinite, ``Interrupted`` after a signal.
    """
    guard = guard or Guard()
    model.train()
    batches = len(loader)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    samples = torch.zeros((), dtype=torch.long, device=device)
    watch = NonFiniteWatch(device)
    lrs: list[float] = []
    for i, (images, labels) in enumerate(tqdm(loader, desc="Training", total=batches, disable=None, file=sys.stdout)):
        lrs.append(current_lr(optimizer))
        optimizer.zero_grad(set_to_none=True)
        with autocast():
            logits = model(images)
            loss = F.cross_entropy(logits, labels)
        loss.backward()
        optimizer.step()
        if after_step is not None:
            after_step()
        schedule.after_batch(epoch, i, batches)
        loss_sum += loss.detach() * labels.size(0)
        correct += top1_correct(logits.detach(), labels)
        samples += labels.size(0)
        watch.update(loss.detach(), i)
        guard.after_batch(i, epoch, watch.first_seen())
    guard.team.sum(loss_sum, correct, samples)
    mean = (loss_sum / samples).item()
    guard.check(epoch, watch.first_seen())  # exact now: the device has caught up
    return mean, correct.item() / samples.item(), lrs


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
    batches = tqdm(loader, desc="Validation", total=len(loader), disable=None, file=sys.stdout)
    for i, (images, labels) in enumerate(batches):
        with autocast():
            logits = model(images)
            loss_sum += F.cross_entropy(logits, labels, reduction="sum")
        correct += top1_correct(logits, labels)
        samples += labels.size(0)
        guard.after_batch(i)
    guard.team.sum(loss_sum, correct, samples)
    return (loss_sum / samples).item(), correct.item() / samples.item()

"""Learning-rate schedules: the multistep default and SGDR's cosine annealing with warm restarts."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts, LRScheduler, MultiStepLR


def sgdr_lr(t_cur: float, t_i: float, eta_max: float, eta_min: float = 0.0) -> float:
    """The paper's eq. (5): eta_min + (eta_max - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2."""
    return eta_min + 0.5 * (eta_max - eta_min) * (1.0 + math.cos(math.pi * t_cur / t_i))


def locate_cycle(epoch: float, t_0: int, t_mult: int) -> tuple[int, int]:
    """(first epoch, length) of the cycle that contains ``epoch``, in exact integer arithmetic.

    Cycles have lengths T_0, T_0 * T_mult, T_0 * T_mult**2, ... and start at integer
    epochs, so the integer part of ``epoch`` decides the cycle. torch's closed form takes
    a floating-point logarithm instead and lands one cycle low at some exact restarts
    when T_mult >= 3: at epoch 121 with T_0 = 1, T_mult = 3 and at epoch 1210 with T_0 = 10,
    T_mult = 3, log(243, 3) evaluates to 4.999999999999999.
    """
    whole = math.floor(epoch)
    if t_mult == 1:
        return whole - whole % t_0, t_0
    start, length = 0, t_0
    while start + length <= whole:
        start += length
        length *= t_mult
    return start, length


def cycle_ends(t_0: int, t_mult: int, epochs: int) -> list[int]:
    """Epoch counts (1-based) at which a cycle ends within ``epochs``: where snapshots are taken.

    T_0 = 10, T_mult = 2: 10, 30, 70, 150; T_0 = 50, T_mult = 1: 50, 100, 150, 200.
    """
    ends, length, end = [], t_0, t_0
    while end <= epochs:
        ends.append(end)
        length *= t_mult
        end += length
    return ends


def ends_a_cycle(epochs_done: int, t_0: int, t_mult: int) -> bool:
    """Whether the epoch just finished (``epochs_done`` counted from 1) was the last of its cycle."""
    return epochs_done > 0 and locate_cycle(epochs_done, t_0, t_mult)[0] == epochs_done


class WarmRestarts(CosineAnnealingWarmRestarts):
    """torch's ``CosineAnnealingWarmRestarts`` with the cycle located exactly (see ``locate_cycle``).

    Same constructor, same state and the same fractional-epoch ``step(epoch)`` interface;
    only the choice of cycle differs, and only where torch's logarithm rounds down.
    """

    def step(self, epoch: float | None = None) -> None:
        if epoch is None:  # integer stepping is exact in torch already
            super().step()
            return
        if epoch < 0:
            raise ValueError(f"Expected non-negative epoch, but got {epoch}")
        self.T_cur, self.T_i = self.position(epoch)
        self.last_epoch = math.floor(epoch)
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = sgdr_lr(self.T_cur, self.T_i, base_lr, self.eta_min)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def position(self, epoch: float) -> tuple[float, int]:
        """(T_cur, T_i) at the fractional epoch ``epoch``: epochs since the cycle began, and its length."""
        start, length = locate_cycle(epoch, self.T_0, self.T_mult)
        return epoch - start, length


class SampleWarmRestarts(WarmRestarts):
    """SGDR as the authors' script steps it: T_cur counts samples, not batches of an epoch.

    After every batch T_cur grows by ``increment`` (batch size / samples per epoch: 128 / 100,000
    for CIFAR-10, while an epoch has 781 batches), and the rate becomes eq. (5) of it. At the end
    of an epoch that closes a cycle T_cur goes back to 0 and T_i grows by T_mult. Called, as
    WarmRestarts is, with ``epoch + batch / batches`` after batch ``batch`` of epoch ``epoch``,
    it computes T_cur in closed form from that position: (batches since the cycle began) x
    ``increment``, equal to the script's running sum to float rounding, and nothing extra to save.
    """

    def __init__(self, optimizer: Optimizer, T_0: int, T_mult: int, batches: int, increment: float):
        self.batches, self.increment = batches, increment
        super().__init__(optimizer, T_0=T_0, T_mult=T_mult, eta_min=0.0)

    def position(self, epoch: float) -> tuple[float, int]:
        """(T_cur, T_i) after batch ``batch`` of epoch ``whole``, where ``epoch = whole + batch / batches``."""
        whole = math.floor(epoch)
        batch = round((epoch - whole) * self.batches)  # exact: batch / batches is far above rounding
        start, length = locate_cycle(whole, self.T_0, self.T_mult)
        return ((whole - start) * self.batches + batch + 1) * self.increment, length


@dataclass
class Schedule:
    """When the training loop steps its scheduler: after every batch or after every epoch.

    The loop calls both hooks unconditionally, so it reads the same for either schedule.
    """

    scheduler: LRScheduler
    per_batch: bool

    def after_batch(self, epoch: int, batch: int, batches: int) -> None:
        """After ``optimizer.step()``: SGDR moves to the fractional epoch ``epoch + batch / batches``.

        So the next batch uses the rate of this batch's position: the first batch of a run
        uses eta_max, and the first batch after a restart still uses the previous cycle's
        last rate (the reference's one-batch lag).
        """
        if self.per_batch:
            self.scheduler.step(epoch + batch / batches)

    def after_epoch(self) -> None:
        """After validation: the multistep schedule counts epochs."""
        if not self.per_batch:
            self.scheduler.step()

    def describe(self) -> str:
        """The line a run prints to say which schedule it uses."""
        s = self.scheduler
        if isinstance(s, CosineAnnealingWarmRestarts):
            line = f"Using cosine annealing with warm restarts: T_0 = {s.T_0}, T_mult = {s.T_mult}"
            line += f", eta_min = {s.eta_min:g}"
            if isinstance(s, SampleWarmRestarts):
                return f"{line}; T_cur grows by {s.increment:.8g} of an epoch per batch (the SGDR script's stepping)."
            return f"{line}."
        epochs = ", ".join(str(m) for m in sorted(s.milestones))
        return f"Using the multistep schedule: lr x {s.gamma:g} at epochs {epochs}."


def build_schedule(
    optimizer: Optimizer,
    warm_restart: bool,
    t_zero: int,
    t_mult: int,
    milestones: list[int],
    gamma: float = 0.2,
    by_samples: tuple[int, float] | None = None,
) -> Schedule:
    """SGDR stepped per batch when ``warm_restart``, else the multistep default stepped per epoch.

    ``by_samples``: (batches per epoch, batch size / samples per epoch) for the script's stepping
    (``SampleWarmRestarts``); None for the tutorial's fractional epochs.
    """
    if warm_restart and by_samples is not None:
        return Schedule(SampleWarmRestarts(optimizer, t_zero, t_mult, *by_samples), per_batch=True)
    if warm_restart:
        return Schedule(WarmRestarts(optimizer, T_0=t_zero, T_mult=t_mult, eta_min=0.0), per_batch=True)
    return Schedule(MultiStepLR(optimizer, milestones=milestones, gamma=gamma), per_batch=False)

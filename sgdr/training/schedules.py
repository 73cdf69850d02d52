"""Learning-rate schedules: the multistep default and SGDR's cosine annealing with warm restarts,
optionally shaped by a linear warmup, a decay of each cycle's peak and a limit on the cycles; and beside
them the schedule of Stochastic Weight Averaging (SWA, Izmailov et al. 2018), under which a run averages
its weights."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts, LRScheduler, MultiStepLR


def sgdr_lr(t_cur: float, t_i: float, eta_max: float, eta_min: float = 0.0) -> float:
    """The paper's eq. (5): eta_min + (eta_max - eta_min) * (1 + cos(pi * T_cur / T_i)) / 2."""
    return eta_min + 0.5 * (eta_max - eta_min) * (1.0 + math.cos(math.pi * t_cur / t_i))


# The reference's multistep schedule: the rate x GAMMA after each of these epochs.
MILESTONES, GAMMA = (60, 120, 160), 0.2
# The shaping options of warm restarts (train.py's --warmup-epochs, --warmup-start-lr, --cycle-decay and
# --cycle-limit), by their names in a run's settings, at the values that leave the schedule as it is:
# no warmup, every cycle peaking at eta_max, restarts for as long as the run lasts.
OPTION_DEFAULTS = {"warmup_epochs": 0, "warmup_start_lr": 0.0, "cycle_decay": 1.0, "cycle_limit": None}


def locate_cycle(epoch: float, t_0: int, t_mult: int) -> tuple[int, int]:
    """(first epoch, length) of the cycle that contains ``epoch``, in exact integer arithmetic.

    Cycles have lengths T_0, T_0 * T_mult, T_0 * T_mult**2, ... and start at integer
    epochs, so the integer part of ``epoch`` decides the cycle. torch's closed form takes
    a floating-point logarithm instead and lands one cycle low at some exact restarts
    when T_mult >= 3: at epoch 121 with T_0 = 1, T_mult = 3 and at epoch 1210 with T_0 = 10,
    T_mult = 3, log(243, 3) evaluates to 4.999999999999999.
    """
    return cycle_of(epoch, t_0, t_mult)[1:]


def cycle_of(epoch: float, t_0: int, t_mult: int) -> tuple[int, int, int]:
    """(index from 0, first epoch, length) of the cycle that contains ``epoch``: ``locate_cycle``
    with the number of cycles before it."""
    whole = math.floor(epoch)
    if t_mult == 1:
        return whole // t_0, whole - whole % t_0, t_0
    index, start, length = 0, 0, t_0
    while start + length <= whole:
        index += 1
        start += length
        length *= t_mult
    return index, start, length


def cycle_ends(t_0: int, t_mult: int, epochs: int, warmup: int = 0, limit: int | None = None) -> list[int]:
    """Epoch counts (1-based) at which a cycle ends within ``epochs``: where snapshots are taken.

    T_0 = 10, T_mult = 2: 10, 30, 70, 150; T_0 = 50, T_mult = 1: 50, 100, 150, 200. A warmup of
    ``warmup`` epochs comes first and moves every end by as much (T_0 = 10, T_mult = 2, warmup 5:
    15, 35, 75, 155); with a ``limit`` the ends stop after that many cycles.
    """
    ends, length, end = [], t_0, warmup + t_0
    while end <= epochs and (limit is None or len(ends) < limit):
        ends.append(end)
        length *= t_mult
        end += length
    return ends


def ends_a_cycle(epochs_done: int, t_0: int, t_mult: int, warmup: int = 0, limit: int | None = None) -> bool:
    """Whether the epoch just finished (``epochs_done`` counted from 1) was the last of its cycle
    (after a warmup of ``warmup`` epochs, and of one of the first ``limit`` cycles if a limit is set)."""
    if epochs_done <= warmup:
        return False
    index, start, _ = cycle_of(epochs_done - warmup, t_0, t_mult)
    return start == epochs_done - warmup and (limit is None or index <= limit)


def run_cycle_ends(config: dict[str, Any], epochs: int) -> list[int]:
    """The cycle ends within ``epochs`` of the run whose settings are ``config`` (run.json's or a
    checkpoint's): none for the multistep schedule; a shaping option it lacks is at its default."""
    if not config.get("warm_restart"):
        return []
    options = {**OPTION_DEFAULTS, **config}
    return cycle_ends(
        config["t_zero"], config["t_mult"], epochs, warmup=options["warmup_epochs"], limit=options["cycle_limit"]
    )


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


class ShapedWarmRestarts(WarmRestarts):
    """Warm restarts after a linear warmup, with a peak that decays at each restart and a limit on the
    number of cycles; stepped as ``WarmRestarts`` (``by_samples`` None) or as ``SampleWarmRestarts``
    (``by_samples``: batches per epoch, and T_cur's increment per batch). See docs/experiment.md.

    ``warmup`` epochs come first, the rate going linearly from ``warmup_start`` to eta_max (each
    group's initial rate); T_0 counts from their end. Cycle k (from 0) peaks at eta_max * ``decay``**k.
    After ``limit`` cycles (None: no limit) the rate stays at eta_min (0). As in the classes above,
    each step computes its rate in closed form from the position it is given, so the state holds
    nothing the options and that position do not give again; with every option at its default the
    rates are those of ``WarmRestarts`` or ``SampleWarmRestarts``, bit for bit.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        T_0: int,
        T_mult: int,
        warmup: int = 0,
        warmup_start: float = 0.0,
        decay: float = 1.0,
        limit: int | None = None,
        by_samples: tuple[int, float] | None = None,
    ):
        self.warmup, self.warmup_start, self.decay, self.limit = warmup, warmup_start, decay, limit
        self.batches, self.increment = by_samples if by_samples is not None else (None, None)
        self.cycle = 0  # -1 during the warmup
        super().__init__(optimizer, T_0=T_0, T_mult=T_mult, eta_min=0.0)

    def step(self, epoch: float | None = None) -> None:
        """To the position ``epoch`` (``epoch + batch / batches`` after that batch); without one, only
        as the constructor does: to the start of the run (the start of the warmup, or of cycle 0)."""
        if epoch is None:
            if self.last_epoch >= 0:
                raise ValueError(f"{type(self).__name__} steps to a position (epoch + batch / batches) only")
            self.cycle, self.T_cur, self.T_i = (-1, 0.0, self.warmup) if self.warmup else (0, 0.0, self.T_0)
            self.last_epoch = 0
        else:
            if epoch < 0:
                raise ValueError(f"Expected non-negative epoch, but got {epoch}")
            self.cycle, self.T_cur, self.T_i = self.place(epoch)
            self.last_epoch = math.floor(epoch)
        for group, base_lr in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = self.rate(base_lr)
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def place(self, epoch: float) -> tuple[int, float, int]:
        """(cycle, T_cur, T_i) at ``epoch``. Cycle -1 is the warmup, T_cur then its progress and T_i its
        length; cycles count from the warmup's end. Fractional epochs: T_cur is the epochs since the
        segment began. The script's stepping: (batches since it began, this one included) x increment."""
        if self.increment is None:
            if epoch < self.warmup:
                return -1, epoch, self.warmup
            index, start, length = cycle_of(epoch - self.warmup, self.T_0, self.T_mult)
            return index, epoch - self.warmup - start, length
        whole = math.floor(epoch)
        batch = round((epoch - whole) * self.batches)  # exact, as in SampleWarmRestarts
        if whole < self.warmup:
            return -1, (whole * self.batches + batch + 1) * self.increment, self.warmup
        index, start, length = cycle_of(whole - self.warmup, self.T_0, self.T_mult)
        return index, ((whole - self.warmup - start) * self.batches + batch + 1) * self.increment, length

    def rate(self, base_lr: float) -> float:
        """The rate of a group whose eta_max is ``base_lr``, at the position of the last step."""
        if self.cycle < 0:
            return self.warmup_start + (base_lr - self.warmup_start) * self.T_cur / self.warmup
        if self.limit is not None and self.cycle >= self.limit:
            return self.eta_min
        return sgdr_lr(self.T_cur, self.T_i, base_lr * self.decay**self.cycle, self.eta_min)

    def options(self) -> list[str]:
        """The options that are set, as the schedule line says them."""
        said = []
        if self.warmup:
            said.append(
                f"first a linear warmup from lr {self.warmup_start:g} to eta_max over {self.warmup} "
                f"epoch{'s' if self.warmup > 1 else ''} (T_0 counts from its end)"
            )
        if self.decay != 1:
            said.append(f"cycle k (from 0) peaks at eta_max x {self.decay:g}**k")
        if self.limit is not None:
            said.append(f"{self.limit} cycle{'s' if self.limit > 1 else ''}, then lr {self.eta_min:g} with no restart")
        return said


def swa_rate(epoch: int, start: int, lr: float, swa_lr: float) -> float:
    """The rate of epoch ``epoch`` (counted from 0) under SWA's own schedule (Izmailov et al. 2018, their
    schedule for CIFAR, budget fractions as their script has them): with t = epoch / ``start``, ``lr`` while
    t <= 0.5, then falling linearly to ``swa_lr`` at t = 0.9, and ``swa_lr`` from there on, which is the
    constant rate the weights are averaged under from epoch ``start`` (counted from 1) to the end."""
    t = epoch / start
    if t <= 0.5:
        return lr
    ratio = swa_lr / lr
    factor = 1.0 - (1.0 - ratio) * (t - 0.5) / 0.4 if t <= 0.9 else ratio
    return lr * factor


class SwaRate(LRScheduler):
    """SWA's schedule (``swa_rate``), stepped after every epoch: the rate of each epoch in closed form from its
    index, so the state (``last_epoch``, the base rates, ``start`` and ``swa_lr``) gives it again on resume.

    A constant rate after the decay, as torch's ``SWALR`` holds one once its annealing is over; SWA's own
    schedule reaches ``swa_lr`` at 0.9 x ``start``, before the averaging begins, so there is nothing left
    for ``SWALR`` to anneal, and one closed form gives the whole schedule bit for bit on resume."""

    def __init__(self, optimizer: Optimizer, start: int, swa_lr: float):
        self.start, self.swa_lr = start, swa_lr
        super().__init__(optimizer)

    def get_lr(self) -> list[float]:
        return [swa_rate(self.last_epoch, self.start, base, self.swa_lr) for base in self.base_lrs]

    def describe(self) -> str:
        """The schedule line: its phases by epoch (counted from 1), as ``swa_rate`` gives them: ``lr`` up to
        epoch index start / 2, ``swa_lr`` from 0.9 x start on, a linear change in the epochs between (if any)."""
        lr, swa_lr, start = self.base_lrs[0], self.swa_lr, self.start
        flat = start // 2 + 1  # the last epoch at lr: index e with e / start <= 1/2, from 1
        low = -(-9 * start // 10) + 1  # the first at swa_lr: index e with e / start >= 9/10, from 1
        if lr == swa_lr:
            rates = f"lr {lr:g} throughout"
        else:
            rates = f"lr {lr:g} in {f'epochs 1-{flat}' if flat > 1 else 'epoch 1'}"
            if low > flat + 1:
                between = f"epochs {flat + 1}-{low - 1}" if low > flat + 2 else f"epoch {flat + 1}"
                rates += f", {'falling' if swa_lr < lr else 'rising'} linearly in {between}"
            rates += f", {swa_lr:g} from epoch {low}"
        return (
            f"Using SWA's schedule (Izmailov et al. 2018): {rates}; from epoch {start} on, the weights after each "
            "epoch join an equal-weight average (torch's AveragedModel), whose BatchNorm statistics are recomputed "
            "(update_bn) before it is validated after the last epoch."
        )


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
        uses eta_max (the warmup's start rate if there is one), and the first batch after a
        restart still uses the previous cycle's last rate (the reference's one-batch lag).
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
        if isinstance(s, SwaRate):
            return s.describe()
        if isinstance(s, CosineAnnealingWarmRestarts):
            line = f"Using cosine annealing with warm restarts: T_0 = {s.T_0}, T_mult = {s.T_mult}"
            line += f", eta_min = {s.eta_min:g}"
            if isinstance(s, ShapedWarmRestarts):
                line = "; ".join([line, *s.options()])
            if getattr(s, "increment", None) is not None:  # SampleWarmRestarts, or shaped and stepped so
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
    gamma: float = GAMMA,
    by_samples: tuple[int, float] | None = None,
    warmup: int = 0,
    warmup_start: float = 0.0,
    decay: float = 1.0,
    limit: int | None = None,
    swa: tuple[int, float] | None = None,
) -> Schedule:
    """SGDR stepped per batch when ``warm_restart``, else the multistep default stepped per epoch, or with
    ``swa`` (the epoch averaging starts at, and the rate it runs at) SWA's schedule, stepped per epoch.

    ``by_samples``: (batches per epoch, batch size / samples per epoch) for the script's stepping
    (``SampleWarmRestarts``); None for the tutorial's fractional epochs. ``warmup``, ``warmup_start``,
    ``decay`` and ``limit`` shape warm restarts (``ShapedWarmRestarts``); at their defaults the
    schedule is the unshaped class, as it was before they existed.
    """
    options = {"warmup_epochs": warmup, "warmup_start_lr": warmup_start, "cycle_decay": decay, "cycle_limit": limit}
    shaped = options != OPTION_DEFAULTS
    if shaped and not warm_restart:
        raise ValueError("a warmup, a cycle decay and a cycle limit shape warm restarts only")
    if swa is not None:
        if warm_restart or shaped:
            raise ValueError("SWA's schedule replaces the multistep one; it takes no warm restarts")
        return Schedule(SwaRate(optimizer, *swa), per_batch=False)
    if shaped:
        scheduler = ShapedWarmRestarts(optimizer, t_zero, t_mult, warmup, warmup_start, decay, limit, by_samples)
        return Schedule(scheduler, per_batch=True)
    if warm_restart and by_samples is not None:
        return Schedule(SampleWarmRestarts(optimizer, t_zero, t_mult, *by_samples), per_batch=True)
    if warm_restart:
        return Schedule(WarmRestarts(optimizer, T_0=t_zero, T_mult=t_mult, eta_min=0.0), per_batch=True)
    return Schedule(MultiStepLR(optimizer, milestones=milestones, gamma=gamma), per_batch=False)

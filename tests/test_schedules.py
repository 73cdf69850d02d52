"""The learning rate train.py applies at every batch, against the paper's eq. (5) and the multistep steps."""

from __future__ import annotations

import bisect
import itertools
import math
import re
from fractions import Fraction

import pytest
import torch
from conftest import documentation
from torch import nn
from torch.optim.lr_scheduler import CosineAnnealingWarmRestarts

from sgdr.run.epoch import train_epoch
from sgdr.training import recipes, schedules
from sgdr.training.schedules import Schedule, WarmRestarts, build_schedule, locate_cycle

ETA_MAX = 0.05
CPU = torch.device("cpu")


def eq5(t_cur: Fraction, t_i: int) -> float:
    """The paper's eq. (5) with eta_min = 0, from an exact position inside the cycle."""
    return 0.5 * ETA_MAX * (1 + math.cos(math.pi * float(t_cur / t_i)))


def oracle_lrs(t_0: int, t_mult: int, epochs: int, batches: int) -> list[float]:
    """The rate each batch must use: eq. (5) at the previous batch's position (the reference's
    one-batch lag), eta_max for the very first batch. Restarts come from the geometric series."""
    restarts = [0]
    while restarts[-1] <= epochs:
        restarts.append(restarts[-1] + t_0 * t_mult ** (len(restarts) - 1))
    rates = [ETA_MAX]
    for step in range(epochs * batches - 1):
        position = Fraction(step, batches)  # epoch + i / iters of the batch just trained
        n = bisect.bisect_right(restarts, position) - 1
        rates.append(eq5(position - restarts[n], t_0 * t_mult**n))
    return rates


def tiny_setup(batches: int):
    """A one-weight stand-in for the network, and a loader of ``batches`` one-image batches."""
    torch.manual_seed(0)
    model = nn.Linear(1, 2)
    loader = [(torch.ones(1, 1), torch.zeros(1, dtype=torch.long))] * batches
    optimizer = recipes.reference_optimizer(model)
    return model, loader, optimizer


def applied_lrs(
    warm_restart: bool, t_0: int, t_mult: int, epochs: int, batches: int, milestones=(60, 120, 160)
) -> list[float]:
    """Run train.py's own epoch loop (train_epoch, then the end-of-epoch step) and collect its rates."""
    model, loader, optimizer = tiny_setup(batches)
    schedule = build_schedule(optimizer, warm_restart, t_0, t_mult, list(milestones))
    lrs: list[float] = []
    for epoch in range(epochs):
        lrs += train_epoch(model, loader, optimizer, schedule, epoch, CPU)[2]
        schedule.after_epoch()
    return lrs


@pytest.mark.parametrize("t_mult", [1, 2, 3, 4])
@pytest.mark.parametrize("t_0", [1, 10, 50, 200])
def test_every_batch_follows_eq5_over_2000_epochs(t_0, t_mult):
    epochs, batches = 2000, 2  # positions e and e + 1/2: every restart epoch and every mid-epoch
    got = applied_lrs(True, t_0, t_mult, epochs, batches)
    want = oracle_lrs(t_0, t_mult, epochs, batches)
    assert len(got) == len(want) == epochs * batches
    bad = [(k // batches, k % batches, g, w) for k, (g, w) in enumerate(zip(got, want)) if abs(g - w) > 1e-12]
    assert not bad, f"(epoch, batch, applied, eq. 5) first mismatches: {bad[:5]}"


@pytest.mark.parametrize(("t_0", "t_mult", "epochs", "batches"), [(1, 3, 130, 7), (2, 2, 70, 5), (3, 1, 12, 391)])
def test_fractional_positions_follow_eq5(t_0, t_mult, epochs, batches):
    got = applied_lrs(True, t_0, t_mult, epochs, batches)
    want = oracle_lrs(t_0, t_mult, epochs, batches)
    assert max(abs(g - w) for g, w in zip(got, want)) < 1e-12


def test_restart_batches_reach_eta_max_after_the_one_batch_lag():
    # T_0 = 1, T_mult = 3 restarts at 1, 4, 13, 40, 121; at 121 torch's logarithm rounds low.
    batches = 4
    lrs = applied_lrs(True, 1, 3, 130, batches)
    for restart, previous_length in [(1, 1), (4, 3), (13, 9), (40, 27), (121, 81)]:
        first = restart * batches
        # The restart batch still uses the old cycle's last rate, the next one the peak.
        assert lrs[first] == pytest.approx(eq5(previous_length - Fraction(1, batches), previous_length), abs=1e-15)
        assert lrs[first + 1] == pytest.approx(ETA_MAX, abs=1e-15)


def test_the_oracle_catches_torchs_closed_form():
    """Guards the tests above: the same loop with torch's own scheduler fails the oracle."""
    model, loader, optimizer = tiny_setup(2)
    schedule = Schedule(CosineAnnealingWarmRestarts(optimizer, T_0=1, T_mult=3), per_batch=True)
    lrs: list[float] = []
    for epoch in range(130):
        lrs += train_epoch(model, loader, optimizer, schedule, epoch, CPU)[2]
    want = oracle_lrs(1, 3, 130, 2)
    wrong = [k // 2 for k, (g, w) in enumerate(zip(lrs, want)) if abs(g - w) > 1e-12]
    if not wrong:
        pytest.skip("torch's closed form is exact here; WarmRestarts could defer to it")
    assert set(wrong) == {121}  # lr 0 instead of eta_max, one batch after this restart


def test_multistep_applies_the_four_reference_rates():
    lrs = applied_lrs(False, 50, 1, 200, 2)
    per_epoch = lrs[::2]
    assert lrs[1::2] == per_epoch  # constant within an epoch
    for (start, stop), rate in zip([(0, 60), (60, 120), (120, 160), (160, 200)], [0.05, 0.01, 0.002, 0.0004]):
        assert per_epoch[start:stop] == pytest.approx([rate] * (stop - start), rel=1e-12, abs=0)


@pytest.mark.parametrize(
    ("epoch", "t_0", "t_mult", "cycle"),
    [
        (0, 1, 3, (0, 1)),
        (0.999, 1, 3, (0, 1)),
        (1, 1, 3, (1, 3)),
        (3.9, 1, 3, (1, 3)),
        (13, 1, 3, (13, 27)),
        (39.5, 1, 3, (13, 27)),
        (40, 1, 3, (40, 81)),
        (150, 10, 2, (150, 160)),
        (149.99, 10, 2, (70, 80)),
        (199.75, 50, 1, (150, 50)),
        (200, 200, 1, (200, 200)),
    ],
)
def test_locate_cycle(epoch, t_0, t_mult, cycle):
    assert locate_cycle(epoch, t_0, t_mult) == cycle


def test_locate_cycle_agrees_with_the_geometric_series():
    for t_0, t_mult in itertools.product([1, 2, 7], [2, 3, 5]):
        restarts = [t_0 * (t_mult**n - 1) // (t_mult - 1) for n in range(12)]
        for n, start in enumerate(restarts[:-1]):
            assert locate_cycle(start, t_0, t_mult) == (start, t_0 * t_mult**n)
            assert locate_cycle(restarts[n + 1] - 0.5, t_0, t_mult) == (start, t_0 * t_mult**n)


def lr_after_step(scheduler_class, t_0: int, t_mult: int, epoch: float) -> float:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=ETA_MAX)
    scheduler_class(optimizer, T_0=t_0, T_mult=t_mult).step(epoch)
    return optimizer.param_groups[0]["lr"]


@pytest.mark.parametrize(("t_0", "t_mult", "epoch"), [(1, 3, 121), (10, 3, 1210)])
def test_torchs_own_scheduler_misses_these_restarts_and_ours_does_not(t_0, t_mult, epoch):
    assert math.log(epoch * (t_mult - 1) / t_0 + 1, t_mult) == 4.999999999999999  # 243 = 3**5, rounded down
    assert lr_after_step(CosineAnnealingWarmRestarts, t_0, t_mult, epoch) == 0.0  # the end of the old cycle
    assert lr_after_step(WarmRestarts, t_0, t_mult, epoch) == ETA_MAX  # the peak of the new one


@pytest.mark.parametrize("epoch", [1, 4, 13, 40])
def test_torchs_own_scheduler_gets_the_earlier_restarts_right(epoch):
    assert (
        lr_after_step(CosineAnnealingWarmRestarts, 1, 3, epoch) == ETA_MAX == lr_after_step(WarmRestarts, 1, 3, epoch)
    )


def test_every_restart_the_docs_say_torch_misses_is_one_it_misses():
    claims = set()
    for text in (documentation(), schedules.locate_cycle.__doc__):
        found = re.findall(r"epoch (\d+) with T_0 = (\d+),\s+T_mult = (\d+)", " ".join(text.split()))
        assert found, "the docs quote an example"
        claims |= {tuple(int(x) for x in claim) for claim in found}
    assert claims == {(121, 1, 3), (1210, 10, 3)}
    for epoch, t_0, t_mult in claims:
        assert lr_after_step(CosineAnnealingWarmRestarts, t_0, t_mult, epoch) == 0.0
        assert lr_after_step(WarmRestarts, t_0, t_mult, epoch) == ETA_MAX

"""The SGDR paper's numbers (its Tables 1 and 2, its claim of fewer epochs) and the setup they were measured
under, with where a run's figures stand beside them."""

from __future__ import annotations

import math
from fractions import Fraction

from sgdr.training.schedules import MILESTONES

# The paper's Table 1, its own rows ("WRN (ours)"): test error %, (CIFAR-10, CIFAR-100), the median of 5
# runs of WRN-28-10 and of 2 of WRN-28-20. A schedule is (eta_0, None) for the multistep default (x 0.2 after
# epochs 60, 120 and 160) or (eta_max, (T_0, T_mult)) for SGDR; both 200 epochs.
PAPER_TABLE1 = {
    "wrn-28-10": {
        (0.1, None): (4.24, 20.33),
        (0.05, None): (4.13, 20.21),
        (0.05, (50, 1)): (4.17, 19.99),
        (0.05, (100, 1)): (4.07, 19.87),
        (0.05, (200, 1)): (3.86, 19.98),
        (0.05, (1, 2)): (4.09, 19.74),
        (0.05, (10, 2)): (4.03, 19.58),
    },
    "wrn-28-20": {
        (0.1, None): (4.08, 19.53),
        (0.05, None): (3.96, 19.67),
        (0.05, (50, 1)): (4.01, 19.28),
        (0.05, (100, 1)): (3.77, 19.24),
        (0.05, (200, 1)): (3.66, 19.69),
        (0.05, (1, 2)): (3.91, 18.90),
        (0.05, (10, 2)): (3.74, 18.70),
    },
}
PAPER_RUNS = {"wrn-28-10": 5, "wrn-28-20": 2}
PAPER_EPOCHS = 200
# Table 2: snapshot ensembles of WRN-28-10 runs with T_0 = 10, T_mult = 2 (eta_max 0.05): (N runs, M snapshots
# per run) -> (CIFAR-10, CIFAR-100). N = 1, M = 1 is the epoch-150 network, the median of 16 runs (19.57, where
# Table 1's median of 5 is 19.58).
PAPER_TABLE2 = {(1, 1): (4.03, 19.57), (1, 3): (3.51, 17.75), (3, 3): (3.25, 16.64), (16, 3): (3.14, 16.21)}
TABLE2_SCHEDULE, TABLE2_MODEL, TABLE2_RUNS = (0.05, (10, 2)), "wrn-28-10", 16
TABLE2_NS = (1, 3, 16)  # the paper's numbers of runs per ensemble
# The paper's claim (its introduction and Section 4.2): SGDR with T_mult = 2 needs 2x to 4x fewer epochs than
# the default schedule of Zagoruyko & Komodakis, eta_0 = 0.1 (its Figure 2's blue line), for comparable results
# (about 4% on CIFAR-10, 20% on CIFAR-100); of T_0 = 200, T_mult = 1 it says the anytime performance is the worst.
PAPER_CLAIM = (2, 4)
ANYTIME_BASELINE = (0.1, None)
CLAIM_T_MULT = 2
# Section 4.3 compares its ensembles with N = 18 and 21 runs: its pool of T_0 = 10, T_mult = 2 runs was at least
# this large; only N = 1, M = 1 is said to be a median (of TABLE2_RUNS runs).
TABLE2_POOL = 21
COLUMN = {"cifar10": 0, "cifar100": 1}
# Izmailov et al. 2018, "Averaging Weights Leads to Wider Optima and Better Generalization": WRN-28-10 with SWA
# under its own schedule (the usual decay, then a constant rate while averaging) at 1.5x the training budget of
# its SGD baseline, one network at test time: 96.79% (CIFAR-10) and 82.15% (CIFAR-100) test accuracy, as test
# error (CIFAR-10, CIFAR-100).
SWA_PAPER = (3.21, 17.85)
SWA_PAPER_SETUP = "Izmailov et al. 2018: WRN-28-10, SWA's own schedule, 1.5x its SGD budget"
# That schedule, as their script runs it: 300 epochs for the 200 of its SGD baseline (1.5x the budget), lr 0.1,
# the weights averaged from epoch 161 on at the rate 0.05 (train.py -e 300 --lr 0.1 --swa-start 161 --swa-lr 0.05).
SWA_PAPER_BUDGET, SWA_PAPER_START, SWA_PAPER_LR, SWA_PAPER_RATE = Fraction(3, 2), 161, 0.1, 0.05
# The settings (besides the data set, which has its own column, and the network, which picks the column) under
# which the paper's numbers were measured; "epochs" is the run's planned length.
PAPER_SETUP = {
    "recipe": "paper",
    "epochs": PAPER_EPOCHS,
    "batch_size": 128,
    "train_subset": None,
    "test_subset": None,
}


def paper_column(model: str) -> str:
    """The network whose Table 1 column a group of ``model`` runs is compared with: its own where the paper
    has one (WRN-28-10, WRN-28-20), else WRN-28-10's, for orientation only."""
    return model if model in PAPER_TABLE1 else TABLE2_MODEL


def paper_table1(schedule: tuple, dataset: str, model: str = TABLE2_MODEL) -> str:
    """The paper's Table 1 entry for ``schedule`` in ``model``'s column (see paper_column), or "" where it has none."""
    cell = PAPER_TABLE1[paper_column(model)].get(schedule)
    return f"{cell[COLUMN[dataset]]:.2f}" if cell and dataset in COLUMN else ""


def paper_table2(schedule: tuple, dataset: str, runs: int, m: int, model: str = TABLE2_MODEL) -> str:
    """The paper's Table 2 entry for an ensemble of ``runs`` x ``m`` snapshots, or "" (it has WRN-28-10's
    T_0 = 10, T_mult = 2 runs only; other networks but WRN-28-20 are shown WRN-28-10's, for orientation)."""
    cell = PAPER_TABLE2.get((runs, m)) if (schedule, paper_column(model)) == (TABLE2_SCHEDULE, TABLE2_MODEL) else None
    return f"{cell[COLUMN[dataset]]:.2f}" if cell and dataset in COLUMN else ""


def scaled_epochs(epochs: int, budget: int) -> int:
    """An epoch count of the paper's 200-epoch schedules (a T_0, a milestone, a warmup) scaled to a run of
    ``budget`` epochs: ``epochs`` x budget / 200, rounded half up, at least 1."""
    return max(1, math.floor(Fraction(epochs * budget, PAPER_EPOCHS) + Fraction(1, 2)))


def scaled_shape(shape: tuple | None, budget: int) -> tuple:
    """A schedule's shape as the report keys it (see ``report.Run.schedule``), scaled to ``budget`` epochs: the
    multistep default (None) becomes ``("multistep", milestones)``, (T_0, T_mult) becomes (scaled T_0, T_mult)."""
    if shape is None:
        return ("multistep", tuple(scaled_epochs(m, budget) for m in MILESTONES))
    if shape[0] == "multistep":
        return ("multistep", tuple(scaled_epochs(m, budget) for m in shape[1]))
    return (scaled_epochs(shape[0], budget), shape[1])


def paper_swa(dataset: str, model: str = TABLE2_MODEL) -> str:
    """The SWA paper's test error for ``model``'s column (WRN-28-10's only: shown for other networks but
    WRN-28-20, for orientation), or ""."""
    return f"{SWA_PAPER[COLUMN[dataset]]:.2f}" if paper_column(model) == TABLE2_MODEL and dataset in COLUMN else ""

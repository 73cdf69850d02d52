"""The options that shape warm restarts (issue 23): a linear warmup, a decaying peak and a cycle limit.

Every batch's rate, as train.py's loop applies it, against closed forms written here; the defaults
against the unshaped classes, bit for bit; cycle ends and snapshots; resume; the flags' refusals.
"""

from __future__ import annotations

import itertools
import json
import math
import shutil
import signal
import subprocess
from fractions import Fraction
from pathlib import Path

import joblib
import pytest
import torch
from conftest import SMALL, TINY, assert_same_run, call, files_of, harness
from torch import nn

import train
from sgdr.run import settings
from sgdr.run.epoch import train_epoch
from sgdr.training import schedules
from sgdr.training.schedules import SampleWarmRestarts, Schedule, ShapedWarmRestarts, WarmRestarts, build_schedule

# Not recipes.LR: the schedule must take eta_max from the optimiser.
ETA_MAX = 0.1
CPU = torch.device("cpu")
T_0 = 2
EPOCHS = 16
BATCHES = 3
# The script's stepping with a dropped partial batch: 3 batches of 16 out of 56 samples.
INCREMENT = Fraction(16, 56)


# Oracles: the rate of each batch as the issue defines it ------------------------------------


def cycle_at(epochs: Fraction | int, t_0: int, t_mult: int) -> tuple[int, int, int]:
    """(k, first epoch, length) of the cycle holding ``epochs`` epochs after the warmup, by the series."""
    k, start = 0, 0
    while start + t_0 * t_mult**k <= epochs:
        start += t_0 * t_mult**k
        k += 1
    return k, start, t_0 * t_mult**k


def cosine(k: int, t_cur: Fraction, t_i: int, options: dict) -> float:
    """Eq. (5) in cycle k with eta_min = 0, the peak decayed k times; 0 once the cycles are used up."""
    if options["limit"] is not None and k >= options["limit"]:
        return 0.0
    return options["eta_max"] * options["decay"] ** k * (1 + math.cos(math.pi * float(t_cur / t_i))) / 2


def warming(progress: Fraction, options: dict) -> float:
    start = options["start"]
    return start + (options["eta_max"] - start) * float(progress / options["warmup"])


def tutorial_rate(position: Fraction, options: dict) -> float:
    """At the fractional epoch ``position``: the warmup before W, eq. (5) with T_cur counted from W after."""
    if position < options["warmup"]:
        return warming(position, options)
    k, start, length = cycle_at(position - options["warmup"], options["t_0"], options["t_mult"])
    return cosine(k, position - options["warmup"] - start, length, options)


def paper_rate(epoch: int, batch: int, options: dict, batches: int, increment: Fraction) -> float:
    """After batch ``batch`` of epoch ``epoch``: progress is (batches since the segment began) x increment."""
    w = options["warmup"]
    if epoch < w:
        return warming((epoch * batches + batch + 1) * increment, options)
    k, start, length = cycle_at(epoch - w, options["t_0"], options["t_mult"])
    return cosine(k, ((epoch - w - start) * batches + batch + 1) * increment, length, options)


def first_rate(options: dict) -> float:
    return options["start"] if options["warmup"] else options["eta_max"]


def oracle(stepping: str, options: dict, epochs: int, batches: int, increment: Fraction = INCREMENT) -> list[float]:
    """The rate batch n trains with: the first batch the start's, every other one the rate of the
    position the scheduler stepped to after batch n - 1 (the one-batch lag)."""
    rates = [first_rate(options)]
    for n in range(epochs * batches - 1):
        if stepping == "tutorial":
            rates.append(tutorial_rate(Fraction(n, batches), options))
        else:
            rates.append(paper_rate(*divmod(n, batches), options, batches, increment))
    return rates


# The rates train.py's loop applies ----------------------------------------------------------


def tiny_setup(batches: int):
    torch.manual_seed(0)
    model = nn.Linear(1, 2)
    loader = [(torch.ones(1, 1), torch.zeros(1, dtype=torch.long))] * batches
    optimizer = torch.optim.SGD(model.parameters(), lr=ETA_MAX, momentum=0.9)  # a rate of its own
    return model, loader, optimizer


def applied(stepping: str, options: dict, epochs: int = EPOCHS, batches: int = BATCHES) -> list[float]:
    """Build the schedule as experiment.setup does and run epoch.train_epoch: each batch's rate."""
    model, loader, optimizer = tiny_setup(batches)
    schedule = build_schedule(
        optimizer,
        True,
        options["t_0"],
        options["t_mult"],
        [],
        by_samples=(batches, float(INCREMENT)) if stepping == "paper" else None,
        warmup=options["warmup"],
        warmup_start=options["start"],
        decay=options["decay"],
        limit=options["limit"],
    )
    lrs: list[float] = []
    for epoch in range(epochs):
        lrs += train_epoch(model, loader, optimizer, schedule, epoch, CPU)[2]
        schedule.after_epoch()
    return lrs


def mismatches(stepping: str, options: dict) -> list[tuple]:
    got, want = applied(stepping, options), oracle(stepping, options, EPOCHS, BATCHES)
    assert len(got) == len(want) == EPOCHS * BATCHES
    return [(k // BATCHES, k % BATCHES, g, w) for k, (g, w) in enumerate(zip(got, want)) if abs(g - w) > 1e-12]


WARMUPS = [(0, 0.0), (3, 0.0), (3, 0.02)]  # (W, start rate)
CASES = [
    {"eta_max": ETA_MAX, "t_0": T_0, "warmup": w, "start": start, "decay": decay, "limit": limit, "t_mult": t_mult}
    for (w, start), decay, limit, t_mult in itertools.product(WARMUPS, [1.0, 0.5], [None, 2], [1, 2])
]


@pytest.mark.parametrize("stepping", ["tutorial", "paper"])
@pytest.mark.parametrize("options", CASES, ids=lambda o: "W{warmup}-s{start}-D{decay}-K{limit}-m{t_mult}".format(**o))
def test_every_batch_follows_the_closed_form(stepping, options):
    bad = mismatches(stepping, options)
    assert not bad, f"(epoch, batch, applied, oracle) first mismatches: {bad[:5]}"


ALL_SET = {"eta_max": ETA_MAX, "t_0": T_0, "warmup": 3, "start": 0.02, "decay": 0.5, "limit": 2, "t_mult": 2}


def test_the_cases_reach_every_phase():
    """The runs above are long enough for the warmup, decayed cycles and the limit to show."""
    rates = oracle("tutorial", ALL_SET, EPOCHS, BATCHES)
    assert rates[0] == rates[1] == 0.02  # the first two batches: position 0, the warmup's start
    assert rates[3 * BATCHES + 1] == ETA_MAX  # one batch after the warmup: the first peak
    assert rates[5 * BATCHES + 1] == pytest.approx(ETA_MAX / 2)  # the second cycle's peak, decayed once
    assert rates[9 * BATCHES + 1 :] == [0.0] * (len(rates) - 9 * BATCHES - 1)  # after two cycles (ends 5, 9)
    paper = oracle("paper", ALL_SET, EPOCHS, BATCHES)
    # The script's warmup ends short of eta_max when batches are dropped: 48 of 56 samples an epoch.
    assert paper[3 * BATCHES] == pytest.approx(0.02 + 0.08 * 48 / 56)


def shift_the_lag(monkeypatch):
    """The scheduler steps to the next batch's position: no one-batch lag."""
    after_batch = Schedule.after_batch
    monkeypatch.setattr(
        Schedule, "after_batch", lambda self, epoch, batch, batches: after_batch(self, epoch, batch + 1, batches)
    )


def decay_once_more(monkeypatch):
    """Cycle k peaks at eta_max * D**(k + 1)."""
    rate = ShapedWarmRestarts.rate
    monkeypatch.setattr(ShapedWarmRestarts, "rate", lambda self, base: rate(self, base * self.decay))


def one_more_cycle(monkeypatch):
    """The limit lets one cycle more run."""
    rate = ShapedWarmRestarts.rate

    def later(self, base):
        self.limit += 1
        try:
            return rate(self, base)
        finally:
            self.limit -= 1

    monkeypatch.setattr(ShapedWarmRestarts, "rate", later)


def t0_from_the_start(monkeypatch):
    """T_0 counts from the run's start, not from the warmup's end."""
    cycle_of = schedules.cycle_of
    monkeypatch.setattr(schedules, "cycle_of", lambda epoch, t_0, t_mult: cycle_of(epoch + 3, t_0, t_mult))


@pytest.mark.parametrize("stepping", ["tutorial", "paper"])
@pytest.mark.parametrize("mutant", [shift_the_lag, decay_once_more, one_more_cycle, t0_from_the_start])
def test_the_oracle_catches_a_schedule_off_by_one(mutant, stepping, monkeypatch):
    mutant(monkeypatch)
    assert mismatches(stepping, ALL_SET)


# The defaults are the schedule as it was ----------------------------------------------------


def stepped(make, epochs: int, batches: int) -> list[float]:
    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.05)
    scheduler = make(optimizer)
    rates = [optimizer.param_groups[0]["lr"]]
    for epoch in range(epochs):
        for batch in range(batches):
            scheduler.step(epoch + batch / batches)
            rates.append(optimizer.param_groups[0]["lr"])
    return rates


@pytest.mark.parametrize(("t_0", "t_mult"), [(1, 1), (1, 3), (3, 2), (10, 1), (10, 3)])
def test_the_defaults_give_the_unshaped_rates_bit_for_bit(t_0, t_mult):
    batches, increment = 7, 128 / 1000
    plain = stepped(lambda o: WarmRestarts(o, T_0=t_0, T_mult=t_mult), 400, batches)
    assert stepped(lambda o: ShapedWarmRestarts(o, t_0, t_mult), 400, batches) == plain
    script = stepped(lambda o: SampleWarmRestarts(o, t_0, t_mult, batches, increment), 400, batches)
    assert (
        stepped(lambda o: ShapedWarmRestarts(o, t_0, t_mult, by_samples=(batches, increment)), 400, batches) == script
    )


def test_the_defaults_build_the_unshaped_classes_and_say_the_same():
    def schedule(**kwargs):
        return build_schedule(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.05), True, 50, 1, [], **kwargs)

    assert type(schedule().scheduler) is WarmRestarts
    assert type(schedule(by_samples=(5, 0.2)).scheduler) is SampleWarmRestarts
    assert schedule().describe() == "Using cosine annealing with warm restarts: T_0 = 50, T_mult = 1, eta_min = 0."
    assert schedule(warmup=0, warmup_start=0.0, decay=1.0, limit=None).describe() == schedule().describe()
    shaped = schedule(warmup=5, warmup_start=0.01, decay=0.5, limit=3).describe()
    assert shaped == (
        "Using cosine annealing with warm restarts: T_0 = 50, T_mult = 1, eta_min = 0; first a linear warmup "
        "from lr 0.01 to eta_max over 5 epochs (T_0 counts from its end); cycle k (from 0) peaks at eta_max x "
        "0.5**k; 3 cycles, then lr 0 with no restart."
    )
    script = schedule(by_samples=(5, 0.2), limit=1).describe()
    assert script.endswith(
        "; 1 cycle, then lr 0 with no restart; T_cur grows by 0.2 of an epoch per batch (the SGDR script's stepping)."
    )
    with pytest.raises(ValueError, match="warm restarts only"):
        build_schedule(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.05), False, 50, 1, [60], decay=0.5)


# Cycle ends ----------------------------------------------------------------------------------


def series_ends(t_0: int, t_mult: int, epochs: int, warmup: int, limit: int | None) -> list[int]:
    ends = [warmup + sum(t_0 * t_mult**j for j in range(k + 1)) for k in range(limit or epochs)]
    return [end for end in ends if end <= epochs]


@pytest.mark.parametrize(
    ("t_0", "t_mult", "warmup", "limit"),
    [(10, 2, 0, None), (10, 2, 5, None), (1, 1, 1, 2), (2, 2, 3, 2), (50, 1, 7, None), (3, 3, 0, 1)],
)
def test_cycle_ends_follow_the_warmup_and_stop_at_the_limit(t_0, t_mult, warmup, limit):
    epochs = 200
    want = series_ends(t_0, t_mult, epochs, warmup, limit)
    assert want, "some cycle ends within the run"
    assert schedules.cycle_ends(t_0, t_mult, epochs, warmup=warmup, limit=limit) == want
    assert [e for e in range(epochs + 1) if schedules.ends_a_cycle(e, t_0, t_mult, warmup=warmup, limit=limit)] == want
    config = {"warm_restart": True, "t_zero": t_0, "t_mult": t_mult, "warmup_epochs": warmup, "cycle_limit": limit}
    assert schedules.run_cycle_ends(config, epochs) == want


def test_cycle_ends_without_the_options_are_as_before():
    assert schedules.cycle_ends(10, 2, 200) == [10, 30, 70, 150]
    assert schedules.cycle_ends(10, 2, 200, warmup=5) == [15, 35, 75, 155]
    assert schedules.run_cycle_ends({"warm_restart": True, "t_zero": 10, "t_mult": 2}, 200) == [10, 30, 70, 150]
    assert schedules.run_cycle_ends({"warm_restart": False, "milestones": [60]}, 200) == []


# Runs: recorded settings, snapshots, resume ----------------------------------------------------

# 40 training images in batches of 16: 3 batches an epoch (the paper's recipe: 80 samples in 5).
# Warmup over epoch 1, one-epoch cycles ending after epochs 2 and 3 (the second peaks at half),
# then the limit: epochs 4 and 5 at rate 0, no more snapshots.
OPTIONS = ["--warmup-epochs", "1", "--warmup-start-lr", "0.01", "--cycle-decay", "0.5", "--cycle-limit", "2"]
SHAPED = ["-e", "5", "-wr", "-t0", "1", *OPTIONS, "--seed", "21", *SMALL, *TINY]
KINDS = {"tutorial": SHAPED, "paper": [*SHAPED, "--recipe", "paper"]}
RUN = "wr_s1_m1"


def argv(kind: str, data: Path, out: Path, *more: str) -> list[str]:
    return [*KINDS[kind], "--data-dir", str(data), "--output-dir", str(out), *more]


@pytest.fixture(scope="module")
def straight(tiny_cifar, tmp_path_factory) -> dict[str, tuple[Path, str]]:
    """Each kind of shaped run, trained straight through in this process: (output folder, stdout)."""
    runs = {}
    with pytest.MonkeyPatch.context() as mp:
        from sgdr.testing.cifar_files import use_checksums_of

        use_checksums_of(tiny_cifar, mp.setattr)
        for kind in KINDS:
            out = tmp_path_factory.mktemp(f"shaped-{kind}")
            code, log, err = call(train.main, argv(kind, tiny_cifar, out))
            assert code == 0, err
            runs[kind] = out, log
    return runs


@pytest.mark.parametrize("kind", KINDS)
def test_a_shaped_run_trains_each_batch_at_its_rate(kind, straight):
    out, log = straight[kind]
    lrs = joblib.load(out / "lr_schedule_s1_m1.pkl")
    options = {
        "eta_max": 0.05,
        "t_0": 1,
        "warmup": 1,
        "start": 0.01,
        "decay": 0.5,
        "limit": 2,
        "t_mult": 1,
    }  # the recipes' rate
    want = oracle(kind, options, 5, 3) if kind == "tutorial" else oracle(kind, options, 5, 5, Fraction(16, 80))
    assert lrs == pytest.approx(want, abs=1e-12, rel=0)
    assert "first a linear warmup from lr 0.01 to eta_max over 1 epoch (T_0 counts from its end); " in log
    assert "cycle k (from 0) peaks at eta_max x 0.5**k; 2 cycles, then lr 0 with no restart" in log


@pytest.mark.parametrize("kind", KINDS)
def test_snapshots_are_taken_at_the_shaped_cycle_ends(kind, straight):
    out, _ = straight[kind]
    snapshots = sorted(p.name for p in (out / "runs" / RUN / "snapshots").iterdir())
    assert snapshots == ["epoch_0002.pt", "epoch_0003.pt"]  # unshaped: 1, 2, 3, 4, 5


def test_the_options_are_recorded_only_when_set(straight):
    out, _ = straight["tutorial"]
    want = {"warmup_epochs": 1, "warmup_start_lr": 0.01, "cycle_decay": 0.5, "cycle_limit": 2}
    state = torch.load(out / "runs" / RUN / "checkpoint.pt", weights_only=True)
    record = json.loads((out / "runs" / RUN / "run.json").read_text())
    for config in (state["config"], record["config"]):
        assert {key: config.get(key) for key in want} == want

    def recorded(*flags: str) -> set[str]:
        return set(settings.config_of(settings.parse_args(list(flags)), 1, 1)) & set(schedules.OPTION_DEFAULTS)

    assert recorded("-wr") == recorded() == recorded("-wr", "--cycle-decay", "1", "--warmup-epochs", "0") == set()
    assert recorded("-wr", "--cycle-decay", "0.5") == {"cycle_decay"}
    assert recorded("-wr", "--warmup-epochs", "2", "--warmup-start-lr", "0.01") == {"warmup_epochs", "warmup_start_lr"}
    # A checkpoint or record without them was made without them.
    assert {key: settings.upgrade({})[key] for key in want} == schedules.OPTION_DEFAULTS


@pytest.mark.parametrize(
    ("kind", "point"),
    [
        ("tutorial", "batch:2"),  # in the middle of the warmup (epoch 1)
        ("paper", "batch:13"),  # in the middle of epoch 3, the second cycle, whose peak is decayed
    ],
)
def test_killed_then_resumed_equals_uninterrupted(kind, point, cifar_dir, tmp_path, straight):
    out = tmp_path / "out"
    killed = subprocess.run(
        harness(cifar_dir, point, argv(kind, cifar_dir, out)), capture_output=True, text=True, timeout=600
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    code, log, err = call(train.main, argv(kind, cifar_dir, out, "--resume"))
    assert code == 0, err
    assert "Resuming after epoch" in log
    assert_same_run(out, straight[kind][0])


@pytest.mark.parametrize(
    ("change", "said"),
    [
        (["--warmup-epochs", "2"], "warmup_epochs: 1 in the checkpoint, 2 now"),
        (["--warmup-start-lr", "0.02"], "warmup_start_lr: 0.01 in the checkpoint, 0.02 now"),
        (["--cycle-decay", "0.25"], "cycle_decay: 0.5 in the checkpoint, 0.25 now"),
        (["--cycle-limit", "3"], "cycle_limit: 2 in the checkpoint, 3 now"),
        (["--cycle-limit", None], "cycle_limit: 2 in the checkpoint, None now"),  # left out
    ],
)
def test_resuming_with_another_option_is_refused_and_changes_nothing(change, said, cifar_dir, tmp_path, straight):
    out = tmp_path / "out"
    shutil.copytree(straight["tutorial"][0], out)
    args = argv("tutorial", cifar_dir, out, "--resume", "-e", "6")
    flag, value = args.index(change[0]), change[1]
    args[flag : flag + 2] = [change[0], value] if value is not None else []
    before = {**files_of(out), "run.json": (out / "runs" / RUN / "run.json").read_bytes()}
    code, log, err = call(train.main, args)
    assert code == 1 and said in err and "Traceback" not in err, err
    assert "Resume with the original settings" in err and "Epoch 1" not in log
    assert {**files_of(out), "run.json": (out / "runs" / RUN / "run.json").read_bytes()} == before


def test_an_unshaped_run_resumed_with_an_option_is_refused(cifar_dir, tmp_path):
    common = [
        "-wr",
        "-t0",
        "1",
        "--seed",
        "3",
        *SMALL,
        *TINY,
        "--data-dir",
        str(cifar_dir),
        "--output-dir",
        str(tmp_path),
    ]
    assert call(train.main, ["-e", "1", *common])[0] == 0
    code, _, err = call(train.main, ["-e", "2", *common, "--resume", "--cycle-decay", "0.5"])
    assert code == 1 and "cycle_decay: 1.0 in the checkpoint, 0.5 now" in err, err
    code, log, err = call(train.main, ["-e", "2", *common, "--resume"])
    assert code == 0 and "Resuming after epoch 1" in log, err


# The flags' refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--warmup-epochs", "2"], "argument --warmup-epochs: shapes warm restarts only"),
        (["--warmup-start-lr", "0.01"], "argument --warmup-start-lr: shapes warm restarts only"),
        (["--cycle-decay", "0.5"], "argument --cycle-decay: shapes warm restarts only"),
        (["--cycle-limit", "2"], "argument --cycle-limit: shapes warm restarts only"),
    ],
)
def test_the_options_are_refused_with_the_multistep_schedule(flags, said, tmp_path):
    code, log, err = call(train.main, [*flags, "--output-dir", str(tmp_path)])
    assert code == 2 and said in err and "add -wr (--warm-restart), or leave it out" in err, err
    assert "Traceback" not in err and list(tmp_path.iterdir()) == []
    settings.parse_args(["--cycle-decay", "1", "--warmup-epochs", "0", "--warmup-start-lr", "0"])  # the defaults


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--warmup-epochs", "-1"], "argument --warmup-epochs: must be at least 0, got -1"),
        (["--warmup-epochs", "1.5"], "argument --warmup-epochs: expected an integer, got '1.5'"),
        (
            ["--warmup-epochs", "2", "--warmup-start-lr", "-0.1"],
            "argument --warmup-start-lr: must be a number at least 0",
        ),
        (
            ["--warmup-epochs", "2", "--warmup-start-lr", "inf"],
            "argument --warmup-start-lr: must be a number at least 0",
        ),
        (["--warmup-start-lr", "0.01"], "argument --warmup-start-lr: is where a warmup starts, and this run has none"),
        (["--cycle-decay", "0"], "argument --cycle-decay: must be a number above 0 and at most 1, got 0"),
        (["--cycle-decay", "1.5"], "argument --cycle-decay: must be a number above 0 and at most 1, got 1.5"),
        (["--cycle-decay", "nan"], "argument --cycle-decay: must be a number above 0 and at most 1, got nan"),
        (["--cycle-decay", "half"], "argument --cycle-decay: expected a number, got 'half'"),
        (["--cycle-limit", "0"], "argument --cycle-limit: must be at least 1, got 0"),
    ],
)
def test_bad_values_are_refused_by_name(flags, said, capsys):
    with pytest.raises(SystemExit) as exit_:
        settings.parse_args(["-wr", *flags])
    assert exit_.value.code == 2
    assert said in capsys.readouterr().err

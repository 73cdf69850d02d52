"""What the paper measures: accuracy, snapshots at cycle ends, snapshot ensembles, CIFAR-100,
the seed grid and the report."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, SMALL, TINY, call, harness
from fake_runs import fake_run, table1_rows

import ensemble
import grid
import plot
import report
import train
from sgdr.cli import UserError
from sgdr.paper import ensembles, tables
from sgdr.paper import grid as planner
from sgdr.run import checkpoint, layout, settings
from sgdr.testing.cifar_files import use_checksums_of, write_cifar10, write_cifar100
from sgdr.training import networks
from sgdr.training.schedules import cycle_ends, ends_a_cycle


def test_top1_is_counted_exactly():
    scores = torch.tensor([[0.1, 0.7, 0.2], [2.0, 2.0, 1.0], [0.0, 0.0, 3.0], [5.0, -1.0, 0.0], [0.3, 0.3, 0.4]])
    labels = torch.tensor([1, 1, 2, 1, 2])  # right, tie goes to class 0 (wrong), right, wrong, right
    assert networks.top1_correct(scores, labels).item() == 3
    assert ensembles.error_rate(scores, labels) == pytest.approx(2 / 5)


@pytest.mark.parametrize(
    ("t_0", "t_mult", "epochs", "ends"),
    [
        (1, 2, 200, [1, 3, 7, 15, 31, 63, 127]),
        (10, 2, 200, [10, 30, 70, 150]),
        (50, 1, 200, [50, 100, 150, 200]),
        (200, 1, 200, [200]),
        (1, 3, 130, [1, 4, 13, 40, 121]),  # torch's own cycle arithmetic rounds low at 121
    ],
)
def test_snapshots_land_at_the_cycle_ends(t_0, t_mult, epochs, ends):
    assert cycle_ends(t_0, t_mult, epochs) == ends
    assert [e for e in range(1, epochs + 1) if ends_a_cycle(e, t_0, t_mult)] == ends


def test_a_run_saves_a_snapshot_at_each_cycle_end_and_accuracy_per_epoch(cifar_dir, tmp_path):
    argv = [
        "-e",
        "8",
        "-wr",
        "-t0",
        "1",
        "-tm",
        "2",
        "--train-subset",
        "16",
        "--seed",
        "1",
        *SMALL,
        *TINY,
        "--data-dir",
        str(cifar_dir),
        "--output-dir",
        str(tmp_path),
    ]
    code, log, err = call(train.main, argv)
    assert code == 0, err
    run = tmp_path / "runs" / "wr_s1_m2"
    assert [p.name for p in ensembles.run_snapshots(run)] == ["epoch_0001.pt", "epoch_0003.pt", "epoch_0007.pt"]
    snapshot = torch.load(run / "snapshots" / "epoch_0007.pt", weights_only=True)
    assert snapshot["epoch"] == 7 and snapshot["num_classes"] == 10 and snapshot["config"]["model"] == "wrn-10-1"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == list(range(1, 9))
    for r in rows:
        for key in ("train_accuracy", "test_accuracy"):  # 16 images each: whole counts out of 16
            assert 0 <= r[key] <= 1 and (r[key] * 16).is_integer()
        assert r["test_error"] == pytest.approx(1 - r["test_accuracy"])
        assert r["lr_first"] == r["lr_last"]  # one batch an epoch
    # One batch an epoch: epoch k + 1 trains at eq. (5) of epoch k - 1's position (the one-batch
    # lag): the peak at the start and at the restart (position 1), then halfway down the cycle.
    assert [rows[k]["lr_first"] for k in range(4)] == pytest.approx([0.05, 0.05, 0.05, 0.025], abs=1e-15)
    assert "test error:" in log


def test_the_ensemble_averages_probabilities_not_logits():
    # A rates class 0 at 0.9, B gives it almost nothing; both give class 1 a fair share. The mean
    # of probabilities picks class 0 (0.45 against 0.20 and 0.35); the mean of logits, a geometric
    # mean of probabilities, would punish B's near-zero and pick class 1.
    a = torch.log(torch.tensor([[0.9, 0.1, 1e-6]]))
    b = torch.log(torch.tensor([[1e-6, 0.3, 0.7]]))
    probabilities = ensembles.average_softmax([a, b])
    assert torch.allclose(probabilities, torch.tensor([[0.45, 0.2, 0.35]]), atol=1e-5)
    assert probabilities.argmax(1).item() == 0
    assert ((a + b) / 2).argmax(1).item() == 1


@pytest.fixture
def arithmetic_restored():
    """The process's TF32 flags and determinism as they were before the test, restored after it."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    before = cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic, cudnn.benchmark
    algorithms = torch.are_deterministic_algorithms_enabled()
    yield
    cudnn.allow_tf32, matmul.allow_tf32, cudnn.deterministic, cudnn.benchmark = before
    torch.use_deterministic_algorithms(algorithms)


def test_a_snapshot_is_evaluated_in_its_runs_precision(cifar_dir, tmp_path, monkeypatch, arithmetic_restored):
    """A run trained (and validated) under bf16 autocast with TF32 off, deterministic and channels-last: its
    snapshot is evaluated the same way, so its test loss is the run's to the last digits, and the
    process's own precision is back afterwards."""
    flags = ["--amp", "bf16", "--tf32", "off", "--deterministic", "--channels-last"]
    argv = ["-e", "1", "-wr", "-t0", "1", "--train-subset", "16", "--seed", "2", *SMALL, *TINY, *flags]
    assert call(train.main, [*argv, "--data-dir", str(cifar_dir), "--output-dir", str(tmp_path)])[0] == 0
    run = tmp_path / "runs" / "wr_s1_m1"
    seen = []
    forward = networks.SpatialMean.forward

    def spy(self, x):  # the pooling --deterministic puts in: what the evaluation computes with
        flags = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        seen.append((torch.is_autocast_enabled("cpu"), flags, torch.are_deterministic_algorithms_enabled()))
        return forward(self, x)

    monkeypatch.setattr(networks.SpatialMean, "forward", spy)
    process = (True, True), False
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = process[0]
    torch.use_deterministic_algorithms(process[1])
    test = ensembles.SnapshotOutputs(cifar_dir, torch.device("cpu"))
    logits = test.logits(run / "snapshots" / "epoch_0001.pt")
    assert seen and set(seen) == {(True, (False, False), True)}
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == process[0]
    assert torch.are_deterministic_algorithms_enabled() == process[1]
    loss = torch.nn.functional.cross_entropy(logits, test.labels()).item()
    assert loss == pytest.approx(json.loads((run / "metrics.jsonl").read_text())["test_loss"], rel=1e-6)


def test_an_ensemble_of_identical_snapshots_is_the_single_model(cifar_dir, tmp_path):
    argv = [
        "-e",
        "2",
        "-wr",
        "-t0",
        "1",
        "--train-subset",
        "16",
        "--seed",
        "2",
        *SMALL,
        *TINY,
        "--data-dir",
        str(cifar_dir),
        "--output-dir",
        str(tmp_path),
    ]
    assert call(train.main, argv)[0] == 0
    kept = ensembles.run_snapshots(tmp_path / "runs" / "wr_s1_m1")
    test = ensembles.SnapshotOutputs(cifar_dir, torch.device("cpu"))
    single = test.logits(kept[-1])
    assert torch.allclose(ensembles.average_softmax([single] * 3), single.softmax(1))
    last = json.loads((tmp_path / "runs" / "wr_s1_m1" / "metrics.jsonl").read_text().splitlines()[-1])
    # The final snapshot is the network that was validated after the last epoch.
    assert ensembles.error_rate(single, test.labels()) == pytest.approx(last["test_error"])
    code, out, err = call(
        ensemble.main,
        [str(tmp_path / "runs" / "wr_s1_m1"), str(tmp_path / "runs" / "wr_s1_m1"), "--data-dir", str(cifar_dir)],
    )
    assert code == 0, err
    # The same run given twice is one run: its members are not counted twice.
    run = tmp_path / "runs" / "wr_s1_m1"
    assert f"warning: {run} is the same run as {run}: counted once" in err
    assert out.splitlines()[0] == "1 run(s); snapshots per run: 2"
    assert re.search(r"\| 2 \| 1, 2 \| [\d.]+% \|", out)
    copy = tmp_path / "copy" / "wr_s1_m1"
    shutil.copytree(run, copy)
    code, out, err = call(ensemble.main, [str(run), str(copy), "--data-dir", str(cifar_dir)])
    assert code == 0 and f"warning: {copy} is the same run as {run}: counted once" in err
    assert out.splitlines()[0] == "1 run(s); snapshots per run: 2"


def test_a_snapshot_copied_from_another_run_is_refused_by_name(cifar_dir, tmp_path):
    """Copied into another run's snapshots/, a snapshot would join that run's ensembles: its settings say whose."""
    args = ["-e", "2", "-wr", "-t0", "1", "--train-subset", "16", *SMALL, *TINY, "--data-dir", str(cifar_dir)]
    for seed in ("1", "2"):
        assert call(train.main, [*args, "--seed", seed, "--output-dir", str(tmp_path / seed)])[0] == 0
    mine, theirs = (tmp_path / seed / "runs" / "wr_s1_m1" for seed in ("1", "2"))
    shutil.copy(theirs / "snapshots" / "epoch_0002.pt", mine / "snapshots" / "epoch_0002.pt")
    code, _, err = call(ensemble.main, [str(mine), "--data-dir", str(cifar_dir), "--device", "cpu"])
    assert code == 1 and "Traceback" not in err
    assert f"the snapshot {mine / 'snapshots' / 'epoch_0002.pt'} is another run's" in err


def test_a_snapshot_with_the_wrong_content_is_refused_by_name(cifar_dir, tmp_path):
    args = ["-e", "1", "-wr", "-t0", "1", "--train-subset", "16", "--seed", "2", *SMALL, *TINY]
    assert call(train.main, [*args, "--data-dir", str(cifar_dir), "--output-dir", str(tmp_path)])[0] == 0
    run = tmp_path / "runs" / "wr_s1_m1"
    path = ensembles.run_snapshots(run)[0]
    saved = torch.load(path, weights_only=True)
    for damaged, said in [
        ({k: v for k, v in saved.items() if k != "config"}, "is damaged: it has no settings ('config')"),
        ({**saved, "config": {**saved["config"], "model": "wrn-16-2"}}, "does not hold the wrn-16-2 its settings name"),
        (
            {**saved, "config": {k: v for k, v in saved["config"].items() if k != "test_subset"}},
            "is damaged: its settings are not a run's (a warm-restart run without test_subset)",
        ),
        (
            {**saved, "config": {**saved["config"], "seed": "two"}},
            "is damaged: its settings are not a run's (seed 'two' on a warm-restart run, which train.py refuses",
        ),
    ]:
        torch.save(damaged, path)
        code, _, err = call(ensemble.main, [str(run), "--data-dir", str(cifar_dir)])
        assert code == 1 and f"error: the snapshot {path} {said}" in err and "Traceback" not in err


def test_ensemble_without_snapshots_says_where_they_come_from(tmp_path):
    code, _, err = call(ensemble.main, [str(tmp_path)])
    assert code == 1 and "has no snapshots" in err and "--warm-restart" in err


def test_cifar100_end_to_end(tmp_path, monkeypatch):
    write_cifar100(tmp_path / "data")
    use_checksums_of(tmp_path / "data", monkeypatch.setattr)
    argv = [
        "-e",
        "2",
        "-wr",
        "-t0",
        "1",
        "--dataset",
        "cifar100",
        "--seed",
        "3",
        *SMALL,
        *TINY,
        "--data-dir",
        str(tmp_path / "data"),
        "--output-dir",
        str(tmp_path / "out"),
    ]
    code, log, err = call(train.main, argv)
    assert code == 0, err
    state = torch.load(tmp_path / "out" / "runs" / "wr_s1_m1" / "checkpoint.pt", weights_only=True)
    assert state["model"]["fc.weight"].shape == (100, 64) and state["config"]["dataset"] == "cifar100"
    assert "40 training images in 3 batches, 16 validation images in 1 batches" in log


def test_cifar100_under_the_papers_recipe_with_bf16(tmp_path, monkeypatch):
    write_cifar100(tmp_path / "data")
    use_checksums_of(tmp_path / "data", monkeypatch.setattr)
    argv = [
        "-e",
        "2",
        "-wr",
        "-t0",
        "1",
        "--dataset",
        "cifar100",
        "--recipe",
        "paper",
        "--amp",
        "bf16",
        "--seed",
        "3",
        *SMALL,
        *TINY,
        "--data-dir",
        str(tmp_path / "data"),
        "--output-dir",
        str(tmp_path / "out"),
    ]
    code, log, err = call(train.main, argv)
    assert code == 0, err
    run = tmp_path / "out" / "runs" / "wr_s1_m1"
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["model"]["fc.weight"].shape == (100, 64) and state["config"]["recipe"] == "paper"
    assert "an epoch is 80 samples in 5 batches (0 dropped)" in log
    # The snapshot keeps the training set's mean image, for the ensembles to evaluate it as the run did.
    snapshot = checkpoint.load_snapshot(run / "snapshots" / "epoch_0002.pt")
    assert snapshot["inputs"]["mean"].shape == (1, 3, 32, 32) and snapshot["inputs"]["std"].eq(1).all()


def test_cifar100_missing_offline_names_its_own_archive(tmp_path, offline):
    code, _, err = call(train.main, ["--dataset", "cifar100", "--data-dir", str(tmp_path)])
    assert code == 1
    assert f"CIFAR-100 is not in {tmp_path / 'cifar-100-python'}" in err
    assert "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz" in err
    # The tools that read only say how to fetch CIFAR-100 itself, not CIFAR-10.
    from sgdr.data import cifar

    with pytest.raises(UserError) as caught:
        cifar.load_test_set(tmp_path, dataset="cifar100")
    assert f"python -m sgdr.data --data-dir {tmp_path} --dataset cifar100" in str(caught.value)


def grid_sh(env: dict[str, str], *words: str) -> tuple[int, str, str]:
    """``sh grid.sh WORDS`` with the settings ``env``, in this process (grid.sh hands its arguments to grid.py:
    tests/test_slurm.py and the status test below run the script itself): (exit status, stdout, stderr)."""
    return call(lambda argv: grid.main(argv, environ={**os.environ, **env}), list(words))


def grid_commands(env: dict[str, str], *flags: str) -> list[list[str]]:
    """The train.py command lines ``sh grid.sh --print FLAGS`` prints, as argument lists."""
    code, out, err = grid_sh(env, "--print", *flags)
    assert code == 0, err
    return [shlex.split(line) for line in out.splitlines()]


def test_grid_trains_table_2s_sixteen_runs_and_other_initial_rates_when_asked():
    env = {"PYTHON": "python", "SEEDS": "1 2", "TABLE2_SEEDS": "2 3 4", "SCHEDULES": "default default@0.1 10:2"}
    runs = [(c[c.index("--seed") + 1], shlex.join(c[c.index("--resume") + 1 :])) for c in grid_commands(env)]
    schedules = ["", "--lr 0.1", "--warm-restart -t0 10 -tm 2"]
    sgdr = schedules[2]
    assert runs == [("1", s) for s in schedules] + [("2", s) for s in schedules] + [("3", sgdr), ("4", sgdr)]
    # Without 10:2 among SCHEDULES, the seeds of SEEDS that are in TABLE2_SEEDS train it too.
    runs = [(c[c.index("--seed") + 1], shlex.join(c)) for c in grid_commands({**env, "SCHEDULES": "50:1@0.1"})]
    assert [seed for seed, _ in runs] == ["1", "2", "2", "3", "4"]
    assert "--lr 0.1 --warm-restart -t0 50 -tm 1" in runs[0][1]
    assert runs[2][1].endswith("--resume --warm-restart -t0 10 -tm 2")
    # Each initial rate is a run of its own, in a folder of its own.
    args = [settings.parse_args(command[2:]) for command in grid_commands(env)]
    assert len({layout.files_of(a).run_dir for a in args}) == len(args) == 8
    assert args[1].output_dir.endswith("/seed1/lr0.1") and args[0].output_dir.endswith("/seed1")


def test_grid_adds_the_comparison_schedules_and_shaped_words_in_folders_of_their_own():
    env = {"PYTHON": "python", "SEEDS": "1", "EPOCHS": "40", "COMPARE": "1", "SCHEDULES": "10:2 10:2@0.1/w2/s0.01/k3"}
    commands = [shlex.join(c[c.index("--output-dir") + 1 :]) for c in grid_commands(env)]
    seed1 = "outputs/grid/cifar10-wrn-28-10-paper/seed1"
    assert commands == [
        f"{seed1} --resume --warm-restart -t0 10 -tm 2",
        f"{seed1}/lr0.1_w2_s0.01_k3 --resume --lr 0.1 --warm-restart -t0 10 -tm 2 --warmup-epochs 2 "
        "--warmup-start-lr 0.01 --cycle-limit 3",
        f"{seed1}/w5 --resume --warm-restart -t0 35 -tm 1 --warmup-epochs 5",  # one cycle after the warmup
        f"{seed1}/d0.5 --resume --warm-restart -t0 10 -tm 2 --cycle-decay 0.5",
    ]
    # A comparison schedule SCHEDULES has already is trained once, and so is a word written in another order.
    assert len(grid_commands({**env, "SCHEDULES": "10:2/d0.5"})) == 2
    words = "10:2@0.1/k3/s0.01/w2 10:2@0.1/w2/s0.01/k3 10:2/d0.5/w5"
    again = [shlex.join(c[c.index("--output-dir") + 1 :]) for c in grid_commands({**env, "SCHEDULES": words})]
    assert again == [
        commands[1],
        f"{seed1}/w5_d0.5 --resume --warm-restart -t0 10 -tm 2 --warmup-epochs 5 --cycle-decay 0.5",
        *commands[2:],
    ]
    # -e among the flags counts: 100 epochs, a cosine of 95 after the warmup.
    assert "-t0 95 -tm 1 --warmup-epochs 5" in shlex.join(grid_commands(env, "-e", "100")[2])


def test_grid_trains_swas_own_schedule_at_one_and_a_half_times_its_budget():
    """The word swa (or SWA=1): the SWA paper's WRN-28-10 schedule, -e 300 --lr 0.1 --swa-start 161 --swa-lr 0.05
    beside 200 epochs, scaled with the budget (161/200 of it, rounded half up), in its own run folder."""
    env = {"PYTHON": "python", "SEEDS": "1", "SCHEDULES": "default 10:2"}
    seed1 = "outputs/grid/cifar10-wrn-28-10-paper/seed1"
    for extra in ({"SWA": "1"}, {"SCHEDULES": "default 10:2 swa"}):
        commands = grid_commands({**env, **extra})
        assert len(commands) == 3 and "-e" not in commands[2][:4]
        assert shlex.join(commands[2][commands[2].index("--output-dir") + 1 :]) == (
            f"{seed1} --resume -e 300 --lr 0.1 --swa-start 161 --swa-lr 0.05"
        )
    for epochs, swa_epochs, start in (("30", "45", "24"), ("4", "6", "3"), ("1", "2", "1")):
        command = grid_commands({**env, "SCHEDULES": "swa", "EPOCHS": epochs})[-1]  # scaled with SCALED=1 or not
        assert shlex.join(command).endswith(f"-e {swa_epochs} --lr 0.1 --swa-start {start} --swa-lr 0.05")
        assert command[command.index("-e") :].count("-e") == 1
    args = [settings.parse_args(command[2:]) for command in grid_commands({**env, "SWA": "1"})]
    assert [layout.files_of(a).run_dir.name for a in args] == ["multistep", "wr_s10_m2", "swa"]
    assert len(grid_commands({**env, "SCHEDULES": "swa swa", "SWA": "1"})) == 1  # one run, however often named
    code, out, err = grid_sh({**env, "SWA": "1"}, "--print", "--lr", "0.2")  # SWA's rates would override it
    assert code == 2 and out == "" and "--lr goes to every run, and the word swa trains SWA's own rates" in err


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"TABLE2_SEEDS": "1 x"}, "SEEDS or TABLE2_SEEDS: x is not a whole number"),
        ({"SCHEDULES": "default@"}, "SCHEDULES: default@ is neither default nor T_0:T_mult (e.g. 10:2), with @LR"),
        ({"SCHEDULES": "10:2@0.1.2"}, "SCHEDULES: 10:2@0.1.2 is neither"),
        ({"SCHEDULES": "default/w5"}, "SCHEDULES: default/w5 is neither"),  # shaping is for warm restarts
        ({"SCHEDULES": "10:2/x5"}, "SCHEDULES: 10:2/x5 is neither"),
        ({"SCHEDULES": "10:2/d"}, "SCHEDULES: 10:2/d is neither"),
        ({"SCHEDULES": "10:2/w0.5"}, "SCHEDULES: 10:2/w0.5: argument --warmup-epochs: expected an integer"),
        ({"SCHEDULES": "10:2/k0"}, "SCHEDULES: 10:2/k0: argument --cycle-limit: must be at least 1"),
        ({"SCHEDULES": "2:0"}, "SCHEDULES: 2:0: argument -tm/--t-mult: must be at least 1"),
        ({"SCHEDULES": "10:2/d0.5/d0.3"}, "SCHEDULES: 10:2/d0.5/d0.3 is neither"),  # which decay?
        ({"COMPARE": "1", "EPOCHS": "5"}, "COMPARE=1 adds a 5-epoch warmup before one cycle"),
        ({"COMPARE": "yes"}, "COMPARE is yes; COMPARE=1 adds the comparison schedules"),
        ({"SWA": "on"}, "SWA is on; SWA=1 adds SWA's own schedule (the word swa)"),
        ({"SCHEDULES": "swa@0.1"}, "SCHEDULES: swa@0.1 is neither"),
        ({"SCHEDULES": "swa/w5"}, "SCHEDULES: swa/w5 is neither"),
        ({"EPOCHS": "abc"}, "EPOCHS is abc, not a whole number of epochs (expected an integer"),
    ],
)
def test_grid_refuses_words_it_cannot_train(bad, message):
    code, out, err = grid_sh({"PYTHON": "python", **bad}, "--print")
    assert code == 2 and message in err and out == "", err


def test_grid_checks_every_command_before_it_trains_or_plans_any(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = grid_sh({"PYTHON": sys.executable, "SEEDS": "1", "SCHEDULES": "default 10:2/d2"})
    assert code == 2 and "argument --cycle-decay: must be a number above 0 and at most 1" in err
    assert "Traceback" not in err and list(tmp_path.iterdir()) == []  # no run trained, no grid.txt


def test_grid_runs_the_papers_schedules_for_every_seed(tmp_path):
    fake = tmp_path / "python"  # runs grid.py, and only says what it was asked to train
    fake.write_text(f'#!/bin/sh\ncase "$1" in *grid.py) exec {sys.executable} "$@" ;; esac\necho "$@"\n')
    fake.chmod(0o755)
    env = {"PYTHON": str(fake), "SEEDS": "1 2", "MODEL": "wrn-16-4", "DATASET": "cifar100", "EPOCHS": "50"}
    done = subprocess.run(
        ["sh", str(REPO / "grid.sh"), "--workers", "1"],
        cwd=tmp_path,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    common = (
        "-e 50 --model wrn-16-4 --dataset cifar100 --recipe paper --seed {} "
        "--output-dir outputs/grid/cifar100-wrn-16-4-paper/{} --resume --workers 1"
    )
    schedules = [
        "",
        " --lr 0.1",
        " --warm-restart -t0 50 -tm 1",
        " --warm-restart -t0 100 -tm 1",
        " --warm-restart -t0 200 -tm 1",
        " --warm-restart -t0 1 -tm 2",
        " --warm-restart -t0 10 -tm 2",
    ]
    folder = {" --lr 0.1": "seed{}/lr0.1"}  # the paper's baseline, eta_0 = 0.1: a folder of its own
    expected = [common.format(s, folder.get(w, "seed{}").format(s)) + w for s in (1, 2) for w in schedules]
    assert lines[:-1] == [f"{REPO}/train.py {line}" for line in expected]
    assert lines[-1] == "Done. Compare with the paper: python report.py --runs outputs/grid"
    planned = (tmp_path / "outputs" / "grid" / "cifar100-wrn-16-4-paper" / "grid.txt").read_text().splitlines()
    assert [line.split(" ", 1)[1] for line in planned] == lines[:-1]


def test_grid_prints_its_commands_and_names_folders_after_the_flags_it_forwards():
    env = {"PYTHON": "python", "SEEDS": "3 4", "RECIPE": "tutorial", "GRID_DIR": "g"}
    commands = grid_commands(env, "--model", "wrn-10-1", "--data-dir", "my data", "--epochs=7")
    assert len(commands) == 14 and all(c[:2] == ["python", f"{REPO}/train.py"] for c in commands)
    args = [settings.parse_args(c[2:]) for c in commands]  # every line is a valid train.py command
    assert {(a.model, a.recipe, a.epochs, a.data_dir) for a in args} == {("wrn-10-1", "tutorial", 7, "my data")}
    seeds = [f"g/cifar10-wrn-10-1-tutorial/seed{s}" for s in (3, 4)]
    assert [a.output_dir for a in args] == [f"{seed}{'/lr0.1' * (k == 1)}" for seed in seeds for k in range(7)]
    assert [(a.warm_restart, a.t_zero, a.t_mult, a.lr) for a in args[:2]] == [(False, 50, 1, 0.05), (False, 50, 1, 0.1)]
    assert [(a.warm_restart, a.t_zero, a.t_mult) for a in args[1:7]] == [
        (False, 50, 1),
        (True, 50, 1),
        (True, 100, 1),
        (True, 200, 1),
        (True, 1, 2),
        (True, 10, 2),
    ]
    for words, said in [
        (["--seed", "9"], "--seed is the grid's own: set SEEDS"),
        (["--print"], "--print and --print: one mode at a time"),
        (["-b", "16", "--status"], "--status must come first"),
        (["--dry-run"], "--dry-run, --sbatch and --signal-seconds go with --submit"),
    ]:
        code, out, err = grid_sh({}, "--print", *words)
        assert code == 2 and said in err and not out, err
    # A grid of no seeds would print nothing, exit 0.
    code, _, err = grid_sh({"SEEDS": ""}, "--print")
    assert code == 2 and "SEEDS and SCHEDULES must each name at least one" in err


def test_grid_refuses_abbreviated_flags_and_names_folders_after_the_parsed_ones():
    """An abbreviation (--se 7 for --seed 7) would pass the grid's checks and reach train.py: every script
    refuses them. The folders follow the flags as train.py parses them (-e2 is -e 2)."""
    env = {"PYTHON": "python", "SEEDS": "1 2", "SCHEDULES": "default"}
    for flags in (
        ["--se", "7"],
        ["--mod", "wrn-10-1"],
        ["--datas", "cifar100"],
        ["--output", "x"],
        ["--recip", "paper"],
    ):
        code, out, err = grid_sh(env, "--print", *flags)
        assert code == 2 and f"unrecognized arguments: {' '.join(flags)}" in err and not out, flags
    for script in (settings, report, ensemble, plot, grid):
        assert script.build_parser().allow_abbrev is False, script.__name__
    commands = grid_commands(env, "-e2", "--model=wrn-10-1")
    assert [settings.parse_args(c[2:]).epochs for c in commands] == [2, 2]
    assert all("--model wrn-10-1" in shlex.join(c) for c in commands)


def test_equivalent_schedule_words_are_one_run_in_one_folder():
    words = "1:1 1:1/w0 1:1/d1 default default@0.05 default@0.050 10:2/d0.5 10:2/d0.50 10:2@0.1 10:2@0.10"
    words += " 10:2/w5/s0 10:2/w5 default@5e-2 default@.05 10:2@1e-1 10:2/d5e-1"  # spellings train.py accepts
    commands = grid_commands({"PYTHON": "python", "SEEDS": "1 1", "SCHEDULES": words})
    tails = [
        shlex.join(c[c.index("--output-dir") + 1 :]).replace("outputs/grid/cifar10-wrn-28-10-paper/", "")
        for c in commands
    ]
    assert tails == [
        "seed1 --resume --warm-restart -t0 1 -tm 1",
        "seed1 --resume",
        "seed1/d0.5 --resume --warm-restart -t0 10 -tm 2 --cycle-decay 0.5",
        "seed1/lr0.1 --resume --lr 0.1 --warm-restart -t0 10 -tm 2",
        "seed1/w5 --resume --warm-restart -t0 10 -tm 2 --warmup-epochs 5",
    ]


def test_a_word_is_read_against_the_rate_and_options_the_grid_gives_every_run():
    """default@0.05 is the default, unless the grid's flags give every run another rate: then it is a run of its own."""
    words = {"PYTHON": "python", "SEEDS": "1", "SCHEDULES": "default default@0.05 10:2/w0"}
    assert [shlex.join(c[c.index("--resume") :]) for c in grid_commands(words)] == [
        "--resume",
        "--resume --warm-restart -t0 10 -tm 2",
    ]
    commands = grid_commands(words, "--lr", "0.1")
    assert [shlex.join(c[c.index("--resume") :]) for c in commands] == [
        "--resume --lr 0.1",
        "--resume --lr 0.1 --lr 0.05",
        "--resume --lr 0.1 --warm-restart -t0 10 -tm 2",
    ]
    assert [settings.parse_args(c[2:]).lr for c in commands] == [0.1, 0.05, 0.1]
    assert [c[c.index("--output-dir") + 1].rsplit("/", 1)[-1] for c in commands] == ["seed1", "lr0.05", "seed1"]


def test_the_grid_has_help_and_reads_its_epochs_as_train_py_does():
    code, out, _ = grid_sh({}, "--help")
    assert code == 0 and "SCHEDULES=" in out and "--submit" in out and "usage: sh grid.sh" in out
    assert [settings.parse_args(c[2:]).epochs for c in grid_commands({"EPOCHS": "010", "SEEDS": "1"})][0] == 10


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["-wr"], "-wr (--warm-restart) is the grid's own: set SCHEDULES"),
        (["-t0", "5"], "--t-zero is the grid's own: set SCHEDULES"),
        (["--milestones", "3"], "--milestones is the grid's own: set SCHEDULES"),
        (["--cycle-decay", "0.5"], "--cycle-decay is the grid's own: set SCHEDULES"),
        (["--swa-start", "3"], "--swa-start is the grid's own: set SCHEDULES"),
        (["--swa-lr", "0.1"], "--swa-lr is the grid's own: set SCHEDULES"),
        (["--overwrite"], "--overwrite is the grid's own: every run resumes"),
        (["-w"], "unrecognized arguments: -w"),
    ],
)
def test_the_flags_that_choose_a_schedule_are_the_grids_own(flags, said):
    """Given to every run, -wr made the default schedule's run train warm restarts in the default's folder."""
    code, out, err = grid_sh({"SEEDS": "1", "SCHEDULES": "default 1:1"}, "--print", *flags)
    assert code == 2 and said in err and out == "", err


def test_a_model_has_one_name_in_the_grids_folders_and_the_runs_settings():
    (command,) = grid_commands({"MODEL": "wrn-028-10", "SEEDS": "1", "SCHEDULES": "default"})
    args = settings.parse_args(command[2:])
    assert args.model == "wrn-28-10" and args.output_dir.endswith("/cifar10-wrn-28-10-paper/seed1")
    assert settings.parse_args(["--model", "wrn-010-01"]).model == "wrn-10-1"
    code, _, err = grid_sh({"MODEL": "wrn-29-10"}, "--print")
    assert code == 2 and "MODEL is wrn-29-10: unknown model" in err


def test_a_folder_holding_a_run_of_other_settings_is_a_conflict_not_a_finished_run(tmp_path, monkeypatch):
    """The same grid folder planned with another flag (--lr 0.1 on a grid trained at 0.05): --status says so, and
    training or submitting refuses before anything is done, naming another GRID_DIR as the way out."""
    monkeypatch.chdir(tmp_path)
    env = {"SEEDS": "1", "SCHEDULES": "default", "GRID_DIR": "g", "MODEL": "wrn-10-1"}
    (command,) = grid_commands(env)
    folder = Path(settings.parse_args(command[2:]).output_dir)
    fake_run(folder.parent, folder.name, 200, warm_restart=False, milestones=[60, 120, 160], model="wrn-10-1", lr=0.05)
    code, out, err = grid_sh(env, "--status")
    assert code == 0 and "1 finished" in out, err
    code, out, err = grid_sh(env, "--status", "--lr", "0.1")
    assert code == 0 and "seed1/multistep  conflict" in out and "lr: 0.05 recorded, 0.1 planned" in out, out
    for mode in ([], ["--submit", "--dry-run"]):
        code, out, err = grid_sh(env, *mode, "--lr", "0.1")
        assert code == 2 and "runs of other settings hold the folders of this grid's runs, nothing was done" in err
        assert "another GRID_DIR" in err and out == ""


def test_submitted_commands_must_continue_their_run_when_requeued(tmp_path, monkeypatch):
    """A command with --overwrite, or without --resume, would start its run over (or fail) at every requeue."""
    monkeypatch.chdir(tmp_path)
    base = "python train.py -e 3 --seed 1 --output-dir g/seed1"
    for line, bad in [(f"{base} --overwrite", True), (base, True), (f"{base} --resume", False)]:
        (tmp_path / "commands.txt").write_text(line + "\n")
        code, out, err = grid_sh({}, "--submit", "--dry-run", "--commands", "commands.txt")
        if bad:
            assert code == 2 and "would not continue their run when SLURM requeues their task" in err, err
        else:
            assert code == 0 and "#SBATCH --array=0-0" in out, err


def test_submit_refuses_array_tasks_the_grid_does_not_have_and_a_bad_warning_time(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {"SEEDS": "1", "SCHEDULES": "default"}
    code, _, err = grid_sh(env, "--submit", "--dry-run", "--sbatch", "--array=5")
    assert code == 1 and "--array 5 names tasks this grid does not have: its 1 runs are tasks 0-0" in err
    assert grid_sh(env, "--submit", "--dry-run", "--sbatch", "--array=0-0%1")[0] == 0
    for seconds in ("0", "-5"):
        code, _, err = grid_sh(env, "--submit", "--dry-run", f"--signal-seconds={seconds}")
        assert code == 2 and "argument --signal-seconds: must be at least 1" in err


def test_the_status_of_a_grid_says_what_its_folders_are(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {"SEEDS": "1", "SCHEDULES": "default", "GRID_DIR": "g"}
    code, out, _ = grid_sh(env, "--status")
    assert (
        out.splitlines()[0]
        == "g/cifar10-wrn-28-10-paper: (no such folder here: not started, or planned from another folder or GRID_DIR)"
    )
    # A file where the seed's folder goes; a finished run whose metrics were cut short.
    (tmp_path / "g" / "cifar10-wrn-28-10-paper").mkdir(parents=True)
    (tmp_path / "g" / "cifar10-wrn-28-10-paper" / "seed1").write_text("not a folder")
    code, out, _ = grid_sh(env, "--status")
    assert "failed" in out and "seed1 is a file, where the run's folder" in out, out
    (tmp_path / "g" / "cifar10-wrn-28-10-paper" / "seed1").unlink()
    folder = fake_run(
        tmp_path / "g" / "cifar10-wrn-28-10-paper", "seed1", 200, warm_restart=False, milestones=[60, 120, 160]
    )
    metrics = folder / "metrics.jsonl"
    metrics.write_text("".join(metrics.read_text().splitlines(keepends=True)[:150]))
    code, out, _ = grid_sh(env, "--status")
    assert "interrupted" in out and "finished 200 epochs, but" in out and "holds 150: resume rewrites it" in out, out
    # A plan copied elsewhere and read with --commands: its runs where the copy is.
    shutil.copytree(tmp_path / "g", tmp_path / "copy")
    (tmp_path / "copy" / "cifar10-wrn-28-10-paper" / "grid.txt").write_text(shlex.join(grid_commands(env)[0]) + "\n")
    code, out, err = grid_sh({}, "--status", "--commands", "copy/cifar10-wrn-28-10-paper/grid.txt")
    assert code == 0 and out.splitlines()[0] == "copy/cifar10-wrn-28-10-paper:" and "seed1/multistep" in out, out + err


def test_an_abbreviated_mode_is_named_as_such():
    code, out, err = grid_sh({}, "--sub", "--dry-run")
    assert code == 2 and "--sub is not an option (abbreviations are refused; --submit?)" in err and out == ""


@pytest.fixture(scope="module")
def tiny_grid(tiny_cifar, tmp_path_factory):
    """What ``MODEL=wrn-10-1 EPOCHS=10 SEEDS="1 2" sh grid.sh --train-subset 16 -b 16`` trains: the
    grid's six schedules under the paper's recipe, two seeds each, 10 epochs of two batches (16
    images, each plain and mirrored). Its commands, run in this process."""
    root = tmp_path_factory.mktemp("grid")
    env = {"PYTHON": "python", "MODEL": "wrn-10-1", "EPOCHS": "10", "SEEDS": "1 2", "GRID_DIR": str(root)}
    env["SCHEDULES"] = "default 50:1 100:1 200:1 1:2 10:2"  # the grid's default but the eta_0 = 0.1 row
    commands = grid_commands(env, "--train-subset", "16", *TINY, "--data-dir", str(tiny_cifar))
    assert len(commands) == 12
    with pytest.MonkeyPatch.context() as mp:
        use_checksums_of(tiny_cifar, mp.setattr)
        for command in commands:
            code, _, err = call(train.main, command[2:])
            assert code == 0, err
    return root


def test_status_reads_a_grid_started_by_any_launcher(tiny_cifar, tmp_path):
    """``sh grid.sh --status`` on a grid whose commands ran without SLURM: one finished, one killed
    in its second epoch, one never started, all read from the folders."""
    env = {"PYTHON": sys.executable, "MODEL": "wrn-10-1", "EPOCHS": "3", "SEEDS": "1", "SCHEDULES": "default 1:2 10:2"}
    flags = [*TINY, "--data-dir", str(tiny_cifar)]
    commands = grid_commands({**env, "GRID_DIR": str(tmp_path)}, *flags)
    assert len(commands) == 3
    with pytest.MonkeyPatch.context() as mp:
        use_checksums_of(tiny_cifar, mp.setattr)
        assert call(train.main, commands[0][2:])[0] == 0
    killed = subprocess.run(harness(tiny_cifar, "batch:7", commands[1][2:]), capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    done = subprocess.run(
        ["sh", str(REPO / "grid.sh"), "--status", *flags],
        env={**os.environ, **env, "GRID_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{tmp_path / 'cifar10-wrn-10-1-paper'}:",
        "seed1/multistep  finished           3/3",
        "seed1/wr_s1_m2   interrupted        1/3  ended without a word (killed?)",
        "seed1/wr_s10_m2  not started",
        "3 runs: 1 finished, 1 interrupted, 1 not started",
    ]
    # The grid asking for more epochs than a finished run had; a record that cannot be read.
    grid = tmp_path / "cifar10-wrn-10-1-paper"
    (grid / "seed1" / "runs" / "wr_s1_m2" / "run.json").write_text("{garbage")
    more = subprocess.run(
        ["sh", str(REPO / "grid.sh"), "--status", *flags],
        env={**os.environ, **env, "EPOCHS": "4", "GRID_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    lines = more.stdout.splitlines()
    assert lines[1] == "seed1/multistep  interrupted        3/4  finished its 3 epochs; submit again to extend it to 4"
    assert lines[2].startswith("seed1/wr_s1_m2   failed             1/4  its record ") and "cannot be read" in lines[2]
    # A plan with a line train.py refuses (left by hand, or by an older version): the report says so and goes on.
    (grid / "grid.txt").write_text("python train.py --bogus\n")
    code, out, err = call(report.main, ["--runs", str(tmp_path), "--skip-ensembles"])
    assert code == 0, err
    assert "**Grid plan not read**: " in (tmp_path / "report" / "report.md").read_text()


def test_submit_dry_run_prints_the_job_array_and_submits_nothing(tmp_path):
    env = {**os.environ, "PYTHON": "python", "MODEL": "wrn-10-1", "SEEDS": "1 2", "SCHEDULES": "default 10:2"}
    grid_sh = ["sh", str(REPO / "grid.sh"), "--submit"]
    done = subprocess.run(
        [*grid_sh, "--dry-run", "--sbatch", "--gres=gpu:1 -p 'my gpus'", "-b", "64"], **run_in(tmp_path, env)
    )
    assert done.returncode == 0, done.stderr
    script = done.stdout
    # A script sbatch takes as it is (#! first), and the command it was shown with, last.
    slurm_out = f"--output={tmp_path}/outputs/grid/cifar10-wrn-10-1-paper/slurm/%A_%a.out"
    assert script.splitlines()[0] == "#!/bin/sh"
    assert (
        script.splitlines()[-1]
        == f"# submitted as: sbatch --parsable {slurm_out} --gres=gpu:1 -p 'my gpus' < this script"
    )
    for line in ("#SBATCH --array=0-3", "#SBATCH --requeue", "#SBATCH --signal=B:USR1@300", f"cd {tmp_path}"):
        assert line in script.splitlines()
    tasks = re.findall(r"^    (\d+)\) log=(\S+); set -- (.*) ;;$", script, re.M)
    commands = grid_commands({k: env[k] for k in ("PYTHON", "MODEL", "SEEDS", "SCHEDULES")}, "-b", "64")
    assert [shlex.split(command) for _, _, command in tasks] == commands
    assert [(k, log) for k, log, _ in tasks][1] == ("1", "outputs/grid/cifar10-wrn-10-1-paper/seed1/runs/wr_s10_m2.log")
    assert subprocess.run(["sh", "-n"], input=script, text=True).returncode == 0
    assert not (tmp_path / "outputs").exists()  # a dry run writes nothing, not even the plan
    # Where sbatch is missing, or refuses: the way out, or sbatch's own words; no traceback.
    plan = tmp_path / "commands.txt"
    plan.write_text("\n".join(map(shlex.join, commands)) + "\n")
    (tmp_path / "bin").mkdir()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PATH", str(tmp_path / "bin"))
        mp.chdir(tmp_path)  # the commands' folders are relative, as grid.sh writes them
        code, out, err = call(grid.main, ["--submit", "--commands", str(plan)])
        assert code == 1 and "sbatch is not on this machine's PATH: submit from a SLURM login node" in err
        sbatch = tmp_path / "bin" / "sbatch"
        sbatch.write_text("#!/bin/sh\necho 'sbatch: error: invalid partition specified: gpus' >&2\nexit 1\n")
        sbatch.chmod(0o755)
        code, out, err = call(grid.main, ["--submit", "--commands", str(plan)])
        assert (
            code == 1
            and err == "error: sbatch refused the job array: sbatch: error: invalid partition specified: gpus\n"
        )
        assert not (tmp_path / "outputs" / "grid" / "cifar10-wrn-10-1-paper" / "grid.txt").exists()  # nothing planned
        # Accepted: the commands join the grid's plan, once each however often they are submitted, and
        # however an earlier line was quoted (grid.sh's train mode quotes in its own way).
        sbatch.write_text("#!/bin/sh\ncat > /dev/null\necho 4242\n")
        grid_txt = tmp_path / "outputs" / "grid" / "cifar10-wrn-10-1-paper" / "grid.txt"
        grid_txt.parent.mkdir(parents=True, exist_ok=True)
        grid_txt.write_text(" ".join(f"'{word}'" for word in commands[0]) + "\n")
        for _ in range(2):
            code, out, err = call(grid.main, ["--submit", "--commands", str(plan)])
            assert code == 0 and "Submitted 4 runs as job array 4242 (tasks 0-3)." in out, err
        written = (tmp_path / "outputs" / "grid" / "cifar10-wrn-10-1-paper" / "grid.txt").read_text().splitlines()
        assert [shlex.split(line) for line in written] == commands
        # sbatch that submits nothing and gives no job id (--test-only): said, and nothing planned.
        grid_txt.unlink()
        sbatch.write_text("#!/bin/sh\ncat > /dev/null\necho 'sbatch: Job 3 to start at 2026-12-06T08:00:00' >&2\n")
        code, out, err = call(grid.main, ["--submit", "--commands", str(plan), "--sbatch", "--test-only"])
        assert code == 1 and "sbatch gave no job id (it said: sbatch: Job 3 to start at" in err and out == ""
        assert not grid_txt.exists()


def test_a_single_seed_grid_of_shaped_schedules_plans_itself_in_its_own_folder(tmp_path, monkeypatch):
    """With SEEDS=1 COMPARE=1 every run's folder is inside seed1/: the plan and SLURM's output still go to the
    grid's folder, where the report finds the planned runs."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bin").mkdir()
    sbatch = tmp_path / "bin" / "sbatch"
    sbatch.write_text("#!/bin/sh\ncat > /dev/null\necho 77\n")
    sbatch.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    code, out, err = grid_sh({"PYTHON": "python", "SEEDS": "1", "COMPARE": "1", "EPOCHS": "20"}, "--submit")
    assert code == 0 and "Submitted 9 runs as job array 77" in out, err
    root = tmp_path / "outputs" / "grid" / "cifar10-wrn-28-10-paper"
    assert sorted(p.name for p in root.iterdir()) == ["grid.txt", "slurm"]
    found = [run.files.run_dir for run in planner.read_plan_file(root / "grid.txt")]
    assert len(found) == 9 and all(folder.is_relative_to(root / "seed1") for folder in found)
    assert found[-2:] == [root / "seed1" / "w5" / "runs" / "wr_s15_m1", root / "seed1" / "d0.5" / "runs" / "wr_s10_m2"]


def test_submit_refuses_what_would_fail_on_the_cluster(tmp_path, monkeypatch):
    env = {"PYTHON": "python -X utf8", "MODEL": "wrn-10-1", "SEEDS": "1", "SCHEDULES": "default"}
    monkeypatch.chdir(tmp_path)

    def submit(*words: str, **more: str) -> subprocess.CompletedProcess:
        with monkeypatch.context() as mp:
            for name, value in more.items():  # sbatch's own variables are read where sbatch would read them
                mp.setenv(name, value)
            code, out, err = grid_sh({**env, **more}, "--submit", "--dry-run", *words)
        return subprocess.CompletedProcess(words, code, out, err)

    # PYTHON of several words is split, in the job script as when grid.sh trains.
    assert "set -- python -X utf8 " in submit().stdout
    cases = [
        (["--sbatch", "'x"], {}, "--sbatch \"'x\": No closing quotation; give sbatch's options as one quoted string."),
        (["--sbatch", "--time=4"], {}, "a time limit of 240 s leaves no time to train: each task stops 300 s before"),
        ([], {"SBATCH_TIMELIMIT": "9:00"}, "a time limit of 540 s leaves no time"),
        ([], {"SEEDS": "01 1"}, "SEEDS: 01 is not a whole number without leading zeros"),
        ([], {"SIGNAL_SECONDS": "soon"}, "SIGNAL_SECONDS is soon, not a whole number of seconds"),
        (["-b", "64", "--sbatch", "-p x"], {}, "--sbatch must come first: sh grid.sh [--print | --status | --submit"),
    ]
    for words, more, said in cases:
        done = submit(*words, **more)
        assert done.returncode != 0 and said in done.stderr and "Traceback" not in done.stderr, (
            words,
            more,
            done.stderr,
        )
    # A time limit that leaves time, with a shorter warning: accepted.
    done = submit("--sbatch", "--time=4", SIGNAL_SECONDS="60")
    assert done.returncode == 0 and "#SBATCH --signal=B:USR1@60" in done.stdout, done.stderr


def run_in(folder: Path, env: dict[str, str]) -> dict:
    return {"cwd": folder, "env": env, "capture_output": True, "text": True}


def test_the_report_fills_every_row(tiny_grid, cifar_dir):
    code, out, err = call(report.main, ["--runs", str(tiny_grid), "--data-dir", str(cifar_dir)])
    assert code == 0, err
    text = (tiny_grid / "report" / "report.md").read_text()
    rows = table1_rows(text)
    assert list(rows) == [
        "default with eta_0 = 0.1 (lr x 0.2 at 60, 120, 160; no step in 10 epochs)",  # not trained here
        "default (lr x 0.2 at 60, 120, 160; no step in 10 epochs)",
        "T_0 = 50, T_mult = 1",
        "T_0 = 100, T_mult = 1",
        "T_0 = 200, T_mult = 1",
        "T_0 = 1, T_mult = 2",
        "T_0 = 10, T_mult = 2",
    ]
    assert list(rows.values())[0] == ["0", "", "not run", "", "", "4.24"]
    rows.pop("default with eta_0 = 0.1 (lr x 0.2 at 60, 120, 160; no step in 10 epochs)")
    # Read where the paper reads: T_0 = 1, T_mult = 2 ends its cycles after epochs 1, 3, 7 (the next
    # would end after 15); T_0 = 10 after epoch 10; the others have no finished cycle: the last epoch.
    assert [cells[1] for cells in rows.values()] == ["10", "10", "10", "10", "7", "10"]
    for cells, paper_error in zip(rows.values(), ["4.13", "4.17", "4.07", "3.86", "4.09", "4.03"]):
        assert cells[0] == "2 (1, 2)" and re.fullmatch(r"\d+\.\d\d( \(\d+\.\d\d-\d+\.\d\d\))?", cells[2]), cells
        assert cells[5] == paper_error
    # Each run's recommended solution is its metrics' epoch 7 for T_0 = 1, T_mult = 2.
    errors = sorted(
        100 * json.loads(line)["test_error"]
        for seed in (1, 2)
        for line in (tiny_grid / "cifar10-wrn-10-1-paper" / f"seed{seed}" / "runs" / "wr_s1_m2" / "metrics.jsonl")
        .read_text()
        .splitlines()[6:7]
    )
    assert rows["T_0 = 1, T_mult = 2"][2].startswith(f"{(errors[0] + errors[1]) / 2:.2f}")
    # The grid is the paper's recipe, but not its network, epochs or data: the heading says how.
    assert "## cifar10, wrn-10-1, paper recipe, 10 epochs: not the paper's setup" in text
    assert "model wrn-10-1 (the paper's: wrn-28-10); epochs 10 (the paper's: 200)" in text
    assert "train_subset 16 (the paper's: all 50,000 training images)" in text and "(the paper's: None)" not in text
    assert "paper (other setup, see above)" in text
    # Table 2: T_0 = 1, T_mult = 2 ends cycles after epochs 1, 3, 7; T_0 = 10 after epoch 10.
    assert re.search(r"\| T_0 = 1, T_mult = 2 \| 1 run, M = 3 \| \d+\.\d\d", text)
    assert re.search(r"\| T_0 = 1, T_mult = 2 \| 2 runs, M = 3 \| \d+\.\d\d \|", text)
    # One run, one snapshot is the recommended solution itself (the paper: Table 2's 4.03 is Table 1's): the
    # ensemble evaluates the epoch-10 snapshot with the run's own inputs (its mean image) and gets its error.
    assert f"| T_0 = 10, T_mult = 2 | 1 run, M = 1 | {rows['T_0 = 10, T_mult = 2'][2]} | 4.03 |" in text
    # The same, to the last digit of the loss: the ensemble's logits of a snapshot give its run's test loss.
    run = tiny_grid / "cifar10-wrn-10-1-paper" / "seed1" / "runs" / "wr_s10_m2"
    test = ensembles.SnapshotOutputs(cifar_dir, torch.device("cpu"))
    loss = torch.nn.functional.cross_entropy(test.logits(run / "snapshots" / "epoch_0010.pt"), test.labels()).item()
    assert loss == pytest.approx(json.loads((run / "metrics.jsonl").read_text().splitlines()[9])["test_loss"], rel=1e-5)
    for name in ("test_error_cifar10_wrn-10-1_paper.png", "ensembles_cifar10_wrn-10-1_paper.png"):
        assert (tiny_grid / "report" / name).stat().st_size > 10_000 and f"({name})" in text


@pytest.mark.parametrize(
    ("schedule", "epochs", "read"),
    [
        ({"warm_restart": False, "milestones": [60, 120, 160]}, 200, 200),
        ({"warm_restart": True, "t_zero": 50, "t_mult": 1}, 200, 200),
        ({"warm_restart": True, "t_zero": 200, "t_mult": 1}, 200, 200),
        ({"warm_restart": True, "t_zero": 10, "t_mult": 2}, 200, 150),  # cycles end at 10, 30, 70, 150
        ({"warm_restart": True, "t_zero": 1, "t_mult": 2}, 200, 127),  # ... 63, 127
        ({"warm_restart": True, "t_zero": 200, "t_mult": 1}, 120, 120),  # no cycle finished: the last epoch
    ],
)
def test_the_report_reads_the_recommended_solution(schedule, epochs, read, tmp_path):
    fake_run(tmp_path, "run", epochs, **schedule)
    code, _, err = call(report.main, ["--runs", str(tmp_path), "--skip-ensembles"])
    assert code == 0, err
    text = (tmp_path / "report" / "report.md").read_text()
    [cells] = [cells for cells in table1_rows(text).values() if cells[0] != "0"]
    assert cells[1:4] == [str(read), f"{read / 1000:.2f}", f"{epochs / 1000:.2f}"]
    assert (": the paper's setup\n" in text) == (epochs == 200)


def test_the_report_never_pools_runs_of_other_settings(tmp_path):
    multistep = {"warm_restart": False, "milestones": [60, 120, 160]}
    fake_run(tmp_path, "a", 200, **multistep)
    fake_run(tmp_path, "b", 200, **multistep, seed=2)  # same experiment, another seed: pooled
    fake_run(tmp_path, "c", 200, **multistep, train_subset=5000)
    fake_run(tmp_path, "d", 200, **multistep, batch_size=64)
    fake_run(tmp_path, "e", 200, **multistep, recipe="tutorial")
    fake_run(tmp_path, "f", 200, warm_restart=False, milestones=[6, 12, 16])  # another schedule: its own row
    fake_run(tmp_path, "g", 200, **multistep, processes=2)  # torchrun, BatchNorm over half a batch
    code, out, err = call(report.main, ["--runs", str(tmp_path), "--skip-ensembles"])
    assert code == 0, err
    text = (tmp_path / "report" / "report.md").read_text()
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert len(headings) == 5 and "in 5 group(s)" in out
    assert sum(h.endswith(": the paper's setup") for h in headings) == 1
    paper = text.split("\n## ")[[h.endswith(": the paper's setup") for h in headings].index(True) + 1]
    rows = table1_rows(paper)
    assert rows["default (lr x 0.2 at 60, 120, 160)"][0] == "2 (1, 2)"
    assert (
        rows["multistep (lr x 0.2 at 6, 12, 16)"][0] == "1 (1)" and rows["multistep (lr x 0.2 at 6, 12, 16)"][5] == ""
    )
    assert (
        "batch_size 64 (the paper's: 128)" in text
        and "train_subset 5000 (the paper's: all 50,000 training images)" in text
    )
    assert "recipe tutorial (the paper's: paper)" in text and "These runs use the tutorial's recipe" in text
    assert "BatchNorm over each of 2 processes' share of a batch (no --sync-bn)" in text
    # Settings that tell groups apart but are not in the title are named in the headings.
    assert any("batch_size 64" in h for h in headings) and any("train_subset 5000" in h for h in headings)


def test_a_copied_run_folder_is_counted_once(tmp_path):
    multistep = {"warm_restart": False, "milestones": [60, 120, 160]}
    first = fake_run(tmp_path, "a", 200, **multistep)
    fake_run(tmp_path, "b", 200, **multistep, seed=2)
    copy = tmp_path / "a-copy" / "runs" / first.name
    shutil.copytree(first, copy)
    code, out, err = call(report.main, ["--runs", str(tmp_path), "--skip-ensembles"])
    assert code == 0, err
    assert f"warning: {copy} (200 epochs) is the same run as {first} (same settings and seed): counted once" in err
    text = (tmp_path / "report" / "report.md").read_text()
    assert table1_rows(text)["default (lr x 0.2 at 60, 120, 160)"][0] == "2 (1, 2)" and "Left out, copies" in text


def test_a_finished_run_is_never_dropped_for_its_unfinished_copy(tmp_path):
    """SCHEDULES="default" finished in seed1/, then a grid with default@0.05 (the same run, in another folder
    by an older planner) was interrupted: the finished run counts, its copy is named, the plan calls it a copy."""
    multistep = {"warm_restart": False, "milestones": [60, 120, 160], "lr": 0.05}
    grid = tmp_path / "cifar10-wrn-28-10-paper"
    finished = fake_run(grid, "seed1", 200, **multistep)
    copy = fake_run(grid, "seed1/lr0.05", 200, done=37, **multistep)  # sorts first: a/ before r/ in "lr0.05/runs"
    assert sorted([str(copy), str(finished)])[0] == str(copy)
    fake_run(grid, "seed1/t", 200, warm_restart=True, t_zero=200, t_mult=1)
    base = "python train.py -e 200 --model wrn-28-10 --dataset cifar10 --recipe paper --seed 1 --output-dir"
    (grid / "grid.txt").write_text(f"{base} g/seed1 --resume\n{base} g/seed1/lr0.05 --resume --lr 0.05\n")
    code, out, err = call(report.main, ["--runs", str(tmp_path), "--skip-ensembles"])
    assert code == 0, err
    assert f"warning: {copy} (37 epochs, not finished) is the same run as {finished}" in err
    text = (tmp_path / "report" / "report.md").read_text()
    assert table1_rows(text)["default (lr x 0.2 at 60, 120, 160)"][:2] == ["1 (1)", "200"]
    assert "Incomplete grid" not in text
    said = "Planned runs that finished as a copy elsewhere, counted there: seed1/lr0.05/multistep"
    assert f"{said} (finished in {finished})" in text


def test_runs_on_other_images_are_kept_apart_and_a_moved_data_set_still_resumes(tiny_cifar, tmp_path):
    other = write_cifar10(tmp_path / "other-data", seed=7)  # the same format and size, other images
    moved = tmp_path / "moved-data"
    shutil.copytree(tiny_cifar, moved)
    args = ["-e", "1", "--seed", "1", *SMALL, *TINY]
    with pytest.MonkeyPatch.context() as mp:
        for data, out, epochs in [(tiny_cifar, "runs-a/seed1", "1"), (other, "runs-b/seed1", "2")]:
            use_checksums_of(data, mp.setattr)
            flags = ["-e", epochs, *args[2:], "--data-dir", str(data), "--output-dir", str(tmp_path / out)]
            assert call(train.main, flags)[0] == 0
        use_checksums_of(moved, mp.setattr)
        resumed = [*args[:1], "2", *args[2:], "--resume", "--data-dir", str(moved)]
        code, log, err = call(train.main, [*resumed, "--output-dir", str(tmp_path / "runs-a/seed1")])
        assert code == 0 and "Resuming after epoch 1" in log, err
        use_checksums_of(other, mp.setattr)
        code, _, err = call(train.main, [*resumed[:-1], str(other), "--output-dir", str(tmp_path / "runs-a/seed1")])
        assert code == 1 and "was trained on other images than those in" in err
    digests = {json.loads(p.read_text())["config"]["data"] for p in tmp_path.rglob("run.json")}
    assert len(digests) == 2
    code, out, err = call(report.main, ["--runs", str(tmp_path), "--skip-ensembles"])
    assert code == 0, err
    assert "in 2 group(s)" in out  # not one group of two seeds


def test_damaged_run_files_are_named_and_the_rest_reported(tmp_path):
    multistep = {"warm_restart": False, "milestones": [60, 120, 160]}
    fake_run(tmp_path, "good", 200, **multistep)
    metrics = fake_run(tmp_path, "cut", 200, **multistep, seed=2) / "metrics.jsonl"
    metrics.write_text(metrics.read_text()[:-7])  # the last line cut short
    record = fake_run(tmp_path, "truncated", 200, **multistep, seed=3) / "run.json"
    record.write_text(record.read_text()[:40])
    odd = fake_run(tmp_path, "odd", 200, **multistep, seed=4) / "run.json"
    odd.write_text(odd.read_text().replace('"warm_restart": false', '"warm_restart": "yes"'))
    no_t0 = fake_run(tmp_path, "no-t0", 200, warm_restart=True, t_zero=50, t_mult=1, seed=5) / "run.json"
    no_t0.write_text(no_t0.read_text().replace('"t_zero": 50', '"t_zero_": 50'))
    code, out, err = call(report.main, ["--runs", str(tmp_path), "--skip-ensembles"])
    assert code == 0, err
    assert f"warning: left out {metrics.parent}: {metrics} line 200 is damaged" in err
    assert f"warning: left out {record.parent}: {record} is not a complete run record" in err
    assert f"warning: left out {odd.parent}: {odd} has an inconsistent schedule: warm_restart is 'yes'" in err
    assert f"{no_t0} has an inconsistent schedule: a warm-restart run without t_zero" in err
    assert "Traceback" not in err
    text = (tmp_path / "report" / "report.md").read_text()
    assert table1_rows(text)["default (lr x 0.2 at 60, 120, 160)"][0] == "1 (1)" and "Left out, damaged" in text


def test_the_report_needs_finished_runs(tmp_path):
    code, _, err = call(report.main, ["--runs", str(tmp_path)])
    assert code == 1 and "no finished runs" in err and "grid.sh" in err


def test_table2_cites_the_paper_only_for_its_own_schedule_network_and_ensembles():
    sgdr = (0.05, (10, 2))
    assert tables.paper_table2(sgdr, "cifar10", 1, 3) == "3.51"
    assert tables.paper_table2(sgdr, "cifar100", 3, 3) == "16.64"
    assert tables.paper_table2(sgdr, "cifar100", 1, 1) == "19.57"  # the median of 16 runs, not Table 1's 19.58
    assert tables.paper_table2(sgdr, "cifar10", 1, 2) == ""  # the paper reports M = 1 and 3 only
    assert tables.paper_table2((0.05, (1, 2)), "cifar10", 1, 3) == ""
    assert tables.paper_table2((0.1, (10, 2)), "cifar10", 1, 3) == ""  # another eta_max
    assert tables.paper_table2(sgdr, "cifar10", 1, 3, "wrn-28-20") == ""  # Table 2 is WRN-28-10's
    assert tables.paper_table2(sgdr, "cifar10", 1, 3, "wrn-10-1") == "3.51"  # shown for orientation


def test_the_report_without_the_data_set_names_the_way_out(tiny_grid, tmp_path, offline):
    code, _, err = call(report.main, ["--runs", str(tiny_grid), "--data-dir", str(tmp_path / "none")])
    assert code == 1 and "is not in" in err and "--skip-ensembles" in err and "Traceback" not in err


def test_ensemble_without_the_data_set_creates_nothing_and_says_it_downloads_nothing(cifar_dir, tmp_path, offline):
    args = ["-e", "1", "-wr", "-t0", "1", "--train-subset", "16", "--seed", "2", *SMALL, *TINY]
    assert call(train.main, [*args, "--data-dir", str(cifar_dir), "--output-dir", str(tmp_path / "o")])[0] == 0
    nope = tmp_path / "nope"
    code, _, err = call(ensemble.main, [str(tmp_path / "o" / "runs" / "wr_s1_m1"), "--data-dir", str(nope)])
    assert code == 1 and f"CIFAR-10 is not in {nope / 'cifar-10-batches-py'}" in err
    assert "downloads nothing" in err and "could not be downloaded" not in err
    assert not nope.exists()


def test_ensemble_names_a_folder_that_does_not_exist(tmp_path):
    code, _, err = call(ensemble.main, [str(tmp_path / "nothere")])
    assert code == 1 and "is not a folder" in err


def test_a_moved_grid_plan_finds_its_runs_in_the_folders_of_their_own(tmp_path):
    env = {"PYTHON": "python", "SEEDS": "1", "SCHEDULES": "10:2 10:2/d0.5 default@0.1", "GRID_DIR": "old"}
    root = tmp_path / "moved"
    root.mkdir()
    (root / planner.PLAN).write_text("".join(shlex.join(c) + "\n" for c in grid_commands(env)))
    found = [run.files.run_dir for run in planner.read_plan_file(root / planner.PLAN)]
    assert found == [
        root / "seed1" / "runs" / "wr_s10_m2",
        root / "seed1" / "d0.5" / "runs" / "wr_s10_m2",
        root / "seed1" / "lr0.1" / "runs" / "multistep",
    ]


def test_the_grid_trains_the_papers_baseline_eta_0_0_1_by_default():
    """Section 4.2 measures SGDR against the default schedule with eta_0 = 0.1: the grid trains that row."""
    commands = grid_commands({"PYTHON": "python", "SEEDS": "1"})
    rates = [(settings.parse_args(c[2:]).lr, settings.parse_args(c[2:]).warm_restart) for c in commands]
    assert len(commands) == 7 and rates[:2] == [(0.05, False), (0.1, False)]


def scaled_flags(env: dict[str, str]) -> list[str]:
    return [shlex.join(c[c.index("--resume") + 1 :]) for c in grid_commands({"PYTHON": "python", **env})]


def test_a_scaled_try_out_scales_every_schedule_to_the_epochs_asked_for(tmp_path, monkeypatch):
    env = {"SEEDS": "1", "EPOCHS": "30", "SCALED": "1", "TABLE2_SEEDS": "2", "COMPARE": "1"}
    assert scaled_flags(env) == [
        "--milestones 9 18 24",  # 60, 120, 160 x 30 / 200
        "--lr 0.1 --milestones 9 18 24",
        "--warm-restart -t0 8 -tm 1",  # 7.5, rounded half up
        "--warm-restart -t0 15 -tm 1",
        "--warm-restart -t0 30 -tm 1",
        "--warm-restart -t0 1 -tm 2",  # 0.15: at least 1
        "--warm-restart -t0 2 -tm 2",  # 1.5
        "--warm-restart -t0 29 -tm 1 --warmup-epochs 1",  # COMPARE: one cycle after a warmup of 5 x 30 / 200
        "--warm-restart -t0 2 -tm 2 --cycle-decay 0.5",
        "--warm-restart -t0 2 -tm 2",  # TABLE2_SEEDS: T_0 = 10, T_mult = 2, scaled too
    ]
    # COMPARE=1 at 4 epochs, refused unscaled, is a try-out once scaled.
    assert scaled_flags({"SEEDS": "1", "EPOCHS": "4", "SCALED": "1", "COMPARE": "1", "SCHEDULES": "default 10:2"}) == [
        "--milestones 1 2 3",
        "--warm-restart -t0 1 -tm 2",
        "--warm-restart -t0 3 -tm 1 --warmup-epochs 1",
        "--warm-restart -t0 1 -tm 2 --cycle-decay 0.5",
    ]
    code, _, err = grid_sh({"SEEDS": "1", "EPOCHS": "4", "COMPARE": "1", "SCHEDULES": "default"}, "--print")
    assert code == 2 and "SCALED=1 scales the warmup with the rest" in err
    # Schedules that scaling would make one run are refused, with the fewest epochs that keep them apart.
    code, out, err = grid_sh({"SEEDS": "1", "EPOCHS": "20", "SCALED": "1"}, "--print")
    assert code == 2 and out == "" and "Traceback" not in err
    assert "SCALED=1 at 20 epochs: 1:2 and 10:2 both become 1:2" in err and "EPOCHS=30 or more" in err
    code, _, err = grid_sh({"SEEDS": "1", "EPOCHS": "3", "SCALED": "1", "SCHEDULES": "default"}, "--print")
    assert code == 2 and "default's steps after epochs 60, 120, 160 fall on epochs 1, 2, 2" in err
    code, _, err = grid_sh({"SCALED": "yes"}, "--print")
    assert code == 2 and "SCALED is yes" in err
    # Table 2's extra seeds that would end no cycle (so leave no snapshot) are refused, not trained for nothing.
    code, _, err = grid_sh({"SEEDS": "1", "EPOCHS": "6", "TABLE2_SEEDS": "1 2 3"}, "--print")
    assert code == 2 and "first cycle ends after epoch 10, beyond EPOCHS=6" in err and "SCALED=1" in err
    assert (
        grid_sh({"SEEDS": "1", "EPOCHS": "6", "TABLE2_SEEDS": "2", "SCALED": "1", "SCHEDULES": "10:2"}, "--print")[0]
        == 0
    )
    # The plan says it was scaled, for the report; at 200 epochs SCALED=1 changes nothing.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "sbatch").write_text("#!/bin/sh\ncat > /dev/null\necho 5\n")
    (tmp_path / "bin" / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    assert grid_sh({"PYTHON": "python", **env}, "--submit")[0] == 0
    plan = tmp_path / "outputs" / "grid" / "cifar10-wrn-28-10-paper" / "grid.txt"
    assert planner.plan_is_scaled(plan) and len(planner.read_plan_file(plan)) == 10
    assert scaled_flags({"SEEDS": "1", "SCALED": "1", "SCHEDULES": "default 10:2"}) == [
        "",
        "--warm-restart -t0 10 -tm 2",
    ]


def test_status_reads_the_grids_plan_and_refuses_settings_that_disagree_with_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    submitted = {"PYTHON": "python", "MODEL": "wrn-10-1", "SEEDS": "1 2", "SCHEDULES": "default 10:2", "GRID_DIR": "g"}
    (tmp_path / "g" / "cifar10-wrn-10-1-paper").mkdir(parents=True)
    planner.record_plan(
        [planner.planned_run(c, "test") for c in grid_commands(submitted)], Path("g/cifar10-wrn-10-1-paper")
    )
    # No settings at all: the one grid planned in GRID_DIR, with its four runs (not the default grid's 35).
    code, out, err = grid_sh({"GRID_DIR": "g"}, "--status")
    assert code == 0, err
    assert out.splitlines()[0] == "g/cifar10-wrn-10-1-paper:" and "4 runs: 4 not started" in out
    assert "(the runs of its plan, g/cifar10-wrn-10-1-paper/grid.txt)" in out
    # The settings it was submitted with: the same; some of them: those runs, and how many more the plan has.
    assert grid_sh(submitted, "--status")[1] == out.replace(
        "\n(the runs of its plan, g/cifar10-wrn-10-1-paper/grid.txt)", ""
    )
    code, out, err = grid_sh({**submitted, "SEEDS": "1"}, "--status")
    assert code == 0 and "2 runs: 2 not started" in out and "(2 more run(s) in its plan" in out, out + err
    # Settings naming runs the plan does not have: refused, naming the folder.
    code, out, err = grid_sh({**submitted, "SEEDS": "1 2 3"}, "--status")
    assert (
        code == 2 and out == "" and "the settings given plan 2 run(s) that the plan of g/cifar10-wrn-10-1-paper" in err
    )
    # Two grids planned in GRID_DIR and no settings: which one is asked.
    other = {**submitted, "MODEL": "wrn-16-4"}
    (tmp_path / "g" / "cifar10-wrn-16-4-paper").mkdir()
    planner.record_plan(
        [planner.planned_run(c, "test") for c in grid_commands(other)], Path("g/cifar10-wrn-16-4-paper")
    )
    code, _, err = grid_sh({"GRID_DIR": "g"}, "--status")
    assert code == 2 and "holds the plans of cifar10-wrn-10-1-paper, cifar10-wrn-16-4-paper" in err
    # GRID_DIR naming a grid's own folder: the folder above it is meant.
    code, _, err = grid_sh({"GRID_DIR": "g/cifar10-wrn-16-4-paper"}, "--status")
    assert code == 2 and "GRID_DIR=g/cifar10-wrn-16-4-paper is a grid's own folder" in err and "GRID_DIR=g." in err
    # A plan that grew over two submissions of the same folders (EPOCHS 3, then 4): each one's settings are its.
    longer = {**other, "EPOCHS": "4"}
    planner.record_plan(
        [planner.planned_run(c, "test") for c in grid_commands(longer)], Path("g/cifar10-wrn-16-4-paper")
    )
    for settings_given in (other, longer):
        code, out, err = grid_sh(settings_given, "--status")
        assert code == 0 and "4 runs: 4 not started" in out and "more run(s)" not in out, err


def slurm_run(grid_folder: Path, seed: int, task: str) -> Path:
    """An interrupted run that a SLURM array task started (as its job script logs it), stopped by SIGTERM."""
    folder = fake_run(grid_folder, f"seed{seed}", 200, done=3, seed=seed, warm_restart=False, milestones=[60, 120, 160])
    folder.with_name(f"{folder.name}.log").write_text(
        f"== grid: task {task} (job 9) starts on node1, start 1 at 2026-12-01T00:00:00Z\n"
        "Stopped by SIGTERM.\n== grid: exit status 143 at 2026-12-01T01:00:00Z\n"
    )
    return folder


def test_status_tells_a_requeued_run_from_a_cancelled_one_where_squeue_answers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = {"PYTHON": "python", "SEEDS": "1 2", "SCHEDULES": "default", "GRID_DIR": "g"}
    root = tmp_path / "g" / "cifar10-wrn-28-10-paper"
    requeued = slurm_run(root, 1, "41_0")  # requeued: its task is pending again
    with requeued.with_name("multistep.log").open("a") as log:  # a task of a second submission found it busy
        log.write("== grid: task 60_0 (job 61) starts on node2, start 1 at 2026-12-01T02:00:00Z\n")
        log.write("== grid: exit status 75: another job is running this run (see its lock); this task did nothing\n")
    slurm_run(root, 2, "41_1")  # cancelled: its task is gone from the queue
    (tmp_path / "bin").mkdir()
    squeue = tmp_path / "bin" / "squeue"
    squeue.write_text("#!/bin/sh\necho '41_0|PENDING'\necho '52_3|RUNNING'\n")
    squeue.chmod(0o755)
    with monkeypatch.context() as mp:
        mp.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
        code, out, err = grid_sh(env, "--status")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[1].split()[:3] == ["seed1/multistep", "queued", "3/200"] and "task 41_0 is PENDING" in lines[1]
    assert lines[2].split()[:3] == ["seed2/multistep", "interrupted", "3/200"]
    assert "no task of it is in the queue (the last: 41_1; cancelled?): submit again to continue" in lines[2]
    assert "2 runs: 1 queued, 1 interrupted" in out
    # A run whose earlier task is queued again after a later one, and a run a new submission's task will start:
    # both queued (the grid's slurm/ folder says which task of a submission runs which run).
    env3 = {**env, "SEEDS": "1 2 3"}
    third = slurm_run(root, 3, "41_2")
    with third.with_name("multistep.log").open("a") as log:
        log.write("== grid: task 77_2 (job 80) starts on node2, start 1 at 2026-12-01T03:00:00Z\n")
        log.write("Stopped by SIGTERM.\n== grid: exit status 143 at 2026-12-01T03:10:00Z\n")
    (root / "slurm").mkdir()
    (root / "slurm" / "tasks_90.txt").write_text(f"90_1 {(root / 'seed2' / 'runs' / 'multistep').resolve()}\n")
    squeue.write_text("#!/bin/sh\necho '41_2|PENDING'\necho '90_1|PENDING'\n")
    with monkeypatch.context() as mp:
        mp.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
        code, out, err = grid_sh(env3, "--status")
    lines = out.splitlines()
    assert lines[2].split()[1] == "queued" and "task 90_1 is PENDING" in lines[2], out
    assert lines[3].split()[1] == "queued" and "task 41_2 is PENDING" in lines[3], out
    (root / "slurm" / "tasks_90.txt").unlink()
    # Where squeue does not answer, the status says its states come from the folders alone.
    squeue.write_text("#!/bin/sh\necho 'slurm_load_jobs error: Unable to contact slurm controller' >&2\nexit 1\n")
    with monkeypatch.context() as mp:
        mp.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
        code, out, err = grid_sh(env, "--status")
    assert code == 0 and "2 runs: 2 interrupted" in out
    assert "(states from the run folders only: squeue did not answer here" in out


def test_plot_on_a_grid_names_the_script_for_it_and_marks_an_unfinished_run(tmp_path, tiny_grid):
    code, out, err = call(plot.main, ["--output-dir", str(tiny_grid)])
    assert code == 1 and "Traceback" not in err and "train.py" not in err
    assert f"{tiny_grid} holds a grid: plot.py draws the reference runs" in err
    assert f"python report.py --runs {tiny_grid}" in err
    for inside in ("cifar10-wrn-10-1-paper", "cifar10-wrn-10-1-paper/seed1"):  # a seed's folder has a multistep run
        code, out, err = call(plot.main, ["--output-dir", str(tiny_grid / inside)])
        assert code == 1 and "holds a grid" in err and "is missing" not in err, err

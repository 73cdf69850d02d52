"""Several processes: torchrun with Gloo on the CPU against one process, shards, refusals, and
stopping together (a killed rank, a signal, a non-finite loss)."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
import torch
from conftest import HARNESS, REPO, assert_same_run, call, files_of, start_until

import train
from sgdr.data import cifar, loaders
from sgdr.parallel.distributed import Team
from sgdr.run import stopping
from sgdr.run.epoch import validate
from sgdr.testing.cifar_files import use_checksums_of
from sgdr.training.networks import build_network

# 40 training images, 3 batches of 16 (the last of 8): each of 2 processes takes 8, 8, 4.
RUN = ["-e", "3", "-wr", "-t0", "1", "-tm", "2", "-b", "16", "--model", "wrn-10-1", "--seed", "5"]
CPU = torch.device("cpu")


def torchrun(data: Path, point: str, args: list[str], processes: int = 2) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={processes}",
        str(HARNESS),
        str(data),
        point,
        str(REPO / "train.py"),
        *args,
    ]


def run_torchrun(data: Path, point: str, args: list[str], processes: int = 2) -> subprocess.CompletedProcess:
    return subprocess.run(torchrun(data, point, args, processes), capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def runs(tiny_cifar, tmp_path_factory) -> dict[str, Path]:
    """The same run by two processes (torchrun) and by one (in this process)."""
    two, one = tmp_path_factory.mktemp("two"), tmp_path_factory.mktemp("one")
    done = run_torchrun(tiny_cifar, "none", [*RUN, "--data-dir", str(tiny_cifar), "--output-dir", str(two)])
    assert done.returncode == 0, done.stderr[-3000:]
    with pytest.MonkeyPatch.context() as mp:
        use_checksums_of(tiny_cifar, mp.setattr)
        code, _, err = call(train.main, [*RUN, "--data-dir", str(tiny_cifar), "--output-dir", str(one)])
        assert code == 0, err
    return {"two": two, "one": one, "log": done.stdout}


def test_two_processes_take_the_same_steps_and_write_the_same_files_once(runs):
    two, one = runs["two"], runs["one"]
    assert sorted(files_of(two)) == sorted(files_of(one))
    assert joblib.load(two / "lr_schedule_s1_m2.pkl") == joblib.load(one / "lr_schedule_s1_m2.pkl")
    assert len(joblib.load(two / "lr_schedule_s1_m2.pkl")) == 3 * 3
    for name in ("wr_train_loss_s1_m2.pkl", "wr_val_loss_s1_m2.pkl"):
        assert len(joblib.load(two / name)) == 3 and all(math.isfinite(v) for v in joblib.load(two / name))
    assert len((two / "runs" / "wr_s1_m2" / "metrics.jsonl").read_text().splitlines()) == 3
    record = json.loads((two / "runs" / "wr_s1_m2" / "run.json").read_text())
    assert record["config"]["processes"] == 2 and record["sessions"][0]["outcome"] == "finished"
    # One voice: rank 0 alone prints.
    log = runs["log"]
    assert log.count("Epoch 1 of 3") == 1 and log.count("Finished Training") == 1


def test_without_a_seed_every_process_takes_rank_0s_and_the_printed_seed_repeats_the_run(tiny_cifar, tmp_path):
    # Each process drawing its own seed would shuffle with its own permutation and take its share of
    # that: some images twice in an epoch, some never, and a run that the printed seed cannot repeat.
    unseeded = [*RUN[: RUN.index("--seed")], "--data-dir", str(tiny_cifar)]
    done = run_torchrun(tiny_cifar, "none", [*unseeded, "--output-dir", str(tmp_path / "drawn")])
    assert done.returncode == 0, done.stderr[-3000:]
    seed = re.search(r"--seed (\d+) repeats this run", done.stdout)[1]
    again = run_torchrun(tiny_cifar, "none", [*unseeded, "--seed", seed, "--output-dir", str(tmp_path / "given")])
    assert again.returncode == 0, again.stderr[-3000:]
    assert_same_run(tmp_path / "drawn", tmp_path / "given")


def test_processes_agree_on_stopping_every_few_batches_not_after_each():
    agreements = []

    def agree(values):  # what the all-reduce gives with this process's values the largest
        agreements.append(list(values))
        return values

    team = Team(rank=0, world=2)
    team.agree = agree
    guard = stopping.Guard(team=team)
    for batch in range(40):
        guard.after_batch(batch)
    assert len(agreements) == 40 // stopping.AGREE_EVERY == 2
    # A signal after batch 3 stops the processes together at the next agreement, after batch 16.
    guard.stop.signum = signal.SIGTERM
    with pytest.raises(stopping.Interrupted):
        for batch in range(4, 40):
            guard.after_batch(batch)
    assert batch == stopping.AGREE_EVERY - 1
    # The batch a non-finite loss is reported at is the first any process saw: here rank 1's, batch 1
    # (rank 0 sees it a batch later, once DDP has averaged rank 1's NaN gradients into its own).
    with pytest.raises(stopping.NonFiniteLoss):
        stopping.Guard(team=team).check(0, 1)  # what rank 1 sends
    team.agree = lambda values: [max(mine, theirs) for mine, theirs in zip(values, agreements[-1])]
    with pytest.raises(stopping.NonFiniteLoss) as diverged:
        stopping.Guard(team=team).check(0, 2)
    assert diverged.value.batch == 1
    # A process alone stops at the next batch boundary, as always.
    alone = stopping.Guard()
    alone.stop.signum = signal.SIGINT
    with pytest.raises(stopping.Interrupted):
        alone.after_batch(0)


@pytest.mark.parametrize("recipe", ["tutorial", "paper"])
def test_with_batchnorm_in_eval_mode_one_step_gives_the_same_weights(recipe, cifar_dir, tmp_path, monkeypatch):
    step = [
        "-e",
        "1",
        "--train-subset",
        "16",
        "-b",
        "16",
        "--model",
        "wrn-10-1",
        "--seed",
        "7",
        "--data-dir",
        str(cifar_dir),
        "--recipe",
        recipe,
    ]
    done = run_torchrun(cifar_dir, "bn-eval", [*step, "--output-dir", str(tmp_path / "two")])
    assert done.returncode == 0, done.stderr[-3000:]
    from torch.nn.modules.batchnorm import _BatchNorm

    train_mode = _BatchNorm.train
    monkeypatch.setattr(_BatchNorm, "train", lambda self, mode=True: train_mode(self, False))
    code, _, err = call(train.main, [*step, "--output-dir", str(tmp_path / "one")])
    assert code == 0, err
    weights = [
        torch.load(tmp_path / name / "runs" / "multistep" / "checkpoint.pt", weights_only=True)["model"]
        for name in ("two", "one")
    ]
    for key, value in weights[1].items():
        assert torch.allclose(weights[0][key].float(), value.float(), atol=1e-6), key
    torch.manual_seed(7)
    fresh = build_network("wrn-10-1", 10).state_dict()
    assert not torch.allclose(fresh["fc.weight"], weights[1]["fc.weight"])  # the step did change them
    val = [joblib.load(tmp_path / name / "val_loss.pkl")[0] for name in ("two", "one")]
    assert val[0] == pytest.approx(val[1], rel=1e-5)


def test_the_test_metrics_are_those_of_the_saved_network(runs, cifar_dir):
    # BatchNorm in train mode: each process updates the running statistics with its own share.
    state = torch.load(runs["two"] / "runs" / "wr_s1_m2" / "checkpoint.pt", weights_only=True)
    model = build_network("wrn-10-1", 10).to(memory_format=torch.channels_last)
    model.load_state_dict(state["model"])
    _, val_set = cifar.load_splits(cifar_dir)
    loss, accuracy = validate(model, loaders.DeviceLoader(val_set, 16, CPU, channels_last=True), CPU)
    last = json.loads((runs["two"] / "runs" / "wr_s1_m2" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["epoch"] == 3
    assert last["test_loss"] == pytest.approx(loss, rel=1e-6) and last["test_accuracy"] == accuracy


def test_a_refusal_in_one_rank_reaches_the_user_once_and_stops_every_rank(cifar_dir, tmp_path):
    args = [*RUN, "--data-dir", str(cifar_dir), "--output-dir", str(tmp_path)]
    done = run_torchrun(cifar_dir, "no-data@1", args)  # rank 1 alone finds no data set
    assert done.returncode != 0
    assert done.stderr.count("error: rank 1: CIFAR-10 is not in") == 1, done.stderr[-3000:]
    assert "Connection closed by peer" not in done.stderr
    assert not [line for line in done.stderr.splitlines() if line.startswith("[rank") and "Traceback" in line]
    assert not tmp_path.exists() or not list(tmp_path.iterdir())


def test_shards_are_disjoint_cover_each_batch_and_keep_its_draws():
    n = 40
    data = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    dataset = cifar.InMemoryCIFAR(data, list(range(n)))  # label = index: shows which image

    def batches(rank, world):
        loader = loaders.DeviceLoader(
            dataset, 16, CPU, torch.Generator().manual_seed(3), augment=True, rank=rank, world=world
        )
        return list(loader)

    whole = batches(0, 1)
    parts = [batches(r, 2) for r in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == len(whole) == 3
    seen = []
    for k, (images, labels) in enumerate(whole):
        shard_labels = [parts[r][k][1] for r in (0, 1)]
        assert not set(shard_labels[0].tolist()) & set(shard_labels[1].tolist())
        assert torch.equal(torch.cat(shard_labels), labels)  # together: the whole batch, in order
        assert torch.equal(torch.cat([parts[r][k][0] for r in (0, 1)]), images)  # with the same crops and flips
        seen += labels.tolist()
    assert sorted(seen) == list(range(n))


def test_a_world_size_that_does_not_divide_the_batch_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    code, _, err = call(train.main, ["--output-dir", str(tmp_path)])
    assert code == 1
    assert "3 processes cannot share a batch of 128 evenly" in err and "(-b 126 or -b 129)" in err
    assert "--nproc_per_node=2, --nproc_per_node=4, --nproc_per_node=8" in err
    assert not list(tmp_path.iterdir())
    # Every way out it names works: -b 3 on 2 processes is not "use 2, 4 or 8 processes".
    monkeypatch.setenv("WORLD_SIZE", "2")
    code, _, err = call(train.main, ["-b", "3", "--output-dir", str(tmp_path)])
    assert code == 1 and err.strip() == (
        "error: 2 processes cannot share a batch of 3 evenly: start torchrun with a number of processes that "
        "divides 3 (--nproc_per_node=3), or give a batch size that 2 processes share (-b 2 or -b 4)."
    )


def test_sync_bn_needs_cuda_and_several_processes(monkeypatch):
    assert "needs several processes" in call(train.main, ["--sync-bn"])[2]
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    assert "works on CUDA only" in call(train.main, ["--sync-bn", "--device", "cpu"])[2]


def test_the_torchvision_loader_stays_single_process():
    with pytest.raises(cifar.UserError, match="under torchrun use the default --loader device"):
        loaders.make_loaders(None, None, "torchvision", 16, torch.Generator(), CPU, rank=0, world=2)


def test_killing_one_rank_ends_the_job_and_the_run_resumes_exactly(cifar_dir, tmp_path, runs):
    args = [*RUN, "--data-dir", str(cifar_dir), "--output-dir", str(tmp_path)]
    killed = run_torchrun(cifar_dir, "batch:5@1", args)  # rank 1 dies in epoch 2; timeout=300 would mean a hang
    assert killed.returncode != 0
    assert "Signal 9 (SIGKILL) received" in killed.stderr
    resumed = run_torchrun(cifar_dir, "none", [*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming after epoch 1" in resumed.stdout
    assert_same_run(tmp_path, runs["two"])


def test_a_signal_stops_every_rank_at_the_same_batch(cifar_dir, tmp_path, runs):
    args = [*RUN, "--data-dir", str(cifar_dir), "--output-dir", str(tmp_path)]
    proc = start_until(torchrun(cifar_dir, "none", args), "Epoch 2 of 3", start_new_session=True)
    os.killpg(proc.pid, signal.SIGTERM)  # what a preemption sends: to the launcher and every rank
    _, err = proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert err.count("Stopped by SIGTERM") == 1 and "Resume with:" in err
    resumed = run_torchrun(cifar_dir, "none", [*args, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_run(tmp_path, runs["two"])


def test_a_non_finite_loss_in_one_rank_stops_them_all(cifar_dir, tmp_path):
    args = [*RUN, "--data-dir", str(cifar_dir), "--output-dir", str(tmp_path)]
    done = run_torchrun(cifar_dir, "nan:5@1", args)  # rank 1's 5th batch: epoch 2, batch 2
    assert done.returncode != 0
    assert done.stderr.count("error: the training loss is not finite (NaN or infinite) at epoch 2, batch 2") == 1
    # torchrun itself reports the failed children; the ranks' own output (prefixed [rankN]) has no traceback.
    assert not [line for line in done.stderr.splitlines() if line.startswith("[rank") and "Traceback" in line]
    assert torch.load(tmp_path / "runs" / "wr_s1_m2" / "checkpoint.pt", weights_only=True)["epoch"] == 1


def test_three_processes_resume_exactly_after_a_kill_inside_an_epoch(cifar_dir, tmp_path):
    """With three processes a ring all-reduce adds each gradient's terms in an order set by its place in
    DDP's buckets, which DDP lays out again after a session's first backward pass: a resumed session
    summed its first batch in the other layout, and its losses differed in the last bits from the
    uninterrupted run's (2.05572689904107 against 2.0557268725501165 here). Every session now takes
    an undone step first, so all sum every batch in one layout."""
    # 36 training images, 3 batches of 12 an epoch: each process takes 4 of each.
    run = ["-e", "2", "-b", "12", "--train-subset", "36", "--model", "wrn-10-1", "--seed", "5"]
    args = [*run, "--data-dir", str(cifar_dir)]
    whole = run_torchrun(cifar_dir, "none", [*args, "--output-dir", str(tmp_path / "whole")], processes=3)
    assert whole.returncode == 0, whole.stderr[-3000:]
    split = [*args, "--output-dir", str(tmp_path / "split")]
    killed = run_torchrun(cifar_dir, "batch:5@2", split, processes=3)  # rank 2 dies in epoch 2, at its 2nd batch
    assert killed.returncode != 0 and "Signal 9 (SIGKILL) received" in killed.stderr
    resumed = run_torchrun(cifar_dir, "none", [*split, "--resume"], processes=3)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming after epoch 1" in resumed.stdout
    assert_same_run(tmp_path / "split", tmp_path / "whole")


def test_swas_average_under_two_unseeded_processes_resumes_exactly_and_is_the_saved_networks(cifar_dir, tmp_path):
    """--swa-start with two processes and no --seed: a run killed in rank 1 after the average has begun resumes to
    the files of the run its printed seed repeats, and the average's recorded test metrics are those of the
    average the checkpoint holds (rank 0's BatchNorm statistics, recomputed), evaluated in one process."""
    swa = [
        "-e",
        "3",
        "--swa-start",
        "2",
        "--lr",
        "0.1",
        "-b",
        "16",
        "--model",
        "wrn-10-1",
        "--data-dir",
        str(cifar_dir),
    ]
    drawn, killed_dir = tmp_path / "drawn", tmp_path / "killed"
    done = run_torchrun(cifar_dir, "none", [*swa, "--output-dir", str(drawn)])
    assert done.returncode == 0, done.stderr[-3000:]
    seed = re.search(r"--seed (\d+) repeats this run", done.stdout)[1]
    args = [*swa, "--seed", seed, "--output-dir", str(killed_dir)]
    killed = run_torchrun(cifar_dir, "batch:8@1", args)  # rank 1 dies in epoch 3, the average holding epoch 2
    assert killed.returncode != 0 and "Signal 9 (SIGKILL) received" in killed.stderr
    resumed = run_torchrun(cifar_dir, "none", [*args, "--resume"])
    assert resumed.returncode == 0 and "Resuming after epoch 2" in resumed.stdout, resumed.stderr[-3000:]
    assert_same_run(killed_dir, drawn)

    state = torch.load(drawn / "runs" / "swa" / "checkpoint.pt", weights_only=True)
    assert state["swa"]["n_averaged"].item() == 2 and state["config"]["processes"] == 2
    model = build_network("wrn-10-1", 10).to(memory_format=torch.channels_last)
    model.load_state_dict({k.removeprefix("module."): v for k, v in state["swa"].items() if k != "n_averaged"})
    _, val_set = cifar.load_splits(cifar_dir)
    loss, accuracy = validate(model, loaders.DeviceLoader(val_set, 16, CPU, channels_last=True), CPU)
    last = json.loads((drawn / "runs" / "swa" / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["swa_test_loss"] == pytest.approx(loss, rel=1e-6) and last["swa_test_error"] == 1 - accuracy

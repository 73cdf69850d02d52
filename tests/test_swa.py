"""train.py --swa-start EPOCH: SWA's own schedule (Izmailov et al. 2018), the weights after each epoch from EPOCH
on averaged with equal weights (torch's AveragedModel), BatchNorm recomputed and the average validated after the
last epoch; kept in the checkpoint, so a killed run resumes to the same bits."""

from __future__ import annotations

import json
import re
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import SMALL, TINY, assert_same_run, call, harness

import ensemble
import train
from sgdr.paper import averages, ensembles
from sgdr.run import checkpoint as checkpoints
from sgdr.training.networks import build_network
from sgdr.training.schedules import SwaRate, swa_rate

RUN = "swa"


def swa_argv(data: Path, out: Path, *more: str) -> list[str]:
    return ["-e", "4", "--swa-start", "3", "--lr", "0.1", "--seed", "21", *SMALL, *TINY, "--data-dir", str(data),
            "--output-dir", str(out), *more]  # fmt: skip


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "runs" / RUN / "metrics.jsonl").read_text().splitlines()]


def checkpoint(out: Path) -> dict:
    return torch.load(out / "runs" / RUN / "checkpoint.pt", weights_only=True)


def test_the_rate_is_the_swa_papers_schedule():
    """Their script's schedule for WRN-28-10 on CIFAR (-e 300, lr 0.1, SWA from epoch 161 at 0.05), by epoch from 0:
    0.1 while epoch / 161 <= 0.5, then linear to 0.05 at 0.9, then 0.05."""
    rates = [swa_rate(epoch, 161, 0.1, 0.05) for epoch in range(300)]
    assert rates[:81] == [0.1] * 81  # epochs 0-80: 80 / 161 = 0.497
    assert rates[81] == pytest.approx(0.1 * (1 - 0.5 * (81 / 161 - 0.5) / 0.4), rel=1e-15)
    assert rates[100] == pytest.approx(0.0848602484472, rel=1e-12)  # 1 - 0.5 x (100/161 - 0.5) / 0.4
    assert rates[144] > 0.05 and rates[145:] == [0.05] * 155  # 145 / 161 = 0.9006
    assert all(a > b for a, b in zip(rates[80:145], rates[81:146]))

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = SwaRate(optimizer, 161, 0.05)
    seen = []
    for _ in range(300):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == rates
    assert scheduler.describe().startswith(
        "Using SWA's schedule (Izmailov et al. 2018): lr 0.1 in epochs 1-81, falling linearly in epochs 82-145, "
        "0.05 from epoch 146; from epoch 161 on"
    )


@pytest.mark.parametrize(
    ("start", "lr", "swa_lr", "said"),
    [
        (1, 0.1, 0.05, "lr 0.1 in epoch 1, 0.05 from epoch 2; from epoch 1 on"),
        (2, 0.1, 0.05, "lr 0.1 in epochs 1-2, 0.05 from epoch 3;"),
        (3, 0.1, 0.05, "lr 0.1 in epochs 1-2, falling linearly in epoch 3, 0.05 from epoch 4;"),
        (10, 0.1, 0.05, "lr 0.1 in epochs 1-6, falling linearly in epochs 7-9, 0.05 from epoch 10;"),
        (10, 0.1, 0.3, "lr 0.1 in epochs 1-6, rising linearly in epochs 7-9, 0.3 from epoch 10;"),
        (10, 0.1, 0.1, "lr 0.1 throughout; from epoch 10 on"),
    ],
)
def test_the_schedule_line_gives_the_epochs_of_each_phase_as_the_rates_are(start, lr, swa_lr, said):
    """Each phase the line names holds the rates swa_rate gives: lr up to the flat phase's end, a rate strictly
    between in the linear one, swa_lr from its first epoch on."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    line = SwaRate(optimizer, start, swa_lr).describe()
    assert said in line
    rates = [swa_rate(e, start, lr, swa_lr) for e in range(3 * start)]
    if lr != swa_lr:
        flat, low = (int(n) for n in re.findall(r"(?:epochs? 1-|epoch )(\d+)", line)[:1] + re.findall(r"(\d+);", line))
        assert rates[:flat] == [lr] * flat and rates[flat] != lr
        assert all(r == pytest.approx(swa_lr, rel=1e-12) for r in rates[low - 1 :]) and rates[low - 2] != pytest.approx(
            swa_lr
        )


def test_the_average_is_the_mean_of_the_weights_after_each_epoch_from_swa_start(cifar_dir, tmp_path):
    """-e 4 --swa-start 3: the average of the weights after epochs 3 and 4 (those of a run stopped after 3, the
    same to that epoch, and of the whole run); validated after epoch 4 alone, its statistics recomputed."""
    to_three, whole = tmp_path / "three", tmp_path / "whole"
    assert call(train.main, swa_argv(cifar_dir, to_three, "-e", "3"))[0] == 0
    code, log, err = call(train.main, swa_argv(cifar_dir, whole))
    assert code == 0, err
    saved, third = checkpoint(whole), checkpoint(to_three)
    assert saved["config"]["swa_start"] == 3 and saved["config"]["swa_lr"] == 0.05  # half of --lr
    assert "milestones" not in saved["config"]
    assert saved["swa"]["n_averaged"].item() == 2
    parameters = dict(build_network("wrn-10-1", 10).named_parameters())
    for name in parameters:
        want = (third["model"][name] + saved["model"][name]) / 2
        torch.testing.assert_close(saved["swa"][f"module.{name}"], want, rtol=1e-6, atol=1e-7)

    rows = metrics(whole)
    assert [row["lr_first"] for row in rows] == [0.1, 0.1, 0.1 * (1 - 0.5 * (2 / 3 - 0.5) / 0.4), 0.05]
    assert ["swa_test_error" in row for row in rows] == [False, False, False, True]
    assert "SWA (--swa-start): averaging starts after epoch 3" in log
    assert "SWA (--swa-start): the average of the weights after epoch 3; validated after the last epoch" in log
    assert "the average of the weights after epochs 3-4, BatchNorm recomputed: test error" in log

    # The same network evaluated by the snapshot ensembles' code: its statistics recomputed as SWA of snapshots
    # recomputes them, and the test set read as a snapshot's is.
    average = {k.removeprefix("module."): v for k, v in saved["swa"].items() if k != "n_averaged"}
    for name, value in average.items():
        if name.endswith(("running_mean", "running_var")):
            value.fill_(0.5)  # whatever the run left there is replaced
    snapshot = {"format": checkpoints.FORMAT, "epoch": 4, "config": saved["config"], "num_classes": 10,
                "model": average, "members": ["the run's average"]}  # fmt: skip
    test = ensembles.SnapshotOutputs(cifar_dir, torch.device("cpu"))
    logits = test.evaluate(snapshot, whole / "runs" / RUN, averages.recompute_batch_norm(snapshot, cifar_dir))
    assert ensembles.error_rate(torch.softmax(logits, 1), test.labels()) == pytest.approx(rows[-1]["swa_test_error"])


def test_a_run_killed_and_resumed_keeps_the_same_average_bit_for_bit(cifar_dir, tmp_path):
    straight, out = tmp_path / "straight", tmp_path / "out"
    assert call(train.main, swa_argv(cifar_dir, straight))[0] == 0
    killed = subprocess.run(
        harness(cifar_dir, "batch:10", swa_argv(cifar_dir, out)), capture_output=True, text=True, timeout=600
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert checkpoint(out)["swa"]["n_averaged"].item() == 1  # killed inside epoch 4, after epoch 3 joined
    code, log, err = call(train.main, swa_argv(cifar_dir, out, "--resume"))
    assert code == 0 and "Resuming after epoch 3" in log, err
    assert_same_run(out, straight)  # the checkpoints' averages and metrics.jsonl's swa_test_error included


def test_swa_is_part_of_the_runs_settings(cifar_dir, tmp_path):
    assert call(train.main, swa_argv(cifar_dir, tmp_path, "-e", "3"))[0] == 0
    code, _, err = call(train.main, swa_argv(cifar_dir, tmp_path, "--swa-lr", "0.01", "--resume"))
    assert code == 1 and "Traceback" not in err
    assert "swa_lr: 0.05 in the checkpoint, 0.01 now" in err


def test_a_run_without_swa_keeps_no_average_and_writes_its_own_files(cifar_dir, tmp_path):
    plain = ["-e", "1", "--seed", "21", *SMALL, *TINY, "--data-dir", str(cifar_dir), "--output-dir", str(tmp_path)]
    assert call(train.main, plain)[0] == 0
    assert call(train.main, swa_argv(cifar_dir, tmp_path, "-e", "1", "--swa-start", "1"))[0] == 0
    saved = torch.load(tmp_path / "runs" / "multistep" / "checkpoint.pt", weights_only=True)
    assert "swa" not in saved and not any(key.startswith("swa") for key in saved["config"])
    assert not any(key.startswith("swa") for key in saved["history"])
    # Beside the multistep run's files, in the same folder: its own.
    assert {"loss.jpg", "swa_loss.jpg", "train_loss.pkl", "swa_train_loss.pkl"} <= {p.name for p in tmp_path.iterdir()}


@pytest.mark.parametrize(
    "flags, said",
    [
        (["-wr", "--swa-start", "2"], "argument --swa-start: SWA's schedule replaces the multistep one"),
        (["--swa-lr", "0.01"], "argument --swa-lr: is the rate of SWA's schedule, which this run does not use"),
        (["-e", "4", "--swa-start", "5"], "argument --swa-start: epoch 5 is after the run's last (4)"),
        (
            ["--swa-start", "2", "--milestones", "1"],
            "are the multistep schedule's, and --swa-start asks for SWA's: leave --milestones out",
        ),
        (
            ["-wr", "--swa-lr", "0.01"],
            "argument --swa-lr: is the rate of SWA's schedule, which this run does not use: "
            "leave it out (warm restarts have no SWA phase)",
        ),
        (
            ["--swa-start", "2", "--warmup-epochs", "2"],
            "argument --warmup-epochs: shapes warm restarts only, and this run uses SWA's schedule: leave it out",
        ),
        (["--swa-start", "0"], "argument --swa-start"),
        (["--swa-start", "2", "--swa-lr", "0"], "argument --swa-lr"),
    ],
)
def test_swa_flags_that_cannot_make_a_run_are_refused(flags, said, cifar_dir, tmp_path):
    code, _, err = call(train.main, ["--data-dir", str(cifar_dir), "--output-dir", str(tmp_path), *flags])
    assert code == 2 and said in err and "Traceback" not in err
    assert not any(tmp_path.iterdir())


def test_a_checkpoint_without_its_average_is_refused_as_damaged(cifar_dir, tmp_path):
    assert call(train.main, swa_argv(cifar_dir, tmp_path, "-e", "3"))[0] == 0
    path = tmp_path / "runs" / RUN / "checkpoint.pt"
    saved = torch.load(path, weights_only=True)
    del saved["swa"]
    torch.save(saved, path)
    code, _, err = call(train.main, swa_argv(cifar_dir, tmp_path, "--resume"))
    assert code == 1 and "Traceback" not in err
    assert "is damaged: it has no average of the weights, which its settings (--swa-start) keep" in err


def test_ensemble_py_on_a_run_of_swas_schedule_says_where_its_average_is(cifar_dir, tmp_path):
    assert call(train.main, swa_argv(cifar_dir, tmp_path))[0] == 0
    code, _, err = call(ensemble.main, [str(tmp_path / "runs" / RUN), "--data-dir", str(cifar_dir)])
    assert code == 1 and "Traceback" not in err
    error = metrics(tmp_path)[-1]["swa_test_error"]
    assert (
        f"validates the average after its last epoch (swa_test_error in metrics.jsonl): after epoch 4, {error:.2%}."
        in err
    )
    unfinished = tmp_path / "unfinished"
    assert call(train.main, swa_argv(cifar_dir, unfinished, "-e", "2", "--swa-start", "2"))[0] == 0
    run = unfinished / "runs" / RUN
    rows = metrics(unfinished)
    del rows[-1]["swa_test_error"]  # as a run stopped before its last epoch leaves them
    (run / "metrics.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    code, _, err = call(ensemble.main, [str(run), "--data-dir", str(cifar_dir)])
    assert code == 1 and "(swa_test_error in metrics.jsonl): not yet (resume it to its last epoch)." in err


def test_a_run_ended_early_by_a_smaller_e_validates_its_average_and_is_recorded_finished(cifar_dir, tmp_path):
    """Planned for 6 epochs, killed in epoch 5 (the checkpoint holds 4), resumed with -e 4: it ends at 4 as a run
    planned so, its average validated then; every file as a straight 4-epoch run's, and the record says finished."""
    straight, out = tmp_path / "straight", tmp_path / "out"
    assert call(train.main, swa_argv(cifar_dir, straight))[0] == 0
    killed = subprocess.run(
        harness(cifar_dir, "batch:14", swa_argv(cifar_dir, out, "-e", "6")), capture_output=True, text=True, timeout=600
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert "swa_test_error" not in metrics(out)[-1]
    code, log, err = call(train.main, swa_argv(cifar_dir, out, "--resume"))
    assert code == 0, err
    assert "This run holds 4 complete epochs, as many as -e 4 asks: it ends there, and is recorded finished." in log
    assert "the average of the weights after epochs 3-4, BatchNorm recomputed: test error" in log
    assert_same_run(out, straight)
    record = json.loads((out / "runs" / RUN / "run.json").read_text())
    assert record["finished"] and record["epochs"] == 4 and record["sessions"][-1]["outcome"] == "finished"
    code, log, _ = call(train.main, swa_argv(cifar_dir, out, "--resume"))
    assert code == 0 and "This run has finished all 4 epochs already; nothing to do." in log


def test_resuming_without_the_swa_flag_starts_another_run_and_names_the_one_beside_it(cifar_dir, tmp_path):
    assert call(train.main, swa_argv(cifar_dir, tmp_path, "-e", "2", "--swa-start", "2"))[0] == 0
    plain = ["-e", "1", "--seed", "21", *SMALL, *TINY, "--data-dir", str(cifar_dir), "--output-dir", str(tmp_path)]
    code, log, err = call(train.main, [*plain, "--resume"])
    assert code == 0, err
    assert (
        f"(Beside it, {tmp_path / 'runs'} holds the checkpoints of swa: to resume one of those, give the flags" in log
    )

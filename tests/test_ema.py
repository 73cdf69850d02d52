"""train.py --ema DECAY: a moving average of the weights and BatchNorm buffers (torch's AveragedModel), updated
after every optimiser step, kept in the checkpoint (a killed run resumes to the same bits) and validated after
every epoch; off, a run is as it was."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from conftest import argv, assert_same_run, call, harness
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

import train
from sgdr.run import experiment
from sgdr.training.networks import build_network

RUN = "wr_s1_m2"


def metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "runs" / RUN / "metrics.jsonl").read_text().splitlines()]


def checkpoint(out: Path) -> dict:
    return torch.load(out / "runs" / RUN / "checkpoint.pt", weights_only=True)


def test_without_ema_a_run_keeps_no_average(cifar_dir, tmp_path):
    assert call(train.main, argv("warm", cifar_dir, tmp_path, "-e", "1"))[0] == 0
    saved = checkpoint(tmp_path)
    assert "ema" not in saved and "ema" not in saved["config"] and "ema_test_acc" not in saved["history"]
    assert not any(key.startswith("ema") for key in metrics(tmp_path)[0])


def test_a_decay_of_zero_is_the_current_weights(cifar_dir, tmp_path):
    code, log, err = call(train.main, argv("warm", cifar_dir, tmp_path, "-e", "2", "--ema", "0"))
    assert code == 0, err
    saved = checkpoint(tmp_path)
    assert saved["config"]["ema"] == 0
    average = {key.removeprefix("module."): value for key, value in saved["ema"].items() if key != "n_averaged"}
    assert average.keys() == saved["model"].keys()
    for key, value in saved["model"].items():  # parameters and buffers alike, bit for bit
        assert torch.equal(average[key], value), key
    assert saved["ema"]["n_averaged"].item() == 6  # 3 steps an epoch
    for row in metrics(tmp_path):
        assert row["ema_test_error"] == row["test_error"] and row["ema_test_loss"] == row["test_loss"]
    assert "Moving average of the weights (--ema): test error" in log


def test_the_average_is_what_averaged_model_gives_buffers_included(cifar_dir, tmp_path, monkeypatch):
    """The network after each step, recorded, fed by hand into an AveragedModel of the same settings: the
    checkpoint's average is its, bit for bit, parameters and BatchNorm buffers alike; and it is the moving
    average (each step moves it 1 - decay of the way to the weights), to float precision."""
    decay, states = 0.75, []
    real = experiment.train_epoch

    def recording(net, *args):
        *rest, after_step = args

        def after():
            after_step()
            states.append({key: value.detach().clone() for key, value in net.state_dict().items()})

        return real(net, *rest, after)

    monkeypatch.setattr(experiment, "train_epoch", recording)
    code, _, err = call(train.main, argv("warm", cifar_dir, tmp_path, "-e", "2", "--ema", str(decay)))
    assert code == 0, err
    assert len(states) == 6
    saved = checkpoint(tmp_path)

    network = build_network("wrn-10-1", 10)
    by_hand = AveragedModel(network, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)
    for state in states:
        network.load_state_dict(state)
        by_hand.update_parameters(network)
    want = by_hand.state_dict()
    assert want.keys() == saved["ema"].keys()
    for key, value in want.items():
        assert torch.equal(saved["ema"][key], value), key

    moving = dict(states[0])
    for state in states[1:]:
        moving = {key: decay * moving[key] + (1 - decay) * state[key] for key in moving}
    running = [key for key in moving if key.endswith(("running_mean", "running_var"))]
    assert running  # BatchNorm's statistics are averaged too, not copied from the last step
    for key, value in moving.items():
        if states[0][key].is_floating_point():  # (num_batches_tracked: an integer, not averaged as one)
            torch.testing.assert_close(saved["ema"][f"module.{key}"], value, rtol=1e-5, atol=1e-6)
    assert not torch.equal(saved["ema"][f"module.{running[0]}"], saved["model"][running[0]])


def test_a_run_killed_and_resumed_keeps_the_same_average_bit_for_bit(cifar_dir, tmp_path):
    straight, out = tmp_path / "straight", tmp_path / "out"
    assert call(train.main, argv("warm", cifar_dir, straight, "--ema", "0.9"))[0] == 0
    killed = subprocess.run(
        harness(cifar_dir, "batch:7", argv("warm", cifar_dir, out, "--ema", "0.9")),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    code, log, err = call(train.main, argv("warm", cifar_dir, out, "--ema", "0.9", "--resume"))
    assert code == 0 and "Resuming after epoch 2" in log, err
    assert_same_run(out, straight)  # the checkpoints' averages and metrics.jsonl's ema_test_error included
    assert "ema" in checkpoint(out) and all("ema_test_error" in row for row in metrics(out))


def test_ema_is_part_of_the_runs_settings(cifar_dir, tmp_path):
    assert call(train.main, argv("warm", cifar_dir, tmp_path, "-e", "1"))[0] == 0
    code, _, err = call(train.main, argv("warm", cifar_dir, tmp_path, "-e", "2", "--ema", "0.9", "--resume"))
    assert code == 1 and "Traceback" not in err
    assert "ema: None in the checkpoint, 0.9 now" in err


@pytest.mark.parametrize("decay", ["-0.1", "1.5", "nan"])
def test_a_decay_outside_0_to_1_is_refused(decay, cifar_dir, tmp_path):
    code, _, err = call(train.main, argv("warm", cifar_dir, tmp_path, "--ema", decay))
    assert code == 2 and "argument --ema: must be a number at least 0 and at most 1" in err

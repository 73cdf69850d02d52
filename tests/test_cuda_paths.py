"""The CUDA paths, exercised on the CPU: fake GPUs (monkeypatched torch.cuda), tensors that say
they live on a GPU, and the precision flags, which can be set and read without one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import checkpoint
import train
from test_train import call

TINY_RUN = ["--train-subset", "16", "-b", "16", "--workers", "0", "--model", "wrn-10-1", "--seed", "3", "--device", "cpu"]


class OnGpu(torch.Tensor):
    """Stands for a CUDA tensor on a machine without one: it says it is on cuda:0, ``.cpu()`` gives a
    plain CPU copy, and a file holding it cannot be read by ``torch.load(path)`` here, as a file
    holding CUDA tensors cannot be on a CPU-only machine."""

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", 0)

    @property
    def is_cuda(self) -> bool:
        return True

    def cpu(self, *args, **kwargs) -> torch.Tensor:
        return self.as_subclass(torch.Tensor).clone()


def fake_gpus(monkeypatch, count: int) -> None:
    """torch.cuda reports ``count`` GPUs; asking for every GPU's random state is an error (it would
    open a CUDA context on each), and restoring more states than GPUs fails as torch does."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)

    def get_all():
        raise AssertionError("read the random state of every GPU")

    def set_all(states):
        if len(states) > count:
            raise IndexError("list index out of range")

    monkeypatch.setattr(torch.cuda, "get_rng_state_all", get_all)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", set_all)


def test_a_checkpoint_from_a_machine_with_more_gpus_resumes(cifar_dir, tmp_path, monkeypatch):
    args = [*TINY_RUN, "--data-dir", str(cifar_dir), "--output-dir", str(tmp_path)]
    assert call(train.main, ["-e", "1", *args])[0] == 0
    path = tmp_path / "runs" / "multistep" / "checkpoint.pt"
    state = torch.load(path, weights_only=True)
    state["rng"]["cuda"] = [torch.zeros(16, dtype=torch.uint8) for _ in range(4)]  # as saved with 4 GPUs visible
    torch.save(state, path)
    fake_gpus(monkeypatch, 1)
    code, log, err = call(train.main, ["-e", "2", "--resume", *args])
    assert code == 0, err
    assert "Resuming after epoch 1" in log
    resumed = torch.load(path, weights_only=True)
    assert resumed["epoch"] == 2 and resumed["rng"]["cuda"] == []


def test_checkpoints_and_snapshots_hold_cpu_tensors(tmp_path):
    module = torch.nn.Linear(3, 2)
    module.register_buffer("running", torch.arange(4.0).as_subclass(OnGpu))
    checkpoint.save_snapshot(tmp_path / "snapshot.pt", module, {"model": "linear"}, 1, 2)
    momentum = torch.ones(3).as_subclass(OnGpu)
    checkpoint.save(tmp_path / "checkpoint.pt", {"model": module.state_dict(), "optimizer": {"state": {0: {"m": momentum}}},
                                                  "history": {"lr": [0.05]}, "rng": {"python": (3, (1, 2), None)}})
    snapshot, state = torch.load(tmp_path / "snapshot.pt"), torch.load(tmp_path / "checkpoint.pt")  # no map_location
    tensors = [*snapshot["model"].values(), *state["model"].values(), state["optimizer"]["state"][0]["m"]]
    assert len(tensors) == 7
    assert all(type(t) is torch.Tensor and t.device.type == "cpu" for t in tensors)
    assert torch.equal(snapshot["model"]["running"], torch.arange(4.0))
    assert state["rng"]["python"] == (3, (1, 2), None) and state["history"] == {"lr": [0.05]}

"""bench.py runs (quick mode) and prints its table; the numbers themselves are for people to read."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import call

import bench
from sgdr.parallel import devices
from sgdr.run import settings
from sgdr.training.networks import build_network, count_parameters


def test_quick_bench_prints_the_comparison_table(capsys):
    assert bench.main(["--quick", "--model", "wrn-10-1", "--batch-size", "32"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("Machine: cpu (") and f"torch {torch.__version__}" in out
    assert f"{torch.get_num_threads()} threads" in out
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    assert [r.split(" | ")[0] for r in rows] == [
        "| measurement",
        "| ---",
        "| data pipeline, images/s",
        "| training step, images/s",
        "| training step, GFLOP/s",
        "| epoch: 64 training + 32 validation images, s",
    ]
    for line in rows[2:]:
        ratio = line.rstrip(" |").rsplit("| ", 1)[1]
        assert re.fullmatch(r"\d+\.\d+x( \(\d+\.\d+-\d+\.\d+\))?", ratio) and float(ratio.split("x")[0]) > 0, line
    assert re.search(r"of matmul .* of matmul", rows[4])
    assert re.search(
        r"fp32 matmul: [\d,]+ GFLOP/s through torch.matmul, [\d,]+ GFLOP/s through 1x1 convolution; "
        r"fractions are of the faster. One training step: [\d.]+ GFLOP",
        out,
    )
    assert "Rates are medians over 1 round(s) of reference, variant, variant, reference" in out


def test_model_comparison_prints_a_row_per_network(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the checkpoint is timed in a folder here, then removed
    assert bench.main(["--quick", "--batch-size", "8", "--models", "wrn-10-1", "wrn-16-1"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| wrn")]
    counts = [f"{count_parameters(build_network(name, 10))[0]:,}" for name in ("wrn-10-1", "wrn-16-1")]
    assert [r.split(" | ")[0:2] for r in rows] == [["| wrn-10-1", counts[0]], ["| wrn-16-1", counts[1]]]
    epochs = r"\| [\d,.]+ \| [\d,.]+ min \| [\d,.]+ \| [\d,.]+ min \| [\d,]+ h \| "
    assert all(re.search(epochs + r"[\d.]+ MB \| \d+\.\d\d s \(\d+\.\d\d s\) \| \d+\.\d\d% \|$", r) for r in rows), rows
    header = next(line for line in out.splitlines() if line.startswith("| network"))
    # Batch 8: the tutorial's epoch is 50,000 images in 6,250 batches, the paper's 100,000 samples in 12,500.
    assert "tutorial epoch (6250 batches)" in header and "paper epoch (12500 batches)" in header
    assert re.search(r"syncing its folder after the rename, .*: \d+\.\d\d ms a sync here \(median of 9\)", out)
    assert list(tmp_path.iterdir()) == []


def test_the_timed_checkpoint_is_train_pys_own_at_the_end_of_a_reference_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    saved = []
    monkeypatch.setattr(bench.checkpoint, "load", lambda path: saved.append(torch.load(path, weights_only=True)))
    size, write, read = bench.checkpoint_cost("wrn-10-1", torch.device("cpu"), 128, 2)
    model = build_network("wrn-10-1", 10)
    assert len(saved) == 2 and size > 4 * count_parameters(model)[0] and write > 0 and read > 0
    state = saved[0]
    assert (
        state["epoch"] == 200 and len(state["history"]["test_loss"]) == 200 and len(state["history"]["lr"]) == 200 * 391
    )
    assert len(state["optimizer"]["state"]) == len(list(model.parameters()))  # momentum buffers included
    assert state["config"]["warm_restart"] is False and state["config"]["batch_size"] == 128
    assert state["config"]["model"] == "wrn-10-1" and state["config"]["recipe"] == "tutorial"
    args = settings.parse_args(["--model", "wrn-10-1", "--seed", "0"])
    # setup settles --tf32's default (PyTorch's own, conv, for a new run) and records the data's digest.
    layout = devices.channels_last_is_faster(torch.device("cpu"))  # the machine's faster layout, as train.py takes
    resolved = {"tf32": "conv", "channels_last": layout, "data": state["config"]["data"]}
    assert state["config"] == {**settings.config_of(args, 0, 1), **resolved}
    assert re.fullmatch(r"[0-9a-f]{16}", state["config"]["data"])
    assert list(tmp_path.iterdir()) == []  # the run's folder is removed


def test_every_row_is_timed_with_the_autotuning_train_py_uses(monkeypatch):
    """setup() turns on cuDNN's autotuning on CUDA, as train.py runs; a row timed after it keeps it
    (bench.py turns it on before its first row too, so that no row is timed otherwise)."""
    seen = []

    def setup_on_cuda(args, device=None, data=None):  # what experiment.setup does to the flag on CUDA
        seen.append(args.model)
        torch.backends.cudnn.benchmark = True
        return "run"

    monkeypatch.setattr(bench.experiment, "setup", setup_on_cuda)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    assert bench.run_setup("wrn-10-1", torch.device("cpu"), None, "folder") == "run" and seen == ["wrn-10-1"]
    assert torch.backends.cudnn.benchmark is True


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["--device", "cuda"], 1, "error: --device cuda: CUDA is not available here; use --device cpu."),
        (["--device", "banana"], 2, "argument --device: expected auto, cpu, cuda or cuda:N, got 'banana'"),
        (["--batch-size", "0"], 2, "argument --batch-size: must be at least 1, got 0"),
        (["--batch-size", "-4"], 2, "argument --batch-size: must be at least 1, got -4"),
        (["--model", "resnet18"], 2, "argument --model: unknown model 'resnet18'"),
        (["--models", "wrn-10-1", "bogus"], 2, "argument --models: unknown model 'bogus'"),  # before any timing
    ],
)
def test_impossible_values_are_a_message_not_a_traceback(argv, code, message):
    status, out, err = call(bench.main, ["--quick", *argv])
    assert status == code and message in err and "Traceback" not in err
    assert "| measurement" not in out  # refused before any work


def test_the_stop_agreement_is_timed_both_ways():
    code, out, err = call(bench.main, ["--stop-agreement", "--quick"])
    assert code == 0, err
    rows = re.findall(r"^\| every (\d+) batch(?:es)? \| ([\d,.]+) us \|$", out, re.M)
    assert [every for every, _ in rows] == ["1", "16"] and all(float(us.replace(",", "")) > 0 for _, us in rows)

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
        r"Matrix products of fp32 tensors: [\d,]+ GFLOP/s through torch.matmul \(fp32\), [\d,]+ GFLOP/s through "
        r"1x1 convolution \(fp32\); fractions of matmul are of the faster \((torch.matmul|1x1 convolution)\). "
        r"One training step: [\d.]+ GFLOP",
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


class FakeClock:
    """A timing source: each product takes ``cost`` seconds of it and each sync ``wait`` (the launch
    and the wait a GPU adds), and every sync is written down beside the products, so a test sees
    how many products each timed stretch held."""

    def __init__(self, monkeypatch, cost: float, wait: float):
        self.now, self.cost, self.wait, self.events = 0.0, cost, wait, []
        monkeypatch.setattr(bench.time, "perf_counter", lambda: self.now)
        monkeypatch.setattr(bench, "sync", self.sync)
        for module, name in ((torch, "matmul"), (bench.F, "conv2d")):
            monkeypatch.setattr(module, name, self.product(getattr(module, name)))

    def sync(self, device):
        self.now += self.wait
        self.events.append("sync")

    def product(self, real):
        def timed_product(*args, **kwargs):
            self.now += self.cost
            self.events.append("product")
            return real(*args, **kwargs)

        return timed_product

    def products_between_syncs(self) -> list[int]:
        return [len(stretch) for stretch in "".join("|" if e == "sync" else "p" for e in self.events).split("|")]


def test_the_matmul_rate_times_many_products_between_two_syncs(monkeypatch):
    """1 ms a product and 0.1 ms a sync, against 0.1 s asked: the rate comes from at least 100 products
    timed between two synchronisations, so the syncs' time is lost in it (one small product between
    two syncs times the launch and the sync as much as the product)."""
    clock = FakeClock(monkeypatch, 0.001, 0.0001)
    rates = bench.matmul_gflops(torch.device("cpu"), 64, 0.1)
    assert max(clock.products_between_syncs()) >= 100
    assert clock.events.count("product") < 2 * 2 * 256  # each library measured in at most twice 0.1 s
    for rate, kind in rates.values():
        assert rate == pytest.approx(2 * 64**3 / 0.001 / 1e9, rel=0.01) and kind == "fp32"


@pytest.mark.parametrize(
    ("tf32", "matmul", "conv"), [("off", "fp32", "fp32"), ("conv", "fp32", "tf32"), ("on", "tf32", "tf32")]
)
def test_each_rate_is_labelled_with_its_precision(tf32, matmul, conv):
    """After set_precision("conv") (train.py's default) a CUDA 1x1 convolution runs in TF32 while
    torch.matmul stays fp32; on the CPU both are fp32 whatever the flags."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        devices.set_precision(tf32)
        cuda, cpu = torch.device("cuda"), torch.device("cpu")
        assert (bench.precision("matmul", cuda), bench.precision("conv", cuda)) == (matmul, conv)
        assert (bench.precision("matmul", cpu), bench.precision("conv", cpu)) == ("fp32", "fp32")
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


@pytest.mark.parametrize(("device", "epochs"), [("cuda", 2), ("cpu", 1)])
def test_the_epoch_row_on_cuda_is_timed_after_an_untimed_epoch(device, epochs, monkeypatch):
    """cuDNN's autotuning and lazy kernel loading happen in a run's first calls: on CUDA the timed epoch is
    the second, so the timed stretch holds exactly one epoch, after a whole one."""
    events = []

    class Run:
        train_loader, test_loader = [1, 2], [3]

        def train_epoch(self, epoch, guard):
            events.append("train")

        def validate(self, guard):
            events.append("validate")

    def timed(device, work):
        events.append("start")
        work()
        events.append("stop")
        return 1.0

    monkeypatch.setattr(bench, "run_setup", lambda *args: Run())
    monkeypatch.setattr(bench, "timed", timed)
    bench.epoch_seconds("device", None, None, "wrn-10-1", 8, torch.device(device), 0, True)
    assert events == ["start", "stop"] + ["train", "validate"] * (epochs - 1) + ["start", "train", "validate", "stop"]


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

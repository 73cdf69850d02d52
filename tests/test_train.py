"""train.py end to end on tiny CIFAR-10 data, and plot.py on what it wrote."""

from __future__ import annotations

import errno
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import joblib
import pytest
from conftest import MULTISTEP, REPO, SMALL, TINY, call, wr_files
from PIL import Image

import plot
import report
import train
from sgdr import drawing, storage
from sgdr.run import settings
from sgdr.testing.cifar_files import use_checksums_of


@pytest.fixture(scope="module")
def finished(tiny_cifar, tmp_path_factory):
    """The three kinds of run, 3 epochs each, in one output folder: (folder, stdout by run)."""
    out = tmp_path_factory.mktemp("outputs")
    logs = {}
    with pytest.MonkeyPatch.context() as mp:
        use_checksums_of(tiny_cifar, mp.setattr)
        for name, flags in [
            ("multistep", ["--milestones", "1", "2"]),
            ("wr1", ["-wr", "-t0", "1"]),
            ("wr2", ["-wr", "-t0", "2", "-tm", "2"]),
        ]:
            argv = ["-e", "3", "--seed", "0", "--data-dir", str(tiny_cifar), "--output-dir", str(out), *TINY, *flags]
            code, logs[name], err = call(train.main, argv)
            assert code == 0, err
    return out, logs


def run_folders(out: Path) -> dict[str, list[str]]:
    """Each run folder's files, snapshots listed as snapshots/NAME."""
    return {
        run.name: sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
        for run in (out / "runs").iterdir()
    }


def test_the_three_runs_write_exactly_the_reference_files(finished):
    out, _ = finished
    assert sorted(os.listdir(out)) == sorted(MULTISTEP + wr_files(1) + wr_files(2, 2) + ["runs"])
    # Beside them, each run's checkpoint, record and metrics in a folder of its own, and with warm
    # restarts the snapshots taken at the end of each cycle: T_0 = 1 ends one every epoch, T_0 = 2,
    # T_mult = 2 ends its first cycle after epoch 2 (the next would end after epoch 6).
    own = ["checkpoint.pt", "metrics.jsonl", "run.json"]
    assert run_folders(out) == {
        "multistep": own,
        "wr_s1_m1": own + ["snapshots/epoch_0001.pt", "snapshots/epoch_0002.pt", "snapshots/epoch_0003.pt"],
        "wr_s2_m2": own + ["snapshots/epoch_0002.pt"],
    }


def test_each_loss_pickle_holds_one_finite_float_per_epoch(finished):
    out, _ = finished
    for name in os.listdir(out):
        if name.endswith(".pkl") and "loss" in name:
            values = joblib.load(out / name)
            assert type(values) is list and len(values) == 3, name
            assert all(type(v) is float and math.isfinite(v) for v in values), name


def test_the_resnet34_checkpoint_loads_as_plain_data(finished):
    import torch

    state = torch.load(finished[0] / "runs" / "multistep" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] == 3 and state["config"]["model"] == "resnet34"
    assert len(state["model"]) == 218  # every parameter and BatchNorm buffer of ResNet34


def test_lr_pickle_holds_the_rate_of_every_iteration(finished):
    out, _ = finished
    lrs = joblib.load(out / "lr_schedule_s1_m1.pkl")
    assert type(lrs) is list and all(type(v) is float for v in lrs)
    assert len(lrs) == 3 * 3  # epochs x batches
    # T_0 = 1 with 3 batches: the peak, eq. (5) at 0, 1/3, 2/3, then the restart one batch late.
    want = [0.05, 0.05, 0.0375, 0.0125, 0.05, 0.0375, 0.0125, 0.05, 0.0375]
    assert lrs == pytest.approx(want, abs=1e-12)


def test_figures_are_10_by_7_inch_jpegs(finished):
    out, _ = finished
    for name in ["loss.jpg", "wr_loss_s1_m1.jpg", "lr_schedule_s1_m1.jpg"]:
        with Image.open(out / name) as image:
            assert image.format == "JPEG"
            assert image.size == (1000, 700)  # 10 x 7 inches at matplotlib's 100 dpi


def test_the_console_says_what_the_reference_says(finished):
    _, logs = finished
    log = logs["wr2"]
    for line in [
        "Computation device: cpu",
        "21,289,802 total parameters.",
        "21,289,802 training parameters.",
        "T_0 = 2, T_mult = 2",
        "Epoch 1 of 3",
        "Epoch 3 of 3",
        "LR at beginning of epoch: 0.05",
        "Training loss: ",
        "Validation loss: ",
        "-" * 50,
        "Finished Training",
    ]:
        assert line in log, line
    assert "lr x 0.2 at epochs 1, 2" in logs["multistep"]
    assert log.count("LR at end of epoch") == 3


def test_plot_refuses_a_t_0_no_run_can_have(tmp_path):
    """It would name a train.py command that train.py refuses."""
    for t_zero in ("0", "-5"):
        code, _, err = call(plot.main, ["--output-dir", str(tmp_path), "--t-zeros", t_zero])
        assert code == 2 and "argument --t-zeros: must be at least 1" in err


def test_plot_merges_the_validation_losses(finished):
    out, _ = finished
    code, stdout, err = call(plot.main, ["--output-dir", str(out), "--t-zeros", "1", "2"])
    # T_0 = 2 ran with T_mult 2, so plot.py (T_mult 1) must ask for the missing run.
    assert code == 1
    assert f"{out / 'wr_val_loss_s2_m1.pkl'} is missing" in err
    assert f"python train.py --warm-restart -t0 2 --output-dir {out}" in err
    code, stdout, err = call(plot.main, ["--output-dir", str(out), "--t-zeros", "1"])
    assert code == 0, err
    with Image.open(out / "loss_plot_combined.jpg") as image:
        assert image.size == (1000, 700)


def test_the_stop_message_counts_its_epochs_in_words():
    assert [train.epochs(n) for n in (0, 1, 2)] == ["0 complete epochs", "1 complete epoch", "2 complete epochs"]


def test_plot_marks_a_run_that_has_not_finished(finished, tmp_path, monkeypatch):
    out = tmp_path / "out"
    shutil.copytree(finished[0], out)
    record = out / "runs" / "multistep" / "run.json"
    data = json.loads(record.read_text())
    record.write_text(json.dumps({**data, "epochs": 8, "finished": None}))  # stopped after 3 of 8 epochs
    drawn = {}
    monkeypatch.setattr(plot, "line_figure", lambda curves, *args, **kwargs: drawn.update(curves=curves))
    code, stdout, err = call(plot.main, ["--output-dir", str(out), "--t-zeros", "1"])
    assert code == 0, err
    labels = [label for _, _, label in drawn["curves"]]
    assert labels == ["Multistep (default) (not finished: 3 of 8 epochs)", "Warm restarts, T_0 = 1"]
    assert "note: Multistep (default) (not finished: 3 of 8 epochs): sh run.sh again" in stdout


def test_plot_names_a_folder_where_its_figure_goes_and_ends_quietly_on_a_closed_output(finished, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished[0], out)
    (out / "loss_plot_combined.jpg").unlink(missing_ok=True)
    (out / "loss_plot_combined.jpg").mkdir()
    code, _, err = call(plot.main, ["--output-dir", str(out), "--t-zeros", "1"])
    assert code == 1
    way_out = "is a folder, where a file is written: move or remove it, then run again."
    assert err == f"error: {out / 'loss_plot_combined.jpg'} {way_out}\n"
    (out / "loss_plot_combined.jpg").rmdir()
    code, _, err = call(report.main, ["--runs", str(out), "--skip-ensembles", "--out", str(out / "val_loss.pkl")])
    way_out = "is a file, where a folder is needed: move or remove it, then run again."
    assert code == 1 and err == f"error: {out / 'val_loss.pkl'} {way_out}\n"

    # A read-only file system (which root's tests cannot make): what the write raises there.
    def read_only(path, durable=False):
        raise OSError(errno.EROFS, "Read-only file system", str(path))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(storage, "atomic_write", read_only)
        code, _, err = call(plot.main, ["--output-dir", str(out), "--t-zeros", "1"])
    target = out / "loss_plot_combined.jpg"
    assert code == 1 and err == f"error: {target} is on a read-only file system: choose a folder on a writable one.\n"
    (out / "val_loss.pkl").rename(out / "saved.pkl")
    (out / "val_loss.pkl").mkdir()
    code, _, err = call(plot.main, ["--output-dir", str(out), "--t-zeros", "1"])
    assert code == 1 and f"error: {out / 'val_loss.pkl'} is a folder, not a pickle of losses. Move or remove it" in err
    (out / "val_loss.pkl").rmdir()
    (out / "saved.pkl").rename(out / "val_loss.pkl")
    # stdout closed before plot.py says what it saved (as by | head -0): no traceback, SIGPIPE's status.
    read, write = os.pipe()
    os.close(read)
    done = subprocess.run(
        [sys.executable, str(REPO / "plot.py"), "--output-dir", str(out), "--t-zeros", "1"],
        stdout=write,
        stderr=subprocess.PIPE,
        text=True,
    )
    os.close(write)
    assert done.returncode == 141 and done.stderr == "", done.stderr
    assert (out / "loss_plot_combined.jpg").is_file()


# Validation losses shaped like the quick mode's on the real CIFAR-10 at its first scale: 10^4 in
# the second epoch (eval-mode BatchNorm with statistics still far from the data's), then about 2.
SPIKED = [
    [2.9, 34_000, 2_100, 40, 6.2, 2.6, 2.45, 2.4, 2.33, 2.3, 2.28, 2.25, 2.24, 2.22, 2.21, 2.2, 2.2, 2.19, 2.18, 2.18],
    [2.8, 13_000, 900, 12, 3.1, 2.5, 2.6, 2.55, 2.4, 2.35, 2.3, 2.4, 2.45, 2.5, 2.3, 2.25, 2.22, 2.2, 2.17, 2.15],
]


def later_share_of_the_axis(fig) -> float:
    """How much of the y axis the losses after epoch 5 span (0 when any of them is off the axis)."""
    low, high = fig.axes[0].get_ylim()
    later = [v for values in SPIKED for v in values[5:]]
    return (max(later) - min(later)) / (high - low) if low <= min(later) and max(later) <= high else 0.0


def test_a_spike_is_cut_off_the_axis_so_the_later_epochs_can_be_told_apart():
    curves = [(SPIKED[0], "red", "Multistep (default)"), (SPIKED[1], "green", "Warm restarts, T_0 = 5")]
    as_drawn = drawing.draw(curves, "Epochs", "Validation loss")  # the axis matplotlib chooses
    assert later_share_of_the_axis(as_drawn) < 1e-4  # a flat line at the bottom
    fig = drawing.draw(curves, "Epochs", "Validation loss", clip=True)
    assert later_share_of_the_axis(fig) > 0.03  # 0.45 of a loss over about 13: tens of pixels
    # From 2.15 to 12 (not a spike: under 10 x the upper quartile, 2.8), with 5% margins.
    assert fig.axes[0].get_ylim() == pytest.approx((2.15 - 0.4925, 12 + 0.4925))
    assert (
        fig.axes[0].get_title()
        == "Validation loss axis cut at 12.5: 5 points above it (triangles; the largest 3.4e+04)"
    )
    triangles = [line for line in fig.axes[0].get_lines() if line.get_marker() == "^"]
    assert [list(line.get_xdata()) for line in triangles] == [[2, 3, 4], [2, 3]]


def test_ordinary_losses_are_drawn_as_ever(tmp_path):
    # A 200-epoch run's shape: training loss from 1.8 down to 0.002, validation loss from 1.6 to 0.3.
    train_loss = [1.8 * math.exp(-epoch / 29) + 0.002 for epoch in range(200)]
    val_loss = [1.3 * math.exp(-epoch / 20) + 0.3 + 0.02 * math.sin(epoch) for epoch in range(200)]
    assert drawing.clipped_limits(train_loss + val_loss) is None
    drawing.save_loss_figure(train_loss, val_loss, tmp_path / "clipped.jpg")  # clips where it must
    drawing.line_figure(
        [(train_loss, "orange", "train loss"), (val_loss, "red", "validation loss")],
        "Epochs",
        "Loss",
        tmp_path / "plain.jpg",
    )
    assert (tmp_path / "clipped.jpg").read_bytes() == (tmp_path / "plain.jpg").read_bytes()


def test_plot_defaults_name_the_reference_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = call(plot.main, [])
    assert code == 1
    assert "outputs/val_loss.pkl is missing. It is written by: python train.py (sh run.sh" in err
    assert "Traceback" not in err
    assert not (tmp_path / "outputs").exists()


def test_plot_rejects_an_unreadable_pickle(finished, tmp_path):
    for name in ["val_loss.pkl", "wr_val_loss_s50_m1.pkl", "wr_val_loss_s200_m1.pkl"]:
        (tmp_path / name).write_bytes((finished[0] / "val_loss.pkl").read_bytes())
    (tmp_path / "wr_val_loss_s50_m1.pkl").write_bytes(b"\x80\x04 truncated")
    code, _, err = call(plot.main, ["--output-dir", str(tmp_path)])
    assert code == 1
    assert f"{tmp_path / 'wr_val_loss_s50_m1.pkl'} cannot be read" in err
    assert "--warm-restart -t0 50" in err
    assert not (tmp_path / "loss_plot_combined.jpg").exists()


def test_both_loaders_train_the_same_batches_at_the_same_rates(cifar_dir, tmp_path):
    runs = {}
    for kind in ("device", "torchvision"):
        out = tmp_path / kind
        argv = [
            "-e",
            "3",
            "-wr",
            "-t0",
            "1",
            "-tm",
            "2",
            "--loader",
            kind,
            "--model",
            "wrn-10-1",
            "--seed",
            "0",
            "--data-dir",
            str(cifar_dir),
            "--output-dir",
            str(out),
            *TINY,
        ]
        code, log, err = call(train.main, argv)
        assert code == 0, err
        runs[kind] = {
            name: joblib.load(out / f"{name}_s1_m2.pkl") for name in ("lr_schedule", "wr_train_loss", "wr_val_loss")
        }
        assert "40 training images in 3 batches, 16 validation images in 1 batches" in log
    assert runs["device"]["lr_schedule"] == runs["torchvision"]["lr_schedule"]
    assert len(runs["device"]["lr_schedule"]) == 3 * 3
    for run in runs.values():
        assert all(math.isfinite(v) for v in run["wr_train_loss"] + run["wr_val_loss"])
    # Different augmentation draws, so (slightly) different losses: both really trained.
    assert runs["device"]["wr_train_loss"] != runs["torchvision"]["wr_train_loss"]


def test_defaults_write_under_outputs_in_the_working_directory(cifar_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = call(
        train.main, ["-e", "1", "--train-subset", "8", "--val-subset", "4", "--data-dir", str(cifar_dir), *TINY]
    )
    assert code == 0, err
    assert sorted(os.listdir(tmp_path / "outputs")) == sorted(MULTISTEP + ["runs"])
    assert run_folders(tmp_path / "outputs") == {"multistep": ["checkpoint.pt", "metrics.jsonl", "run.json"]}


def run_losses(cifar_dir: Path, out: Path, seed: int) -> tuple[list[float], list[float]]:
    argv = [
        "-e",
        "2",
        "-wr",
        "-t0",
        "1",
        "--seed",
        str(seed),
        "--train-subset",
        "16",
        "--data-dir",
        str(cifar_dir),
        "--output-dir",
        str(out),
        *SMALL,  # seeding does not depend on the network; ResNet34's checkpoints would only cost time
        *TINY,
    ]
    code, _, err = call(train.main, argv)
    assert code == 0, err
    return joblib.load(out / "wr_train_loss_s1_m1.pkl"), joblib.load(out / "wr_val_loss_s1_m1.pkl")


@pytest.mark.parametrize("recipe", ["tutorial", "paper"])
def test_lr_sets_the_first_rate_and_the_multistep_schedule_scales_it(recipe, cifar_dir, tmp_path):
    argv = ["-e", "3", "--milestones", "2", "--lr", "0.1", "--recipe", recipe, "--train-subset", "32"]
    argv += ["--val-subset", "16", "--data-dir", str(cifar_dir), "--output-dir", str(tmp_path), *SMALL, *TINY]
    code, log, err = call(train.main, argv)
    assert code == 0, err
    rates = [float(line.split(": ")[1]) for line in log.splitlines() if line.startswith("LR at beginning")]
    assert rates == [0.1, 0.1, 0.1 * 0.2]
    assert json.loads((tmp_path / "runs" / "multistep" / "run.json").read_text())["config"]["lr"] == 0.1


def test_the_same_seed_repeats_a_run_exactly(cifar_dir, tmp_path):
    first = run_losses(cifar_dir, tmp_path / "a", 7)
    assert run_losses(cifar_dir, tmp_path / "b", 7) == first
    assert run_losses(cifar_dir, tmp_path / "c", 8) != first


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-t0", "0"], "argument -t0/--t-zero: must be at least 1, got 0"),
        (["-tm", "0"], "argument -tm/--t-mult: must be at least 1, got 0"),
        (["-e", "0"], "argument -e/--epochs: must be at least 1, got 0"),
        (["-e", "-3"], "argument -e/--epochs: must be at least 1, got -3"),
        (["-t0", "1.5"], "argument -t0/--t-zero: expected an integer, got '1.5'"),
        (["--train-subset", "50001"], "argument --train-subset: CIFAR has 50,000 training images, got 50,001"),
        (["--val-subset", "10001"], "argument --test-subset/--val-subset: CIFAR has 10,000 test images, got 10,001"),
        (["--val-subset", "0"], "argument --test-subset/--val-subset: must be at least 1, got 0"),
        (["--milestones", "60", "60"], "argument --milestones: must increase strictly, got 60 60"),
        (["--workers", "-1"], "argument --workers: must be at least 0, got -1"),
        (["--lr", "0"], "argument --lr: must be a number above 0 and at most 3.40282e+38, got 0"),
        (["--lr", "nan"], "argument --lr: must be a number above 0 and at most 3.40282e+38, got nan"),
        (["--lr", "1e308"], "argument --lr: must be a number above 0 and at most 3.40282e+38, got 1e308"),
        (
            ["-wr", "--warmup-epochs", "2", "--warmup-start-lr", "1e39"],
            "argument --warmup-start-lr: must be a number at least 0 and at most 3.40282e+38, got 1e39",
        ),
        (["--se", "7"], "unrecognized arguments: --se 7"),  # no abbreviations: --se is not --seed
        (["-w"], "unrecognized arguments: -w"),  # nor -w for -wr (argparse matches single-dash prefixes itself)
        (["--lr", "fast"], "argument --lr: expected a number, got 'fast'"),
        (["--warmrestart"], "unrecognized arguments: --warmrestart"),
        (["--resume", "--overwrite"], "argument --overwrite: not allowed with argument --resume"),
        (
            ["--model", "resnet18"],
            "argument --model: unknown model 'resnet18'; expected resnet34 (the reference), or wrn-D-K",
        ),
    ],
)
def test_bad_flags_are_refused_before_any_work(argv, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = call(train.main, argv)
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_subset_larger_than_the_data_on_disk(cifar_dir, tmp_path):
    code, _, err = call(
        train.main, ["--train-subset", "41", "--data-dir", str(cifar_dir), "--output-dir", str(tmp_path / "o")]
    )
    assert (code, err.strip()) == (1, f"error: --train-subset 41 is larger than the 40 images found in {cifar_dir}.")
    assert not (tmp_path / "o").exists()


def test_missing_data_offline_stops_at_once_with_a_message(tmp_path, offline, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = call(train.main, ["-e", "1"])
    assert code == 1
    assert err.startswith(f"error: CIFAR-10 is not in {os.path.join('data', 'cifar-10-batches-py')}")
    assert "Traceback" not in err and "Epoch" not in out
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize(
    ("device", "code", "message"),
    [
        ("cuda", 1, "CUDA is not available here"),  # a device this machine lacks: found when the run starts
        ("banana", 2, "argument --device: expected auto, cpu, cuda or cuda:N, got 'banana'"),  # a typo: the parser's
        ("meta", 2, "argument --device: expected auto, cpu, cuda or cuda:N, got 'meta'"),
        ("gpu", 2, "argument --device: expected auto, cpu, cuda or cuda:N, got 'gpu'"),
    ],
)
def test_unusable_devices_are_refused(device, code, message, cifar_dir):
    status, _, err = call(train.main, ["--device", device, "--data-dir", str(cifar_dir)])
    assert status == code and message in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("seed", "message"),
    [
        ("-1", "argument --seed: must be at least 0, got -1"),
        (str(2**64), f"argument --seed: must be at most {2**64 - 1}, got {2**64}"),
    ],
)
def test_seeds_torch_cannot_take_are_refused_by_the_parser(seed, message, cifar_dir, tmp_path):
    code, _, err = call(train.main, ["--seed", seed, "--data-dir", str(cifar_dir), "--output-dir", str(tmp_path / "o")])
    assert code == 2 and message in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_the_largest_seed_torch_takes_is_accepted():
    assert settings.parse_args(["--seed", str(2**64 - 1)]).seed == 2**64 - 1


def test_a_last_batch_of_one_image_is_left_out_for_resnet34_and_resume_agrees(cifar_dir, tmp_path):
    # 33 images in batches of 16: the last has one image, on which ResNet34's BatchNorm cannot train (1x1 maps).
    out = tmp_path / "out"
    argv = [
        "-e",
        "1",
        "-wr",
        "-t0",
        "1",
        "--train-subset",
        "33",
        "--val-subset",
        "4",
        "--seed",
        "0",
        "--data-dir",
        str(cifar_dir),
        "--output-dir",
        str(out),
        *TINY,
    ]
    code, log, err = call(train.main, argv)
    assert code == 0, err
    assert "33 training images in 2 batches" in log
    assert "The last training batch, of one image, is left out of every epoch" in log
    assert len(joblib.load(out / "lr_schedule_s1_m1.pkl")) == 2
    code, log, err = call(train.main, [*argv, "-e", "2", "--resume"])
    assert code == 0, err
    assert "Resuming after epoch 1" in log
    assert len(joblib.load(out / "lr_schedule_s1_m1.pkl")) == 4


def test_only_networks_that_cannot_train_on_one_image_leave_it_out():
    from sgdr.training.networks import trains_on_single_images

    assert not trains_on_single_images("resnet34", 10)
    assert trains_on_single_images("wrn-10-1", 10)  # its last BatchNorm sees 8x8 maps: nothing changes


def test_batches_of_one_image_are_refused_for_resnet34(cifar_dir, tmp_path):
    code, log, err = call(train.main, ["-b", "1", "--data-dir", str(cifar_dir), "--output-dir", str(tmp_path / "o")])
    assert code == 1 and "Traceback" not in err
    assert err.startswith(
        "error: resnet34 cannot train on batches of one image: one of its BatchNorm layers would see "
        "a single value per channel. Use -b 2 or more."
    )
    assert not (tmp_path / "o").exists() and "Epoch" not in log


def test_help_opens_with_what_the_script_says_it_does():
    """train.py --help reads its description from settings.py; the script's own first line must agree."""
    assert " ".join(train.__doc__.split("\n\n")[0].split()) == settings.DESCRIPTION
    assert " ".join(settings.build_parser().format_help().split("\n\n")[1].split()) == settings.DESCRIPTION


def test_resuming_at_another_lr_is_refused(cifar_dir, tmp_path):
    flags = ["-e", "1", "--train-subset", "32", "--val-subset", "16", "--data-dir", str(cifar_dir), *SMALL, *TINY]
    assert call(train.main, [*flags, "--output-dir", str(tmp_path)])[0] == 0
    code, _, err = call(train.main, [*flags, "-e", "2", "--lr", "0.1", "--resume", "--output-dir", str(tmp_path)])
    assert code == 1 and "lr: 0.05 in the checkpoint, 0.1 now" in err and "Traceback" not in err, err


def first_batch_norm_inputs(model, images):
    """The input of the first BatchNorm layer the network calls (none before it: the same in train and eval)."""
    import torch

    seen = []
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    hooks = [m.register_forward_pre_hook(lambda module, args: seen.append((module, args[0]))) for m in norms]
    with torch.no_grad():
        model(images)
    for hook in hooks:
        hook.remove()
    return seen[0]


def test_recompute_bn_trains_the_same_weights_and_validates_with_the_training_images_statistics(cifar_dir, tmp_path):
    """--recompute-bn changes no weight; the statistics validation reads are the exact averages over the training
    images' batches (read as validation reads images), and the validation loss is that network's."""
    import torch
    import torchvision

    from sgdr.data.loaders import test_transform
    from sgdr.training.networks import build_network

    common = ["-e", "2", "--seed", "3", "--train-subset", "32", "--data-dir", str(cifar_dir), *TINY, "--model"]
    plain, recomputed = tmp_path / "plain", tmp_path / "recomputed"
    assert call(train.main, [*common, "wrn-10-1", "--output-dir", str(plain)])[0] == 0
    code, _, err = call(train.main, [*common, "wrn-10-1", "--recompute-bn", "--output-dir", str(recomputed)])
    assert code == 0, err
    a, b = (torch.load(out / "runs" / "multistep" / "checkpoint.pt", weights_only=True) for out in (plain, recomputed))
    statistics = ("running_mean", "running_var", "num_batches_tracked")
    weights = [k for k in a["model"] if not k.endswith(statistics)]
    assert weights and all(torch.equal(a["model"][k], b["model"][k]) for k in weights)
    assert a["history"]["train_loss"] == b["history"]["train_loss"]
    assert a["history"]["test_loss"] != b["history"]["test_loss"]
    assert b["config"]["recompute_bn"] is True and a["config"]["recompute_bn"] is False

    model = build_network("wrn-10-1", 10)
    model.load_state_dict(b["model"])
    model.eval()
    train_set = torchvision.datasets.CIFAR10(cifar_dir, train=True, transform=test_transform())
    images = torch.stack([train_set[i][0] for i in range(32)])
    norm, x = first_batch_norm_inputs(model, images)
    batches = x.split(16)  # -b 16: two batches, each an equal part of the average
    assert torch.allclose(norm.running_mean, torch.stack([t.mean((0, 2, 3)) for t in batches]).mean(0), atol=1e-6)
    var = torch.stack([t.var((0, 2, 3), unbiased=True) for t in batches]).mean(0)
    assert torch.allclose(norm.running_var, var, rtol=1e-5)
    assert int(norm.num_batches_tracked) == 2
    test_set = torchvision.datasets.CIFAR10(cifar_dir, train=False, transform=test_transform())
    tests = torch.stack([image for image, _ in test_set])
    labels = torch.tensor([label for _, label in test_set])
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(tests), labels).item()
    assert joblib.load(recomputed / "val_loss.pkl")[-1] == pytest.approx(loss, rel=1e-5)


def test_a_training_set_of_one_image_is_refused_for_resnet34(cifar_dir, tmp_path):
    """One image is a batch BatchNorm cannot train on, and it is the only one: refused before training."""
    argv = ["--train-subset", "1", "--test-subset", "4", "--data-dir", str(cifar_dir), "--output-dir", str(tmp_path)]
    code, log, err = call(train.main, argv)
    assert code == 1 and "Traceback" not in err and "Epoch" not in log
    assert "resnet34 cannot train on a batch of one image per process" in err and "larger --train-subset" in err


def test_thousands_of_loader_workers_are_refused(capsys):
    with pytest.raises(SystemExit) as caught:
        settings.parse_args(["--workers", "100000", "--loader", "torchvision"])
    assert caught.value.code == 2
    assert f"argument --workers: must be at most {settings.WORKERS_MAX}, got 100000" in capsys.readouterr().err


def test_plot_on_a_file_says_it_is_not_a_folder(tmp_path):
    (tmp_path / "afile").write_text("mine")
    code, _, err = call(plot.main, ["--output-dir", str(tmp_path / "afile")])
    assert code == 1 and "Traceback" not in err
    assert f"--output-dir {tmp_path / 'afile'} is a file, not a folder" in err and "train.py" not in err

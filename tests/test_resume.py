"""Runs survive: killed or stopped runs resume to exactly the uninterrupted result, and
refusals (bad checkpoint, other settings, existing outputs) change no file."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import time
from pathlib import Path

import joblib
import pytest
import torch
import torchvision
from conftest import (
    REPO,
    RUNS,
    SMALL,
    STEPS_PER_EPOCH,
    TINY,
    argv,
    assert_equal,
    assert_same_run,
    call,
    files_of,
    harness,
    start_until,
)

import train
from sgdr import storage
from sgdr.data import cifar
from sgdr.parallel import devices
from sgdr.run import epoch, settings
from sgdr.run.record import code_version

# 40 training images in batches of 16: 3 steps an epoch. Warm restarts at epochs 1 and 3.
# A small Wide ResNet: resuming is the same for every network, and this one is quick.


@pytest.fixture(scope="module")
def uninterrupted(tiny_cifar, tmp_path_factory) -> dict[str, Path]:
    """Each kind of run, trained straight through in this process."""
    outs = {}
    with pytest.MonkeyPatch.context() as mp:
        from sgdr.testing.cifar_files import use_checksums_of

        use_checksums_of(tiny_cifar, mp.setattr)
        for kind in RUNS:
            outs[kind] = tmp_path_factory.mktemp(f"straight-{kind}")
            code, _, err = call(train.main, argv(kind, tiny_cifar, outs[kind]))
            assert code == 0, err
    return outs


def record(out: Path, name: str) -> dict:
    return json.loads((out / "runs" / name / "run.json").read_text())


@pytest.mark.parametrize(
    ("kind", "point"),
    [
        ("warm", "batch:7"),  # in the middle of epoch 3, just after a restart
        ("multistep", "batch:5"),  # in the middle of epoch 2
        ("warm", "writing:3"),  # halfway through writing the checkpoint of epoch 2
        ("multistep", "written:2"),  # epoch 1's checkpoint complete, not yet renamed into place
        ("warm", "replaced:4"),  # just after epoch 3's checkpoint is in place
        ("paper", "batch:6"),  # the first batch of epoch 2, just after the first restart
        ("recompute", "batch:8"),  # in epoch 3: its statistics are recomputed by the resumed session
    ],
)
def test_killed_then_resumed_equals_uninterrupted(kind, point, cifar_dir, tmp_path, uninterrupted):
    out = tmp_path / "out"
    killed = subprocess.run(
        harness(cifar_dir, point, argv(kind, cifar_dir, out)), capture_output=True, text=True, timeout=600
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    if point.startswith("writing"):  # the half-written checkpoint is a temporary; the old one stands
        assert list((out / "runs").rglob(".checkpoint.pt.*.tmp"))
    code, log, err = call(train.main, argv(kind, cifar_dir, out, "--resume"))
    assert code == 0, err
    assert "Resuming after epoch" in log
    assert not list(out.rglob("*.tmp")), "stale temporaries are cleared on resume"
    assert_same_run(out, uninterrupted[kind])
    name = "multistep" if kind == "multistep" else "wr_s1_m2"
    sessions = record(out, name)["sessions"]
    assert record(out, name)["resumed"] == 1 and [s["outcome"] for s in sessions] == ["running", "finished"]


def test_killed_at_a_random_moment_then_resumed(cifar_dir, tmp_path, uninterrupted):
    delay = random.Random().uniform(0.0, 1.5)
    out = tmp_path / "out"
    proc = start_until(
        harness(cifar_dir, "none", argv("warm", cifar_dir, out)), "Epoch 2 of 4", stderr=subprocess.DEVNULL
    )
    time.sleep(delay)
    proc.kill()
    proc.wait(timeout=60)
    code, _, err = call(train.main, argv("warm", cifar_dir, out, "--resume"))
    assert code == 0, f"killed {delay:.2f} s into epoch 2: {err}"
    assert_same_run(out, uninterrupted["warm"])


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_at_a_batch_boundary_and_the_run_resumes(sig, cifar_dir, tmp_path, uninterrupted):
    out = tmp_path / "out"
    # A terminal's Ctrl-C reaches the whole process group, worker processes included.
    workers = ["--loader", "torchvision", "--workers", "2"]
    args = argv("multistep", cifar_dir, out, *workers) if sig == signal.SIGINT else argv("multistep", cifar_dir, out)
    proc = start_until(harness(cifar_dir, "none", args), "Epoch 2 of 4", start_new_session=True)
    os.killpg(proc.pid, sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-2000:]
    assert "stopping at the next batch boundary" in err
    assert "Traceback" not in err
    assert f"Stopped by {sig.name}" in err
    resume_hint = err.split("Resume with:\n")[1].strip()
    assert resume_hint.startswith("python train.py") and resume_hint.endswith("--resume")
    state = torch.load(out / "runs" / "multistep" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] in (1, 2)
    assert f"holds {state['epoch']} complete epoch{'s' * (state['epoch'] != 1)};" in err  # "1 complete epoch"
    assert record(out, "multistep")["sessions"][0]["outcome"] == f"interrupted by {sig.name}"
    code, _, err = call(train.main, [*args, "--resume"])
    assert code == 0, err
    if sig == signal.SIGTERM:  # same settings as the uninterrupted run (the SIGINT one used workers)
        assert_same_run(out, uninterrupted["multistep"])


def test_a_second_ctrl_c_aborts_at_once_and_leaves_complete_files(cifar_dir, tmp_path):
    out = tmp_path / "out"
    proc = start_until(harness(cifar_dir, "none", argv("warm", cifar_dir, out)), "Epoch 2 of 4")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    # 130 from train.py; or killed by the SIGINT itself (-2, which a shell also shows as 130) when the second
    # lands after the run has closed down, in the interpreter's last second of shutdown (seen on a loaded CPU).
    assert proc.returncode in (130, -signal.SIGINT), err[-3000:]
    assert "Aborted." in err and "Traceback" not in err
    assert not list(out.rglob("*.tmp"))
    assert torch.load(out / "runs" / "wr_s1_m2" / "checkpoint.pt", weights_only=True)["epoch"] >= 1
    # "aborted" if the second signal cut training short, the first's outcome if it came while
    # the first was already closing the run down.
    assert record(out, "wr_s1_m2")["sessions"][0]["outcome"] in ("aborted", "interrupted by SIGINT")


def test_checkpoint_holds_everything_as_plain_data(uninterrupted, cifar_dir):
    state = torch.load(uninterrupted["warm"] / "runs" / "wr_s1_m2" / "checkpoint.pt", weights_only=True)
    assert sorted(state) == ["config", "epoch", "format", "history", "model", "optimizer", "rng", "scheduler"]
    assert state["epoch"] == 4
    assert sorted(state["rng"]) == ["cuda", "loader", "python", "torch"]
    assert len(state["history"]["train_loss"]) == 4 and len(state["history"]["lr"]) == 4 * STEPS_PER_EPOCH
    assert state["config"] == {
        "recipe": "tutorial",
        "dataset": "cifar10",
        "model": "wrn-10-1",
        "warm_restart": True,
        "t_zero": 1,
        "t_mult": 2,
        "lr": 0.05,
        "batch_size": 16,
        "train_subset": None,
        "test_subset": None,
        "seed": 12,
        "loader": "device",
        "channels_last": devices.channels_last_is_faster(torch.device("cpu")),  # the machine's faster layout
        "amp": "off",
        "tf32": "conv",
        "deterministic": False,
        "compile": False,
        "processes": 1,
        "sync_bn": False,
        "recompute_bn": False,
        "data": cifar.data_digest(*cifar.load_splits(cifar_dir)),  # the images, wherever they are
    }


def test_a_finished_run_can_be_extended_exactly(cifar_dir, tmp_path, uninterrupted):
    out = tmp_path / "out"
    short = [a if a != "4" else "2" for a in argv("warm", cifar_dir, out)]  # -e 2
    assert call(train.main, short)[0] == 0
    code, log, err = call(train.main, argv("warm", cifar_dir, out, "--resume"))
    assert code == 0, err
    assert_same_run(out, uninterrupted["warm"])


def test_resuming_a_finished_run_does_nothing(cifar_dir, tmp_path, uninterrupted):
    out = tmp_path / "out"
    shutil.copytree(uninterrupted["multistep"], out)
    before = files_of(out)
    code, log, _ = call(train.main, argv("multistep", cifar_dir, out, "--resume"))
    assert code == 0 and "finished all 4 epochs already" in log
    assert files_of(out) == before


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(cifar_dir, tmp_path, monkeypatch):
    real = torch.nn.functional.cross_entropy
    calls = [0]

    def poisoned(logits, labels, **kwargs):
        loss = real(logits, labels, **kwargs)
        if kwargs.get("reduction", "mean") == "mean":  # training batches only
            calls[0] += 1
            if calls[0] == STEPS_PER_EPOCH + 2:  # epoch 2, batch 2
                return loss * float("nan")
        return loss

    monkeypatch.setattr(epoch.F, "cross_entropy", poisoned)
    out = tmp_path / "out"
    code, log, err = call(train.main, argv("multistep", cifar_dir, out))
    assert code == 1
    checkpoint_path = out / "runs" / "multistep" / "checkpoint.pt"
    assert err.strip() == (
        f"error: the training loss is not finite (NaN or infinite) at epoch 2, batch 2; stopped before "
        f"saving that epoch. {checkpoint_path} still holds the 1 epochs before it."
    )
    state = torch.load(checkpoint_path, weights_only=True)
    assert state["epoch"] == 1 and all(
        torch.isfinite(t).all() for t in state["model"].values() if t.is_floating_point()
    )
    import joblib

    assert len(joblib.load(out / "train_loss.pkl")) == 1
    assert record(out, "multistep")["sessions"][-1]["outcome"] == "stopped: non-finite loss at epoch 2, batch 2"


def refuses_and_changes_nothing(out: Path, args: list[str], message: str) -> None:
    before = {**files_of(out), **{str(p): p.read_bytes() for p in out.rglob("run.json") if p.is_file()}}
    code, log, err = call(train.main, args)
    assert code == 1, err
    assert message in err and "Traceback" not in err
    assert "Epoch 1" not in log
    assert {**files_of(out), **{str(p): p.read_bytes() for p in out.rglob("run.json") if p.is_file()}} == before


@pytest.fixture
def finished_copy(uninterrupted, tmp_path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(uninterrupted["multistep"], out)
    return out


def test_a_truncated_checkpoint_is_named_and_nothing_changes(finished_copy, cifar_dir):
    path = finished_copy / "runs" / "multistep" / "checkpoint.pt"
    path.write_bytes(path.read_bytes()[:100_000])
    refuses_and_changes_nothing(
        finished_copy,
        argv("multistep", cifar_dir, finished_copy, "--resume", "-e", "5"),
        f"error: the checkpoint {path} cannot be read (",
    )


def without(state: dict, key: str) -> dict:
    return {k: v for k, v in state.items() if k != key}


@pytest.mark.parametrize(
    ("damage", "said"),
    [
        (lambda s: {"format": s["format"]}, "it has no 'config'"),
        (lambda s: without(s, "rng"), "it has no 'rng'"),
        (lambda s: {**s, "config": "multistep"}, "its 'config' is a str, not a dict"),
        (lambda s: {**s, "rng": without(s["rng"], "loader")}, "its random states lack loader"),
        # A checkpoint that says more epochs than its history holds would "finish" a run it never trained.
        (lambda s: {**s, "epoch": 99}, "it says 99 epochs are done, but its history holds 4 train_loss, 4 test_loss"),
        (lambda s: {**s, "history": {**s["history"], "lr": s["history"]["lr"][:-1]}}, "learning rates do not split"),
        (
            lambda s: {**s, "history": {**s["history"], "lr": s["history"]["lr"] * 2}},
            "6 learning rates an epoch, but an epoch of this run is 3 batches",
        ),
        (
            lambda s: {**s, "optimizer": {**s["optimizer"], "param_groups": []}},
            "its optimiser or schedule state does not fit",
        ),
        (lambda s: {**s, "rng": {**s["rng"], "torch": torch.zeros(3)}}, "its random states cannot be restored"),
    ],
)
def test_a_checkpoint_with_the_wrong_content_is_refused_by_name(finished_copy, cifar_dir, damage, said):
    path = finished_copy / "runs" / "multistep" / "checkpoint.pt"
    torch.save(damage(torch.load(path, weights_only=True)), path)
    refuses_and_changes_nothing(finished_copy, argv("multistep", cifar_dir, finished_copy, "--resume", "-e", "5"), said)
    code, _, err = call(train.main, argv("multistep", cifar_dir, finished_copy, "--resume", "-e", "5"))
    assert code == 1 and f"error: the checkpoint {path} is damaged: " in err and "--overwrite" in err


@pytest.mark.parametrize("name", ["val_loss.pkl", "runs/multistep/run.json", "runs/multistep/metrics.jsonl"])
def test_a_folder_where_a_file_of_the_run_goes_is_named(finished_copy, cifar_dir, name):
    (finished_copy / name).unlink()
    (finished_copy / name).mkdir()
    refuses_and_changes_nothing(
        finished_copy,
        argv("multistep", cifar_dir, finished_copy, "--resume", "-e", "5"),
        f"error: {finished_copy / name} is a folder, where this run writes a file. Move or remove it, then run again.",
    )


def test_a_file_where_the_snapshots_go_is_named(finished_copy, cifar_dir):
    snapshots = finished_copy / "runs" / "multistep" / "snapshots"
    shutil.rmtree(snapshots, ignore_errors=True)
    snapshots.write_bytes(b"")
    refuses_and_changes_nothing(
        finished_copy,
        argv("multistep", cifar_dir, finished_copy, "--resume", "-e", "5"),
        f"error: {snapshots} is a file, where this run keeps its snapshots (a folder). Move or remove it",
    )


def test_resume_remakes_a_damaged_snapshot_it_can_and_names_those_it_cannot(cifar_dir, tmp_path, uninterrupted):
    # T_0 = 1, T_mult = 2 ends cycles after epochs 1 and 3: three epochs leave both snapshots.
    out = tmp_path / "out"
    three = [a if a != "4" else "3" for a in argv("warm", cifar_dir, out)]
    assert call(train.main, three)[0] == 0
    snapshots = out / "runs" / "wr_s1_m2" / "snapshots"
    (snapshots / "epoch_0001.pt").write_bytes(b"")
    (snapshots / "epoch_0003.pt").write_bytes((snapshots / "epoch_0003.pt").read_bytes()[:1000])
    code, log, err = call(train.main, argv("warm", cifar_dir, out, "--resume"))
    assert code == 0, err
    # Epoch 3's network is the checkpoint's: its snapshot is made again, equal to the uninterrupted run's.
    want = uninterrupted["warm"] / "runs" / "wr_s1_m2" / "snapshots"
    assert_equal(
        torch.load(snapshots / "epoch_0003.pt", weights_only=True),
        torch.load(want / "epoch_0003.pt", weights_only=True),
        "3",
    )
    assert f"warning: {snapshots / 'epoch_0001.pt'} cannot be read and cannot be made again" in err
    assert "epoch_0003" not in err


def test_resuming_with_other_settings_names_the_difference(finished_copy, cifar_dir):
    refuses_and_changes_nothing(
        finished_copy,
        argv("multistep", cifar_dir, finished_copy, "--resume", "-b", "8", "-e", "5"),
        "batch_size: 16 in the checkpoint, 8 now",
    )
    refuses_and_changes_nothing(
        finished_copy,
        argv("multistep", cifar_dir, finished_copy, "--resume", "--milestones", "2", "4"),
        "milestones: [2, 3] in the checkpoint, [2, 4] now",
    )
    refuses_and_changes_nothing(
        finished_copy,
        argv("multistep", cifar_dir, finished_copy, "--resume", "--seed", "1"),
        "seed: 11 in the checkpoint, 1 now",
    )
    refuses_and_changes_nothing(
        finished_copy,
        argv("multistep", cifar_dir, finished_copy, "--resume", "--model", "wrn-16-1"),
        "model: 'wrn-10-1' in the checkpoint, 'wrn-16-1' now",
    )


def test_existing_outputs_without_resume_are_never_overwritten(finished_copy, cifar_dir):
    refuses_and_changes_nothing(
        finished_copy, argv("multistep", cifar_dir, finished_copy), "this run already has files: "
    )
    (finished_copy / "runs" / "multistep" / "checkpoint.pt").unlink()
    refuses_and_changes_nothing(
        finished_copy, argv("multistep", cifar_dir, finished_copy, "--resume"), "there is no checkpoint to resume from"
    )


def test_overwrite_starts_the_run_over(finished_copy, cifar_dir, uninterrupted):
    (finished_copy / "train_loss.pkl").write_bytes(b"stale")
    code, _, err = call(train.main, argv("multistep", cifar_dir, finished_copy, "--overwrite"))
    assert code == 0, err
    assert_same_run(finished_copy, uninterrupted["multistep"])
    assert record(finished_copy, "multistep")["resumed"] == 0


@pytest.mark.parametrize(
    ("name", "nth"),
    [
        ("checkpoint.pt", 3),  # epoch 2's checkpoint (one is written before epoch 1)
        ("wr_val_loss_s1_m2.pkl", 2),  # epoch 2's pickle, its checkpoint written
        ("epoch_0003.pt", 1),  # the snapshot at the end of the second cycle
    ],
)
def test_a_full_disk_stops_with_what_is_on_disk_and_resume_catches_up(
    name, nth, cifar_dir, tmp_path, monkeypatch, uninterrupted
):
    import errno
    from contextlib import contextmanager

    real, seen = storage.atomic_write, []

    @contextmanager
    def filling(path, durable=False):
        with real(path, durable) as f:
            yield f
            if Path(path).name == name:
                seen.append(path)
                if len(seen) == nth:  # the data are written, flushing them fails
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(storage, "atomic_write", filling)
    out = tmp_path / "out"
    code, printed, err = call(train.main, argv("warm", cifar_dir, out))
    assert code == 1 and "Traceback" not in err
    # The epoch the disk filled in printed its accuracy (before saving) and none of the lines after it.
    assert printed.count("[INFO]: Epoch") == printed.count("Training accuracy") == printed.count("Epoch time") + 1
    held = torch.load(out / "runs" / "wr_s1_m2" / "checkpoint.pt", weights_only=True)["epoch"]
    assert err.startswith(
        f"error: the disk is full (No space left on device). On disk: "
        f"{out / 'runs' / 'wr_s1_m2' / 'checkpoint.pt'} holds {held} complete epoch{'s' * (held != 1)};"
    )
    assert err.rstrip().endswith("--resume")
    for pickle_name in ("wr_train_loss_s1_m2.pkl", "wr_val_loss_s1_m2.pkl"):  # never ahead of the checkpoint
        assert len(storage.load_floats(out / pickle_name)) <= held
    assert record(out, "wr_s1_m2")["sessions"][-1]["outcome"] == "stopped: the disk is full"
    monkeypatch.setattr(storage, "atomic_write", real)  # space freed
    code, _, err = call(train.main, argv("warm", cifar_dir, out, "--resume"))
    assert code == 0, err
    assert_same_run(out, uninterrupted["warm"])


def test_a_closed_output_stops_the_run_quietly_and_it_resumes(cifar_dir, tmp_path, uninterrupted):
    out = tmp_path / "out"
    proc = start_until(harness(cifar_dir, "none", argv("warm", cifar_dir, out)), "Epoch 2 of 4")
    proc.stdout.close()  # as `python train.py ... | head` does once it has its lines
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 128 + signal.SIGPIPE, err[-2000:]
    assert "Traceback" not in err and "Exception ignored" not in err
    assert "Stopped by SIGPIPE (output closed)." in err and err.rstrip().endswith("--resume")
    state = torch.load(out / "runs" / "wr_s1_m2" / "checkpoint.pt", weights_only=True)
    assert state["epoch"] >= 1 and len(joblib.load(out / "wr_val_loss_s1_m2.pkl")) == state["epoch"]
    assert record(out, "wr_s1_m2")["sessions"][0]["outcome"] == "interrupted by SIGPIPE (output closed)"
    code, _, err = call(train.main, argv("warm", cifar_dir, out, "--resume"))
    assert code == 0, err
    assert_same_run(out, uninterrupted["warm"])


def test_every_flag_says_how_it_enters_a_runs_settings():
    """A flag added to the parser without a declaration in settings.DECIDES (or among the settings free to
    change on resume) fails here: its value for the runs trained before it existed must be said."""
    flags = {action.dest for action in settings.build_parser()._actions if action.dest != "help"}
    assert flags == (settings.DECIDES.keys() - {"processes"}) | settings.MAY_CHANGE_ON_RESUME
    assert settings.undeclared([*flags, "processes"]) == []


def with_a_new_flag(monkeypatch, declared: bool) -> None:
    """train.py with a new flag --dummy (default 0), declared as a setting that decides the run or not."""
    build = settings.build_parser

    def parser():
        parser = build()
        parser.add_argument("--dummy", type=int, default=0)
        return parser

    monkeypatch.setattr(settings, "build_parser", parser)
    if declared:
        monkeypatch.setitem(settings.DECIDES, "dummy", settings.Decides(before=0))


def test_a_flag_without_its_declaration_stops_the_run_before_it_writes(cifar_dir, tmp_path, monkeypatch):
    with_a_new_flag(monkeypatch, declared=False)
    common = ["-e", "1", "--seed", "1", *SMALL, *TINY, "--data-dir", str(cifar_dir), "--output-dir", str(tmp_path)]
    with pytest.raises(RuntimeError, match="settings.DECIDES does not declare dummy"):
        call(train.main, common)
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_a_declared_setting_is_protected_and_older_checkpoints_resume_as_they_trained(cifar_dir, tmp_path, monkeypatch):
    common = ["--seed", "1", *SMALL, *TINY, "--data-dir", str(cifar_dir)]
    old, new = ["--output-dir", str(tmp_path / "old")], ["--output-dir", str(tmp_path / "new")]
    assert call(train.main, ["-e", "1", *common, *old])[0] == 0  # a checkpoint from before the flag
    with_a_new_flag(monkeypatch, declared=True)
    assert call(train.main, ["-e", "1", *common, *new])[0] == 0
    assert torch.load(tmp_path / "new" / "runs" / "multistep" / "checkpoint.pt")["config"]["dummy"] == 0
    for out in (old, new):
        code, _, err = call(train.main, ["-e", "2", *common, *out, "--resume", "--dummy", "3"])
        assert code == 1 and "dummy: 0 in the checkpoint, 3 now" in err
    # The older checkpoint, without the setting, resumes as the value it trained under; what may change does.
    code, log, err = call(train.main, ["-e", "2", *common, *old, "--resume"])
    assert code == 0 and "Resuming after epoch 1" in log, err


def test_a_run_resumes_on_a_machine_with_fewer_cores_than_its_workers(cifar_dir, tmp_path, monkeypatch):
    """--workers defaults to min(4, CPUs) for a new run; a resumed run keeps its checkpoint's, wherever it runs."""
    common = ["--seed", "1", *SMALL, "-b", "16", "--loader", "torchvision", "--data-dir", str(cifar_dir)]
    common += ["--output-dir", str(tmp_path)]
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert call(train.main, ["-e", "1", *common])[0] == 0
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    code, log, err = call(train.main, ["-e", "2", *common, "--resume"])
    assert code == 0 and "Resuming after epoch 1" in log, err
    assert torch.load(tmp_path / "runs" / "multistep" / "checkpoint.pt")["config"]["workers"] == 2
    code, _, err = call(train.main, ["-e", "3", *common, "--resume", "--workers", "1"])
    assert code == 1 and "workers: 2 in the checkpoint, 1 now" in err


def test_the_memory_layout_a_cpu_run_takes_is_the_faster_there_and_stays_on_resume(cifar_dir, tmp_path, monkeypatch):
    """channels-last where the CPU lacks AVX-512 (faster there), contiguous where it has it; recorded, so that a run
    resumed on the other kind of processor keeps its own layout and resumes exactly."""
    common = ["--seed", "1", *SMALL, *TINY, "--data-dir", str(cifar_dir)]
    config = {}
    for capability, wanted in (("AVX2", True), ("AVX512", False)):
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda c=capability: c)
        out = tmp_path / capability
        assert call(train.main, ["-e", "1", *common, "--output-dir", str(out)])[0] == 0
        config[capability] = torch.load(out / "runs" / "multistep" / "checkpoint.pt")["config"]
        assert config[capability]["channels_last"] is wanted
    # Resumed on the other kind: the checkpoint's layout.
    code, log, err = call(train.main, ["-e", "2", *common, "--output-dir", str(tmp_path / "AVX2"), "--resume"])
    assert code == 0 and "Resuming after epoch 1" in log, err
    assert torch.load(tmp_path / "AVX2" / "runs" / "multistep" / "checkpoint.pt")["config"]["channels_last"] is True
    assert devices.channels_last_is_faster(torch.device("cuda", 0)) is True  # CUDA keeps it on wherever


def test_the_files_a_resume_starts_from_survive_a_power_cut(cifar_dir, tmp_path, monkeypatch):
    """The checkpoint and the run record are renamed into place and their folder synced, so that a power cut
    cannot undo the rename; the other outputs are remade from the checkpoint on resume."""
    synced, written = [], []
    sync, replace = storage.sync_folder, os.replace
    monkeypatch.setattr(
        storage, "sync_folder", lambda folder: synced.append((Path(folder), written[-1])) or sync(folder)
    )
    monkeypatch.setattr(os, "replace", lambda src, dst: written.append(Path(dst).name) or replace(src, dst))
    argv = ["-e", "1", "-wr", "-t0", "1", "--seed", "1", *SMALL, *TINY, "--data-dir", str(cifar_dir)]
    assert call(train.main, [*argv, "--output-dir", str(tmp_path)])[0] == 0
    run_dir = tmp_path / "runs" / "wr_s1_m1"
    assert {name for folder, name in synced if folder == run_dir} == {"checkpoint.pt", "run.json"}
    assert (run_dir / "snapshots", "epoch_0001.pt") in synced
    assert {name for _, name in synced} == {"checkpoint.pt", "run.json", "epoch_0001.pt"}  # not every figure


def test_the_run_record_names_the_code_and_library_versions(uninterrupted, tmp_path, monkeypatch):
    versions = record(uninterrupted["warm"], "wr_s1_m2")["versions"]
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # run from a git checkout, as CI and developers do
        assert versions["code"]["commit"] == head.stdout.strip() and isinstance(versions["code"]["modified"], bool)
    assert versions["torch"] == torch.__version__ and versions["torchvision"] == torchvision.__version__
    monkeypatch.setenv("PATH", str(tmp_path))  # no git: the record says nothing rather than failing
    assert code_version() is None


def test_a_signal_stops_a_paper_recipe_run_that_resumes_exactly(cifar_dir, tmp_path, uninterrupted):
    out = tmp_path / "out"
    args = argv("paper", cifar_dir, out)
    proc = start_until(harness(cifar_dir, "none", args), "Epoch 2 of 4", start_new_session=True)
    os.killpg(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM and "Stopped by SIGTERM" in err, err[-2000:]
    code, _, err = call(train.main, [*args, "--resume"])
    assert code == 0, err
    assert_same_run(out, uninterrupted["paper"])


def test_a_run_resumed_with_e_at_what_its_checkpoint_holds_ends_there_recorded_finished(cifar_dir, tmp_path):
    """Planned for 4 epochs, killed in epoch 3, resumed with -e 2: the run ends at its 2 epochs (a smaller -e is how
    a user stops a run early), recorded finished, so the report reads it; its files are a straight 2-epoch run's."""
    straight, out = tmp_path / "straight", tmp_path / "out"
    assert call(train.main, argv("multistep", cifar_dir, straight, "-e", "2"))[0] == 0
    killed = subprocess.run(
        harness(cifar_dir, "batch:7", argv("multistep", cifar_dir, out)), capture_output=True, text=True, timeout=600
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    code, log, err = call(train.main, argv("multistep", cifar_dir, out, "-e", "2", "--resume"))
    assert code == 0, err
    assert "This run holds 2 complete epochs, as many as -e 2 asks: it ends there, and is recorded finished." in log
    assert_same_run(out, straight)
    record = json.loads((out / "runs" / "multistep" / "run.json").read_text())
    assert record["finished"] and record["epochs"] == 2
    code, log, _ = call(train.main, argv("multistep", cifar_dir, out, "-e", "1", "--resume"))
    assert code == 0 and "This run has finished all 2 epochs already; nothing to do." in log

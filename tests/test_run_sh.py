"""run.sh: the reference command lines, and the quick mode end to end."""

from __future__ import annotations

import math
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import joblib
import pytest
from conftest import HARNESS, MULTISTEP, REPO, wr_files


def run_sh(*args: str, python: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": python}
    return subprocess.run(
        ["sh", str(REPO / "run.sh"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )


def test_the_reference_runs_are_the_three_spec_commands(tmp_path):
    done = run_sh("--seed", "3", python="echo", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{REPO}/train.py -e 200 --resume --seed 3",
        f"{REPO}/train.py -e 200 --warm-restart -t0 50 --resume --seed 3",
        f"{REPO}/train.py -e 200 --warm-restart -t0 200 --resume --seed 3",
    ]


def test_quick_mode_trains_three_schedules_and_draws_the_figure(tiny_cifar, tmp_path):
    # The interpreter is wrapped so that torchvision accepts the tiny data's checksums.
    python = f"{sys.executable} {HARNESS} {tiny_cifar} none"
    tiny = [
        "--data-dir",
        str(tiny_cifar),
        "--train-subset",
        "8",
        "--val-subset",
        "8",
        "-b",
        "8",
        "--workers",
        "0",
        "--seed",
        "0",
        "--model",
        "wrn-10-1",
    ]  # a small network: this test is about run.sh, not ResNet34
    done = run_sh("--quick", *tiny, python=python, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "outputs" / "quick"
    assert sorted(os.listdir(out)) == sorted(
        MULTISTEP + wr_files(5) + wr_files(20) + ["loss_plot_combined.jpg", "runs"]
    )
    assert "lr x 0.2 at epochs 6, 12, 16" in done.stdout
    for name in ["val_loss.pkl", "wr_val_loss_s5_m1.pkl", "wr_val_loss_s20_m1.pkl"]:
        assert len(joblib.load(out / name)) == 20
    lrs = joblib.load(out / "lr_schedule_s5_m1.pkl")  # one batch per epoch
    assert len(lrs) == 20
    assert [lrs[k] for k in (5, 6, 10, 11, 15, 16)] == [lrs[5], 0.05, lrs[5], 0.05, lrs[5], 0.05]
    # Each restart batch still uses eq. (5) at 4/5 of the old cycle, the next one the peak.
    assert lrs[5] == pytest.approx(0.025 * (1 + math.cos(0.8 * math.pi)), abs=1e-15)


def without_gpu_settings() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("CUDA_VISIBLE_DEVICES", "GPUS")}


def test_parallel_mode_puts_one_run_on_each_gpu(tmp_path):
    fake = tmp_path / "fake_python.sh"
    fake.write_text('echo "GPU=$CUDA_VISIBLE_DEVICES $*"\n')
    env = {**without_gpu_settings(), "PYTHON": f"sh {fake}", "GPUS": "2"}
    done = subprocess.run(
        ["sh", str(REPO / "run.sh"), "--parallel", "--seed", "4"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "GPU= -m sgdr.data --seed 4",  # the data set, fetched once before the runs
        "run.sh --parallel: 2 GPUs for 3 runs: runs that share a GPU take it in turn, not at once (at once they "
        "would slow each other, tune cuDNN under each other's load, and fail on a GPU in exclusive-process mode).",
        "multistep: GPU 0, log outputs/logs/multistep.log",
        "wr_s50_m1: GPU 1, log outputs/logs/wr_s50_m1.log",
        "wr_s200_m1: GPU 0, log outputs/logs/wr_s200_m1.log, after multistep",
    ]
    logs = {p.stem: p.read_text().strip() for p in (tmp_path / "outputs" / "logs").iterdir()}
    assert logs == {
        "multistep": f"GPU=0 {REPO}/train.py --device cuda -e 200 --resume --seed 4",
        "wr_s50_m1": f"GPU=1 {REPO}/train.py --device cuda -e 200 --warm-restart -t0 50 --resume --seed 4",
        "wr_s200_m1": f"GPU=0 {REPO}/train.py --device cuda -e 200 --warm-restart -t0 200 --resume --seed 4",
    }


@pytest.mark.parametrize("gpus", [1, 2, 3])
def test_runs_that_share_a_gpu_take_it_in_turn(gpus, tmp_path):
    """With fewer GPUs than runs, no GPU ever holds two runs at once; with as many, all three run at once."""
    events = tmp_path / "events"
    fake = tmp_path / "fake_python.sh"
    fake.write_text(
        f'[ "$2" = sgdr.data ] && exit 0\necho "start $CUDA_VISIBLE_DEVICES" >> {events}\nsleep 1\n'
        f'echo "end $CUDA_VISIBLE_DEVICES" >> {events}\n'
    )
    env = {**without_gpu_settings(), "PYTHON": f"sh {fake}", "GPUS": str(gpus)}
    done = subprocess.run(
        ["sh", str(REPO / "run.sh"), "--parallel"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    busy: dict[str, int] = {}
    most = 0
    for event, gpu in (line.split() for line in events.read_text().splitlines()):
        busy[gpu] = busy.get(gpu, 0) + (1 if event == "start" else -1)
        assert busy[gpu] <= 1, f"two runs at once on GPU {gpu}"
        most = max(most, sum(busy.values()))
    assert sorted(busy) == [str(k) for k in range(gpus)] and most == gpus  # every GPU busy at once
    assert ("take it in turn" in done.stdout) == (gpus < 3)


NVIDIA_SMI_L = """\
GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-0a)
  MIG 3g.20gb     Device  0: (UUID: MIG-0a-0)
  MIG 3g.20gb     Device  1: (UUID: MIG-0a-1)
GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-1b)
  MIG 7g.40gb     Device  0: (UUID: MIG-1b-0)
"""


def run_parallel_on_fake_gpus(tmp_path: Path, **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:
    """run.sh --parallel with a fake nvidia-smi on PATH and a PYTHON that records, for each call, the
    CUDA_VISIBLE_DEVICES it was given and its arguments."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "nvidia-smi").write_text(f'#!/bin/sh\n[ "$1" = -L ] && printf %s "{NVIDIA_SMI_L}"\n')
    (bin_dir / "nvidia-smi").chmod(0o755)
    calls = tmp_path / "calls"
    python = tmp_path / "python.sh"
    python.write_text(f'echo "${{CUDA_VISIBLE_DEVICES-unset}} $*" >> {calls}\n')
    full = {**without_gpu_settings(), "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHON": f"sh {python}", **env}
    done = subprocess.run(
        ["sh", str(REPO / "run.sh"), "--parallel"], cwd=tmp_path, env=full, capture_output=True, text=True, timeout=60
    )
    return done, calls.read_text().splitlines() if calls.exists() else []


def fetch_then_jobs(*gpus: str, visible: str = "unset") -> list[str]:
    """The data set fetched first (in run.sh's own environment), then the three runs in any order."""
    runs = ["-e 200 --resume", "-e 200 --warm-restart -t0 50 --resume", "-e 200 --warm-restart -t0 200 --resume"]
    return [
        f"{visible} -m sgdr.data",
        *sorted(f"{gpu} {REPO}/train.py --device cuda {run}" for gpu, run in zip(gpus, runs)),
    ]


def in_order(calls: list[str]) -> list[str]:
    return calls[:1] + sorted(calls[1:])


def test_parallel_mode_counts_gpus_not_mig_slices(tmp_path):
    done, calls = run_parallel_on_fake_gpus(tmp_path)
    assert done.returncode == 0, done.stderr
    assert in_order(calls) == fetch_then_jobs("0", "1", "0")


def test_parallel_mode_shares_out_the_gpus_it_was_given(tmp_path):
    done, calls = run_parallel_on_fake_gpus(tmp_path, CUDA_VISIBLE_DEVICES="3,5")
    assert done.returncode == 0, done.stderr
    assert in_order(calls) == fetch_then_jobs("3", "5", "3", visible="3,5")
    assert "wr_s50_m1: GPU 5, log outputs/logs/wr_s50_m1.log" in done.stdout


@pytest.mark.parametrize(
    "flags", [["-wr"], ["-t0", "10"], ["--t-mult=2"], ["--milestones", "5"], ["--cycle-decay", "0.5"]]
)
def test_flags_that_choose_a_schedule_are_each_reference_runs_own(flags, tmp_path):
    """Given to all three runs they would make them one schedule (and the figure compare nothing): refused."""
    done = run_sh("--quick", *flags, python="echo", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert f"run.sh: {flags[0].split('=')[0]} chooses a schedule, and each reference run has its own" in done.stderr


def test_a_gpu_count_that_is_not_a_number_is_named(tmp_path):
    env = {**without_gpu_settings(), "PYTHON": "echo", "GPUS": "abc"}
    done = subprocess.run(
        ["sh", str(REPO / "run.sh"), "--parallel"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert (
        done.returncode == 2 and done.stderr == "run.sh --parallel: GPUS is abc, not a number of GPUs (e.g. GPUS=2).\n"
    )


def test_parallel_mode_with_no_visible_gpu_says_so(tmp_path):
    done, calls = run_parallel_on_fake_gpus(tmp_path, CUDA_VISIBLE_DEVICES="")
    assert done.returncode == 2 and "no GPU found" in done.stderr and calls == []


def test_parallel_mode_without_gpus_says_so(tmp_path):
    env = {**without_gpu_settings(), "PYTHON": "echo", "GPUS": "0"}
    done = subprocess.run(
        ["sh", str(REPO / "run.sh"), "--parallel"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 2 and "no GPU found" in done.stderr


def test_parallel_mode_reports_a_failed_run(tmp_path):
    fake = tmp_path / "fake_python.sh"
    fake.write_text('case "$*" in *"t0 50"*) exit 3 ;; esac\n')
    env = {**without_gpu_settings(), "PYTHON": f"sh {fake}", "GPUS": "3"}
    done = subprocess.run(
        ["sh", str(REPO / "run.sh"), "--parallel"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 1 and "a run failed; see outputs/logs/" in done.stderr


def test_parallel_mode_starts_no_run_when_the_data_cannot_be_fetched(tmp_path):
    fake = tmp_path / "fake_python.sh"
    fake.write_text('case "$2" in sgdr.data) echo "error: CIFAR-10 is not in data" >&2; exit 1 ;; esac\necho started\n')
    env = {**without_gpu_settings(), "PYTHON": f"sh {fake}", "GPUS": "3"}
    done = subprocess.run(
        ["sh", str(REPO / "run.sh"), "--parallel"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 1 and done.stderr == "error: CIFAR-10 is not in data\n"
    assert "started" not in done.stdout and not list((tmp_path / "outputs" / "logs").iterdir())


def test_quick_mode_trains_and_plots_in_the_given_output_dir(tmp_path):
    done = run_sh("--quick", "--seed", "1", "--output-dir", "mine", python="echo", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    *trains, plots = done.stdout.splitlines()
    assert len(trains) == 3 and all(line.endswith("--seed 1 --output-dir mine") for line in trains), trains
    # The quick mode's scale and validation, before the user's flags (argparse keeps the last of each).
    quick = "--resume --train-subset 2048 --test-subset 512 --recompute-bn --output-dir mine --seed 1"
    assert all(line.endswith(f"{quick} --output-dir mine") for line in trains), trains
    assert plots == f"{REPO}/plot.py --output-dir mine --t-zeros 5 20"
    done = run_sh("--quick", "--output-dir=other dir", python="echo", cwd=tmp_path)
    assert done.stdout.splitlines()[-1] == f"{REPO}/plot.py --output-dir other dir --t-zeros 5 20"


def test_parallel_mode_logs_under_the_given_output_dir(tmp_path):
    fake = tmp_path / "fake_python.sh"
    fake.write_text('echo "$*"\n')
    env = {**without_gpu_settings(), "PYTHON": f"sh {fake}", "GPUS": "1"}
    done = subprocess.run(
        ["sh", str(REPO / "run.sh"), "--parallel", "--output-dir", "runs here"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "multistep: GPU 0, log runs here/logs/multistep.log" in done.stdout.splitlines()
    assert sorted(p.name for p in (tmp_path / "runs here" / "logs").iterdir()) == [
        "multistep.log",
        "wr_s200_m1.log",
        "wr_s50_m1.log",
    ]
    assert not (tmp_path / "outputs").exists()


def test_overwrite_replaces_the_resume_run_sh_adds(tmp_path):
    done = run_sh("--overwrite", python="echo", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{REPO}/train.py -e 200 --overwrite",
        f"{REPO}/train.py -e 200 --warm-restart -t0 50 --overwrite",
        f"{REPO}/train.py -e 200 --warm-restart -t0 200 --overwrite",
    ]


@pytest.mark.parametrize(("status", "hint"), [(130, True), (143, True), (1, False), (2, False)])
def test_a_stopped_run_says_to_run_run_sh_again(tmp_path, status, hint):
    """train.py's own hint resumes one run; under run.sh the way on is the same run.sh command."""
    fake = tmp_path / "fake_python.sh"
    fake.write_text(f'echo "$*"\ncase "$*" in *"t0 50"*) exit {status} ;; esac\n')
    done = run_sh("--seed", "3", python=f"sh {fake}", cwd=tmp_path)
    assert done.returncode == status
    assert len(done.stdout.splitlines()) == 2  # the third run is not started
    again = f"run.sh: stopped during wr_s50_m1. To continue all three, run again: sh {REPO / 'run.sh'} --seed 3"
    assert done.stderr.strip() == (again if hint else "")


def test_ctrl_c_waits_for_the_run_to_stop_then_says_how_to_go_on(tmp_path):
    """Ctrl-C signals run.sh and its run together; run.sh must outlive the run's stop at its batch boundary."""
    fake = tmp_path / "fake_train.py"
    fake.write_text(
        "import signal, sys, time\n"
        "def stop(signum, frame):\n"
        "    time.sleep(0.5)  # finishing the batch\n"
        "    print('run stopped', file=sys.stderr, flush=True)\n"
        "    sys.exit(130)\n"
        "signal.signal(signal.SIGINT, stop)\n"
        "print('started', sys.argv[1:], flush=True)\n"
        "time.sleep(60)\n"
    )
    env = {**os.environ, "PYTHON": f"{sys.executable} {fake}"}
    proc = subprocess.Popen(
        ["sh", str(REPO / "run.sh"), "--seed", "3"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    assert proc.stdout.readline().startswith("started")
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and out == ""  # no further run was started
    assert err.splitlines() == [
        "run stopped",
        f"run.sh: stopped during multistep. To continue all three, run again: sh {REPO / 'run.sh'} --seed 3",
    ]


def test_the_command_to_run_again_keeps_every_argument_as_typed(tmp_path):
    fake = tmp_path / "fake_python.sh"
    fake.write_text('case "$*" in *"t0 50"*) exit 143 ;; esac\n')
    typed = ["--seed", "3", "--data-dir", "my data", "--output-dir", "it's $HOME", "--test-subset", "5 12"]
    done = run_sh(*typed, python=f"sh {fake}", cwd=tmp_path)
    assert done.returncode == 143
    again = done.stderr.strip().split("run again: ", 1)[1]
    assert shlex.split(again) == ["sh", str(REPO / "run.sh"), *typed]  # as a shell reads it back


@pytest.mark.parametrize("flags", [["--help"], ["--quick", "-h"]])
def test_help_shows_run_sh_own_options_and_runs_nothing(flags, tmp_path):
    done = run_sh(*flags, python="echo", cwd=tmp_path)
    assert done.returncode == 0 and done.stderr == ""
    assert "sh run.sh --quick" in done.stdout and "sh run.sh --parallel" in done.stdout and "GPUS" in done.stdout
    assert "train.py -e" not in done.stdout and not (tmp_path / "outputs").exists()

"""run.sh: the reference command lines, and the quick mode end to end."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import joblib
import pytest

from test_train import MULTISTEP, wr_files

REPO = Path(__file__).resolve().parent.parent


def run_sh(*args: str, python: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": python}
    return subprocess.run(["sh", str(REPO / "run.sh"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


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
    python = f"{sys.executable} {REPO / 'tests' / 'harness.py'} {tiny_cifar} none"
    tiny = ["--data-dir", str(tiny_cifar), "--train-subset", "8", "--val-subset", "8", "-b", "8", "--workers", "0", "--seed", "0",
            "--model", "wrn-10-1"]  # a small network: this test is about run.sh, not ResNet34
    done = run_sh("--quick", *tiny, python=python, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = tmp_path / "outputs" / "quick"
    assert sorted(os.listdir(out)) == sorted(MULTISTEP + wr_files(5) + wr_files(20) + ["loss_plot_combined.jpg", "runs"])
    assert "lr x 0.2 at epochs 6, 12, 16" in done.stdout
    for name in ["val_loss.pkl", "wr_val_loss_s5_m1.pkl", "wr_val_loss_s20_m1.pkl"]:
        assert len(joblib.load(out / name)) == 20
    lrs = joblib.load(out / "lr_schedule_s5_m1.pkl")  # one batch per epoch
    assert len(lrs) == 20
    assert [lrs[k] for k in (5, 6, 10, 11, 15, 16)] == [lrs[5], 0.05, lrs[5], 0.05, lrs[5], 0.05]
    # Each restart batch still uses eq. (5) at 4/5 of the old cycle, the next one the peak.
    assert lrs[5] == pytest.approx(0.025 * (1 + math.cos(0.8 * math.pi)), abs=1e-15)

"""gpu_check.py, the first-day check on a GPU, in its smoke mode on the CPU: every step runs and
passes, and its bit-for-bit comparison of a resumed run can fail."""

from __future__ import annotations

import subprocess
import sys

import joblib
import pytest
from conftest import REPO

import gpu_check

STEPS = ["env", "data", "resnet34", "resume", "ranks", "wrn", "bf16-compile", "bench"]


def test_every_step_of_the_gpu_check_runs_in_smoke_mode(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "gpu_check.py"), "--smoke", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()[:-1]
    assert [line.split(":")[0] for line in lines] == [f"PASS {step}" for step in STEPS]
    assert "killed at batch 7, resumed: bit for bit the uninterrupted run" in lines[3]
    assert (tmp_path / "summary.txt").read_text().splitlines() == lines
    # The comparison sees a difference of one loss in one file.
    whole, resumed = tmp_path / "runs" / "deterministic", tmp_path / "runs" / "killed"
    assert gpu_check.same_files(whole, resumed) == []
    losses = joblib.load(resumed / "val_loss.pkl")
    joblib.dump([*losses[:-1], losses[-1] + 1e-12], resumed / "val_loss.pkl")
    assert gpu_check.same_files(whole, resumed) == ["val_loss.pkl"]


def test_without_a_gpu_the_check_points_to_smoke_mode(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    assert "no CUDA GPU here; python gpu_check.py --smoke runs the steps on the CPU" in capsys.readouterr().err


def test_a_budget_with_no_time_for_any_step_is_refused(capsys):
    with pytest.raises(SystemExit) as caught:
        gpu_check.main(["--smoke", "--budget", "-1"])
    assert caught.value.code == 2 and "argument --budget: must be a number at least 10" in capsys.readouterr().err

"""gpu_check.py, the first-day check on a GPU, in its smoke mode on the CPU: every step runs and
passes, and its bit-for-bit comparison of a resumed run can fail."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import joblib
import pytest
from conftest import REPO

import gpu_check

STEPS = ["env", "data", "resnet34", "resume", "ranks", "wrn", "bench", "bf16-compile"]


def test_every_step_of_the_gpu_check_runs_in_smoke_mode(tmp_path):
    done = subprocess.run(
        [sys.executable, str(REPO / "gpu_check.py"), "--smoke", "--budget", "1500", "--out", str(tmp_path)],
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
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # no GPU for the child that is asked, here or on a GPU host
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    assert "no CUDA GPU here; python gpu_check.py --smoke runs the steps on the CPU" in capsys.readouterr().err


def test_the_check_asks_about_the_gpu_in_a_child_and_holds_no_cuda_context(capsys, monkeypatch, tmp_path):
    """On a GPU in exclusive-process mode a context held by the check itself would lock every step out:
    the check's own process never touches CUDA; the answer is the child's (no GPU visible to it here)."""

    def touched(*args, **kwargs):
        raise AssertionError("the check's own process touched CUDA")

    monkeypatch.setattr(gpu_check.torch.cuda, "is_available", lambda: True)  # what a GPU host would answer
    for name in ("get_device_name", "is_bf16_supported", "init", "current_device", "set_device"):
        monkeypatch.setattr(gpu_check.torch.cuda, name, touched)
    monkeypatch.setattr(gpu_check.torch.cuda.nccl, "version", touched)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_check.main(["--out", str(tmp_path)]) == 2
    assert "no CUDA GPU here" in capsys.readouterr().err
    assert '"available": false' in (tmp_path / "logs" / "env.log").read_text()


WORKER = """
import os, signal, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a worker that ignores its cap
open(sys.argv[1], "w").write(str(os.getpid()))
print("worker started", flush=True)
time.sleep(60)
"""


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_a_step_past_its_cap_is_stopped_with_its_torchrun_workers_and_said_as_a_failure(tmp_path, capsys):
    """torchrun starts its workers in sessions of their own: killing the step's process group missed
    them, and the wait for their output lasted as long as they did (41 s under a 12 s cap)."""
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    pid_file = tmp_path / "worker.pid"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1"]
    steps = gpu_check.Steps(tmp_path / "out", budget=100, grace=1)
    start = time.monotonic()
    result = steps.run("ranks", 8, [*torchrun, str(worker), str(pid_file)])
    took = time.monotonic() - start
    assert result.code is None and result.cut == "cap" and not result.skipped
    assert took < 8 + 1 + 5, f"the step took {took:.0f} s under a cap of 8 s"
    assert "worker started" in result.output
    assert not alive(int(pid_file.read_text())), "the worker outlived its step"
    steps.say_unfinished("ranks", result)
    assert capsys.readouterr().out.startswith("FAIL ranks: killed at its time cap of 8 s")
    assert steps.failed == 1


def test_a_step_the_budget_cuts_short_is_skipped_for_time(tmp_path, capsys):
    steps = gpu_check.Steps(tmp_path, budget=6, grace=1)
    result = steps.run("bench", 100, [sys.executable, "-c", "import time; time.sleep(60)"])
    assert result.code is None and result.cut == "budget" and result.skipped
    steps.say_unfinished("bench", result)
    late = steps.run("wrn", 100, [sys.executable, "-c", "print('never started')"])
    assert late.skipped and late.output == "no time left"
    steps.say_unfinished("wrn", late)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("SKIP bench: skipped for time: the budget ran out 6 s into the step")
    assert out[1] == "SKIP wrn: skipped for time: no time left"
    assert steps.failed == 0


class SlowGpu:
    """Every command of the check takes its whole share of its step's cap but a second, on a fake clock,
    and then succeeds with the output its step reads; ``subprocess.Popen`` and the clock, for gpu_check."""

    RUNS = {"resume": 3, "ranks": 2}  # commands a step runs, sharing its cap
    OUTPUT = {
        "env": 'gpu_check: {"torch": "t", "cuda": "c", "available": true, "gpu": "G", "nccl": "n", "bf16": true}',
        "resnet34": "Epoch time: 2.00 s",
        "ranks": "gpu_check: group epoch done",
        "wrn": "Epoch time: 2.00 s",
        "bench": "| row |",
        "bf16-compile": "Epoch time: 2.00 s",
    }

    def __init__(self, monkeypatch):
        self.now, self.started = 0.0, []
        monkeypatch.setattr(gpu_check.time, "monotonic", lambda: self.now)
        monkeypatch.setattr(gpu_check, "stop_tree", lambda proc, grace: None)
        monkeypatch.setattr(gpu_check.subprocess, "Popen", self.popen)

    def popen(self, command, stdout, **kwargs):
        name = Path(stdout.name).stem
        self.started.append(name)
        gpu = self

        class Process:
            def wait(self, timeout=None):
                takes = gpu_check.CAPS[name] / gpu.RUNS.get(name, 1) - 1
                if takes > timeout:
                    gpu.now += timeout
                    raise subprocess.TimeoutExpired(command, timeout)
                gpu.now += takes
                stdout.write(gpu.OUTPUT.get(name, "") + "\n")
                stdout.flush()
                return -9 if name == "resume" and gpu.started.count("resume") == 2 else 0

        return Process()


def test_the_most_valuable_steps_fit_the_default_budget_even_at_their_caps(tmp_path, capsys, monkeypatch):
    """Steps in order of value, each capped: when every step takes (almost) its whole cap, the versions,
    the default run, the resume and the ranks still come back, and the rest is said as skipped for time."""
    assert list(gpu_check.CAPS) == STEPS
    gpu = SlowGpu(monkeypatch)
    assert gpu_check.main(["--out", str(tmp_path)]) == 0
    *lines, last = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [f"PASS {step}" for step in STEPS[:5]] + [
        f"SKIP {step}" for step in STEPS[5:]
    ]
    assert lines[5] == "SKIP wrn: skipped for time: the budget ran out 8 s into the step"
    assert lines[6:] == [
        "SKIP bench: skipped for time: no time left",
        "SKIP bf16-compile: skipped for time: no time left",
    ]
    assert json.loads(last)["skipped_for_time"] == ["wrn", "bench", "bf16-compile"]
    assert gpu.now <= gpu_check.BUDGET <= 6 * 60 - 60  # a minute or more of the six left for the install


def test_a_budget_with_no_time_for_any_step_is_refused(capsys):
    with pytest.raises(SystemExit) as caught:
        gpu_check.main(["--smoke", "--budget", "-1"])
    assert caught.value.code == 2 and "argument --budget: must be a number at least 10" in capsys.readouterr().err


def test_an_out_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "afile").write_text("mine")
    with pytest.raises(SystemExit) as caught:
        gpu_check.main(["--smoke", "--out", str(tmp_path / "afile")])
    assert caught.value.code == 2 and "argument --out:" in capsys.readouterr().err
    assert (tmp_path / "afile").read_text() == "mine"

"""The grid on a real SLURM (tests/slurm_cluster.py): submitted as a job array, one task requeued
mid-run and one stopped by its time-limit signal, both bit-identical to uninterrupted runs; a failing
task shown as failed; a second submission that trains nothing twice; status and report read it all;
and one run over two SLURM tasks against the same run under torchrun."""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import HARNESS, REPO, assert_equal, call

import grid as grid_script
import report
import train
from sgdr.run import layout
from sgdr.testing.cifar_files import use_checksums_of

GRID = {"MODEL": "wrn-10-1", "EPOCHS": "4", "SEEDS": "1", "SCHEDULES": "default 50:1 100:1 200:1 1:2 10:2"}
# Tiny data under the paper's recipe: 40 images, plain and mirrored, in 5 batches of 16 an epoch.
FLAGS = ["-b", "16"]
NAMES = ["multistep", "wr_s50_m1", "wr_s100_m1", "wr_s200_m1", "wr_s1_m2", "wr_s10_m2"]
REQUEUED, TIMED_OUT, FAILING = 4, 5, 1  # array tasks (the grid's order): T_0 = 1 and 10 with T_mult = 2; T_0 = 50
PAUSE_AT = 7  # the optimiser step (in epoch 2) at which those two wait, on their first start, for their signal


def python_for_jobs(folder: Path, data: Path) -> Path:
    """The interpreter the jobs run (grid.sh's PYTHON): this one, through sgdr/testing/harness.py, so that
    torchvision accepts the tiny data's checksums; the requeued and timed-out runs pause mid-epoch on
    their first start, until SLURM's signal reaches them."""
    wrapper = folder / "python"
    wrapper.write_text(
        "#!/bin/sh\n"
        "point=none\n"
        'case "$* start${SLURM_RESTART_COUNT:-0}" in\n'
        f'    *"-t0 1 -tm 2"*start0 | *"-t0 10 -tm 2"*start0) point=pause:{PAUSE_AT} ;;\n'
        "esac\n"
        f"exec {shlex.quote(sys.executable)} {shlex.quote(str(HARNESS))} "
        f'{shlex.quote(str(data))} "$point" "$@"\n'
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return wrapper


def wait_for(what: str, ready, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if time.monotonic() > deadline:
            raise AssertionError(f"still waiting for {what} after {timeout} s")
        time.sleep(0.5)


def run_files(out: Path, name: str) -> layout.RunFiles:
    if name == "multistep":
        return layout.run_files(out, False, 50, 1)
    t0, tm = re.fullmatch(r"wr_s(\d+)_m(\d+)", name).groups()
    return layout.run_files(out, True, int(t0), int(tm))


def assert_same_run(got: layout.RunFiles, want: layout.RunFiles) -> None:
    """Byte-identical pickles and metrics, snapshots and checkpoints with equal tensors and states."""
    for a, b in zip([*got.reference(), got.metrics], [*want.reference(), want.metrics]):
        if b.suffix != ".jpg":  # figures are drawn at other moments (every 60 s and at the end)
            assert a.read_bytes() == b.read_bytes(), a
    assert_equal(torch.load(got.checkpoint, weights_only=True), torch.load(want.checkpoint, weights_only=True), "ck")
    got_snaps, want_snaps = layout.snapshots_in(got.run_dir)[0], layout.snapshots_in(want.run_dir)[0]
    assert [p.name for p in got_snaps] == [p.name for p in want_snaps]
    for a, b in zip(got_snaps, want_snaps):
        assert_equal(torch.load(a, weights_only=True), torch.load(b, weights_only=True), str(a))


def status_lines(stdout: str) -> dict[str, list[str]]:
    """``sh grid.sh --status`` by run: [state, epochs, detail]."""
    rows = {}
    for line in stdout.splitlines()[1:-1]:
        name, state, rest = re.match(r"seed1/(\S+)\s+(not started|\S+)\s*(.*)", line).groups()
        epochs, _, detail = rest.partition("  ")
        rows[name] = [state, epochs.strip(), detail.strip()]
    return rows


@pytest.fixture(scope="module")
def grid(slurm, tiny_cifar, tmp_path_factory) -> dict:
    """The tiny grid submitted with sbatch and taken through every event; what was seen on the way."""
    root = tmp_path_factory.mktemp("slurm_grid")
    root.chmod(0o755)
    env = {**GRID, "PYTHON": str(python_for_jobs(root, tiny_cifar)), "GRID_DIR": "grid"}
    flags = [*FLAGS, "--data-dir", str(tiny_cifar)]
    out = root / "grid" / "cifar10-wrn-10-1-paper" / "seed1"
    files = {name: run_files(out, name) for name in NAMES}
    # One run cannot start: outputs of an earlier run without their checkpoint (train.py refuses them).
    files[NAMES[FAILING]].val_loss.parent.mkdir(parents=True)
    files[NAMES[FAILING]].val_loss.write_bytes(b"")

    def grid_sh(*words: str) -> subprocess.CompletedProcess:
        return slurm.run("sh", str(REPO / "grid.sh"), *words, *flags, cwd=root, env=env, timeout=120)

    def grid_here(*words: str) -> str:
        """What grid.sh WORDS prints, from grid.py in this process (it reads the run folders only)."""
        with pytest.MonkeyPatch.context() as mp:
            mp.chdir(root)
            code, out, err = call(lambda argv: grid_script.main(argv, environ={**os.environ, **env}), [*words, *flags])
        assert code == 0, err
        return out

    def paused(k: int) -> bool:
        log = files[NAMES[k]].log
        return log.exists() and "harness: paused" in log.read_text()

    seen: dict = {"files": files, "root": root, "out": out}
    submitted = grid_sh("--submit")
    seen["submit"] = submitted.stdout
    job = re.search(r"as job array (\d+)", submitted.stdout)[1]
    # Everything that does not wait for a signal ends; the two that do hold their runs (and lock them).
    wait_for("the other tasks", lambda: len(slurm.jobs(job)) == 2 and paused(REQUEUED) and paused(TIMED_OUT))
    seen["status_paused"] = grid_here("--status")
    # The same grid again, while two of its runs are going: nothing is trained twice.
    again = re.search(r"as job array (\d+)", grid_sh("--submit").stdout)[1]
    slurm.wait(again)
    seen["status_again"] = grid_here("--status")
    # A requeue (as preemption does: SIGTERM to the job, then back in the queue), and the time-limit
    # signal --signal=B:USR1@... sends to the batch script, which stops the run and requeues itself.
    slurm.run("scontrol", "requeue", f"{job}_{REQUEUED}")
    slurm.run("scancel", "--signal=USR1", "--batch", f"{job}_{TIMED_OUT}")
    wait_for("both requeued", lambda: sorted(slurm.jobs(job)) == [f"{job}_{k} PENDING" for k in (REQUEUED, TIMED_OUT)])
    with pytest.MonkeyPatch.context() as mp:  # squeue of this cluster answers: the two runs are queued again
        mp.setenv("SLURM_CONF", slurm.env["SLURM_CONF"])
        seen["status_requeued"] = grid_here("--status")
    for k in (REQUEUED, TIMED_OUT):  # a requeued job waits for a begin time: now
        slurm.run("scontrol", "update", f"jobid={job}_{k}", "StartTime=now")
    slurm.wait(job)
    seen["status_done"] = grid_here("--status")
    # The same runs, uninterrupted, in this process.
    reference = root / "reference"
    with pytest.MonkeyPatch.context() as mp:
        use_checksums_of(tiny_cifar, mp.setattr)
        for k in (REQUEUED, TIMED_OUT):
            line = grid_here("--print").splitlines()[k]
            words = shlex.split(line)[2:]
            words[words.index("--output-dir") + 1] = str(reference)
            code, _, err = call(train.main, words)
            assert code == 0, err
    seen["reference"] = reference
    seen["report"] = call(report.main, ["--runs", str(root / "grid"), "--skip-ensembles"])
    return seen


def test_submit_prints_the_job_and_how_to_follow_it(grid):
    assert re.search(r"Submitted 6 runs as job array \d+ \(tasks 0-5\)", grid["submit"])
    assert "squeue -j" in grid["submit"] and "sh grid.sh --status" in grid["submit"]
    plan = (grid["out"].parent / "grid.txt").read_text().splitlines()
    assert len(plan) == 6 and all("train.py" in line for line in plan)


def test_a_requeued_run_and_a_timed_out_run_finish_as_if_never_interrupted(grid):
    files = grid["files"]
    for k in (REQUEUED, TIMED_OUT):
        name = NAMES[k]
        record = json.loads(files[name].record.read_text())
        # Stopped at the batch boundary after the signal, inside epoch 2: one complete epoch kept.
        assert [s["outcome"] for s in record["sessions"]] == ["interrupted by SIGTERM", "finished"], name
        assert record["sessions"][0]["epochs_done"] == 1 and record["sessions"][1]["from_epoch"] == 1
        assert_same_run(files[name], run_files(grid["reference"], name))
        log = files[name].log.read_text()
        assert log.count("starts on") == 3  # the first start, the second submission's (busy), the restart
        assert "start 2" in log and "Stopped by SIGTERM" in log and "Resuming after epoch 1" in log
    assert "the time limit is near: requeued" in files[NAMES[TIMED_OUT]].log.read_text()
    assert "the time limit is near" not in files[NAMES[REQUEUED]].log.read_text()


def test_status_follows_every_run_from_its_folder(grid):
    paused = status_lines(grid["status_paused"])
    assert list(paused) == NAMES
    assert [row[0] for row in paused.values()] == ["finished", "failed", "finished", "finished", "running", "running"]
    assert paused["multistep"][1] == "4/4" and paused["wr_s1_m2"][1] == "1/4"  # one epoch kept, the second under way
    assert paused["wr_s1_m2"][2].startswith("pid ") and "train.py" in paused["wr_s1_m2"][2]
    failed = paused[NAMES[FAILING]][2]
    log = grid["files"][NAMES[FAILING]].log
    assert (
        failed.startswith("exit status 1: error: there is no checkpoint to resume from")
        and str(log.relative_to(grid["root"])) in failed
    )
    assert grid["status_paused"].splitlines()[-1] == "6 runs: 3 finished, 2 running, 1 failed"
    done = status_lines(grid["status_done"])
    assert [row[0] for row in done.values()] == ["finished", "failed", "finished", "finished", "finished", "finished"]
    assert grid["status_done"].splitlines()[-1] == "6 runs: 5 finished, 1 failed"


def test_status_says_which_interrupted_runs_slurm_will_start_again(grid):
    rows = status_lines(grid["status_requeued"])
    for k in (REQUEUED, TIMED_OUT):
        state, _, detail = rows[NAMES[k]]
        assert state == "queued", grid["status_requeued"]
        assert re.fullmatch(rf"task \d+_{k} is PENDING in the queue: it continues by itself", detail)


def test_submitting_the_same_grid_again_trains_nothing_twice(grid):
    # While two runs were going, the second array's tasks found them held and said so; the finished
    # runs had nothing to do; the status is unchanged.
    assert status_lines(grid["status_again"]) == status_lines(grid["status_paused"])
    for k in (REQUEUED, TIMED_OUT):
        log = grid["files"][NAMES[k]].log.read_text()
        assert "belongs to a run that is still going" in log
        assert "exit status 75: another job is running this run" in log
    log = grid["files"]["multistep"].log.read_text()
    assert "This run has finished all 4 epochs already; nothing to do." in log
    assert log.count("starts on") == 2  # each array once; requeueing one task left the others alone


def test_the_report_reads_the_grid_and_names_the_run_that_did_not_finish(grid):
    code, out, err = grid["report"]
    assert code == 0, err
    text = (grid["root"] / "grid" / "report" / "report.md").read_text()
    assert re.search(r"1 of the 6 planned runs .*not finished", text)
    assert f"seed1/{NAMES[FAILING]} (failed" in text
    assert "| T_0 = 50, T_mult = 1 | 0 | | not run |" in text
    assert re.search(r"\| T_0 = 10, T_mult = 2 \| 1 \(1\) \| 4 \|", text)


def test_one_run_over_two_slurm_tasks_is_the_run_torchrun_makes(slurm, tiny_cifar, tmp_path):
    tmp_path.chmod(0o755)
    run = ["-e", "2", "-wr", "-t0", "1", "-b", "16", "--model", "wrn-10-1", "--seed", "3", "--device", "cpu"]
    run += ["--data-dir", str(tiny_cifar)]
    python = python_for_jobs(tmp_path, tiny_cifar)
    log = tmp_path / "job.out"
    done = slurm.run(
        "sbatch",
        "--wait",
        "--nodes=1",
        "--ntasks-per-node=2",
        f"--output={log}",
        str(REPO / "multinode.sbatch"),
        *run,
        "--output-dir",
        str(tmp_path / "slurm"),
        check=False,
        cwd=REPO,
        env={"PYTHON": str(python)},
        timeout=300,
    )
    assert done.returncode == 0, log.read_text()[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    harness = [str(HARNESS), str(tiny_cifar), "none", str(REPO / "train.py")]
    same = subprocess.run(
        [*torchrun, *harness, *run, "--output-dir", str(tmp_path / "torchrun")],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if not k.startswith("SLURM")},
    )
    assert same.returncode == 0, same.stderr[-3000:]
    slurm_files = run_files(tmp_path / "slurm", "wr_s1_m1")
    torchrun_files = run_files(tmp_path / "torchrun", "wr_s1_m1")
    assert json.loads(slurm_files.record.read_text())["config"]["processes"] == 2
    assert log.read_text().count("Epoch 1 of 2") == 1  # rank 0 alone prints
    assert_same_run(slurm_files, torchrun_files)

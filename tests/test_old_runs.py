"""Runs made by an earlier version of the project keep working: tests/old_runs holds a run folder and a
grid written by it (make_fixture.py says how, expected.json at which commit), and what that version gave
when it resumed the run for one more epoch, reported and ensembled it, and reported the grid and its
status. This version must give the same, bit for bit (the reports' wording and columns are this version's:
expected.json holds them as it writes them, with the same numbers as the fixture's version gave). The
arithmetic is pinned as it was then (one thread, AVX2 kernels), so that any x86 machine computes the same
bits."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import torch
from conftest import HARNESS, REPO, call

import grid
import report
from sgdr.run import checkpoint
from sgdr.testing.cifar_files import write_cifar10

sys.path.insert(0, str(REPO / "tests" / "old_runs"))
from make_fixture import PINNED, checkpoint_digests, snapshot_digest  # noqa: E402

FIXTURE = REPO / "tests" / "old_runs"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())

pytestmark = pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"),
    reason="the expected numbers were computed with AVX2 kernels, which this CPU lacks",
)


@pytest.fixture(scope="module")
def old(tmp_path_factory) -> Path:
    """The fixture unpacked, and the tiny data set its runs were trained on, in one folder."""
    work = tmp_path_factory.mktemp("old_runs")
    with tarfile.open(FIXTURE / "old_runs.tar.xz") as tar:
        tar.extractall(work, filter="data")
    write_cifar10(work / "data")
    return work


def script(work: Path, name: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``name`` with ``args`` in a fresh process on the tiny data, with the arithmetic pinned as the fixture's."""
    command = [sys.executable, str(HARNESS), str(work / "data"), "none", str(REPO / name), *args]
    done = subprocess.run(
        command, cwd=cwd or work, env={**os.environ, **PINNED}, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def portable(text: str, work: Path) -> str:
    return text.replace(str(work), "<WORK>")


def test_an_old_run_resumes_bit_for_bit(old, tmp_path):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(old / "old" / "run", out)
    want = EXPECTED["resume"]
    done = script(
        old,
        "train.py",
        "-e",
        "2",
        *EXPECTED["run"],
        "--data-dir",
        str(old / "data"),
        "--output-dir",
        str(out),
        "--resume",
    )
    assert "Resuming after epoch 1" in done.stdout
    assert [line for line in done.stdout.splitlines() if line.startswith(("Training loss", "Validation loss"))] == (
        want["printed"]
    )
    run_dir = out / "runs" / "wr_s1_m1"
    assert (run_dir / "metrics.jsonl").read_text() == want["metrics"]
    assert {p.name: p.read_bytes().hex() for p in sorted(out.glob("*.pkl"))} == want["pickles"]
    # The history's names for the test set's losses and accuracies have changed since (val_* to test_*); its
    # numbers have not.
    renamed = {checkpoint.OLD_HISTORY.get(key, key): values for key, values in want["checkpoint"]["history"].items()}
    assert checkpoint_digests(run_dir / "checkpoint.pt") == {**want["checkpoint"], "history": renamed}
    assert {p.name: snapshot_digest(p) for p in sorted((run_dir / "snapshots").glob("*.pt"))} == want["snapshots"]


def test_an_old_run_is_reported_and_ensembled_as_before(old, tmp_path):
    run = old / "old" / "run"
    data = ["--data-dir", str(old / "data"), "--device", "cpu"]
    script(old, "report.py", "--runs", str(run), "--out", str(tmp_path / "report"), *data)
    assert portable((tmp_path / "report" / "report.md").read_text(), old) == EXPECTED["report_run"]
    done = script(old, "ensemble.py", str(run / "runs" / "wr_s1_m1"), *data)
    assert portable(done.stdout, old) == EXPECTED["ensemble_run"]


def test_an_old_grid_is_reported_and_followed_as_before(old, tmp_path, monkeypatch):
    """Reading only (the records, metrics, plan and folders): in this process."""
    grid_dir = old / "old" / "grid"
    code, _, err = call(report.main, ["--runs", str(grid_dir), "--out", str(tmp_path / "report"), "--skip-ensembles"])
    assert code == 0, err
    assert portable((tmp_path / "report" / "report.md").read_text(), old) == EXPECTED["report_grid"]
    monkeypatch.chdir(old / "old")
    environ = {**os.environ, **EXPECTED["grid"], "PYTHON": sys.executable, "GRID_DIR": "grid"}
    flags = [*EXPECTED["grid_flags"], "--data-dir", str(old / "data")]
    code, out, err = call(lambda argv: grid.main(argv, environ=environ), ["--status", *flags])
    assert code == 0, err
    assert portable(out, old) == EXPECTED["status_grid"]

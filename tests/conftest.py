"""What the tests share: tiny CIFAR-10 data on disk, a machine without network, the repo's path,
the tiny runs' flags, running a script in-process or in a fresh process, and comparing runs."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import slurm_cluster
import torch.hub

from sgdr.testing.cifar_files import use_checksums_of, write_cifar10


@pytest.fixture(scope="session")
def tiny_cifar(tmp_path_factory) -> Path:
    """40 training images (5 files of 8) and 16 test images, written once per session."""
    return write_cifar10(tmp_path_factory.mktemp("data"))


@pytest.fixture
def cifar_dir(tiny_cifar: Path, monkeypatch) -> Path:
    """``tiny_cifar``, accepted by torchvision's checksum check for this test only."""
    use_checksums_of(tiny_cifar, monkeypatch.setattr)
    return tiny_cifar


@pytest.fixture(scope="session")
def slurm():
    """A one-node SLURM cluster started for the session (tests/slurm_cluster.py), stopped at its end.
    Skipped, saying why, where SLURM is not installed; under CI (which installs it) a failure instead."""
    why = slurm_cluster.missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"CI runs the SLURM tests, but {why}")
        pytest.skip(why)
    cluster = slurm_cluster.Cluster()
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@pytest.fixture
def offline(monkeypatch):
    """Every download fails the way it does without a network, wherever the test runs."""

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)  # torchvision's datasets
    monkeypatch.setattr(torch.hub, "urlopen", refuse)  # pretrained weights


TINY = ["-b", "16", "--workers", "0"]  # 40 training images: 3 batches; 16 test images: 1 batch


MULTISTEP = ["loss.jpg", "train_loss.pkl", "val_loss.pkl"]


def wr_files(t0: int, tm: int = 1) -> list[str]:
    tag = f"s{t0}_m{tm}"
    return [
        f"wr_loss_{tag}.jpg",
        f"wr_train_loss_{tag}.pkl",
        f"wr_val_loss_{tag}.pkl",
        f"lr_schedule_{tag}.jpg",
        f"lr_schedule_{tag}.pkl",
    ]


def call(main, argv: list[str]) -> tuple[int, str, str]:
    """Run a script's main in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


REPO = Path(__file__).resolve().parent.parent
HARNESS = REPO / "sgdr" / "testing" / "harness.py"  # runs a script on tiny data, killed where a test says


def pages() -> dict[Path, str]:
    """README.md and every page of docs/, by path."""
    return {path: path.read_text() for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]}


def documentation() -> str:
    """README.md and every page of docs/, one text: what a claim must be true of wherever it moved."""
    return "\n\n".join(pages().values())


SMALL = ["--model", "wrn-10-1"]


RUNS = {
    "multistep": ["-e", "4", "--milestones", "2", "3", "--seed", "11", *SMALL, *TINY],
    "warm": ["-e", "4", "-wr", "-t0", "1", "-tm", "2", "--seed", "12", *SMALL, *TINY],
    # The SGDR script's recipe: 80 samples (each image plain and mirrored) in 5 batches an epoch.
    "paper": ["-e", "4", "-wr", "-t0", "1", "-tm", "2", "--recipe", "paper", "--seed", "13", *SMALL, *TINY],
    # The quick mode's validation: BatchNorm statistics recomputed from the training images each epoch.
    "recompute": ["-e", "4", "-wr", "-t0", "1", "-tm", "2", "--recompute-bn", "--seed", "14", *SMALL, *TINY],
}


STEPS_PER_EPOCH = 3


def argv(kind: str, data: Path, out: Path, *more: str) -> list[str]:
    return [*RUNS[kind], "--data-dir", str(data), "--output-dir", str(out), *more]


def files_of(out: Path) -> dict[str, bytes]:
    """Every file under ``out`` with its bytes, but the run records (they hold times)."""
    return {
        str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and p.name != "run.json"
    }


def checkpoints_of(out: Path) -> dict[str, dict]:
    return {str(p.relative_to(out)): torch.load(p, weights_only=True) for p in out.rglob("checkpoint.pt")}


def assert_same_run(got: Path, want: Path) -> None:
    """Same reference files byte for byte, and checkpoints with equal weights, optimiser,
    scheduler, histories and random states."""
    got_files, want_files = files_of(got), files_of(want)
    assert sorted(got_files) == sorted(want_files)
    for name in want_files:
        if not name.endswith("checkpoint.pt"):  # zip archives name their records after the folder
            assert got_files[name] == want_files[name], name
    got_ck, want_ck = checkpoints_of(got), checkpoints_of(want)
    for name, want_state in want_ck.items():
        assert_equal(got_ck[name], want_state, name)


def assert_equal(a, b, where: str) -> None:
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert sorted(a, key=str) == sorted(b, key=str), where
        for key in a:
            assert_equal(a[key], b[key], f"{where}/{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def harness(data: Path, point: str, args: list[str]) -> list[str]:
    return [sys.executable, str(HARNESS), str(data), point, str(REPO / "train.py"), *args]


def start_until(command: list[str], line: str, **popen) -> subprocess.Popen:
    """Start ``command`` (unbuffered, text pipes) and return once its stdout has printed ``line``."""
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        **{"stderr": subprocess.PIPE, **popen},
    )
    for printed in proc.stdout:
        if line in printed:
            return proc
    raise AssertionError(f"{line!r} never printed; exit status {proc.wait()}")

"""Writes old_runs.tar.xz and expected.json: runs made by an earlier version of this project, and
what that version gave when it resumed, reported and ensembled them (tests/test_old_runs.py).

    python tests/old_runs/make_fixture.py      (from the project's folder)

Everything goes through the scripts' command lines, in fresh processes with the tiny CIFAR-10 of
sgdr/testing/cifar_files.py (through sgdr/testing/harness.py, which makes torchvision accept its checksums), and
with the arithmetic pinned (PINNED: one thread, AVX2 kernels) so that a machine with other vector
units computes the same bits. Run once, at the commit named in expected.json; running it again with a
later version makes a fixture of that version instead.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
# One thread (reductions in one order) and AVX2 kernels in ATen and oneDNN, wherever the test runs.
PINNED = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "PYTHONHASHSEED": "0",
    "PYTHONUNBUFFERED": "1",
}
RUN = ["-wr", "-t0", "1", "--model", "wrn-10-1", "-b", "16", "--workers", "0", "--seed", "5"]
GRID = {"MODEL": "wrn-10-1", "EPOCHS": "3", "SEEDS": "1 2", "SCHEDULES": "default 1:1 1:2/d0.5"}
GRID_FLAGS = ["-b", "16", "--train-subset", "16"]
KILLED = "--seed 2 "  # the grid's runs of seed 2 with T_0 = 1, T_mult = 1 is killed in its last epoch


def digest(value) -> str:
    """A digest of nested dicts, lists and tensors: the same numbers, in the same places, give the same digest."""
    import torch

    h = hashlib.sha256()

    def walk(x) -> None:
        if isinstance(x, torch.Tensor):
            h.update(f"T{x.dtype}{tuple(x.shape)}".encode())
            h.update(x.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        elif isinstance(x, dict):
            h.update(b"D")
            for key in sorted(x, key=str):
                h.update(repr(key).encode())
                walk(x[key])
        elif isinstance(x, (list, tuple)):
            h.update(b"L")
            for item in x:
                walk(item)
        else:
            h.update(repr(x).encode())

    walk(value)
    return h.hexdigest()


def run(command: list[str], cwd: Path, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(command, cwd=cwd, env={**os.environ, **PINNED, **(env or {})}, capture_output=True, text=True)
    if check and done.returncode != 0:
        raise SystemExit(f"{command} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done


def harness(data: Path, point: str, script: str, *args: str) -> list[str]:
    return [sys.executable, str(REPO / "sgdr" / "testing" / "harness.py"), str(data), point, str(REPO / script), *args]


def checkpoint_digests(path: Path) -> dict:
    import torch

    state = torch.load(path, weights_only=True)
    return {
        "epoch": state["epoch"],
        "history": state["history"],
        "model": digest(state["model"]),
        "optimizer": digest(state["optimizer"]["state"]),
        "rng": digest(state["rng"]),
    }


def snapshot_digest(path: Path) -> str:
    import torch

    return digest(torch.load(path, weights_only=True)["model"])


def main() -> None:
    sys.path.insert(0, str(REPO))
    from sgdr.testing import cifar_files

    work = Path(tempfile.mkdtemp(prefix="old-runs-"))
    try:
        data = cifar_files.write_cifar10(work / "data")
        # The run: a warm-restart run of one epoch, T_0 = 1 (a snapshot at every epoch's end).
        old = work / "old" / "run"
        run(harness(data, "none", "train.py", "-e", "1", *RUN, "--data-dir", str(data), "--output-dir", str(old)), work)
        # The grid: the paper's recipe, three schedules, two seeds, three epochs; one run killed in its last epoch.
        wrapper = work / "python"
        wrapper.write_text(
            "#!/bin/sh\npoint=none\n"
            f'case "$*" in *"{KILLED}"*"-t0 1 -tm 1"*) point=batch:5 ;; esac\n'
            f'exec {sys.executable} {REPO / "sgdr" / "testing" / "harness.py"} {data} "$point" "$@"\n'
        )
        wrapper.chmod(0o755)
        grid_env = {**GRID, "PYTHON": str(wrapper), "GRID_DIR": "grid"}
        grid = run(["sh", str(REPO / "grid.sh"), *GRID_FLAGS, "--data-dir", str(data)], work / "old", grid_env, False)
        assert grid.returncode != 0 and "Killed" not in grid.stdout, grid.stderr  # stopped at the killed run
        # grid.sh stops at the killed run: the runs after it in its order are trained as a user would, by again.
        again = {**grid_env, "PYTHON": f"{sys.executable} {REPO / 'sgdr' / 'testing' / 'harness.py'} {data} none"}
        planned = run(
            ["sh", str(REPO / "grid.sh"), "--print", *GRID_FLAGS, "--data-dir", str(data)], work / "old", again
        )
        for line in planned.stdout.splitlines():
            if KILLED in line and "-t0 1 -tm 1" in line:
                continue
            run(["sh", "-c", line], work / "old")
        # Only what the readers read: no checkpoints, snapshots or figures of the grid's runs.
        for path in sorted((work / "old" / "grid").rglob("*")):
            if path.is_file() and (path.suffix in (".pt", ".jpg") or path.name == ".lock"):
                path.unlink()
        for path in sorted((work / "old" / "grid").rglob("snapshots"), reverse=True):
            path.rmdir()
        for path in (old / "wr_loss_s1_m1.jpg", old / "lr_schedule_s1_m1.jpg"):
            path.unlink()
        archive = HERE / "old_runs.tar.xz"
        with tarfile.open(archive, "w:xz", preset=9) as tar:
            tar.add(work / "old", arcname="old", filter=_plain)
        expected = {"commit": _commit(), "pinned": PINNED, "run": RUN, "grid": GRID, "grid_flags": GRID_FLAGS}
        # What this version gives: the run resumed for one more epoch ...
        resumed = work / "resumed"
        shutil.copytree(old, resumed)
        done = run(
            harness(
                data,
                "none",
                "train.py",
                "-e",
                "2",
                *RUN,
                "--data-dir",
                str(data),
                "--output-dir",
                str(resumed),
                "--resume",
            ),
            work,
        )
        run_dir = resumed / "runs" / "wr_s1_m1"
        expected["resume"] = {
            "printed": [line for line in done.stdout.splitlines() if re.match(r"(Training|Validation) loss", line)],
            "metrics": (run_dir / "metrics.jsonl").read_text(),
            "pickles": {p.name: p.read_bytes().hex() for p in sorted(resumed.glob("*.pkl"))},
            "checkpoint": checkpoint_digests(run_dir / "checkpoint.pt"),
            "snapshots": {p.name: snapshot_digest(p) for p in sorted((run_dir / "snapshots").glob("*.pt"))},
        }
        # ... the run reported (Table 2 from its snapshot) and ensembled ...
        report_dir = work / "report_run"
        run(
            harness(
                data,
                "none",
                "report.py",
                "--runs",
                str(old),
                "--out",
                str(report_dir),
                "--data-dir",
                str(data),
                "--device",
                "cpu",
            ),
            work,
        )
        expected["report_run"] = _portable((report_dir / "report.md").read_text(), work)
        ensembled = run(
            harness(
                data, "none", "ensemble.py", str(old / "runs" / "wr_s1_m1"), "--data-dir", str(data), "--device", "cpu"
            ),
            work,
        )
        expected["ensemble_run"] = _portable(ensembled.stdout, work)
        # ... and the grid reported (its plan read, the killed run named) and its status.
        report_dir = work / "report_grid"
        run(
            harness(
                data,
                "none",
                "report.py",
                "--runs",
                str(work / "old" / "grid"),
                "--out",
                str(report_dir),
                "--skip-ensembles",
            ),
            work,
        )
        expected["report_grid"] = _portable((report_dir / "report.md").read_text(), work)
        status = run(
            ["sh", str(REPO / "grid.sh"), "--status", *GRID_FLAGS, "--data-dir", str(data)],
            work / "old",
            {**GRID, "PYTHON": sys.executable, "GRID_DIR": "grid"},
        )
        expected["status_grid"] = _portable(status.stdout, work)
        (HERE / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
        print(f"{archive}: {archive.stat().st_size:,} bytes")
    finally:
        shutil.rmtree(work)


def _plain(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    return info


def _portable(text: str, work: Path) -> str:
    return text.replace(str(work), "<WORK>")


def _commit() -> str:
    return subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()


if __name__ == "__main__":
    main()

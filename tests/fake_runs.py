"""Run folders as train.py leaves them, written directly with known test errors, and the report's
tables read back: for the tests of report.py."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

PAPER_CONFIG = {
    "recipe": "paper",
    "dataset": "cifar10",
    "model": "wrn-28-10",
    "batch_size": 128,
    "train_subset": None,
    "test_subset": None,
    "loader": "device",
    "channels_last": True,
    "amp": "off",
    "compile": False,
    "processes": 1,
    "sync_bn": False,
}


def fake_run(
    root: Path,
    name: str,
    epochs: int,
    done: int | None = None,
    error: Callable[[int], float] = lambda epoch: epoch / 1000,
    snapshot_epochs: Sequence[int] = (),
    devices: Sequence[str] = (),
    **settings,
) -> Path:
    """A run folder as train.py leaves it (record and metrics only, and empty files for the snapshots at
    ``snapshot_epochs``), whose test error at epoch e is ``error(e)`` %: by default e / 1000 %, so that
    the report's figure tells which epoch it read. ``devices``: where its sessions trained."""
    config = {**PAPER_CONFIG, "seed": 1, **settings}
    schedule = f"wr_s{config['t_zero']}_m{config['t_mult']}" if config.get("warm_restart") else "multistep"
    schedule = "swa" if config.get("swa_start") is not None else schedule
    folder = root / name / "runs" / schedule
    folder.mkdir(parents=True)
    done = epochs if done is None else done
    record = {"config": config, "epochs": epochs, "finished": "2026-01-01" if done == epochs else None}
    if devices:
        record["sessions"] = [{"device": device} for device in devices]
    (folder / "run.json").write_text(json.dumps(record))
    rows = [{"epoch": e, "test_error": error(e) / 100} for e in range(1, done + 1)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if snapshot_epochs:
        (folder / "snapshots").mkdir()
        for epoch in snapshot_epochs:
            (folder / "snapshots" / f"epoch_{epoch:04d}.pt").write_bytes(b"")
    return folder


def table1_rows(text: str) -> dict[str, list[str]]:
    """Table 1's rows by schedule: [runs (seeds), read at epoch, test error, last epoch, vs the default, paper]."""
    rows = [
        [cell.strip() for cell in line.strip()[1:-1].split("|")] for line in text.splitlines() if line.startswith("| ")
    ]
    return {cells[0]: cells[1:] for cells in rows if len(cells) == 7 and cells[0] not in ("schedule", "---")}

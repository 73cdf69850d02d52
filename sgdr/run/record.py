"""run.json beside a run's checkpoint: what ran, where, with which versions, and each session of it."""

from __future__ import annotations

import datetime
import json
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch
import torchvision

from sgdr import storage


class RunRecord:
    """``run.json`` beside a run's checkpoint: what ran, where, with which versions, and each
    session of it (start, end, epochs, outcome), so a resumed run shows how often it was resumed."""

    def __init__(
        self,
        path: Path,
        command: str,
        config: dict[str, Any],
        epochs: int,
        device: torch.device,
        start_epoch: int,
        resumed: bool,
        writes: bool = True,
    ):
        self.path, self.writes = path, writes  # under torchrun only rank 0 writes
        self.data = self._previous() if resumed else {}
        self.data.update(
            command=command,
            config=config,
            epochs=epochs,
            versions={
                "python": platform.python_version(),
                "torch": torch.__version__,
                "torchvision": torchvision.__version__,
                "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
                "code": code_version(),
            },
        )
        self.sessions = self.data.setdefault("sessions", [])
        self.sessions.append(
            {
                "started": _now(),
                "ended": None,
                "device": str(device),
                "platform": platform.platform(),
                "from_epoch": start_epoch,
                "epochs_done": start_epoch,
                "outcome": "running",
            }
        )
        self.data["resumed"] = len(self.sessions) - 1
        self.data.setdefault("started", self.sessions[0]["started"])
        self.data["finished"] = None
        self._write()

    def _previous(self) -> dict[str, Any]:
        """The record of the sessions so far; a lost or damaged record starts a new one."""
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) and isinstance(data.get("sessions"), list) else {}

    def epoch_done(self, epochs_done: int) -> None:
        self.sessions[-1]["epochs_done"] = epochs_done
        self._write()

    def end(self, outcome: str) -> None:
        self.sessions[-1].update(ended=_now(), outcome=outcome)
        if outcome == "finished":
            self.data["finished"] = self.sessions[-1]["ended"]
        self._write()

    def _write(self) -> None:
        if self.writes:
            storage.save_json(self.path, self.data)


def code_version() -> dict[str, Any] | None:
    """The git commit of this project's code and whether tracked files differ from it (None outside
    a git checkout, or without git): which version of the code made a run."""
    here = Path(__file__).resolve().parent

    def git(*words: str) -> str:
        return subprocess.run(
            ["git", "-C", str(here), *words], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        return {
            "commit": git("rev-parse", "HEAD"),
            "modified": bool(git("status", "--porcelain", "--untracked-files=no")),
        }
    except (OSError, subprocess.SubprocessError):
        return None


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")

"""run.json beside a run's checkpoint: what ran, where, with which versions, and each session of it; written
by ``RunRecord`` as the run goes, read back by ``read_record`` (the one reader: train.py on resume, the
grid's status, the report and the ensembles)."""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
import torchvision

from sgdr import storage
from sgdr.run import layout
from sgdr.run.settings import same_run, upgrade


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
        """The record of the sessions so far. A lost record starts a new one; so does a damaged one, which is kept
        beside it (``layout.damaged``) and named in a warning, so that its sessions are not silently lost."""
        try:
            return dict(read_record(self.path).data)
        except FileNotFoundError:
            return {}
        except (OSError, DamagedRecord) as error:
            if self.writes:
                aside = layout.damaged(self.path)
                with suppress(OSError):
                    os.replace(self.path, aside)
                print(f"warning: {error}; kept as {aside}, and a new record starts with this session.", file=sys.stderr)
            return {}

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
            storage.save_json(self.path, self.data, durable=True)


class DamagedRecord(ValueError):
    """A run.json that is not a run's record: the message names the file and what is wrong."""


@dataclass(frozen=True)
class Record:
    """A run's ``run.json`` as read back by ``read_record``."""

    path: Path
    data: dict[str, Any]  # as written

    @property
    def config(self) -> dict[str, Any]:
        """The settings that decide the run's numbers, as recorded (``settings`` reads older ones as they trained)."""
        return self.data["config"]

    @property
    def settings(self) -> dict[str, Any]:
        """The recorded settings, with those the run predates at the values it trained under."""
        return upgrade(self.config)

    @property
    def same_run(self) -> str:
        """What this run shares with its copies, and with no other run (``settings.same_run``)."""
        return same_run(self.config)

    @property
    def epochs(self) -> int:
        """The epochs the run was asked for, last time it ran."""
        return self.data["epochs"]

    @property
    def finished(self) -> bool:
        return self.data.get("finished") is not None

    @property
    def sessions(self) -> list[dict[str, Any]]:
        return self.data["sessions"]

    @property
    def outcome(self) -> str:
        """How the last session ended ("running" while it runs, or if it was killed), or "" for no session."""
        outcome = self.sessions[-1].get("outcome") if self.sessions else ""
        return outcome if isinstance(outcome, str) else ""

    @property
    def devices(self) -> frozenset[str]:
        """Where its sessions trained (cpu, cuda:0 ...)."""
        return frozenset(s["device"] for s in self.sessions if isinstance(s.get("device"), str))


def read_record(path: Path) -> Record:
    """The record at ``path``. An ``OSError`` when it cannot be read (absent included); ``DamagedRecord`` when
    it is not a run's record: not JSON, no settings, no epoch count, or sessions that are not a list of them."""
    try:
        data = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as error:
        raise DamagedRecord(f"{path} is not a complete run record ({type(error).__name__}: {error})") from None
    wrong = None
    if not isinstance(data, dict):
        wrong = f"it holds a {type(data).__name__}"
    elif not isinstance(data.get("config"), dict):
        wrong = "it has no settings ('config')"
    elif not isinstance(data.get("epochs"), int) or isinstance(data["epochs"], bool):
        wrong = f"its epoch count is {data.get('epochs')!r}"
    elif not isinstance(sessions := data.setdefault("sessions", []), list) or not all(
        isinstance(s, dict) for s in sessions
    ):
        wrong = "its sessions are not a list of sessions"
    if wrong:
        raise DamagedRecord(f"{path} is not a complete run record: {wrong}")
    return Record(path, data)


def folder_key(run_dir: Path) -> str:
    """What a run folder shares with its copies: its record's ``same_run``, or, without a readable record, the
    folder itself (then it is only the same run as itself)."""
    try:
        return read_record(layout.record_of(run_dir)).same_run
    except (OSError, DamagedRecord):
        return str(Path(run_dir).resolve())


T = TypeVar("T")


def counted_once(
    runs: Sequence[T], key: Callable[[T], str], better: Callable[[T], Any]
) -> tuple[list[T], list[tuple[T, T]]]:
    """``runs`` with each run once, in their order: of the copies of a run (the same ``key``), the one ranked
    highest by ``better`` (the first of equals); and each copy left out, with the one kept."""
    copies: dict[str, list[T]] = {}
    for run in runs:
        copies.setdefault(key(run), []).append(run)
    best = {k: max(same, key=better) for k, same in copies.items()}
    kept = [run for run in runs if best[key(run)] is run]
    return kept, [(run, best[key(run)]) for run in runs if best[key(run)] is not run]


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

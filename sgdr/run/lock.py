"""The hold a running run keeps on its folder: one process per run, named for whoever asks."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from contextlib import suppress
from pathlib import Path

from sgdr.cli import RunBusy, UserError

LOCK = ".lock"  # in a run's folder: held (flock) by the process that runs it


class RunLock:
    """Holds a run's folder for this process, so that no other process writes into a running run.

    An exclusive ``flock`` on ``<run folder>/.lock``: the system drops it when the process ends,
    however it ends, so a kill -9 leaves no stale lock behind. The file names the holder (pid, host and
    command) for the refusal message and ``who_runs``. Taking the lock creates the run's folder if needed (and so
    finds an unwritable output folder before any work); letting it go removes the lock file and the
    folders it created if they are still empty, so a refused run leaves nothing behind.
    """

    def __init__(self, run_dir: Path, command: str):
        self.run_dir, self.path, self.command = run_dir, run_dir / LOCK, command
        self.fd: int | None = None
        self.created: list[Path] = []

    def __enter__(self) -> RunLock:
        self.created = [d for d in (self.run_dir, *self.run_dir.parents) if not d.exists()]  # deepest first
        try:
            self.fd = self._take()
        except BaseException:
            self._remove_created()
            raise
        os.ftruncate(self.fd, 0)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": self.command}
        os.write(self.fd, json.dumps(holder).encode())
        return self

    def _take(self) -> int:
        while True:
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                if self.path.is_dir():  # the run folder is fine: its lock file's place is taken
                    raise UserError(f"{self.path} is a folder, where this run keeps its lock file: move it.") from None
                if self.path.is_file() and os.access(self.run_dir, os.W_OK | os.X_OK):  # the file, not its folder
                    raise UserError(
                        f"cannot open this run's lock file {self.path} ({error.strerror}): give it back its "
                        "permissions (chmod u+rw), or remove it when no run of this folder is going."
                    ) from None
                raise UserError(
                    f"cannot write in {self.run_dir} ({error.strerror}): choose an output folder "
                    "you can write to (--output-dir)."
                ) from None
            try:
                _flock_soon(fd, fcntl.LOCK_EX)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise RunBusy(
                    f"{self.run_dir} belongs to a run that is still going: {holder}. Wait for it to "
                    "end or stop it, or use another --output-dir; nothing was changed."
                ) from None
            # The holder removes the file as it lets go: a lock on a removed file holds nothing, try again.
            with suppress(FileNotFoundError):
                if os.path.samestat(os.fstat(fd), os.stat(self.path)):
                    return fd
            os.close(fd)

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            self.path.unlink(missing_ok=True)  # while still held: see _take
            os.close(self.fd)
            self.fd = None
        self._remove_created()

    def _remove_created(self) -> None:
        for folder in self.created:
            try:
                folder.rmdir()
            except OSError:  # not empty: the run wrote there
                return


def _flock_soon(fd: int, operation: int, tries: int = 10) -> None:
    """``flock`` without blocking, tried a few times over half a second: a look at a lock takes it for an
    instant to look (``who_runs``), and a run starting in that instant must not take it for a running one."""
    for attempt in range(tries):
        try:
            fcntl.flock(fd, operation | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if attempt == tries - 1:
                raise
            time.sleep(0.05)


def _holder(fd: int) -> str:
    """Who holds a lock file, as its holder wrote it (which it does right after taking the lock)."""
    for _ in range(20):
        try:
            holder = json.loads(os.pread(fd, 4096, 0))
            where = f" on {holder['host']}" if "host" in holder else ""  # locks taken before hosts were named
            return f"pid {holder['pid']}{where}, {holder['command']}"
        except (ValueError, KeyError, TypeError):
            time.sleep(0.05)
    return "a process that has not said which"


def who_runs(run_dir: str | Path) -> str | None:
    """Who is running the run in ``run_dir`` now (``pid N on HOST, COMMAND``), or None when nobody is.

    Looks without waiting and without creating anything: a lock file that is left (its process was
    killed) but held by no one means no one. The flock is the truth, the file's text only names.
    """
    try:
        fd = os.open(Path(run_dir) / LOCK, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _holder(fd)
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)

"""Names of every file a run writes, and how files are written: atomically, never half-written."""

from __future__ import annotations

import fcntl
import io
import json
import os
import pickle
import re
import socket
import stat
import time
from argparse import Namespace
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import joblib

from errors import RunBusy, UserError

COMBINED_FIGURE = "loss_plot_combined.jpg"
LOCK = ".lock"  # in a run's folder: held (flock) by the process that runs it
SNAPSHOT = re.compile(r"epoch_(\d{4,})\.pt")  # the only names of snapshots; anything else in snapshots/ is the user's


@dataclass(frozen=True)
class RunFiles:
    """Every file of one run: the reference's outputs, and the run's own folder for resuming."""

    loss_figure: Path
    train_loss: Path
    val_loss: Path
    run_dir: Path  # outputs/runs/<name>: checkpoint and record, beside the reference files
    lr_figure: Path | None = None
    lr_values: Path | None = None

    @property
    def checkpoint(self) -> Path:
        return self.run_dir / "checkpoint.pt"

    @property
    def record(self) -> Path:
        return self.run_dir / "run.json"

    @property
    def metrics(self) -> Path:
        """Per-epoch losses and top-1 accuracies, one JSON object a line."""
        return self.run_dir / "metrics.jsonl"

    @property
    def log(self) -> Path:
        """The run's output as a job of a SLURM array writes it (``grid.sh --submit``), beside its folder."""
        return self.run_dir.with_name(f"{self.run_dir.name}.log")

    def snapshot(self, epoch: int) -> Path:
        """The network at the end of a warm-restart cycle (the paper's snapshot ensembles)."""
        return self.run_dir / "snapshots" / f"epoch_{epoch:04d}.pt"

    def reference(self) -> list[Path]:
        """The reference's output files (plus the lr pickle beside the lr figure)."""
        return [p for p in (self.loss_figure, self.train_loss, self.val_loss, self.lr_figure, self.lr_values) if p]

    def all(self) -> list[Path]:
        """Every file of the run that exists or may: reference files, checkpoint, record, metrics, snapshots."""
        return [*self.reference(), self.checkpoint, self.record, self.metrics, *snapshots_in(self.run_dir)[0]]


def in_the_way(files: RunFiles) -> list[str]:
    """What stands where the run writes: a folder (or other non-file) where a file of it goes, a
    file where its snapshots' folder goes. Each as ``PATH is ..., where ...``."""
    wrong = [
        f"{path} is a {'folder' if path.is_dir() else 'special file'}, where this run writes a file"
        for path in [*files.reference(), files.checkpoint, files.record, files.metrics]
        if path.exists() and not path.is_file()
    ]
    snapshots = files.run_dir / "snapshots"
    if snapshots.exists() and not snapshots.is_dir():
        wrong.append(f"{snapshots} is a file, where this run keeps its snapshots (a folder)")
    return wrong


def snapshots_in(run_dir: str | Path) -> tuple[list[Path], list[Path]]:
    """(the snapshots in ``run_dir``/snapshots, oldest first; the other entries there, which this project neither
    reads nor removes: a user's own ``epoch_best.pt``, a folder ...). Hidden files (temporaries) are in neither."""
    ours, others = [], []
    for path in sorted((Path(run_dir) / "snapshots").glob("*")):
        if path.name.startswith("."):
            continue
        match = SNAPSHOT.fullmatch(path.name)
        # Exactly the name RunFiles.snapshot gives (not epoch_00001.pt), and a file.
        if match and path.name == f"epoch_{int(match[1]):04d}.pt" and path.is_file():
            ours.append(path)
        else:
            others.append(path)
    return sorted(ours, key=lambda p: int(p.stem.split("_")[1])), others


def run_files(output_dir: str | Path, warm_restart: bool, t_zero: int, t_mult: int) -> RunFiles:
    """``loss.jpg`` & co. for the multistep run; ``wr_*_s{T_0}_m{T_mult}`` for warm restarts."""
    out = Path(output_dir)
    if not warm_restart:
        return RunFiles(out / "loss.jpg", out / "train_loss.pkl", out / "val_loss.pkl", out / "runs" / "multistep")
    tag = f"s{t_zero}_m{t_mult}"
    return RunFiles(
        loss_figure=out / f"wr_loss_{tag}.jpg",
        train_loss=out / f"wr_train_loss_{tag}.pkl",
        val_loss=out / f"wr_val_loss_{tag}.pkl",
        run_dir=out / "runs" / f"wr_{tag}",
        lr_figure=out / f"lr_schedule_{tag}.jpg",
        lr_values=out / f"lr_schedule_{tag}.pkl",
    )


def files_of(args: Namespace, output_dir: str | Path | None = None) -> RunFiles:
    """The files of the run train.py's parsed ``args`` name (in ``output_dir`` if given). The names follow
    the reference's, from the schedule's kind, T_0 and T_mult alone: a run with another --lr or shaping
    option in the same folder is another run's settings there, refused on resume (grid.sh gives such
    runs folders of their own)."""
    out = args.output_dir if output_dir is None else output_dir
    return run_files(out, args.warm_restart, args.t_zero, args.t_mult)


def combined_figure(output_dir: str | Path) -> Path:
    """Where ``plot.py`` writes the three validation-loss curves."""
    return Path(output_dir) / COMBINED_FIGURE


def train_command(warm_restart: bool, t_zero: int, t_mult: int, output_dir: str | Path) -> str:
    """The ``train.py`` flags that select a run's files (used in error messages; epochs are free)."""
    words = ["python train.py"]
    if warm_restart:
        words.append(f"--warm-restart -t0 {t_zero}" + (f" -tm {t_mult}" if t_mult != 1 else ""))
    if Path(output_dir) != Path("outputs"):
        words.append(f"--output-dir {output_dir}")
    return " ".join(words)


def _temporary(path: Path, pid: int | str) -> Path:
    return path.with_name(f".{path.name}.{pid}.tmp")


@contextmanager
def atomic_write(path: str | Path) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` only once fully written and flushed to disk.

    The data go to a temporary file in the same folder, then ``os.replace`` swaps it in:
    a reader (or a crash) sees the old complete file or the new complete file, nothing else.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path, os.getpid())
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_floats(path: str | Path, values: Sequence[float]) -> None:
    """A joblib dump of a plain list of Python floats, the reference's ``*.pkl`` format."""
    with atomic_write(path) as f:
        joblib.dump([float(v) for v in values], f)


class _NoGlobals(pickle.Unpickler):
    """An unpickler that builds only plain data: every class or function a pickle names is refused, so
    nothing in the file can run (``__reduce__`` payloads need a callable, and get none)."""

    def find_class(self, module: str, name: str):
        raise pickle.UnpicklingError(f"it names {module}.{name}; only plain data is read")


def load_floats(path: str | Path) -> list[float]:
    """A list of floats written by ``save_floats`` (the reference's ``*.pkl``), read without running any code
    from the file; a ``UserError`` naming the file when it holds anything else or cannot be read."""
    try:
        values = _NoGlobals(io.BytesIO(Path(path).read_bytes())).load()
    except Exception as error:  # OSError, UnpicklingError, EOFError, ...: all mean "not usable"
        reason = f"{type(error).__name__}: {error}"
    else:
        if isinstance(values, list) and all(type(v) is float for v in values):
            return values
        reason = f"it holds a {type(values).__name__}, not a list of floats"
    raise UserError(
        f"{path} cannot be read ({reason.splitlines()[0]}); it was not written by "
        "this project, or is damaged. Nothing in it was run."
    )


def save_json(path: str | Path, value: object) -> None:
    with atomic_write(path) as f:
        f.write(json.dumps(value, indent=2).encode() + b"\n")


def save_jsonl(path: str | Path, rows: Sequence[dict]) -> None:
    """One JSON object a line: easy to read for a person, ``pandas.read_json(lines=True)`` or jq."""
    with atomic_write(path) as f:
        f.write(b"".join(json.dumps(row).encode() + b"\n" for row in rows))


def remove_stale_temporaries(paths: Sequence[Path], own_folders: Sequence[Path] = ()) -> None:
    """Delete temporaries that killed processes left beside ``paths``, or anywhere in folders that
    belong to one run only (``own_folders``); never a live writer's."""
    candidates = [tmp for path in paths for tmp in path.parent.glob(_temporary(path, "*").name)]
    candidates += [tmp for folder in own_folders for tmp in folder.glob(".*.tmp")]
    for tmp in candidates:
        pid = tmp.name[: -len(".tmp")].rsplit(".", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    return True


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


def check_removable(paths: Sequence[Path]) -> None:
    """A ``UserError`` naming every existing path among ``paths`` that ``remove`` could not remove (a folder, a
    device, a file in a read-only folder), so that a removal either removes them all or starts on none."""
    blocked = [f"{path} ({why})" for path in paths if (why := _unremovable(path))]
    if blocked:
        raise UserError(
            f"--overwrite cannot remove {', '.join(blocked)}: move it away or remove it yourself, or use "
            "another --output-dir. Nothing was removed."
        )


def _unremovable(path: Path) -> str | None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISDIR(mode):
        return "a folder"
    if not (stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
        return "not a regular file"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return "its folder is read-only"
    return None


def remove(paths: Sequence[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)

"""Names of every file a run writes, and how files are written: atomically, never half-written."""

from __future__ import annotations

import io
import json
import os
import pickle
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

import joblib

from errors import UserError

COMBINED_FIGURE = "loss_plot_combined.jpg"


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

    def snapshot(self, epoch: int) -> Path:
        """The network at the end of a warm-restart cycle (the paper's snapshot ensembles)."""
        return self.run_dir / "snapshots" / f"epoch_{epoch:04d}.pt"

    def reference(self) -> list[Path]:
        """The reference's output files (plus the lr pickle beside the lr figure)."""
        return [p for p in (self.loss_figure, self.train_loss, self.val_loss, self.lr_figure, self.lr_values) if p]

    def all(self) -> list[Path]:
        """Every file of the run that exists or may: reference files, checkpoint, record, metrics, snapshots."""
        snapshots = sorted((self.run_dir / "snapshots").glob("epoch_*.pt"))
        return [*self.reference(), self.checkpoint, self.record, self.metrics, *snapshots]


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
    raise UserError(f"{path} cannot be read ({reason.splitlines()[0]}); it was not written by "
                    "this project, or is damaged. Nothing in it was run.")


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


def remove(paths: Sequence[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)

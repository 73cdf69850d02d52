"""How files are written: atomically (never half-written), plain-data pickles read safely, removal checked first."""

from __future__ import annotations

import io
import json
import os
import pickle
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

import joblib

from sgdr.cli import UserError


def _temporary(path: Path, pid: int | str) -> Path:
    return path.with_name(f".{path.name}.{pid}.tmp")


@contextmanager
def atomic_write(path: str | Path, durable: bool = False) -> Iterator[BinaryIO]:
    """Yield a binary file that replaces ``path`` only once fully written and flushed to disk.

    The data go to a temporary file in the same folder, then ``os.replace`` swaps it in:
    a reader (or a crash) sees the old complete file or the new complete file, nothing else.
    ``durable``: the folder is synced after the rename too, so that a power cut cannot undo it
    (the file it names is complete either way); for the files a resume starts from.
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
        if durable:
            sync_folder(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def sync_folder(folder: str | Path) -> None:
    """Flush ``folder``'s entries (a rename into it) to disk."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def save_json(path: str | Path, value: object, durable: bool = False) -> None:
    with atomic_write(path, durable) as f:
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

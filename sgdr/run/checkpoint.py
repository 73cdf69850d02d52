"""Checkpoints: everything a run needs to continue exactly, as plain data, written atomically."""

from __future__ import annotations

import random
import zipfile
from pathlib import Path
from typing import Any

import torch

from sgdr import storage
from sgdr.cli import UserError
from sgdr.run import settings

FORMAT = 1


def capture_rng(generator: torch.Generator) -> dict[str, Any]:
    """Every random state the remaining epochs draw from.

    Python's ``random``, torch's CPU generator (initial weights, and augmentation when there
    are no worker processes) and the loader's generator (each epoch's shuffle and the seeds
    of that epoch's worker processes). NumPy's is not used by this project, nor are the CUDA
    generators (every draw is made on the CPU), so "cuda" stays an empty list: reading them
    would open a CUDA context on every visible GPU, and restoring them needs as many GPUs.
    """
    return {"python": random.getstate(), "torch": torch.get_rng_state(), "cuda": [], "loader": generator.get_state()}


def restore_rng(state: dict[str, Any], generator: torch.Generator) -> None:
    """Restore what ``capture_rng`` saved. The CUDA states of older checkpoints (one per GPU that
    was visible then) are ignored: nothing draws from them, and fewer GPUs may be visible now."""
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    generator.set_state(state["loader"])


def on_cpu(value: Any) -> Any:
    """``value`` with every tensor in it (in dicts, lists, tuples) copied to the CPU: a checkpoint
    written on a GPU then loads on any machine, and its bytes go through the host anyway."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {key: on_cpu(item) for key, item in value.items()}
    if type(value) in (list, tuple):
        return type(value)(on_cpu(item) for item in value)
    return value


def save(path: Path, state: dict[str, Any]) -> None:
    """Write ``state`` to ``path``; the previous checkpoint stays until this one is complete."""
    with storage.atomic_write(path, durable=True) as f:
        torch.save(on_cpu({"format": FORMAT, **state}), f)


RESTORE = " Restore it from a backup to resume, or start the run over with --overwrite."
# A checkpoint's parts and their types; the history's lists, one value an epoch but for the rates.
PARTS = {
    "config": dict,
    "epoch": int,
    "history": dict,
    "model": dict,
    "optimizer": dict,
    "scheduler": dict,
    "rng": dict,
}
PER_EPOCH = ("train_loss", "test_loss", "train_acc", "test_acc")
# The names the history gave the test set's losses and accuracies before it took the metrics' names.
OLD_HISTORY = {"val_loss": "test_loss", "val_acc": "test_acc"}
RANDOM_STATES = ("python", "torch", "cuda", "loader")


def load(path: Path) -> dict[str, Any]:
    """A checkpoint written by ``save``, read with ``weights_only=True`` and checked whole (every part,
    its type, the history against the epoch count) before any of it is used; a clear error otherwise."""
    state = _read(path, "checkpoint", RESTORE)
    if isinstance(state.get("history"), dict):
        state["history"] = {OLD_HISTORY.get(key, key): values for key, values in state["history"].items()}
    if (wrong := damage(state)) is not None:
        raise UserError(f"the checkpoint {path} is damaged: {wrong}.{RESTORE}")
    return state


def damage(state: dict[str, Any]) -> str | None:
    """What is wrong with a checkpoint's structure, or None. (Shapes are checked against the network
    when it is restored: ``load_state_dict`` names them.)"""
    for key, kind in PARTS.items():
        if key not in state:
            return f"it has no {key!r}"
        if not isinstance(state[key], kind) or isinstance(state[key], bool):
            return f"its {key!r} is a {type(state[key]).__name__}, not a {kind.__name__}"
    if not isinstance(state["config"].get("seed"), int):
        return "its settings have no seed"
    epoch, history = state["epoch"], state["history"]
    if epoch < 0:
        return f"its epoch is {epoch}"
    for key in (*PER_EPOCH, "lr"):
        values = history.get(key)
        if not isinstance(values, list) or not all(isinstance(v, (int, float)) for v in values):
            return f"its history has no list of numbers {key!r}"
    if lengths := {key: len(history[key]) for key in PER_EPOCH if len(history[key]) != epoch}:
        said = ", ".join(f"{n} {key}" for key, n in lengths.items())
        return f"it says {epoch} epochs are done, but its history holds {said}"
    if epoch and (not history["lr"] or len(history["lr"]) % epoch):
        return f"its {len(history['lr'])} learning rates do not split into {epoch} epochs"
    if missing := [key for key in RANDOM_STATES if key not in state["rng"]]:
        return f"its random states lack {', '.join(missing)}"
    if not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        return "its network holds something other than tensors"
    if not {"state", "param_groups"} <= state["optimizer"].keys():
        return "its optimiser state lacks 'state' or 'param_groups'"
    return None


def save_snapshot(
    path: Path,
    model: torch.nn.Module,
    config: dict[str, Any],
    epoch: int,
    num_classes: int,
    inputs: dict[str, torch.Tensor] | None = None,
) -> None:
    """The network's weights at the end of a cycle, with what is needed to rebuild and evaluate it:
    ``inputs`` holds the ``mean`` and ``std`` test images are normalised with (absent in snapshots
    written before recipes: the data set's per-channel statistics)."""
    with storage.atomic_write(path, durable=True) as f:
        torch.save(
            on_cpu(
                {
                    "format": FORMAT,
                    "epoch": epoch,
                    "config": config,
                    "num_classes": num_classes,
                    "model": model.state_dict(),
                    **({"inputs": inputs} if inputs else {}),
                }
            ),
            f,
        )


def looks_whole(path: Path) -> bool:
    """Whether ``path`` is a file that ends as torch.save's archives do (a zip's directory, read from its
    end): what a resume can check of its snapshots without reading them."""
    return path.is_file() and zipfile.is_zipfile(path)


def load_snapshot(path: Path) -> dict[str, Any]:
    """A snapshot written by ``save_snapshot``, its parts checked; a clear error otherwise."""
    snapshot = _read(path, "snapshot", "", "model")
    config = snapshot.get("config")
    wrong = None
    if not isinstance(config, dict):
        wrong = "it has no settings ('config')"
    elif not all(isinstance(config.get(key), str) for key in ("model", "dataset")):
        wrong = "its settings name no network or data set"
    elif not isinstance(snapshot.get("num_classes"), int) or not isinstance(snapshot["model"], dict):
        wrong = "it has no class count or no network"
    elif (problem := settings.problem(config)) is not None:
        wrong = f"its settings are not a run's ({problem})"
    if wrong:
        raise UserError(f"the snapshot {path} is damaged: {wrong}. Leave it out, or restore it from a backup.")
    return {**snapshot, "config": settings.upgrade(config)}


def _read(path: Path, what: str, advice: str, *required: str) -> dict[str, Any]:
    """A file this module wrote, read with ``weights_only=True``; a ``UserError`` naming it when it
    cannot be read or is not a ``what`` of this format (having the keys ``required``)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, bad pickle, wrong file: all mean "unusable"
        reason = f"{type(error).__name__}: {error}"
    else:
        if isinstance(state, dict) and state.get("format") == FORMAT and all(key in state for key in required):
            return state
        reason = f"not a {what} of format {FORMAT}"
    raise UserError(f"the {what} {path} cannot be read ({reason.splitlines()[0]}).{advice}")

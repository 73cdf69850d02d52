"""The files a run writes after each epoch, from its history: the reference pickles, metrics and figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sgdr import drawing, storage
from sgdr.run import layout


def metrics_rows(history: dict[str, list[float]]) -> list[dict[str, float]]:
    """One row per epoch for ``metrics.jsonl``: losses, top-1 accuracies, test error, and the
    learning rates of the epoch's first and last batch; with --ema, the moving average's test loss and error; with
    --swa-start, SWA's test loss and error, on the run's last epoch."""
    per_epoch = len(history["lr"]) // len(history["train_loss"]) if history["train_loss"] else 0
    return [
        {
            "epoch": k + 1,
            "train_loss": history["train_loss"][k],
            "train_accuracy": history["train_acc"][k],
            "test_loss": history["test_loss"][k],
            "test_accuracy": history["test_acc"][k],
            "test_error": 1 - history["test_acc"][k],
            "lr_first": history["lr"][k * per_epoch],
            "lr_last": history["lr"][(k + 1) * per_epoch - 1],
            # --ema: the moving average of the weights, validated as the network is
            **(
                {"ema_test_loss": history["ema_test_loss"][k], "ema_test_error": 1 - history["ema_test_acc"][k]}
                if "ema_test_acc" in history
                else {}
            ),
            # --swa-start: SWA's average, BatchNorm recomputed, validated after the run's last epoch
            **(
                {"swa_test_loss": history["swa_test_loss"][k], "swa_test_error": 1 - history["swa_test_acc"][k]}
                if history.get("swa_test_acc") and history["swa_test_acc"][k] is not None
                else {}
            ),
        }
        for k in range(len(history["train_loss"]))
    ]


def save_outputs(files: layout.RunFiles, history: dict[str, list[float]], figures: bool) -> None:
    """Write the reference files for the epochs so far, each atomically; figures only if asked."""
    storage.save_floats(files.train_loss, history["train_loss"])
    storage.save_floats(files.val_loss, history["test_loss"])
    if files.lr_values is not None:
        storage.save_floats(files.lr_values, history["lr"])
    storage.save_jsonl(files.metrics, metrics_rows(history))
    if figures:
        drawing.save_loss_figure(history["train_loss"], history["test_loss"], files.loss_figure)
        if files.lr_figure is not None:
            drawing.save_lr_figure(history["lr"], files.lr_figure)


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The rows ``save_outputs`` wrote to ``metrics.jsonl``, one an epoch; a ValueError naming the first line that
    is not one (an OSError when the file cannot be read)."""
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        try:
            row = json.loads(line)
            float(row["test_error"])
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"{path} line {number} is damaged ({type(error).__name__}: {error})") from None
        rows.append(row)
    return rows

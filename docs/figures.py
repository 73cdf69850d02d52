"""The README's figure: the learning rate of every batch of the three reference runs.

    python docs/figures.py [OUT.png]      (default: docs/lr-schedules.png)

The rates come from the project's own code, not from formulas copied here: the schedules of
schedules.py, built as train.py builds them from its default settings (rate, milestones, batch
size), stepped as train.py's loop steps them, over the batches per epoch of loaders.epoch_batches.
The three runs are those of run.sh: 200 epochs of the multistep default and of warm restarts with
T_0 = 50 and T_0 = 200 (T_mult = 1), the reference T_0s of drawing.py that plot.py draws.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sgdr import drawing  # noqa: E402
from sgdr.data import cifar, loaders  # noqa: E402
from sgdr.run import settings  # noqa: E402
from sgdr.training import recipes  # noqa: E402
from sgdr.training.schedules import build_schedule  # noqa: E402

EPOCHS = 200  # run.sh's reference runs
DEFAULTS = settings.build_parser().parse_args([])
RECIPE = recipes.RECIPES[DEFAULTS.recipe]
BATCHES = loaders.epoch_batches(cifar.TRAIN_IMAGES, DEFAULTS.batch_size, RECIPE.drop_last)
MILESTONES = list(DEFAULTS.milestones)
T_ZEROS = list(drawing.REFERENCE_T_ZEROS)
T_MULT = 1
OUT = ROOT / "docs" / "lr-schedules.png"


def batch_rates(warm_restart: bool, t_zero: int) -> list[float]:
    """The rate each batch of a reference run trains with, stepped as train.py's loop steps it."""
    optimizer = recipes.reference_optimizer(nn.Linear(1, 1))
    schedule = build_schedule(optimizer, warm_restart, t_zero, T_MULT, MILESTONES)
    optimizer.step()  # no gradients, so no change; torch warns of a scheduler stepped before any optimizer step
    rates = []
    for epoch in range(EPOCHS):
        for i in range(BATCHES):
            rates.append(optimizer.param_groups[0]["lr"])
            schedule.after_batch(epoch, i, BATCHES)
        schedule.after_epoch()
    return rates


def runs() -> list[tuple[str, str, list[float]]]:
    """(label, colour, rate of every batch) of each reference run, in plot.py's colours (drawing.py)."""
    gamma = build_schedule(recipes.reference_optimizer(nn.Linear(1, 1)), False, 1, 1, MILESTONES).scheduler.gamma
    steps = "/".join(map(str, MILESTONES))
    found = [(f"multistep: x {gamma:g} at epochs {steps}", drawing.color(0), batch_rates(False, 0))]
    for t_zero, colour in zip(T_ZEROS, map(drawing.color, range(1, len(T_ZEROS) + 1))):
        found.append((f"SGDR: T_0 = {t_zero}, T_mult = {T_MULT}", colour, batch_rates(True, t_zero)))
    return found


def draw(out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(8, 4), dpi=100)
    epochs = torch.arange(EPOCHS * BATCHES, dtype=torch.float64) / BATCHES
    for label, colour, rates in runs():
        ax.plot(epochs.numpy(), rates, color=colour, label=label, linewidth=1.3)
    ax.set_xlabel(f"epoch ({BATCHES} batches each)")
    ax.set_ylabel("learning rate")
    ax.set_title(f"Learning rate of every batch of the three reference runs (ResNet34, {EPOCHS} epochs)", fontsize=10)
    ax.set_xlim(0, EPOCHS)
    ax.set_xticks(range(0, EPOCHS + 1, 20))
    ax.set_ylim(0, recipes.LR * 1.08)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.17), ncol=3, fontsize=8, frameon=False)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    print(f"Saved {draw(Path(argv[0]) if argv else OUT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

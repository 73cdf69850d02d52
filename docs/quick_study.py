"""Why the quick mode's first validation losses can be far above the rest: a run of train.py's, epoch by epoch,
with its test loss measured three ways and its BatchNorm statistics compared with the data's.

    PYTHONPATH=SITE python docs/quick_study.py --data-dir SUBSET \\
        -e 8 --train-subset 2048 --test-subset 512 --milestones 6 12 16 --seed 1

Any train.py flags; the run is set up by experiment.setup as train.py sets it up and trained by the same
train_epoch, in a temporary folder (nothing is written where you run it). After each epoch, on the test set:

- eval: the loss validation reports (BatchNorm normalises with its running statistics);
- batch: the loss with every BatchNorm normalising with the test batch's own statistics (train mode);
- recomputed: the loss after the running statistics are recomputed from the training images as they are
  now, as --recompute-bn recomputes them (one pass, no augmentation, an equal-weight average over the
  batches), on a copy of the network.

and, for the BatchNorm layer whose running variance is furthest from the recomputed one, the ratio. When
eval is far above recomputed and batch, the running statistics lag the weights: the network is fine, its
statistics are stale. Prints a table; the numbers in docs/quick-mode.md came from it.
"""

from __future__ import annotations

import copy
import math
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import update_bn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sgdr.data import loaders  # noqa: E402
from sgdr.run import experiment, settings  # noqa: E402
from sgdr.run.stopping import Guard  # noqa: E402


@torch.no_grad()
def test_loss(model: nn.Module, loader, batch_norm_train: bool) -> float:
    """Mean cross-entropy per image over ``loader``, BatchNorm in eval or train mode (the rest in eval)."""
    model.eval()
    if batch_norm_train:
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.train()
    total, count = 0.0, 0
    for images, labels in loader:
        total += F.cross_entropy(model(images), labels, reduction="sum").item()
        count += len(labels)
    model.eval()
    return total / count


def recomputed(model: nn.Module, train_set, exp: experiment.Experiment) -> nn.Module:
    """A copy of ``model`` whose BatchNorm running statistics are recomputed from the training images as
    ``--recompute-bn`` recomputes them (the same images, loader and ``update_bn``), the run's own left as they are."""
    fresh = copy.deepcopy(model)
    update_bn(loaders.in_order(train_set, exp.test_loader, exp.config["batch_size"]), fresh)
    return fresh.eval()


def worst_variance(model: nn.Module, fresh: nn.Module) -> tuple[str, float]:
    """The BatchNorm layer whose running variance is furthest (as a ratio, either way) from the recomputed one."""
    worst, name_of = 1.0, ""
    fresh_norms = dict(fresh.named_modules())
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            ratio = (module.running_var / fresh_norms[name].running_var.clamp_min(1e-12)).clamp_min(1e-12)
            far = float(torch.exp(ratio.log().abs().max()))
            if far > worst:
                worst, name_of = far, name
    return name_of, worst


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with tempfile.TemporaryDirectory(prefix=".quick-study-") as folder:
        args = settings.parse_args([*argv, "--output-dir", folder])
        exp = experiment.setup(args)
        train_set = exp.train_loader.dataset
        print("| epoch | lr at the end | train loss | test loss: eval | batch | recomputed | worst BN variance |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for epoch in range(args.epochs):
            train_loss, _, _ = exp.train_epoch(epoch, Guard())
            exp.schedule.after_epoch()
            eval_loss = test_loss(exp.model, exp.test_loader, batch_norm_train=False)
            batch_loss = test_loss(copy.deepcopy(exp.model), exp.test_loader, batch_norm_train=True)
            fresh = recomputed(exp.model, train_set, exp)
            fresh_loss = test_loss(fresh, exp.test_loader, batch_norm_train=False)
            layer, ratio = worst_variance(exp.model, fresh)
            lr = exp.optimizer.param_groups[0]["lr"]
            print(
                f"| {epoch + 1} | {lr:.4g} | {train_loss:.3f} | {eval_loss:.4g} | {batch_loss:.3f} | {fresh_loss:.3f} "
                f"| {ratio:.3g}x ({layer}) |",
                flush=True,
            )
    return 0 if math.isfinite(train_loss) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Training recipes side by side: the tutorial's (the default) and the SGDR authors' own script's.

A recipe is data: setup reads it once, and the training loop reads the same for both.
What the script does, and what is not exact to it, is described in docs/paper.md ("Reproducing the paper").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

# The tutorial's optimiser: torch's SGD, momentum 0.9 (dampening 0, no Nesterov), weight decay
# 5e-4 on every parameter. The script's: eq. (3)-(4) with the same rate and momentum, and an L2
# penalty of 5e-4 * sum(w^2) (gradient 1e-3 * w) on weights and BatchNorm scales only.
LR, MOMENTUM, WEIGHT_DECAY = 0.05, 0.9, 5e-4
SCRIPT_PENALTY = 5e-4


def reference_optimizer(model: nn.Module, lr: float = LR) -> torch.optim.SGD:
    """The tutorial's optimiser over ``model``'s parameters."""
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)


class ClassicalMomentum(torch.optim.Optimizer):
    """SGD with momentum in the form of the paper's eq. (3)-(4): the rate inside the velocity.

        v <- momentum * v - lr * (grad + weight_decay * w);   w <- w + v   (v starts at 0)

    torch's SGD keeps ``v <- momentum * v + grad; w <- w - lr * v`` instead: the same while the
    rate is constant, different whenever it changes (every batch under SGDR). The update runs
    as a few foreach kernels over all parameters of a group, not a Python loop of kernels.
    """

    def __init__(self, params: Iterable, lr: float, momentum: float = 0.9, weight_decay: float = 0.0):
        if lr < 0 or not 0 <= momentum < 1 or weight_decay < 0:
            raise ValueError(f"bad lr {lr}, momentum {momentum} or weight_decay {weight_decay}")
        super().__init__(params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            velocities = [self._velocity(p) for p in params]
            torch._foreach_mul_(velocities, group["momentum"])
            torch._foreach_add_(velocities, [p.grad for p in params], alpha=-group["lr"])
            if group["weight_decay"]:  # in place: no temporary the size of the network
                torch._foreach_add_(velocities, params, alpha=-group["lr"] * group["weight_decay"])
            torch._foreach_add_(params, velocities)
        return loss

    def _velocity(self, p: torch.Tensor) -> torch.Tensor:
        state = self.state[p]
        if "velocity" not in state:
            state["velocity"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state["velocity"]


def penalised(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """(parameters the script's L2 penalty covers, the others): convolution and linear weights and
    BatchNorm scales, against biases and BatchNorm shifts."""
    covered, free = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            kinds = (nn.Conv2d, nn.Linear, nn.modules.batchnorm._BatchNorm)
            (covered if name == "weight" and isinstance(module, kinds) else free).append(p)
    return covered, free


def script_optimizer(model: nn.Module, lr: float = LR) -> ClassicalMomentum:
    """Eq. (3)-(4), with the gradient of 5e-4 * sum(w^2) (1e-3 * w) on the penalised parameters."""
    covered, free = penalised(model)
    groups = [{"params": covered, "weight_decay": 2 * SCRIPT_PENALTY}, {"params": free, "weight_decay": 0.0}]
    return ClassicalMomentum(groups, lr=lr, momentum=MOMENTUM)


@dataclass(frozen=True)
class Recipe:
    """Everything that differs between the tutorial's training and the SGDR script's."""

    name: str
    model: str  # the network when --model is not given
    mirrored_epoch: bool  # an epoch is every image plain and mirrored (2N samples), not N with random flips
    padding: str  # of the 4-pixel padding before the random crop: "reflect" or "zeros"
    mean_image: bool  # subtract the training images' per-pixel mean only, not normalise per channel
    drop_last: bool  # drop the last partial training batch
    test_batch_size: int | None  # None: the training batch size
    optimizer: Callable[[nn.Module, float], torch.optim.Optimizer]  # (network, initial rate)
    sgdr_by_samples: bool  # T_cur += batch / samples-per-epoch, reset at cycle ends; else epoch + i / iters
    header: str  # the line a run prints about it ("" for the tutorial: its output is the reference's)


TUTORIAL = Recipe(
    name="tutorial",
    model="resnet34",
    mirrored_epoch=False,
    padding="reflect",
    mean_image=False,
    drop_last=False,
    test_batch_size=None,
    optimizer=reference_optimizer,
    sgdr_by_samples=False,
    header="",
)
PAPER = Recipe(
    name="paper",
    model="wrn-28-10",
    mirrored_epoch=True,
    padding="zeros",
    mean_image=True,
    drop_last=True,
    test_batch_size=500,
    optimizer=script_optimizer,
    sgdr_by_samples=True,
    header="the SGDR script's (every image plain and mirrored, zero-padded crops, mean image subtracted, "
    "eq. (3)-(4) momentum, L2 penalty on weights and BN scales)",
)
RECIPES = {recipe.name: recipe for recipe in (TUTORIAL, PAPER)}

"""Networks: torchvision's ResNet34 with a CIFAR-sized head, trained from scratch by default."""

from __future__ import annotations

import os
import urllib.error

import torch
from torch import nn
from torchvision.models import ResNet34_Weights, resnet34

from errors import UserError


def build_model(
    pretrained: bool = False, requires_grad: bool = True, num_classes: int = 10
) -> nn.Module:
    """torchvision's ResNet34 with ``fc`` replaced by ``Linear(512, num_classes)``.

    ``pretrained`` loads the ImageNet weights (from torch's hub cache, downloading when
    absent); ``requires_grad=False`` freezes the backbone so only the new head trains.
    The reference run uses neither: 21,289,802 parameters, all trainable.
    """
    weights = ResNet34_Weights.IMAGENET1K_V1 if pretrained else None
    try:
        model = resnet34(weights=weights)
    except (OSError, RuntimeError) as error:  # URLError is an OSError; a bad file, RuntimeError
        raise UserError(_weights_unavailable(weights, error)) from None
    for parameter in model.parameters():
        parameter.requires_grad_(requires_grad)
    # The new head is created after the loop, so it is always trainable.
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


def _weights_unavailable(weights: ResNet34_Weights, error: Exception) -> str:
    reason = error.reason if isinstance(error, urllib.error.URLError) else error
    cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(weights.url))
    return (
        f"pretrained ResNet34 weights are not in torch's hub cache ({cached}) and could "
        f"not be downloaded ({reason}). Download {weights.url} to that path, or train "
        "from scratch (pretrained=False, the reference setting)."
    )


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(total, trainable) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return total, trainable

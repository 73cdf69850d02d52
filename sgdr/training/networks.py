"""Networks: the reference ResNet34 (torchvision's, CIFAR-sized head) and the paper's Wide ResNets."""

from __future__ import annotations

import os
import re
import urllib.error

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import ResNet34_Weights
from torchvision.models import resnet34 as torchvision_resnet34

from sgdr.cli import UserError


def resnet34(pretrained: bool = False, requires_grad: bool = True, num_classes: int = 10) -> nn.Module:
    """The tutorial's network, called as the tutorial calls it (``models.resnet34(pretrained=False,
    requires_grad=True)``): torchvision's ResNet34 with ``fc`` replaced by ``Linear(512, num_classes)``.

    ``pretrained`` loads the ImageNet weights (from torch's hub cache, downloading when
    absent); ``requires_grad=False`` freezes the backbone so only the new head trains.
    The reference run uses neither: 21,289,802 parameters, all trainable.
    """
    weights = ResNet34_Weights.IMAGENET1K_V1 if pretrained else None
    try:
        model = torchvision_resnet34(weights=weights)
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


def trains_on_single_images(name: str, num_classes: int) -> bool:
    """Whether network ``name`` can train on a batch of one 32x32 image. Not when one of its BatchNorm layers
    would see a single value per channel: ResNet34's last stage works on 1x1 maps. Tried on the meta device:
    no memory, no arithmetic, no random draws."""
    with torch.device("meta"):
        model = build_network(name, num_classes).train()
        try:
            model(torch.empty(1, 3, 32, 32))
        except ValueError:  # "Expected more than 1 value per channel when training"
            return False
    return True


class _WideBlock(nn.Module):
    """One residual block of the SGDR authors' WRN script.

    Every block but the network's first starts with BN-ReLU of its input (the first block's
    input is the stem's output, already BN-ReLU'd); then conv3x3 (stride s) - BN - ReLU -
    conv3x3 with a bias. The first block of each group adds a 1x1 convolution of the *raw*
    input (even where the width does not change); the others add the input itself.
    """

    def __init__(self, channels_in: int, channels_out: int, stride: int, preactivate: bool, project: bool):
        super().__init__()
        self.bn1 = _batch_norm(channels_in) if preactivate else None
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride, 1, bias=False)
        self.bn2 = _batch_norm(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, 1, 1, bias=True)
        self.shortcut = nn.Conv2d(channels_in, channels_out, 1, stride, 0, bias=False) if project else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x if self.bn1 is None else F.relu(self.bn1(x))
        y = self.conv2(F.relu(self.bn2(self.conv1(y))))
        return y + (x if self.shortcut is None else self.shortcut(x))


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    # The script's epsilon; its running averages move by 0.1 per batch, PyTorch's momentum 0.1.
    return nn.BatchNorm2d(channels, eps=1e-4, momentum=0.1)


class WideResNet(nn.Module):
    """WRN-depth-k (Zagoruyko & Komodakis, 2016) as the SGDR authors' script builds it (WRN-28-10).

    Stem: conv3x3 to 16 channels, BN, ReLU. Three groups of (depth - 4) / 6 blocks of widths
    16k, 32k, 64k (the second and third start with stride 2). Head: BN-ReLU, global average
    pooling, a linear classifier. No dropout, as in the SGDR paper. Initialised as the script
    does: 3x3 convolutions He-normal (std sqrt(2 / fan_in)), 1x1 shortcuts Glorot-uniform, the
    linear layer He-normal with gain 1 (std sqrt(1 / fan_in)), biases 0, BN scale 1 and shift 0.
    """

    def __init__(self, depth: int, k: int, num_classes: int = 10):
        super().__init__()
        if depth < 10 or (depth - 4) % 6 or k < 1:
            raise ValueError(f"WRN depth must be 6n + 4 with n >= 1 and k >= 1, got depth {depth}, k {k}")
        blocks = (depth - 4) // 6
        self.conv = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.stem_bn = _batch_norm(16)
        layers, channels = [], 16
        for width, stride in ((16 * k, 1), (32 * k, 2), (64 * k, 2)):
            for i in range(blocks):
                first = i == 0
                layers.append(
                    _WideBlock(channels, width, stride if first else 1, preactivate=bool(layers), project=first)
                )
                channels = width
        self.blocks = nn.Sequential(*layers)
        self.bn = _batch_norm(channels)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d) and module.kernel_size == (3, 3):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
            elif isinstance(module, nn.Conv2d):
                nn.init.xavier_uniform_(module.weight)
            if isinstance(module, (nn.Conv2d, nn.Linear)) and module.bias is not None:
                nn.init.zeros_(module.bias)
        nn.init.kaiming_normal_(self.fc.weight, nonlinearity="linear")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.relu(self.stem_bn(self.conv(x))))
        x = F.relu(self.bn(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class SpatialMean(nn.Module):
    """Global average pooling as a mean over height and width. Adaptive average pooling's CUDA
    backward adds with atomics, so ``torch.use_deterministic_algorithms`` refuses it; a mean's
    backward is a broadcast. The same values, up to the order of the additions."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)


def deterministic_pooling(model: nn.Module) -> int:
    """Every global average pooling of ``model`` (``AdaptiveAvgPool2d(1)``) made a ``SpatialMean``,
    for ``--deterministic``; how many. No parameter or buffer changes."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, nn.AdaptiveAvgPool2d) and child.output_size in (1, (1, 1)):
                setattr(parent, name, SpatialMean())
                swapped += 1
    return swapped


MODEL_NAMES = (
    "resnet34 (the reference), or wrn-D-K: a Wide ResNet of depth D = 6n + 4 and widen factor K (the paper: wrn-28-10)"
)


def check_model_name(name: str) -> str:
    """``name`` in its one spelling (wrn-028-10 is wrn-28-10: one network, one name in a run's settings and a
    grid's folders) if ``build_network`` knows it, else ValueError saying what it accepts."""
    match = re.fullmatch(r"wrn-(\d+)-(\d+)", name)
    if name == "resnet34":
        return name
    if match and int(match[1]) >= 10 and (int(match[1]) - 4) % 6 == 0 and int(match[2]) >= 1:
        return f"wrn-{int(match[1])}-{int(match[2])}"
    raise ValueError(f"unknown model {name!r}; expected {MODEL_NAMES}")


def build_network(name: str, num_classes: int) -> nn.Module:
    """A network by name, trained from scratch: ``resnet34`` or ``wrn-D-K``."""
    if check_model_name(name) == "resnet34":
        return resnet34(pretrained=False, requires_grad=True, num_classes=num_classes)
    depth, k = (int(x) for x in name.split("-")[1:])
    return WideResNet(depth, k, num_classes)


def top1_correct(scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """How many rows of ``scores`` (logits or probabilities) have their largest entry at the label
    (ties go to the lowest class index), as a tensor on the scores' device: no sync."""
    return (scores.argmax(dim=1) == labels).sum()

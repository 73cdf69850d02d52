"""The reference network: torchvision's ResNet34 with a 10-way head, called as the tutorial calls it
(models.resnet34 at the root), and the paper's Wide ResNets."""

from __future__ import annotations

import pytest
import torch

import models
from sgdr.cli import UserError
from sgdr.training.networks import WideResNet, build_network, check_model_name, count_parameters


def test_resnet34_has_the_reference_parameter_count_all_trainable():
    assert count_parameters(models.resnet34()) == (21_289_802, 21_289_802)


def test_maps_a_batch_of_cifar_images_to_ten_logits():
    model = models.resnet34().eval()
    with torch.no_grad():
        assert model(torch.randn(3, 3, 32, 32)).shape == (3, 10)


def test_frozen_backbone_leaves_only_the_new_head_trainable():
    model = models.resnet34(requires_grad=False)
    assert count_parameters(model) == (21_289_802, 512 * 10 + 10)
    assert all(p.requires_grad for p in model.fc.parameters())


def test_head_size_follows_num_classes():
    assert models.resnet34(num_classes=100).fc.out_features == 100


def test_pretrained_weights_without_network_fail_with_a_clear_message(offline, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UserError) as caught:
        models.resnet34(pretrained=True)
    message = str(caught.value)
    assert str(tmp_path / "hub" / "checkpoints" / "resnet34-b627a593.pth") in message
    assert "https://download.pytorch.org/models/resnet34-b627a593.pth" in message
    assert "Name or service not known" in message


@pytest.mark.parametrize(
    ("name", "classes", "parameters"),
    [
        ("wrn-28-10", 10, 36_483_674),  # the SGDR paper's network, as its authors' script builds it ("36.5M")
        ("wrn-28-20", 10, 145_824_474),  # "145.8M"
        ("wrn-28-10", 100, 36_541_364),
        ("wrn-16-4", 10, 2_749_786),
        ("wrn-10-1", 10, 78_218),
    ],
)
def test_wide_resnet_parameter_counts(name, classes, parameters):
    assert count_parameters(build_network(name, classes)) == (parameters, parameters)


def test_wide_resnet_shape_and_projection_shortcuts():
    model = build_network("wrn-16-2", 100).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    assert isinstance(model, WideResNet) and len(model.blocks) == 6  # (16 - 4) / 6 = 2 blocks in 3 groups
    # A 1x1 projection at the first block of every group.
    projections = [
        (b.shortcut.in_channels, b.shortcut.out_channels, b.shortcut.stride) if b.shortcut else None
        for b in model.blocks
    ]
    assert projections == [(16, 32, (1, 1)), None, (32, 64, (2, 2)), None, (64, 128, (2, 2)), None]
    assert [b.bn1 is None for b in model.blocks] == [True] + [False] * 5  # only the first skips BN-ReLU
    assert [b.conv2.bias is not None for b in model.blocks] == [True] * 6
    # Even where the width stays 16 (k = 1): the script projects the first block's input all the same.
    assert build_network("wrn-10-1", 10).blocks[0].shortcut.weight.shape == (16, 16, 1, 1)


def _block_by_hand(block, x: torch.Tensor) -> torch.Tensor:
    """The script's block, written out: BN-ReLU (not in the first block), conv-BN-ReLU-conv(+bias),
    plus the 1x1 projection of the raw input (or the input itself)."""
    F = torch.nn.functional
    y = (
        x
        if block.bn1 is None
        else F.relu(
            F.batch_norm(x, block.bn1.running_mean, block.bn1.running_var, block.bn1.weight, block.bn1.bias, eps=1e-4)
        )
    )
    y = F.conv2d(y, block.conv1.weight, stride=block.conv1.stride, padding=1)
    y = F.relu(
        F.batch_norm(y, block.bn2.running_mean, block.bn2.running_var, block.bn2.weight, block.bn2.bias, eps=1e-4)
    )
    y = F.conv2d(y, block.conv2.weight, block.conv2.bias, padding=1)
    shortcut = x if block.shortcut is None else F.conv2d(x, block.shortcut.weight, stride=block.shortcut.stride)
    return y + shortcut


def _scrambled_wide_resnet(name: str) -> WideResNet:
    """``name`` in inference mode with BatchNorm statistics and shifts far from 0 and 1, so that a
    BN-ReLU'd shortcut, or a ReLU left out, shows in the output."""
    torch.manual_seed(0)
    model = build_network(name, 10).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-1, 1)
            module.running_var.uniform_(0.5, 2)
            module.bias.data.uniform_(-1, 1)
            module.weight.data.uniform_(0.5, 2)
    return model


def test_wide_resnet_blocks_compute_the_scripts_block():
    model = _scrambled_wide_resnet("wrn-16-2")
    x = torch.randn(2, 16, 32, 32)
    with torch.no_grad():
        for block in model.blocks:
            expected = _block_by_hand(block, x)
            x = block(x)
            torch.testing.assert_close(x, expected)


def test_the_whole_wide_resnet_computes_the_scripts_network():
    """Stem conv-BN-ReLU, the blocks, head BN-ReLU, global average pooling, the classifier: written out,
    so that a ReLU left out of the stem or the head (or a pooling other than the mean) fails."""
    F = torch.nn.functional
    model = _scrambled_wide_resnet("wrn-10-2")

    def bn(module, x):
        return F.batch_norm(x, module.running_mean, module.running_var, module.weight, module.bias, eps=1e-4)

    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        y = F.relu(bn(model.stem_bn, F.conv2d(x, model.conv.weight, padding=1)))
        assert (bn(model.stem_bn, F.conv2d(x, model.conv.weight, padding=1)) < 0).any()  # the ReLU acts
        for block in model.blocks:
            y = _block_by_hand(block, y)
        assert (bn(model.bn, y) < 0).any()
        y = F.relu(bn(model.bn, y)).mean((2, 3))
        torch.testing.assert_close(model(x), F.linear(y, model.fc.weight, model.fc.bias))


def test_wide_resnet_is_initialised_as_the_script_does():
    torch.manual_seed(0)
    model = build_network("wrn-16-8", 10)
    conv3 = model.blocks[1].conv2  # 128 -> 128, 3x3: He-normal, std sqrt(2 / (128 * 9))
    assert conv3.weight.std().item() == pytest.approx((2 / (128 * 9)) ** 0.5, rel=0.01)
    # Fan-in, not fan-out: 128 -> 256 (std 0.042; by fan-out it would be 0.029), and the stem's 3 -> 16
    # (0.27 against 0.12).
    widening = model.blocks[2].conv1
    assert widening.weight.shape == (256, 128, 3, 3)
    assert widening.weight.std().item() == pytest.approx((2 / (128 * 9)) ** 0.5, rel=0.01)
    assert model.conv.weight.std().item() == pytest.approx((2 / (3 * 9)) ** 0.5, rel=0.1)
    projection = model.blocks[2].shortcut  # 128 -> 256, 1x1: Glorot-uniform, limit sqrt(6 / (128 + 256))
    limit = (6 / (128 + 256)) ** 0.5
    assert projection.weight.abs().max().item() <= limit
    assert projection.weight.std().item() == pytest.approx(limit / 3**0.5, rel=0.02)
    assert model.fc.weight.std().item() == pytest.approx((1 / 512) ** 0.5, rel=0.05)  # He-normal, gain 1
    biases = [
        m.bias for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)) and m.bias is not None
    ]
    assert biases and all(b.eq(0).all() for b in biases)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.eps == 1e-4 and m.momentum == 0.1 and m.weight.eq(1).all() and m.bias.eq(0).all() for m in norms)


def test_resnet34_by_name_is_the_reference_network():
    assert count_parameters(build_network("resnet34", 10)) == (21_289_802, 21_289_802)


@pytest.mark.parametrize("name", ["resnet18", "wrn-27-10", "wrn-4-1", "wrn-28-0", "WRN-28-10", "wrn-28"])
def test_unknown_model_names_are_refused(name):
    with pytest.raises(ValueError, match="expected resnet34 .* or wrn-D-K"):
        check_model_name(name)


def test_the_tutorials_own_call_builds_the_reference_network():
    import torchvision

    from sgdr.training import networks

    assert models.resnet34 is networks.resnet34 and models.resnet34 is not torchvision.models.resnet34
    assert count_parameters(models.resnet34(pretrained=False, requires_grad=True)) == (21_289_802, 21_289_802)
    frozen = models.resnet34(pretrained=False, requires_grad=False)
    assert count_parameters(frozen) == (21_289_802, 512 * 10 + 10)
    assert [name for name, p in frozen.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]

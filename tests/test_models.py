"""The reference network: torchvision's ResNet34 with a 10-way head."""

from __future__ import annotations

import pytest
import torch

from errors import UserError
from models import WideResNet, build_model, build_network, check_model_name, count_parameters


def test_resnet34_has_the_reference_parameter_count_all_trainable():
    assert count_parameters(build_model()) == (21_289_802, 21_289_802)


def test_maps_a_batch_of_cifar_images_to_ten_logits():
    model = build_model().eval()
    with torch.no_grad():
        assert model(torch.randn(3, 3, 32, 32)).shape == (3, 10)


def test_frozen_backbone_leaves_only_the_new_head_trainable():
    model = build_model(requires_grad=False)
    assert count_parameters(model) == (21_289_802, 512 * 10 + 10)
    assert all(p.requires_grad for p in model.fc.parameters())


def test_head_size_follows_num_classes():
    assert build_model(num_classes=100).fc.out_features == 100


def test_pretrained_weights_without_network_fail_with_a_clear_message(offline, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UserError) as caught:
        build_model(pretrained=True)
    message = str(caught.value)
    assert str(tmp_path / "hub" / "checkpoints" / "resnet34-b627a593.pth") in message
    assert "https://download.pytorch.org/models/resnet34-b627a593.pth" in message
    assert "Name or service not known" in message


@pytest.mark.parametrize(("name", "parameters"), [
    ("wrn-28-10", 36_479_194),  # the SGDR paper's network: "36.5M" in Zagoruyko & Komodakis
    ("wrn-28-20", 145_815_514),  # "146M"
    ("wrn-16-8", 10_961_370),  # "11.0M"
    ("wrn-10-1", 77_850),
])
def test_wide_resnet_parameter_counts(name, parameters):
    assert count_parameters(build_network(name, 10)) == (parameters, parameters)


def test_wide_resnet_shape_and_projection_shortcuts():
    model = build_network("wrn-16-2", 100).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 100)
    assert isinstance(model, WideResNet) and len(model.blocks) == 6  # (16 - 4) / 6 = 2 blocks in 3 groups
    # A 1x1 projection exactly where the width or the resolution changes: each group's first block.
    projections = [(b.shortcut.in_channels, b.shortcut.out_channels, b.shortcut.stride) if b.shortcut else None
                   for b in model.blocks]
    assert projections == [(16, 32, (1, 1)), None, (32, 64, (2, 2)), None, (64, 128, (2, 2)), None]


def test_resnet34_by_name_is_the_reference_network():
    assert count_parameters(build_network("resnet34", 10)) == (21_289_802, 21_289_802)


@pytest.mark.parametrize("name", ["resnet18", "wrn-27-10", "wrn-4-1", "wrn-28-0", "WRN-28-10", "wrn-28"])
def test_unknown_model_names_are_refused(name):
    with pytest.raises(ValueError, match="expected resnet34 .* or wrn-D-K"):
        check_model_name(name)

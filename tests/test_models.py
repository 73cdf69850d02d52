"""The reference network: torchvision's ResNet34 with a 10-way head."""

from __future__ import annotations

import pytest
import torch

from errors import UserError
from models import build_model, count_parameters


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

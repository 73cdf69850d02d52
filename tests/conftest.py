"""Shared fixtures: tiny CIFAR-10 data on disk, and a machine without network."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch.hub
from cifar_format import use_checksums_of, write_cifar10


@pytest.fixture(scope="session")
def tiny_cifar(tmp_path_factory) -> Path:
    """40 training images (5 files of 8) and 16 test images, written once per session."""
    return write_cifar10(tmp_path_factory.mktemp("data"))


@pytest.fixture
def cifar_dir(tiny_cifar: Path, monkeypatch) -> Path:
    """``tiny_cifar``, accepted by torchvision's checksum check for this test only."""
    use_checksums_of(tiny_cifar, monkeypatch.setattr)
    return tiny_cifar


@pytest.fixture
def offline(monkeypatch):
    """Every download fails the way it does without a network, wherever the test runs."""

    def refuse(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)  # torchvision's datasets
    monkeypatch.setattr(torch.hub, "urlopen", refuse)  # pretrained weights

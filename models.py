"""The networks of the tutorial's models.py, as a user calls them: `models.resnet34(pretrained=False,
requires_grad=True)` is the reference ResNet34 for CIFAR-10, beside the paper's Wide ResNets. Defined in
sgdr/training/networks.py, with what the training scripts need of them."""

from sgdr.training.networks import WideResNet, build_network, count_parameters, resnet34

__all__ = ["WideResNet", "build_network", "count_parameters", "resnet34"]

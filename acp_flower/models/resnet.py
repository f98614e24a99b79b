"""ResNet-18 from torchvision, split into a client head and a server tail at a top-level cut."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18

from acp_flower.models.registry import Architecture, SplitModel, register_model, smashed_shape

# Top-level children of torchvision's ResNet, in forward order; ``forward`` flattens
# between avgpool and fc, which the tail reproduces with an explicit nn.Flatten.
RESNET_CHILDREN = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc")


def build_resnet18(num_classes: int, in_channels: int = 3) -> nn.Module:
    """torchvision ResNet-18 (random init) with ``in_channels`` input planes.

    For 1-channel data (Fashion-MNIST, MNIST) conv1 is replaced by a conv with the same
    kernel, stride and padding but one input plane, instead of repeating the gray plane
    three times: same receptive field, a third of the first layer's work.
    """
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    model = resnet18(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


def split_model(model: nn.Module, cut_layer: int) -> SplitModel:
    """Split a torchvision ResNet after its first ``cut_layer`` top-level children.

    The returned modules share parameters with ``model``.
    """
    names = [name for name, _ in model.named_children()]
    if tuple(names) != RESNET_CHILDREN:
        raise ValueError(f"expected a torchvision ResNet with children {RESNET_CHILDREN}, got {names}")
    if not 1 <= cut_layer <= len(names) - 1:
        raise ValueError(f"cut_layer must be in 1..{len(names) - 1} (modules {names}), got {cut_layer}")
    children = list(model.children())
    head = nn.Sequential(*children[:cut_layer])
    tail_modules = children[cut_layer:-1] + [nn.Flatten(1), children[-1]]
    return SplitModel(head=head, tail=nn.Sequential(*tail_modules))


def split_resnet18(num_classes: int, in_channels: int = 3, cut_layer: int = 4) -> SplitModel:
    """Build and split ResNet-18; default cut = paper's (conv1, bn1, relu, maxpool on the client).

    For 32x32 inputs the smashed data is 64 x 8 x 8; for 28x28 inputs 64 x 7 x 7.

    The weights are channels-last: oneDNN then runs the whole network in NHWC, which on a
    2-core CPU makes a training step 15-21% faster (experiments/bench_step.py; the backward
    pass of layer4's 1x1-spatial convolutions is slow in NCHW). Inputs stay ordinary NCHW.
    """
    model = build_resnet18(num_classes, in_channels).to(memory_format=torch.channels_last)
    return split_model(model, cut_layer)


@register_model("resnet18")
class ResNet18(Architecture):
    """torchvision's ResNet-18, cut after ``cut_layer`` top-level modules (4 = the paper's:
    conv1, bn1, relu, maxpool on the client; smashed data 64 x 8 x 8 for 32 x 32 inputs)."""

    cut_what = "top-level modules"

    def cut_range(self) -> tuple[int, int]:
        return 1, len(RESNET_CHILDREN) - 1

    def build(self, num_classes: int, in_channels: int, image_size: int, cut_layer: int) -> SplitModel:
        return split_resnet18(num_classes, in_channels, cut_layer)


__all__ = ["ResNet18", "SplitModel", "build_resnet18", "smashed_shape", "split_model", "split_resnet18"]

"""Split ResNet-18: head + tail equals the unsplit torchvision model."""

import pytest
import torch

from acp_flower.models.resnet import build_resnet18, smashed_shape, split_model, split_resnet18


@pytest.mark.parametrize("in_channels, size, smashed", [(3, 32, (64, 8, 8)), (1, 28, (64, 7, 7))])
@pytest.mark.parametrize("cut", [1, 4, 6, 9])
def test_split_equals_unsplit(in_channels, size, smashed, cut):
    model = build_resnet18(10, in_channels).eval()
    split = split_model(model, cut)
    x = torch.randn(3, in_channels, size, size)
    with torch.no_grad():
        full = model(x)
        parts = split.tail(split.head(x))
    assert torch.allclose(full, parts, atol=1e-6)
    if cut == 4:
        assert tuple(split.head(x).shape[1:]) == smashed
        assert tuple(smashed_shape(split.head, in_channels, size)) == smashed


def test_default_cut_is_papers_first_four_modules():
    split = split_resnet18(10)
    assert [type(m).__name__ for m in split.head] == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]


@pytest.mark.parametrize("cut", [0, 10])
def test_cut_out_of_range(cut):
    with pytest.raises(ValueError, match="cut_layer must be in 1..9"):
        split_resnet18(10, cut_layer=cut)

"""Split models: client-side head and server-side tail."""

from acp_flower.models.resnet import SplitModel, build_resnet18, split_model, split_resnet18

__all__ = ["SplitModel", "build_resnet18", "split_model", "split_resnet18"]

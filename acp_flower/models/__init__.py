"""Split models (client-side head, server-side tail), client-side pruning, and model cost."""

from acp_flower.models.cost import ModelCost, model_cost
from acp_flower.models.pruning import HeadPruner, HeadPruningOptions
from acp_flower.models.resnet import SplitModel, build_resnet18, smashed_shape, split_model, split_resnet18

__all__ = [
    "HeadPruner", "HeadPruningOptions", "ModelCost", "SplitModel", "build_resnet18", "model_cost", "smashed_shape",
    "split_model", "split_resnet18",
]

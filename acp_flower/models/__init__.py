"""Split models by name (``register_model`` / ``get_model``), client-side pruning, and model cost.

Every architecture module is imported here and registers itself: a new model is one file
plus its test.
"""

from acp_flower.models import resnet, vit  # noqa: F401  imported to register their models
from acp_flower.models.cost import ModelCost, model_cost
from acp_flower.models.pruning import HeadPruner, HeadPruningOptions
from acp_flower.models.registry import (
    Architecture,
    SplitModel,
    build_architecture,
    get_model,
    list_models,
    register_model,
    smashed_shape,
)
from acp_flower.models.resnet import build_resnet18, split_model, split_resnet18

__all__ = [
    "Architecture", "HeadPruner", "HeadPruningOptions", "ModelCost", "SplitModel", "build_architecture",
    "build_resnet18", "get_model", "list_models", "model_cost", "register_model", "smashed_shape", "split_model",
    "split_resnet18",
]

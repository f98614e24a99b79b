"""What a client model costs: parameters (non-zero ones) and forward FLOPs per sample.

FLOPs are counted by ``torch.utils.flop_counter.FlopCounterMode`` (matrix products and
convolutions, 2 FLOPs per multiply-add; BatchNorm, ReLU and pooling are not counted). The
counter counts dense work whatever the weights hold, so ``flops_sparse`` also scales each
convolution's and linear layer's count by the fraction of its weights that are non-zero:
the work a sparse kernel would do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from acp_flower.models.pruning import PRUNABLE


@dataclass(frozen=True)
class ModelCost:
    params: int
    """Parameters (weights and biases, not buffers)."""
    params_nonzero: int
    """Parameters that are not exactly zero."""
    flops: int
    """Dense forward FLOPs of one sample (FlopCounterMode)."""
    flops_sparse: float
    """``flops`` with each conv/linear layer's count scaled by its weights' density."""


@torch.no_grad()
def model_cost(model: nn.Module, sample: torch.Tensor, forward=None) -> ModelCost:
    """Cost of ``forward(model, sample)`` (default ``model(sample)``) for a one-sample batch.

    ``model`` runs in eval mode for the count (BatchNorm statistics are not touched) and
    goes back to its previous mode.
    """
    was_training = model.training
    model.eval()
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            (forward or (lambda m, x: m(x)))(model, sample)
    finally:
        model.train(was_training)
    per_module = counter.get_flop_counts()
    root = type(model).__name__
    saved = 0.0
    for name, module in model.named_modules():
        if isinstance(module, PRUNABLE):
            flops = sum(per_module.get(f"{root}.{name}" if name else root, {}).values())
            density = float((module.weight != 0).sum()) / module.weight.numel()
            saved += flops * (1.0 - density)
    params = list(model.parameters())
    total = counter.get_total_flops()
    return ModelCost(sum(p.numel() for p in params), sum(int((p != 0).sum()) for p in params), total, total - saved)

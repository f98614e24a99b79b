"""Client-side magnitude pruning of the head on a schedule (lightweight FedSL, arXiv 2412.06414).

Global L1 (magnitude) unstructured pruning over the weights of the head's convolutions
and linear layers, with ``torch.nn.utils.prune``. The sparsity ramps linearly from 0 to
``head_prune_sparsity`` over rounds ``head_prune_start_round..head_prune_end_round`` and
stays there. At the start of a client's round the mask is recomputed from the magnitudes
of the weights it received (pruned weights are zeros, so with a non-decreasing schedule
they stay pruned); during the round the mask holds them at zero (their gradients are
masked); at the end the mask is folded into the weights (``prune.remove``), so the state
that travels and is averaged is a plain state dict with zeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune

from acp_flower.options import check, declare_options

PRUNABLE = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class HeadPruningOptions:
    """Options of client-side head pruning (in effect with every exchange and codec)."""

    head_prune_sparsity: float = 0.0
    """Target fraction of the head's conv/linear weights set to zero (0 = off)."""
    head_prune_start_round: int = 1
    """First round with pruning (sparsity target / ramp length there)."""
    head_prune_end_round: int = 1
    """Round from which the target sparsity holds."""

    def __post_init__(self) -> None:
        check("head_prune_sparsity", 0.0 <= self.head_prune_sparsity < 1.0, "a fraction in [0, 1)")
        check("head_prune_start_round", self.head_prune_start_round >= 1, "a round >= 1")
        check("head_prune_end_round", self.head_prune_end_round >= self.head_prune_start_round,
              f"a round >= head_prune_start_round ({self.head_prune_start_round})")

    def sparsity(self, server_round: int) -> float:
        """The scheduled sparsity of round ``server_round``."""
        if self.head_prune_sparsity == 0.0 or server_round < self.head_prune_start_round:
            return 0.0
        ramp = self.head_prune_end_round - self.head_prune_start_round + 1
        return self.head_prune_sparsity * min(1.0, (server_round - self.head_prune_start_round + 1) / ramp)


declare_options(HeadPruningOptions, name="head_pruning")


def prunable_weights(module: nn.Module) -> list[tuple[nn.Module, str]]:
    """The (module, "weight") pairs that pruning acts on, in module order."""
    return [(m, "weight") for m in module.modules() if isinstance(m, PRUNABLE)]


def global_magnitude_masks(params: list[tuple[nn.Module, str]], amount: float) -> list[torch.Tensor]:
    """Keep-masks pruning the ``round(amount * total)`` smallest-magnitude weights over all ``params``.

    The rule of ``prune.global_unstructured`` with ``L1Unstructured``, written out because
    torch's version flattens with ``view`` and fails on channels-last weights; each mask
    comes in its weight's memory layout.
    """
    weights = [getattr(m, n).detach() for m, n in params]
    flat = torch.cat([w.abs().reshape(-1) for w in weights])
    keep = torch.ones_like(flat, dtype=torch.bool)
    k = round(amount * flat.numel())
    if k:
        keep[torch.topk(flat, k, largest=False).indices] = False
    masks, start = [], 0
    for w in weights:
        mask = keep[start:start + w.numel()].reshape(w.shape).to(w.dtype)
        masks.append(mask.contiguous(memory_format=torch.channels_last) if w.dim() == 4 and
                     w.is_contiguous(memory_format=torch.channels_last) else mask)
        start += w.numel()
    return masks


class HeadPruner:
    """Applies the schedule of ``HeadPruningOptions`` to a head, one round at a time."""

    def __init__(self, options: HeadPruningOptions) -> None:
        self.options = options

    def begin_round(self, head: nn.Module, server_round: int) -> float:
        """Mask the smallest weights of ``head`` to the round's sparsity; returns it."""
        amount = self.options.sparsity(server_round)
        params = prunable_weights(head)
        if amount > 0 and params:
            for (module, name), mask in zip(params, global_magnitude_masks(params, amount)):
                prune.custom_from_mask(module, name, mask)
        return amount

    @staticmethod
    def end_round(head: nn.Module) -> None:
        """Fold the masks into the weights: plain parameters again, pruned ones exactly zero."""
        for module, name in prunable_weights(head):
            if prune.is_pruned(module) and hasattr(module, name + "_orig"):
                channels_last = getattr(module, name + "_orig").is_contiguous(memory_format=torch.channels_last)
                prune.remove(module, name)
                weight = getattr(module, name)
                if channels_last and weight.dim() == 4:  # keep the layout the model was built with
                    weight.data = weight.data.contiguous(memory_format=torch.channels_last)

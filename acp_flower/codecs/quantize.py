"""Quantization-SL: uniform k-bit quantization of smashed data and gradients."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from acp_flower.codecs.base import Codec, register_codec
from acp_flower.wire import Payload, quantize

if TYPE_CHECKING:
    from acp_flower.config import ExperimentConfig


@register_codec("quantize")
class QuantizeCodec(Codec):
    """Uniform ``quantize_bits``-bit quantization, min/max range per tensor or per channel.

    The gradient goes back quantized with the same bit width and granularity (its own
    range). Inference quantizes the same way; it needs no labels.
    """

    def __init__(self, cfg: ExperimentConfig, *, total_steps: int = 1, seed: int = 0) -> None:
        super().__init__(cfg, total_steps=total_steps, seed=seed)
        self.bits = cfg.quantize_bits
        self.per_channel = cfg.quantize_granularity == "channel"

    def encode(self, smashed: torch.Tensor, labels: torch.Tensor | None = None, *, train: bool = True) -> Payload:
        shape = tuple(smashed.shape)
        groups = None
        if self.per_channel:
            channels = torch.arange(shape[1], device=smashed.device)
            groups = channels.view(1, -1, *([1] * (len(shape) - 2))).expand(shape).reshape(-1)
        codes, scale, offset = quantize(smashed, self.bits, groups, shape[1] if self.per_channel else 1)
        return Payload(shape, codes, bits=self.bits, scale=scale, offset=offset)

    def dropped_fraction(self, payload: Payload) -> float:
        return 0.0

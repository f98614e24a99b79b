"""Quantization-SL: uniform k-bit quantization of smashed data and gradients."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from acp_flower.codecs.base import Codec, register_codec
from acp_flower.options import check, check_choice
from acp_flower.wire import Payload, quantize

GRANULARITIES = ("tensor", "channel")


@dataclass(frozen=True)
class QuantizeOptions:
    """Options of Quantization-SL."""

    quantize_bits: int = 8
    """Quantization bit width (1..16)."""
    quantize_granularity: str = "tensor"
    """Quantization scale per tensor or per channel."""

    def __post_init__(self) -> None:
        check("quantize_bits", 1 <= self.quantize_bits <= 16, "an integer in 1..16")
        check_choice("quantize_granularity", self.quantize_granularity, GRANULARITIES)


@register_codec("quantize", options=QuantizeOptions)
class QuantizeCodec(Codec):
    """Uniform ``quantize_bits``-bit quantization, min/max range per tensor or per channel.

    The gradient goes back quantized with the same bit width and granularity (its own
    range). Inference quantizes the same way; it needs no labels.
    """

    def __init__(self, options: QuantizeOptions, *, total_steps: int = 1, seed: int = 0) -> None:
        super().__init__(options, total_steps=total_steps, seed=seed)
        self.bits = options.quantize_bits
        self.per_channel = options.quantize_granularity == "channel"

    def encode(self, smashed: torch.Tensor, labels: torch.Tensor | None = None, *, train: bool = True) -> Payload:
        shape = tuple(smashed.shape)
        groups = None
        if self.per_channel:
            channels = torch.arange(shape[1], device=smashed.device)
            groups = channels.view(1, -1, *([1] * (len(shape) - 2))).expand(shape).reshape(-1)
        codes, scale, offset = quantize(smashed, self.bits, groups, shape[1] if self.per_channel else 1)
        return Payload(shape, codes, bits=self.bits, scale=scale, offset=offset)

"""Standard-SL: the smashed data and gradients travel uncompressed (float32)."""

from __future__ import annotations

import torch

from acp_flower.codecs.base import Codec, register_codec
from acp_flower.wire import Payload


@register_codec("standard")
class StandardCodec(Codec):
    """Identity codec (Standard-SL baseline)."""

    def encode(self, smashed: torch.Tensor, labels: torch.Tensor | None = None, *, train: bool = True) -> Payload:
        return Payload(tuple(smashed.shape), smashed.detach().reshape(-1))

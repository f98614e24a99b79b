"""RandTopk-SL (Zheng et al., 2023): top-k magnitudes plus a random share of the rest."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from acp_flower.codecs.base import Codec, register_codec
from acp_flower.options import check
from acp_flower.wire import Payload


@dataclass(frozen=True)
class RandTopkOptions:
    """Options of RandTopk-SL."""

    randtopk_k: float = 0.3
    """Fraction of each sample's elements sent."""
    randtopk_alpha: float = 0.1
    """Share of the sent elements drawn at random from the non-top-k ones."""

    def __post_init__(self) -> None:
        check("randtopk_k", 0.0 < self.randtopk_k <= 1.0, "a fraction in (0, 1]")
        check("randtopk_alpha", 0.0 <= self.randtopk_alpha < 1.0, "a fraction in [0, 1)")


@register_codec("randtopk", options=RandTopkOptions)
class RandTopkCodec(Codec):
    """Per sample, send k = round(randtopk_k * d) of its d elements as values + indices.

    A share ``randtopk_alpha`` of the k is drawn uniformly from the elements outside the
    top (k - round(alpha k)) magnitudes; the rest are those top magnitudes. The gradient
    returns at the same indices. Inference sends the plain top-k (no randomness).
    """

    def __init__(self, options: RandTopkOptions, *, total_steps: int = 1, seed: int = 0) -> None:
        super().__init__(options, total_steps=total_steps, seed=seed)
        self.fraction = options.randtopk_k
        self.alpha = options.randtopk_alpha

    def encode(self, smashed: torch.Tensor, labels: torch.Tensor | None = None, *, train: bool = True) -> Payload:
        flat = smashed.detach().reshape(smashed.shape[0], -1)  # B x d
        d = flat.shape[1]
        k = min(d, max(1, round(self.fraction * d)))
        n_rand = round(self.alpha * k) if train else 0
        top = flat.abs().topk(k - n_rand, dim=1, sorted=False).indices
        if n_rand:
            # Random keys, with the top positions pushed below every other key.
            keys = torch.rand(flat.shape, generator=self.generator).to(flat.device)
            keys.scatter_(1, top, -1.0)
            top = torch.cat([top, keys.topk(n_rand, dim=1, sorted=False).indices], dim=1)
        indices = top.sort(dim=1).values
        return Payload(tuple(smashed.shape), flat.gather(1, indices).reshape(-1), indices=indices)

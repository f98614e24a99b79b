"""ADC, Attention-based Double Compression (arXiv 2509.15058) for split Vision Transformers.

Two steps on the smashed data of a training batch (B x D x T, CLS token first), both
driven by the CLS token's attention in the last client block (``cls_attention`` of the
head, B x T, averaged over heads):

1. **Batch compression.** K-means on the B attention vectors groups the samples into at
   most C = round(``adc_batch_ratio`` * B) clusters, class-agnostic; each cluster travels as
   one merged activation, the mean of its members' activations. Its target is the members'
   averaged one-hot label: the upload carries label counts (C x classes, see
   ``wire.Payload.label_counts``) and the server trains on the soft target.
2. **Token selection.** Of each merged activation only ``adc_tokens`` tokens travel: the
   CLS token and the tokens with the highest attention in the cluster's centroid (the mean
   of its members' attention vectors). The head has added the position embedding already,
   so the tail needs no token indices: they, and the cluster assignment, stay on the client.

Backward: the server returns the gradient w.r.t. the C x D x ``adc_tokens`` tensor it
received (compressed like the upload for free). The client puts each token's gradient back
at its position (zeros at dropped tokens) and gives every member of a cluster the merged
gradient divided by the cluster's size: the exact chain rule of the mean, no approximation.

Inference (``train=False``) never merges (it would mix the predictions of test samples):
each sample sends its CLS token and its own most attended tokens (``adc_eval_select``; off
= all tokens, as the authors' code evaluates).

K-means is a small seeded torch implementation (k-means++ initialisation from the codec's
generator, Lloyd iterations, float64 on the CPU), not scikit-learn: a batch is at most a
few hundred points of at most a few hundred dimensions, the result must be identical on
every driver and device for a seed, and a torch version needs no numpy round trip or
extra thread pool. Clusters that end up empty are dropped (the upload then has fewer
merged samples).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from acp_flower.codecs.base import Codec, register_codec
from acp_flower.options import check
from acp_flower.wire import Payload


@dataclass(frozen=True)
class AdcOptions:
    """Options of ADC."""

    adc_batch_ratio: float = 0.5
    """Merged activations per training batch as a fraction of the batch (clusters = round(ratio * B), at least 1)."""
    adc_tokens: int = 8
    """Tokens sent per activation, the CLS token included (1 = CLS only; at most the tokens the head produces)."""
    adc_kmeans_iters: int = 20
    """Most Lloyd iterations of the K-means per batch."""
    adc_kmeans_tol: float = 1e-6
    """K-means stops when no centroid moves more than this (squared Euclidean distance)."""
    adc_eval_select: bool = True
    """At inference send only the adc_tokens most attended tokens of each sample (False = all tokens)."""

    def __post_init__(self) -> None:
        check("adc_batch_ratio", 0.0 < self.adc_batch_ratio <= 1.0, "a fraction in (0, 1]")
        check("adc_tokens", self.adc_tokens >= 1, "an integer >= 1 (tokens sent, CLS included)")
        check("adc_kmeans_iters", self.adc_kmeans_iters >= 1, "an integer >= 1")
        check("adc_kmeans_tol", self.adc_kmeans_tol >= 0, "a number >= 0")


def kmeans(points: torch.Tensor, k: int, generator: torch.Generator, *, iters: int = 20,
           tol: float = 1e-6) -> torch.Tensor:
    """Cluster ``points`` (n x d) into at most ``k`` groups; the cluster id of each point (n,).

    k-means++ seeding from ``generator``, then Lloyd iterations. Ids are consecutive from 0
    in order of the clusters' smallest member; clusters left empty are dropped, and with
    fewer than k distinct points there are fewer clusters (identical points always share one).
    """
    x = points.detach().to("cpu", torch.float64)
    n = x.shape[0]
    k = max(1, min(k, n))
    chosen = [int(torch.randint(n, (1,), generator=generator))]
    d2 = (x - x[chosen[0]]).pow(2).sum(1)
    while len(chosen) < k:
        total = float(d2.sum())
        if total <= 0.0:
            break  # every point coincides with a centre already
        nxt = int(torch.multinomial(d2 / total, 1, generator=generator))
        chosen.append(nxt)
        d2 = torch.minimum(d2, (x - x[nxt]).pow(2).sum(1))
    centres = x[chosen].clone()
    for _ in range(iters):
        assign = torch.cdist(x, centres).argmin(1)
        counts = torch.bincount(assign, minlength=len(centres)).to(x.dtype)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        moved = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centres)
        shift = float((moved - centres).pow(2).sum(1).max())
        centres = moved
        if shift <= tol:
            break
    assign = torch.cdist(x, centres).argmin(1)
    first = torch.full((len(centres),), n, dtype=torch.long).scatter_reduce(0, assign, torch.arange(n), "amin")
    order = torch.argsort(first)[: int((first < n).sum())]  # non-empty clusters by smallest member
    relabel = torch.empty(len(centres), dtype=torch.long)
    relabel[order] = torch.arange(len(order))
    return relabel[assign]


def top_tokens(attention: torch.Tensor, k: int) -> torch.Tensor:
    """Indices (rows x k, ascending) of the CLS token and the k - 1 most attended other tokens."""
    rows, t = attention.shape
    cls = torch.zeros(rows, 1, dtype=torch.long, device=attention.device)
    if k <= 1:
        return cls
    best = attention[:, 1:].topk(k - 1, dim=1).indices + 1
    return torch.cat([cls, best], dim=1).sort(dim=1).values


def _gather_tokens(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (rows x D x T) at token indices idx (rows x k) -> rows x D x k."""
    return x.gather(2, idx[:, None, :].expand(-1, x.shape[1], -1))


@register_codec("adc", options=AdcOptions)
class AdcCodec(Codec):
    """Attention-based double compression: K-means batch merging + top-attention token selection."""

    needs_attention = True

    def __init__(self, options: AdcOptions, *, total_steps: int = 1, seed: int = 0) -> None:
        super().__init__(options, total_steps=total_steps, seed=seed)
        self.head: nn.Module | None = None
        self.num_classes = 0
        self._pending: tuple[torch.Tensor, torch.Tensor, torch.Tensor, tuple[int, ...]] | None = None
        """Of the latest training upload: cluster of each sample, kept tokens per cluster, cluster
        sizes, smashed shape (what ``decode_grad`` needs; never sent)."""

    def attach(self, head: nn.Module, sample_shape: tuple[int, ...], num_classes: int) -> None:
        if not hasattr(head, "cls_attention"):
            raise ValueError("config key 'codec': 'adc' needs a head that exposes its CLS attention "
                             f"(cls_attention); {type(head).__name__} does not")
        shape = tuple(sample_shape)
        if len(shape) != 2:
            raise ValueError(f"config key 'codec': 'adc' needs smashed data D x tokens, the head gives {tuple(shape)}")
        if self.options.adc_tokens > shape[1]:
            raise ValueError(f"config key 'adc_tokens': invalid value {self.options.adc_tokens}; the head produces "
                             f"{shape[1]} tokens (CLS included), so at most {shape[1]}")
        self.head, self.num_classes = head, num_classes

    def _attention(self, smashed: torch.Tensor) -> torch.Tensor:
        att = None if self.head is None else self.head.cls_attention
        if att is None or tuple(att.shape) != (smashed.shape[0], smashed.shape[2]):
            raise RuntimeError("ADC codec: no CLS attention from the head for this batch (attach() the codec to "
                               "the head that produced the smashed data)")
        return att

    def encode(self, smashed: torch.Tensor, labels: torch.Tensor | None = None, *, train: bool = True) -> Payload:
        att = self._attention(smashed)
        x = smashed.detach()
        b, d, t = x.shape
        k = self.options.adc_tokens
        if not train:
            idx = top_tokens(att, k) if self.options.adc_eval_select else None
            kept = x if idx is None else _gather_tokens(x, idx)
            return Payload(tuple(kept.shape), kept.reshape(-1), source_shape=(b, d, t))
        if labels is None:
            raise ValueError("ADC codec: a training batch needs its labels (merged samples carry label counts)")
        clusters = max(1, min(b, round(self.options.adc_batch_ratio * b)))
        assign = kmeans(att, clusters, self.generator, iters=self.options.adc_kmeans_iters,
                        tol=self.options.adc_kmeans_tol).to(x.device)
        members = F.one_hot(assign).T.to(x.dtype)  # C x B
        sizes = members.sum(1)
        merged = (members @ x.reshape(b, -1)).view(-1, d, t) / sizes[:, None, None]
        idx = top_tokens((members @ att.to(x.dtype)) / sizes[:, None], k)
        values = _gather_tokens(merged, idx)
        counts = F.one_hot(assign.cpu()).T @ F.one_hot(labels.cpu().long(), self.num_classes)  # C x classes
        self._pending = (assign, idx, sizes, (b, d, t))
        return Payload(tuple(values.shape), values.reshape(-1), label_counts=counts, source_shape=(b, d, t))

    def decode_grad(self, payload: Payload) -> torch.Tensor:
        """The gradient of every member's full smashed data (B x D x T) from the merged, token-selected one."""
        grad = payload.to_dense()
        if self._pending is None:
            raise RuntimeError("ADC codec: a gradient arrived before any training upload")
        assign, idx, sizes, (b, d, t) = self._pending
        if tuple(grad.shape) != (len(sizes), d, idx.shape[1]):
            raise ValueError(f"ADC codec: gradient of shape {tuple(grad.shape)} does not answer the upload "
                             f"({len(sizes)} x {d} x {idx.shape[1]})")
        full = grad.new_zeros(len(sizes), d, t).scatter_(2, idx[:, None, :].expand(-1, d, -1).to(grad.device), grad)
        return full[assign.to(grad.device)] / sizes.to(grad.device)[assign.to(grad.device), None, None]

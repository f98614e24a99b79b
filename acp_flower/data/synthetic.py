"""Deterministic synthetic image classification data (10 classes, 3 x 32 x 32).

Each class owns a random smooth (low-frequency) template per channel. A sample is its
class template, randomly shifted by a few pixels and scaled by a random gain, plus a
smooth random nuisance field (drawn like a template, so it can resemble other classes)
and white pixel noise, quantized to uint8 like a real image. Everything is drawn from
generators with fixed seeds: the data never depends on the run seed.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["SYNTHETIC_SIZES", "make_synthetic"]

NUM_CLASSES = 10
CHANNELS = 3
IMAGE_SIZE = 32
SYNTHETIC_SIZES = {True: 2000, False: 500}
"""Number of samples per split (train=True / train=False)."""

_TEMPLATE_SEED = 7_000_001
_SPLIT_SEED = {True: 7_000_002, False: 7_000_003}
_GRID = 4  # templates are bicubic upsamplings of a GRID x GRID random field
_MAX_SHIFT = 3  # pixels, each direction
_GAIN = (0.6, 1.4)
_NUISANCE = 2.0  # amplitude of the smooth nuisance field relative to a template
_NOISE = 1.0  # std of the white pixel noise relative to a template
_PIXEL_SCALE = 0.08  # float -> [0, 1] image: 0.5 + scale * value


def _upsampler() -> torch.Tensor:
    """Return the (32, GRID) matrix of 1-D bicubic upsampling (bicubic is separable)."""
    basis = torch.eye(_GRID).view(_GRID, 1, _GRID, 1)
    up = F.interpolate(basis, size=(IMAGE_SIZE, 1), mode="bicubic", align_corners=False)
    return up.view(_GRID, IMAGE_SIZE).T.contiguous()


def _smooth_fields(n: int, gen: torch.Generator) -> torch.Tensor:
    """Return ``n`` smooth random fields, shape (n, 3, 32, 32), unit expected pixel variance."""
    coarse = torch.randn(n * CHANNELS * _GRID, _GRID, generator=gen)
    up = _upsampler()
    rows = (coarse @ up.T).view(n * CHANNELS, _GRID, IMAGE_SIZE)
    fine = (up @ rows).view(n, CHANNELS, IMAGE_SIZE, IMAGE_SIZE)  # 2-D bicubic upsampling
    return fine / (up * up).sum(dim=1).mean()  # E[pixel^2] = mean_h(|up_h|^2) ** 2


def _shifted(templates: torch.Tensor, labels: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Return ``templates[labels]`` circularly shifted by ``shifts`` (n, 2) in [0, 2 * MAX_SHIFT].

    Shape (n, 3, 32, 32). Crops of the circularly padded templates, gathered in one indexing.
    """
    padded = F.pad(templates, (_MAX_SHIFT,) * 4, mode="circular")  # (K, 3, 32 + 2s, 32 + 2s)
    offsets = torch.arange(IMAGE_SIZE)
    rows = (shifts[:, 0:1] + offsets).view(-1, 1, IMAGE_SIZE, 1)
    cols = (shifts[:, 1:2] + offsets).view(-1, 1, 1, IMAGE_SIZE)
    chans = torch.arange(CHANNELS).view(1, CHANNELS, 1, 1)
    return padded[labels.view(-1, 1, 1, 1), chans, rows, cols]


def make_synthetic(train: bool, size: int | None = None) -> tuple[torch.Tensor, np.ndarray]:
    """Generate one split of the synthetic dataset.

    Parameters
    ----------
    train : bool
        Training split (2000 samples) if True, test split (500 samples) otherwise.
    size : int, optional
        Number of samples instead of the split's default (scale tests with more clients
        than 2000 samples); the default size gives the default split exactly.

    Returns
    -------
    images : torch.Tensor
        uint8, shape (N, 3, 32, 32).
    labels : np.ndarray
        int64, shape (N,), balanced over the 10 classes (N / 10 each), shuffled.
    """
    templates = _smooth_fields(NUM_CLASSES, torch.Generator().manual_seed(_TEMPLATE_SEED))
    templates = templates - templates.mean(dim=(1, 2, 3), keepdim=True)
    templates = templates / templates.std(dim=(1, 2, 3), keepdim=True)
    gen = torch.Generator().manual_seed(_SPLIT_SEED[train])
    n = SYNTHETIC_SIZES[train] if size is None else size
    if n < 1:
        raise ValueError(f"synthetic split size must be >= 1, got {n}")
    labels = torch.arange(n) % NUM_CLASSES
    labels = labels[torch.randperm(n, generator=gen)]
    shifts = torch.randint(0, 2 * _MAX_SHIFT + 1, (n, 2), generator=gen)  # index into the shifts
    gain = torch.empty(n, 1, 1, 1).uniform_(*_GAIN, generator=gen)
    x = gain * _shifted(templates, labels, shifts)
    x.add_(_smooth_fields(n, gen), alpha=_NUISANCE)
    x.add_(torch.randn(n, CHANNELS, IMAGE_SIZE, IMAGE_SIZE, generator=gen), alpha=_NOISE)
    pixels = x.mul_(_PIXEL_SCALE * 255.0).add_(127.5).round_().clamp_(0.0, 255.0)
    return pixels.to(torch.uint8), labels.numpy().astype(np.int64)

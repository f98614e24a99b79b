"""Image datasets as fast in-memory tensors: CIFAR-10, Fashion-MNIST, MNIST, synthetic."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Subset

from acp_flower.data.layout import missing_files, read_arrays
from acp_flower.data.synthetic import make_synthetic

__all__ = [
    "DATASETS",
    "DatasetInfo",
    "RandomCropFlip",
    "TensorImageDataset",
    "dataset_info",
    "dataset_labels",
    "load_dataset",
]

DATASETS = ("cifar10", "fashion-mnist", "mnist", "synthetic")


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset.

    Attributes
    ----------
    name : str
        Dataset name, one of `DATASETS`.
    num_classes : int
        Number of classes (labels are 0 .. num_classes - 1).
    in_channels : int
        Image channels C (3 for CIFAR-10 and synthetic, 1 for (Fashion-)MNIST).
    image_size : int
        Height = width of the images (32 or 28).
    """

    name: str
    num_classes: int
    in_channels: int
    image_size: int


_INFO = {
    "cifar10": DatasetInfo("cifar10", 10, 3, 32),
    "fashion-mnist": DatasetInfo("fashion-mnist", 10, 1, 28),
    "mnist": DatasetInfo("mnist", 10, 1, 28),
    "synthetic": DatasetInfo("synthetic", 10, 3, 32),
}

# Per-channel mean / std of the training split, pixels in [0, 1].
_NORM: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "mnist": ((0.1307,), (0.3081,)),
    "synthetic": ((0.4996, 0.4988, 0.5017), (0.1910, 0.1940, 0.1970)),
}


def dataset_info(name: str) -> DatasetInfo:
    """Return the `DatasetInfo` of dataset ``name``.

    Parameters
    ----------
    name : str
        One of `DATASETS`.

    Raises
    ------
    ValueError
        If ``name`` is not a known dataset.
    """
    try:
        return _INFO[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; choose one of {list(DATASETS)}") from None


class TensorImageDataset(Dataset):
    """Images held as one uint8 tensor; per-sample work is tensor-only (no PIL).

    Items are ``(x, y)``: ``x`` float32 (C, H, W), normalized with the dataset's
    mean / std; ``y`` a Python int.

    Parameters
    ----------
    data : torch.Tensor
        uint8 images, shape (N, C, H, W). Not copied; treated as read-only.
    targets : np.ndarray
        Labels, shape (N,), converted to int64.
    mean, std : sequence of float
        Per-channel normalization of pixels in [0, 1].
    transform : callable, optional
        Applied to the uint8 (C, H, W) image before normalization (augmentation).
    """

    def __init__(self, data: torch.Tensor, targets: np.ndarray, mean: tuple[float, ...],
                 std: tuple[float, ...], transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        if data.dtype != torch.uint8 or data.ndim != 4:
            raise ValueError(f"data must be uint8 (N, C, H, W), got {data.dtype} {tuple(data.shape)}")
        if len(targets) != len(data):
            raise ValueError(f"{len(targets)} targets for {len(data)} images")
        self.data = data
        self.targets = np.asarray(targets, dtype=np.int64)
        self.mean, self.std = tuple(mean), tuple(std)
        self.transform = transform
        # x = (u / 255 - mean) / std = u * scale + shift
        std_t = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)
        self._scale = 1.0 / (255.0 * std_t)
        self._shift = -torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1) / std_t

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        img = self.data[index]
        if self.transform is not None:
            img = self.transform(img)
        x = img.to(torch.float32).mul_(self._scale).add_(self._shift)
        return x, int(self.targets[index])


class RandomCropFlip:
    """RandomCrop(size, padding, zero fill) + RandomHorizontalFlip(p) on a uint8 (C, H, W) tensor.

    Bit-identical to ``v2.Compose([v2.RandomCrop(H, padding=padding),
    v2.RandomHorizontalFlip(flip_p)])`` for square images (same draws from torch's global
    RNG in the same order: crop top, crop left, flip), about 10x faster per sample
    because it skips v2's per-call dispatch. A test checks the equality.

    Parameters
    ----------
    padding : int, default 4
        Zero padding on each side before the crop.
    flip_p : float, default 0.5
        Probability of a horizontal flip.
    """

    def __init__(self, padding: int = 4, flip_p: float = 0.5):
        self.padding = int(padding)
        self.flip_p = float(flip_p)

    def __call__(self, img: torch.Tensor) -> torch.Tensor:
        """Return a randomly cropped, maybe flipped copy of uint8 ``img`` (C, H, W)."""
        c, h, w = img.shape
        p = self.padding
        dy = int(torch.randint(0, 2 * p + 1, size=())) - p  # source row of output row 0
        dx = int(torch.randint(0, 2 * p + 1, size=())) - p
        flip = float(torch.rand(1)) < self.flip_p  # v2: flip unless rand >= p
        out = torch.zeros_like(img)
        rows, cols = h - abs(dy), w - abs(dx)  # size of the overlap with the image
        if rows > 0 and cols > 0:
            out[:, max(0, -dy):max(0, -dy) + rows, max(0, -dx):max(0, -dx) + cols] = \
                img[:, max(0, dy):max(0, dy) + rows, max(0, dx):max(0, dx) + cols]
        return out.flip(-1) if flip else out

    def __repr__(self) -> str:
        return f"{type(self).__name__}(padding={self.padding}, flip_p={self.flip_p})"


@functools.lru_cache(maxsize=2)
def _synthetic(train: bool, size: int | None) -> tuple[torch.Tensor, np.ndarray]:
    """Return the synthetic split, cached (it is deterministic: caching changes nothing)."""
    return make_synthetic(train, size)


def _missing_message(name: str, data_dir: Path, missing: list[str]) -> str:
    return (
        f"dataset {name!r} not found in data_dir {str(data_dir)!r} (missing: "
        f"{', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}). Fetch it with:\n"
        f"    acp-flower data fetch {name} --root {data_dir}\n"
        f"or call load_dataset(..., download=True)."
    )


def _real_arrays(name: str, data_dir: str | Path | None, *, train: bool,
                 download: bool) -> tuple[torch.Tensor, np.ndarray]:
    """Check presence (cheap, before any work), fetch if allowed, then read a real dataset."""
    if data_dir is None:
        raise ValueError(f"data_dir is required for dataset {name!r}")
    data_dir = Path(data_dir)
    missing = missing_files(name, data_dir)
    if missing and not download:
        raise FileNotFoundError(_missing_message(name, data_dir, missing))
    if missing:
        from acp_flower.data.fetch import fetch_dataset

        fetch_dataset(name, data_dir)
    return read_arrays(name, data_dir, train=train)


def load_dataset(name: str, data_dir: str | Path | None, *, train: bool, augment: bool = False,
                 download: bool = True, synthetic_size: int | None = None) -> TensorImageDataset:
    """Load one split of a dataset as a `TensorImageDataset`.

    Parameters
    ----------
    name : str
        One of `DATASETS`.
    data_dir : str or Path
        Data root in torchvision's layout (``data_dir/cifar-10-batches-py``,
        ``data_dir/FashionMNIST/raw``, ``data_dir/MNIST/raw``). Ignored for ``synthetic``.
    train : bool
        Training split if True, test split otherwise.
    augment : bool, default False
        RandomCrop(image_size, padding=4) + RandomHorizontalFlip on each access (training
        split only). The randomness comes only from torch's global RNG.
    download : bool, default True
        If the files are absent, fetch them with `acp_flower.data.fetch.fetch_dataset`;
        if False, raise `FileNotFoundError` instead.
    synthetic_size : int, optional
        ``synthetic`` only: number of samples of the split (default: 2000 train, 500 test).

    Returns
    -------
    TensorImageDataset
        Items ``(x, y)``: x float32 (C, H, W) normalized, y int.

    Raises
    ------
    ValueError
        Unknown ``name``, or ``augment`` on a test split.
    FileNotFoundError
        Files absent and ``download`` is False.
    """
    dataset_info(name)  # validates the name
    if augment and not train:
        raise ValueError("augment=True is only allowed for the training split (train=True)")
    if name == "synthetic":
        images, labels = _synthetic(train, synthetic_size)
    else:
        images, labels = _real_arrays(name, data_dir, train=train, download=download)
    mean, std = _NORM[name]
    transform = RandomCropFlip(padding=4) if augment else None
    return TensorImageDataset(images, labels, mean, std, transform)


def dataset_labels(ds: Dataset) -> np.ndarray:
    """Return the int64 labels of every item of ``ds`` without reading any image.

    Parameters
    ----------
    ds : Dataset
        A `TensorImageDataset`, a torchvision dataset (``.targets``), or a
        `torch.utils.data.Subset` / `ConcatDataset` of those.

    Returns
    -------
    np.ndarray
        int64, shape (len(ds),).

    Raises
    ------
    TypeError
        If the labels cannot be found without iterating the dataset.
    """
    if isinstance(ds, Subset):
        return dataset_labels(ds.dataset)[np.asarray(ds.indices, dtype=np.int64)]
    if isinstance(ds, ConcatDataset):
        return np.concatenate([dataset_labels(d) for d in ds.datasets]).astype(np.int64)
    for attr in ("targets", "labels"):
        labels = getattr(ds, attr, None)
        if labels is not None:
            if isinstance(labels, torch.Tensor):
                labels = labels.cpu().numpy()
            return np.asarray(labels, dtype=np.int64)
    raise TypeError(
        f"cannot read labels of {type(ds).__name__} without iterating it: expected a "
        "`.targets` or `.labels` attribute, a Subset or a ConcatDataset"
    )

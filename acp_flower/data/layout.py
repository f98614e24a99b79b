"""On-disk layouts of the real datasets (torchvision's own) and their readers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchvision

__all__ = ["LAYOUTS", "DatasetFileError", "Layout", "check_idx_files", "dataset_dir", "is_present", "missing_files",
           "read_arrays"]


class DatasetFileError(ValueError):
    """A dataset file is present but corrupted (wrong magic number, truncated, wrong counts)."""


@dataclass(frozen=True)
class Layout:
    """Where torchvision keeps one dataset under its ``root`` directory.

    Attributes
    ----------
    subdir : str
        Top directory under root, moved into place as one unit by a fetch.
    files : tuple[str, ...]
        Files (relative to root) that must exist for the dataset to be present.
    """

    subdir: str
    files: tuple[str, ...]


_IDX = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_CIFAR = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
          "test_batch", "batches.meta")

LAYOUTS: dict[str, Layout] = {
    "cifar10": Layout("cifar-10-batches-py", tuple(f"cifar-10-batches-py/{f}" for f in _CIFAR)),
    "fashion-mnist": Layout("FashionMNIST", tuple(f"FashionMNIST/raw/{f}" for f in _IDX)),
    "mnist": Layout("MNIST", tuple(f"MNIST/raw/{f}" for f in _IDX)),
}


def _layout(name: str) -> Layout:
    try:
        return LAYOUTS[name]
    except KeyError:
        raise ValueError(
            f"dataset {name!r} has no files on disk; datasets with files: {sorted(LAYOUTS)}"
        ) from None


def dataset_dir(name: str, root: str | Path) -> Path:
    """Return the directory that holds dataset ``name`` under ``root``.

    Parameters
    ----------
    name : str
        One of ``cifar10``, ``fashion-mnist``, ``mnist``.
    root : str or Path
        Data root (the ``root`` argument of the torchvision dataset classes).

    Returns
    -------
    Path
        ``root/cifar-10-batches-py``, ``root/FashionMNIST`` or ``root/MNIST``.
    """
    return Path(root) / _layout(name).subdir


def missing_files(name: str, root: str | Path) -> list[str]:
    """Return the files of dataset ``name`` that are absent under ``root`` (cheap check)."""
    return [f for f in _layout(name).files if not (Path(root) / f).is_file()]


def is_present(name: str, root: str | Path) -> bool:
    """Return True when every file of dataset ``name`` exists under ``root``.

    Only existence is checked (no reading); `acp_flower.data.fetch.verify_dataset`
    checks counts and checksums.
    """
    return not missing_files(name, root)


class CIFAR10NoMD5(torchvision.datasets.CIFAR10):
    """torchvision's CIFAR-10 reader without the md5 check of the pickled batch files.

    Batches converted from a mirror hold the exact pixels and labels of the original but
    cannot reproduce the original pickle bytes (Python 2 pickles, file names absent), so
    torchvision's md5 check of the files would reject them. `fetch_dataset` verifies the
    decoded content (counts, sha256 of the pixel and label arrays) instead.
    """

    train_list = [[f, None] for f, _ in torchvision.datasets.CIFAR10.train_list]
    test_list = [[f, None] for f, _ in torchvision.datasets.CIFAR10.test_list]
    meta = {**torchvision.datasets.CIFAR10.meta, "md5": None}


_IDX_MAGIC = {3: 0x00000803, 1: 0x00000801}
"""IDX magic numbers of uint8 images (3 dimensions) and uint8 labels (1 dimension)."""


def _refetch(name: str) -> str:
    """What to do about a corrupted file of dataset ``name`` (the end of every DatasetFileError)."""
    return f"delete the dataset's directory and fetch it again (acp-flower data fetch {name})"


def _idx_count(name: str, path: Path, ndim: int) -> int:
    """Items in the uint8 IDX file ``path`` after checking its header against its size."""
    size = path.stat().st_size
    header = 4 + 4 * ndim
    refetch = _refetch(name)
    with path.open("rb") as fh:
        head = fh.read(header)
    if len(head) < 4 or int.from_bytes(head[:4], "big") != _IDX_MAGIC[ndim]:
        got = f"0x{int.from_bytes(head[:4], 'big'):08x}" if len(head) >= 4 else f"{len(head)} bytes"
        raise DatasetFileError(f"dataset file {path}: wrong magic number {got} (expected "
                               f"0x{_IDX_MAGIC[ndim]:08x}, uint8 IDX with {ndim} dimension(s)); {refetch}")
    if len(head) < header:
        raise DatasetFileError(f"dataset file {path}: truncated header ({size} bytes); {refetch}")
    dims = [int.from_bytes(head[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    if size != header + int(np.prod(dims)):
        raise DatasetFileError(f"dataset file {path}: {size} bytes, but its header ({' x '.join(map(str, dims))}) "
                               f"needs {header + int(np.prod(dims))}: truncated or padded; {refetch}")
    return dims[0]


def check_idx_files(name: str, root: str | Path, *, train: bool) -> None:
    """Check the IDX files of one split of (Fashion-)MNIST before torchvision reads them.

    torchvision reports a corrupted file as a bare ``AssertionError`` or a tensor shape
    error; this names the file and what is wrong with it (``DatasetFileError``).
    """
    raw = dataset_dir(name, root) / "raw"
    prefix = "train" if train else "t10k"
    images = _idx_count(name, raw / f"{prefix}-images-idx3-ubyte", 3)
    labels = _idx_count(name, raw / f"{prefix}-labels-idx1-ubyte", 1)
    if images != labels:
        raise DatasetFileError(f"dataset files {raw}/{prefix}-*: {images} images but {labels} labels; "
                               + _refetch(name))


def read_arrays(name: str, root: str | Path, *, train: bool) -> tuple[torch.Tensor, np.ndarray]:
    """Read one split of a real dataset through torchvision's dataset classes.

    Parameters
    ----------
    name : str
        One of ``cifar10``, ``fashion-mnist``, ``mnist``.
    root : str or Path
        Data root in torchvision's layout.
    train : bool
        Training split if True, test split otherwise.

    Returns
    -------
    images : torch.Tensor
        uint8, shape (N, C, H, W): (N, 3, 32, 32) for CIFAR-10, (N, 1, 28, 28) otherwise.
    labels : np.ndarray
        int64, shape (N,).
    """
    root = str(root)
    if name == "cifar10":
        try:
            ds = CIFAR10NoMD5(root=root, train=train, download=False)
        except Exception as exc:  # torchvision unpickles the batches: any failure is a bad file
            raise DatasetFileError(f"dataset cifar10 in {dataset_dir(name, root)}: a batch file is unreadable "
                                   f"({type(exc).__name__}: {exc}); " + _refetch(name)) from exc
        images = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
    elif name in ("fashion-mnist", "mnist"):
        cls = torchvision.datasets.FashionMNIST if name == "fashion-mnist" else torchvision.datasets.MNIST
        check_idx_files(name, root, train=train)
        ds = cls(root=root, train=train, download=False)
        images = ds.data.unsqueeze(1).contiguous()
    else:
        raise ValueError(f"dataset {name!r} has no files on disk; datasets with files: {sorted(LAYOUTS)}")
    labels = np.asarray(ds.targets, dtype=np.int64)
    return images, labels

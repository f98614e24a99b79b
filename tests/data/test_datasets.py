"""Tests of acp_flower.data.datasets and synthetic: shapes, normalization, errors, speed."""

from __future__ import annotations

import pickle
import time

import numpy as np
import pytest
import torch
from torch.utils.data import ConcatDataset, Subset
from torchvision.transforms import v2

from acp_flower.data import (
    DATASETS,
    DatasetInfo,
    dataset_info,
    dataset_labels,
    load_dataset,
)
from acp_flower.data.datasets import RandomCropFlip, TensorImageDataset
from acp_flower.data.synthetic import make_synthetic
from tests.data.conftest import fake_mnist_arrays, write_idx_tree


def test_dataset_info_of_every_dataset():
    # Execute
    infos = {name: dataset_info(name) for name in DATASETS}
    # Assert
    assert infos["cifar10"] == DatasetInfo("cifar10", 10, 3, 32)
    assert infos["fashion-mnist"] == DatasetInfo("fashion-mnist", 10, 1, 28)
    assert infos["mnist"] == DatasetInfo("mnist", 10, 1, 28)
    assert infos["synthetic"] == DatasetInfo("synthetic", 10, 3, 32)
    with pytest.raises(ValueError, match="unknown dataset 'cifar100'"):
        dataset_info("cifar100")


def test_synthetic_is_deterministic_balanced_and_fast():
    # Execute
    start = time.perf_counter()
    train_x, train_y = make_synthetic(True)
    test_x, test_y = make_synthetic(False)
    elapsed = time.perf_counter() - start
    again_x, again_y = make_synthetic(True)
    # Assert
    assert train_x.shape == (2000, 3, 32, 32) and train_x.dtype == torch.uint8
    assert test_x.shape == (500, 3, 32, 32)
    assert np.bincount(train_y).tolist() == [200] * 10
    assert np.bincount(test_y).tolist() == [50] * 10
    assert torch.equal(train_x, again_x) and np.array_equal(train_y, again_y)
    assert not torch.equal(train_x[:500], test_x)
    assert elapsed < 2.0  # about 0.15 s on an idle 2-core machine; loose for shared CI


def test_synthetic_ignores_the_global_rng():
    # Prepare
    torch.manual_seed(123)
    a, _ = make_synthetic(False)
    torch.manual_seed(456)
    # Execute
    b, _ = make_synthetic(False)
    # Assert
    assert torch.equal(a, b)


def test_synthetic_classes_are_separable_by_their_means():
    # Prepare: nearest class mean (train) on the test split; far above chance (0.1)
    train_x, train_y = make_synthetic(True)
    test_x, test_y = make_synthetic(False)
    xtr, xte = train_x.float().flatten(1), test_x.float().flatten(1)
    means = torch.stack([xtr[torch.from_numpy(train_y == k)].mean(0) for k in range(10)])
    # Execute
    pred = torch.cdist(xte, means).argmin(1).numpy()
    # Assert
    assert (pred == test_y).mean() > 0.5


def test_load_synthetic_items_are_normalized_float_and_int():
    # Execute
    ds = load_dataset("synthetic", None, train=True)
    x, y = ds[0]
    # Assert
    assert isinstance(ds, TensorImageDataset) and len(ds) == 2000
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert isinstance(y, int) and 0 <= y < 10
    batch = torch.stack([ds[i][0] for i in range(500)])
    assert batch.mean(dim=(0, 2, 3)).abs().max() < 0.1
    assert (batch.std(dim=(0, 2, 3)) - 1).abs().max() < 0.1


def test_getitem_is_tensor_only_and_fast():
    # Prepare
    ds = load_dataset("synthetic", None, train=True)
    for i in range(100):  # warm-up
        ds[i]
    # Execute
    start = time.perf_counter()
    for i in range(2000):
        ds[i]
    per_sample = (time.perf_counter() - start) / 2000
    # Assert: ~10 us idle; loose bound for a loaded shared machine
    assert per_sample < 200e-6


def test_random_crop_flip_matches_torchvision_v2_draw_for_draw():
    # Prepare
    img = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    ref = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip()])
    ours = RandomCropFlip(padding=4)
    # Execute
    torch.manual_seed(0)
    expected = [ref(img) for _ in range(300)]
    after_ref = torch.rand(1)
    torch.manual_seed(0)
    got = [ours(img) for _ in range(300)]
    after_ours = torch.rand(1)
    # Assert
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))
    assert torch.equal(after_ref, after_ours)  # same RNG consumption


def test_augmentation_is_reproducible_from_the_global_rng():
    # Prepare
    ds = load_dataset("synthetic", None, train=True, augment=True)
    # Execute
    torch.manual_seed(5)
    a = torch.stack([ds[i][0] for i in range(20)])
    torch.manual_seed(5)
    b = torch.stack([ds[i][0] for i in range(20)])
    torch.manual_seed(6)
    c = torch.stack([ds[i][0] for i in range(20)])
    # Assert
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_augment_on_test_split_is_rejected():
    with pytest.raises(ValueError, match="augment"):
        load_dataset("synthetic", None, train=False, augment=True)


def test_missing_data_without_download_names_dir_dataset_and_command(tmp_path):
    # Execute
    with pytest.raises(FileNotFoundError) as info:
        load_dataset("cifar10", tmp_path, train=True, download=False)
    # Assert
    msg = str(info.value)
    assert str(tmp_path) in msg and "'cifar10'" in msg
    assert f"acp-flower data fetch cifar10 --root {tmp_path}" in msg
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_load_fashion_mnist_from_torchvision_layout(tmp_path):
    # Prepare
    arrays = fake_mnist_arrays(n_train=20, n_test=10)
    write_idx_tree(tmp_path / "FashionMNIST" / "raw", arrays, gz=False)
    # Execute
    train = load_dataset("fashion-mnist", tmp_path, train=True, download=False)
    test = load_dataset("fashion-mnist", tmp_path, train=False, download=False)
    # Assert
    assert len(train) == 20 and len(test) == 10
    x, y = train[3]
    assert x.shape == (1, 28, 28) and y == 3
    expected = (arrays["train-images-idx3-ubyte"][3] / 255.0 - 0.2860) / 0.3530
    assert torch.allclose(x[0], torch.from_numpy(expected).float(), atol=1e-5)
    assert dataset_labels(test).tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()


def test_dataset_labels_of_subsets_concats_and_unknown():
    # Prepare
    ds = load_dataset("synthetic", None, train=False)
    labels = dataset_labels(ds)
    # Execute / Assert
    assert labels.dtype == np.int64 and labels.shape == (500,)
    assert dataset_labels(Subset(ds, [4, 2, 9])).tolist() == labels[[4, 2, 9]].tolist()
    assert dataset_labels(ConcatDataset([ds, ds])).tolist() == labels.tolist() * 2

    class NoLabels(torch.utils.data.Dataset):
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return 0

    with pytest.raises(TypeError, match="NoLabels"):
        dataset_labels(NoLabels())


def test_tensor_dataset_validates_and_pickles():
    # Prepare
    data = torch.zeros(4, 1, 2, 2, dtype=torch.uint8)
    # Execute / Assert
    with pytest.raises(ValueError, match="uint8"):
        TensorImageDataset(data.float(), np.zeros(4), (0.5,), (0.5,))
    with pytest.raises(ValueError, match="3 targets for 4 images"):
        TensorImageDataset(data, np.zeros(3), (0.5,), (0.5,))
    ds = TensorImageDataset(data, np.arange(4), (0.0,), (1.0,), RandomCropFlip())
    clone = pickle.loads(pickle.dumps(ds))
    assert clone[2][1] == 2 and clone[2][0].shape == (1, 2, 2)

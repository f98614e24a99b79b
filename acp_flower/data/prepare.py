"""A run's data: the datasets of its config, subset and partitioned over its clients."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset, Subset

from acp_flower.config import ExperimentConfig
from acp_flower.data.datasets import dataset_labels, load_dataset
from acp_flower.data.partition import partition_indices
from acp_flower.seeds import derive_seed


@dataclass
class PreparedData:
    """Datasets and the client partitions of a config."""

    train_set: Dataset
    test_set: Dataset
    partitions: list[np.ndarray]
    """Indices into ``train_set`` per client id."""


def seeded_subset(n: int, size: int, seed: int, key_name: str, key: int) -> np.ndarray:
    """Sorted indices of a seeded draw of ``size`` of ``n`` samples (stream ``key``).

    Raises ``ValueError`` naming the config key ``key_name`` when ``size > n``.
    """
    if size > n:
        raise ValueError(f"config key {key_name!r}: {size} requested but the dataset has {n} samples")
    rng = np.random.default_rng(derive_seed(seed, key))
    return np.sort(rng.choice(n, size=size, replace=False))


def prepare_data(cfg: ExperimentConfig) -> PreparedData:
    """Load (fetching if allowed) the datasets, subset them and partition the training data.

    Every data-related mistake in the config raises here, before any output is written.
    """
    size = cfg.synthetic_train_size if cfg.dataset == "synthetic" else None
    train_set = load_dataset(cfg.dataset, cfg.data_dir, train=True, augment=cfg.augment, download=cfg.download,
                             synthetic_size=size)
    test_set = load_dataset(cfg.dataset, cfg.data_dir, train=False, download=cfg.download)
    labels = dataset_labels(train_set)
    pool = np.arange(len(labels))
    if cfg.train_subset:
        pool = seeded_subset(len(labels), cfg.train_subset, cfg.seed, "train_subset", key=4)
    if cfg.num_clients > len(pool):
        raise ValueError(f"config key 'num_clients': {cfg.num_clients} clients but only {len(pool)} training samples")
    parts = partition_indices(
        labels[pool], cfg.num_clients, cfg.partition, seed=cfg.seed, alpha=cfg.dirichlet_alpha,
        shards_per_client=cfg.shards_per_client, classes_per_client=cfg.classes_per_client,
    )
    empty = [cid for cid, p in enumerate(parts) if len(p) == 0]
    if empty:
        raise ValueError(f"partition {cfg.partition!r} left clients {empty} without data; "
                         "use fewer clients or another partition setting")
    if cfg.eval_bn_recalibration > len(pool):
        raise ValueError(f"config key 'eval_bn_recalibration': {cfg.eval_bn_recalibration} samples requested "
                         f"but the run has {len(pool)} training samples")
    if cfg.test_subset:
        test_set = Subset(test_set, seeded_subset(len(test_set), cfg.test_subset, cfg.seed, "test_subset",
                                                  key=5).tolist())
    return PreparedData(train_set, test_set, [pool[p] for p in parts])

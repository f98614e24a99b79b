"""Tests of acp_flower.data.partition: sizes, reproducibility, skew, errors, histograms."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from acp_flower.data import (  # noqa: E402
    SCHEMES,
    class_histogram,
    partition_indices,
    partition_summary,
    plot_class_histogram,
)
from acp_flower.data.partition import _partitioner  # noqa: E402


def _labels(n: int = 1000, k: int = 10, seed: int = 0) -> np.ndarray:
    """Balanced labels in random order."""
    return np.random.default_rng(seed).permutation(np.arange(n) % k)


def _mean_kl_to_global(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    """Mean over clients of KL(client label distribution || pooled distribution)."""
    return partition_summary(class_histogram(labels, parts))["mean_kl"]


@pytest.mark.filterwarnings("ignore:pathological partitioning")
@pytest.mark.parametrize("scheme", SCHEMES)
def test_partitions_are_sorted_disjoint_int64_and_reproducible(scheme):
    # Prepare
    labels = _labels()
    # Execute
    a = partition_indices(labels, 7, scheme, seed=3)
    b = partition_indices(labels, 7, scheme, seed=3)
    c = partition_indices(labels, 7, scheme, seed=4)
    # Assert
    assert len(a) == 7
    assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in a)
    merged = np.concatenate(a)
    assert len(np.unique(merged)) == len(merged) and merged.min() >= 0 and merged.max() < len(labels)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert any(not np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_iid_sizes_are_equal_and_cover_everything():
    # Execute
    parts = partition_indices(_labels(1003), 10, "iid", seed=0)
    # Assert
    sizes = [len(p) for p in parts]
    assert sum(sizes) == 1003 and max(sizes) - min(sizes) <= 1
    assert _mean_kl_to_global(_labels(1003), parts) < 0.1


def test_iid_shuffles_even_sorted_labels():
    # Prepare: sorted labels (IidPartitioner alone would give each client 1-2 classes)
    labels = np.repeat(np.arange(10), 100)
    # Execute
    hist = class_histogram(labels, partition_indices(labels, 5, "iid", seed=0))
    # Assert
    assert (hist.to_numpy() > 0).all()


def test_dirichlet_covers_everything_and_skew_grows_as_alpha_shrinks():
    # Prepare
    labels = _labels(2000)
    # Execute
    kl = {}
    for alpha in (100.0, 1.0, 0.1):
        parts = partition_indices(labels, 10, "dirichlet", seed=0, alpha=alpha)
        assert sum(len(p) for p in parts) == 2000
        assert min(len(p) for p in parts) >= 10
        kl[alpha] = _mean_kl_to_global(labels, parts)
    # Assert
    assert kl[100.0] < 0.05 < kl[1.0] < kl[0.1]


def test_dirichlet_small_dataset_works_quickly():
    # Execute: 200 samples, 5 clients (min partition size capped at 200 // 50 = 4)
    parts = partition_indices(_labels(200), 5, "dirichlet", seed=1, alpha=0.5)
    # Assert
    assert sum(len(p) for p in parts) == 200 and min(len(p) for p in parts) >= 4


def test_dirichlet_infeasible_fails_clearly_with_the_arguments():
    # Execute / Assert: 20 clients, 40 samples, alpha 0.01: some client stays empty
    with pytest.raises(ValueError, match=r"partitioning failed for scheme='dirichlet'.*alpha=0.01"):
        partition_indices(_labels(40), 20, "dirichlet", seed=0, alpha=0.01)


def test_shard_sizes_and_classes_per_client():
    # Prepare
    labels = _labels(1000)
    # Execute
    parts = partition_indices(labels, 10, "shard", seed=0, shards_per_client=2)
    # Assert: 20 shards of 50 samples (sorted by label): each client sees few classes
    assert [len(p) for p in parts] == [100] * 10
    assert max((class_histogram(labels, parts).to_numpy() > 0).sum(axis=1)) <= 4


def test_shard_drops_the_remainder():
    # Execute: 1003 samples / (3 * 2) shards = 167 per shard, 1 sample dropped
    parts = partition_indices(_labels(1003), 3, "shard", seed=0, shards_per_client=2)
    # Assert
    assert [len(p) for p in parts] == [334] * 3


def test_pathological_gives_each_client_its_classes():
    # Prepare
    labels = _labels(1000)
    # Execute
    parts = partition_indices(labels, 20, "pathological", seed=0, classes_per_client=2)
    hist = class_histogram(labels, parts).to_numpy()
    # Assert: exactly 2 classes per client, every class used, all samples kept
    assert ((hist > 0).sum(axis=1) == 2).all()
    assert (hist.sum(axis=0) == 100).all()
    assert sum(len(p) for p in parts) == 1000


def test_pathological_with_few_clients_may_drop_classes():
    # Execute: 3 clients x 2 classes cover at most 6 of 10 classes
    labels = _labels(1000)
    with pytest.warns(UserWarning, match="are held by no client"):
        parts = partition_indices(labels, 3, "pathological", seed=0, classes_per_client=2)
    # Assert
    assert sum(len(p) for p in parts) <= 600


@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::FutureWarning")
@pytest.mark.parametrize("scheme", ["dirichlet", "shard", "pathological"])
def test_fast_path_matches_load_partition(scheme):
    # Prepare: the reference is flwr-datasets' public load_partition
    from datasets import Dataset

    labels = _labels(300)
    table = Dataset.from_dict({"label": labels, "idx": np.arange(300)})
    part = _partitioner(scheme, 4, 300, 7, 0.5, 2, 2)
    part.dataset = table
    expected = [np.sort(np.asarray(part.load_partition(i)["idx"])) for i in range(4)]
    # Execute
    got = partition_indices(labels, 4, scheme, seed=7)
    # Assert
    assert all(np.array_equal(e, g) for e, g in zip(expected, got, strict=True))


@pytest.mark.parametrize("n, k", [(300, 4), (303, 7), (10, 10)])
def test_iid_fast_path_matches_load_partition(n, k):
    from datasets import Dataset

    from acp_flower.data.partition import _partition_rows

    order = np.random.default_rng(3).permutation(n)
    part = _partitioner("iid", k, n, 3, 0.5, 2, 2)
    part.dataset = Dataset.from_dict({"label": _labels(n)[order], "idx": order})
    expected = [np.asarray(part.load_partition(i)["idx"]) for i in range(k)]
    got = _partition_rows(part, k)
    assert all(np.array_equal(e, g) for e, g in zip(expected, got, strict=True))


@pytest.mark.parametrize("kwargs, match", [
    (dict(scheme="natural"), r"scheme='natural' is unknown.*'iid', 'dirichlet', 'shard', 'pathological'"),
    (dict(num_partitions=0), r"num_partitions=0 must be >= 1"),
    (dict(num_partitions=101), r"num_partitions=101 > 100 samples: more clients than samples"),
    (dict(num_partitions=2.5), r"num_partitions=2.5 must be an int"),
    (dict(scheme="dirichlet", alpha=0.0), r"alpha=0.0 must be > 0"),
    (dict(scheme="dirichlet", alpha=-1), r"alpha=-1 must be > 0"),
    (dict(scheme="shard", num_partitions=60, shards_per_client=2),
     r"shards_per_client \* num_partitions = 2 \* 60 > 100 samples"),
    (dict(scheme="shard", shards_per_client=0), r"shards_per_client=0 must be >= 1"),
    (dict(scheme="pathological", classes_per_client=11), r"classes_per_client=11 > 10 classes"),
    (dict(scheme="pathological", classes_per_client=0), r"classes_per_client=0 must be >= 1"),
])
def test_bad_arguments_raise_value_error_naming_them(kwargs, match):
    # Prepare
    args = dict(labels=_labels(100), num_partitions=5, scheme="iid", seed=0) | kwargs
    # Execute / Assert
    with pytest.raises(ValueError, match=match):
        partition_indices(**args)


def test_empty_labels_are_rejected():
    with pytest.raises(ValueError, match="labels"):
        partition_indices(np.array([], dtype=np.int64), 1, "iid", seed=0)


def test_class_histogram_counts_and_plot():
    # Prepare
    labels = np.array([0, 1, 1, 2, 2, 2])
    parts = [np.array([0, 1]), np.array([2, 3, 4, 5])]
    # Execute
    df = class_histogram(labels, parts, num_classes=4)
    ax = plot_class_histogram(df, title="toy")
    bare = plot_class_histogram(df, legend=False)
    # Assert
    assert df.index.name == "client" and list(df.columns) == [0, 1, 2, 3]
    assert df.to_numpy().tolist() == [[1, 1, 0, 0], [0, 1, 3, 0]]
    assert ax.get_title() == "toy" and len(ax.patches) == 2 * 4
    assert ax.get_legend() is not None and bare.get_legend() is None
    with pytest.raises(ValueError, match="num_classes=2"):
        class_histogram(labels, parts, num_classes=2)


def test_partition_summary_by_hand():
    # Prepare: client 0 holds classes 0 and 1, client 1 only class 0, client 2 nothing
    labels = np.array([0, 1, 0, 1, 0, 0])
    hist = class_histogram(labels, [np.array([0, 1]), np.array([2, 4, 5]), np.array([], dtype=np.int64)])
    # Execute
    summary = partition_summary(hist)
    # Assert: pooled over the assigned samples = (4/5, 1/5); client 0 = (1/2, 1/2)
    pooled = np.array([4 / 5, 1 / 5])
    kl0 = 0.5 * np.log(0.5 / pooled[0]) + 0.5 * np.log(0.5 / pooled[1])
    kl1 = np.log(1 / pooled[0])
    assert summary == pytest.approx({"clients": 3, "samples": 5, "min_size": 0, "max_size": 3,
                                     "classes_per_client": 1.0, "mean_kl": (kl0 + kl1) / 2})

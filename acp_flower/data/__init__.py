"""Datasets (torchvision layouts + synthetic), client partitioning, a run's prepared data, fetching."""

from acp_flower.data.datasets import (
    DATASETS,
    DatasetInfo,
    TensorImageDataset,
    dataset_info,
    dataset_labels,
    load_dataset,
)
from acp_flower.data.partition import (
    SCHEMES,
    class_histogram,
    partition_indices,
    partition_summary,
    plot_class_histogram,
)
from acp_flower.data.prepare import PreparedData, prepare_data, seeded_subset

__all__ = [
    "PreparedData",
    "DATASETS",
    "SCHEMES",
    "DatasetInfo",
    "TensorImageDataset",
    "class_histogram",
    "dataset_info",
    "dataset_labels",
    "load_dataset",
    "partition_indices",
    "partition_summary",
    "plot_class_histogram",
    "prepare_data",
    "seeded_subset",
]

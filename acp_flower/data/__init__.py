"""Datasets (torchvision layouts + synthetic), client partitioning, and dataset fetching."""

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

__all__ = [
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
]

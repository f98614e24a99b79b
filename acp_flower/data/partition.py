"""Split a labelled dataset among clients (flwr-datasets partitioners) and inspect the split.

Schemes of `partition_indices` (each a flwr-datasets partitioner run on a local in-memory
table ``{label, idx}``, no hub access):

- ``iid``: rows shuffled with ``seed``, then `IidPartitioner` (contiguous equal shards).
  Sizes differ by at most 1 and sum to ``len(labels)``.
- ``dirichlet``: `DirichletPartitioner` with concentration ``alpha`` (smaller is more
  skewed), re-drawn (at most 10 times) until every client has at least
  ``min(10, len(labels) // (10 * num_partitions))`` samples (at least 1). Sizes sum to
  ``len(labels)``.
- ``shard``: `ShardPartitioner`: rows sorted by label, cut into
  ``num_partitions * shards_per_client`` shards of ``len(labels) // that`` samples; each
  client gets ``shards_per_client`` random shards. The remainder rows (fewer than one
  shard per client) are dropped.
- ``pathological``: `PathologicalPartitioner` with ``classes_per_client`` classes per
  client (mode ``first-deterministic``: client i surely gets class ``i % K``, the others
  at random); each class is split evenly among the clients that have it. Classes no
  client has are dropped, with a warning (possible when num_partitions *
  classes_per_client is small).

flwr-datasets (and the Hugging Face ``datasets`` package under it), pandas and
matplotlib are imported lazily, inside the functions that need them.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas
    from matplotlib.axes import Axes

__all__ = ["SCHEMES", "class_histogram", "partition_indices", "partition_summary", "plot_class_histogram"]

SCHEMES = ("iid", "dirichlet", "shard", "pathological")

_DIRICHLET_MAX_MIN_SIZE = 10  # flwr-datasets' default min_partition_size


def _check_args(labels: np.ndarray, num_partitions: int, scheme: str, alpha: float,
                shards_per_client: int, classes_per_client: int) -> None:
    """Raise ValueError naming the first bad argument."""
    n = len(labels)
    for name, value in (("num_partitions", num_partitions), ("shards_per_client", shards_per_client),
                        ("classes_per_client", classes_per_client)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name}={value!r} must be an int")
    if scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r} is unknown; choose one of {list(SCHEMES)}")
    if labels.ndim != 1 or n == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    if num_partitions < 1:
        raise ValueError(f"num_partitions={num_partitions} must be >= 1")
    if num_partitions > n:
        raise ValueError(f"num_partitions={num_partitions} > {n} samples: more clients than samples")
    if scheme == "dirichlet" and not alpha > 0:
        raise ValueError(f"alpha={alpha} must be > 0 for scheme='dirichlet'")
    if scheme == "shard":
        if shards_per_client < 1:
            raise ValueError(f"shards_per_client={shards_per_client} must be >= 1")
        if shards_per_client * num_partitions > n:
            raise ValueError(
                f"shards_per_client * num_partitions = {shards_per_client} * {num_partitions} "
                f"> {n} samples: shards would be empty"
            )
    if scheme == "pathological":
        num_classes = len(np.unique(labels))
        if classes_per_client < 1:
            raise ValueError(f"classes_per_client={classes_per_client} must be >= 1")
        if classes_per_client > num_classes:
            raise ValueError(
                f"classes_per_client={classes_per_client} > {num_classes} classes present in labels"
            )


def _partitioner(scheme: str, num_partitions: int, n: int, seed: int, alpha: float,
                 shards_per_client: int, classes_per_client: int) -> Any:
    """Build the flwr-datasets partitioner of ``scheme``."""
    from flwr_datasets import partitioner as fp

    if scheme == "iid":
        return fp.IidPartitioner(num_partitions=num_partitions)
    if scheme == "dirichlet":
        # flwr-datasets re-draws (at most 10 times) until every client has
        # min_partition_size samples; cap it so that small datasets remain feasible.
        min_size = max(1, min(_DIRICHLET_MAX_MIN_SIZE, n // (10 * num_partitions)))
        return fp.DirichletPartitioner(num_partitions=num_partitions, partition_by="label",
                                       alpha=float(alpha), min_partition_size=min_size,
                                       self_balancing=False, shuffle=True, seed=seed)
    if scheme == "shard":
        return fp.ShardPartitioner(num_partitions=num_partitions, partition_by="label",
                                   num_shards_per_partition=int(shards_per_client),
                                   shuffle=True, seed=seed)
    return fp.PathologicalPartitioner(num_partitions=num_partitions, partition_by="label",
                                      num_classes_per_partition=int(classes_per_client),
                                      class_assignment_mode="first-deterministic",
                                      shuffle=True, seed=seed)


def _partition_rows(part: Any, num_partitions: int) -> list[np.ndarray]:
    """Return the ``idx`` column of every partition of a flwr-datasets partitioner.

    ``load_partition`` goes through ``datasets.Dataset.select``, which hashes its index
    list element by element (seconds for 50k numpy ints). The non-IID partitioners keep
    their assignment in ``_partition_id_to_indices`` (row positions in ``part.dataset``,
    which ShardPartitioner re-sorts); read it there when present. IidPartitioner's partition
    i is contiguous shard i of the table (``Dataset.shard(contiguous=True)``: the first
    ``n % k`` shards one row longer), which ``np.array_split`` cuts the same way without a
    Dataset per client (10,000 clients: 12 s -> ms). Tests check both equal ``load_partition``.
    """
    from flwr_datasets.partitioner import IidPartitioner

    if isinstance(part, IidPartitioner):
        return np.array_split(np.asarray(part.dataset["idx"], dtype=np.int64), num_partitions)
    if hasattr(part, "_partition_id_to_indices"):
        _ = part.num_partitions  # public property: computes (once) the assignment
        mapping = part._partition_id_to_indices  # pylint: disable=protected-access
        idx = np.asarray(part.dataset["idx"], dtype=np.int64)
        return [idx[np.asarray(mapping[i], dtype=np.int64)] for i in range(num_partitions)]
    return [np.asarray(part.load_partition(i)["idx"], dtype=np.int64) for i in range(num_partitions)]


def partition_indices(labels: np.ndarray, num_partitions: int, scheme: str, *, seed: int,
                      alpha: float = 0.5, shards_per_client: int = 2,
                      classes_per_client: int = 2) -> list[np.ndarray]:
    """Split sample indices among ``num_partitions`` clients.

    See the module docstring for what each scheme does and which samples it may drop.

    Parameters
    ----------
    labels : np.ndarray
        Integer label of every sample, shape (N,).
    num_partitions : int
        Number of clients, 1 <= num_partitions <= N.
    scheme : str
        One of ``iid``, ``dirichlet``, ``shard``, ``pathological``.
    seed : int
        Seed of the partitioner: the same seed gives the same split.
    alpha : float, default 0.5
        Dirichlet concentration (``dirichlet`` only), > 0.
    shards_per_client : int, default 2
        Shards per client (``shard`` only).
    classes_per_client : int, default 2
        Classes per client (``pathological`` only).

    Returns
    -------
    list of np.ndarray
        ``num_partitions`` sorted int64 arrays of indices into ``labels``, pairwise disjoint.

    Raises
    ------
    ValueError
        A bad argument (named in the message), or a partitioner failure (re-raised with
        the arguments, e.g. Dirichlet cannot give every client enough samples).
    """
    labels = np.asarray(labels)
    _check_args(labels, num_partitions, scheme, alpha, shards_per_client, classes_per_client)
    args: dict[str, Any] = dict(scheme=scheme, num_partitions=int(num_partitions), seed=seed, alpha=alpha,
                shards_per_client=shards_per_client, classes_per_client=classes_per_client)
    try:
        parts = _run_partitioner(labels, **args)
    except (ValueError, TypeError) as err:
        shown = ", ".join(f"{k}={v!r}" for k, v in args.items())
        raise ValueError(f"partitioning failed for {shown}, len(labels)={len(labels)}: {err}") from err
    unused = np.setdiff1d(np.unique(labels), labels[np.concatenate(parts)])
    if scheme == "pathological" and len(unused):
        warnings.warn(f"pathological partitioning: classes {unused.tolist()} are held by no client "
                      f"({num_partitions} clients x {classes_per_client} classes); their samples "
                      "are left out", stacklevel=2)
    return parts


def _run_partitioner(labels: np.ndarray, *, num_partitions: int, scheme: str, seed: int,
                     alpha: float, shards_per_client: int, classes_per_client: int) -> list[np.ndarray]:
    """Run the flwr-datasets partitioner of ``scheme``; return sorted index arrays."""
    from datasets import Dataset

    n = len(labels)
    order = np.random.default_rng(seed).permutation(n) if scheme == "iid" else np.arange(n)
    table = Dataset.from_dict({"label": labels[order].astype(np.int64), "idx": order})
    table = table.with_format("arrow")  # columns as Arrow arrays: no per-row Python
    part = _partitioner(scheme, num_partitions, n, seed, alpha, shards_per_client, classes_per_client)
    part.dataset = table
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # retry / unused-class warnings; see partition_indices
        return [np.sort(p) for p in _partition_rows(part, num_partitions)]


def class_histogram(labels: np.ndarray, partitions: list[np.ndarray],
                    num_classes: int | None = None) -> pandas.DataFrame:
    """Count the samples of each class in each partition.

    Parameters
    ----------
    labels : np.ndarray
        Integer label of every sample, shape (N,).
    partitions : list of np.ndarray
        Index arrays into ``labels``, one per client.
    num_classes : int, optional
        Number of columns; default ``labels.max() + 1``.

    Returns
    -------
    pandas.DataFrame
        Shape (num_partitions, num_classes), int64 counts; index ``client`` 0..P-1,
        columns the class ids 0..K-1.
    """
    import pandas as pd

    labels = np.asarray(labels, dtype=np.int64)
    k = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if len(labels) and int(labels.max()) >= k:
        raise ValueError(f"num_classes={k} but labels go up to {int(labels.max())}")
    counts = np.stack([np.bincount(labels[np.asarray(p, dtype=np.int64)], minlength=k)
                       for p in partitions]) if partitions else np.zeros((0, k), np.int64)
    df = pd.DataFrame(counts.astype(np.int64), columns=list(range(k)))
    df.index.name, df.columns.name = "client", "class"
    return df


def partition_summary(hist: pandas.DataFrame) -> dict[str, float]:
    """Summarize a `class_histogram`: sizes and label skew of the partitions.

    Parameters
    ----------
    hist : pandas.DataFrame
        Output of `class_histogram` (rows clients, columns classes, counts).

    Returns
    -------
    dict
        ``clients``; ``samples`` (total assigned); ``min_size``, ``max_size`` (per
        client); ``classes_per_client`` (mean number of classes a client holds);
        ``mean_kl`` (mean over clients of the KL divergence, in nats, of the client's
        label distribution from the pooled one: 0 for identical distributions, larger
        is more skewed; empty clients are skipped).
    """
    counts = hist.to_numpy(dtype=np.float64)
    sizes = counts.sum(axis=1)
    pooled = counts.sum(axis=0) / max(counts.sum(), 1.0)
    full = counts[sizes > 0]
    p = full / full.sum(axis=1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        kl = np.where(p > 0, p * np.log(p / pooled), 0.0).sum(axis=1)
    return {
        "clients": int(len(counts)),
        "samples": int(sizes.sum()),
        "min_size": int(sizes.min()) if len(sizes) else 0,
        "max_size": int(sizes.max()) if len(sizes) else 0,
        "classes_per_client": float((counts > 0).sum(axis=1).mean()) if len(counts) else 0.0,
        "mean_kl": float(kl.mean()) if len(kl) else 0.0,
    }


def plot_class_histogram(df: pandas.DataFrame, ax: Axes | None = None,
                         title: str | None = None, *, legend: bool = True) -> Axes:
    """Plot a `class_histogram` as one stacked bar per client, one colour per class.

    Parameters
    ----------
    df : pandas.DataFrame
        Output of `class_histogram` (rows clients, columns classes).
    ax : matplotlib.axes.Axes, optional
        Where to draw; a new figure if None.
    title : str, optional
        Axes title.
    legend : bool, default True
        Add a legend of the class colours (outside the axes, on the right).

    Returns
    -------
    matplotlib.axes.Axes
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(max(4.0, min(12.0, 0.25 * len(df) + 3)), 3.5))
    cmap = plt.get_cmap("tab10" if df.shape[1] <= 10 else "tab20")
    bottom = np.zeros(len(df))
    x = np.arange(len(df))
    width = 0.8 if len(df) <= 50 else 1.0
    for j, col in enumerate(df.columns):
        values = df[col].to_numpy()
        ax.bar(x, values, bottom=bottom, width=width, color=cmap(j % cmap.N), label=str(col),
               linewidth=0)
        bottom += values
    ax.set_xlabel("client")
    ax.set_ylabel("samples")
    if len(df) <= 20:
        ax.set_xticks(x)
    if legend:
        ax.legend(title="class", fontsize="x-small", title_fontsize="small", ncol=1,
                  loc="upper left", bbox_to_anchor=(1.0, 1.0))
    if title is not None:
        ax.set_title(title)
    return ax

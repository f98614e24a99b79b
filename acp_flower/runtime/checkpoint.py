"""Round-boundary checkpoints of a run, so that a long run survives an interruption.

A checkpoint holds everything the next round reads: the strategy's global model, every
client's head, optimizer, codec and RNG state, every tail slot with its optimizer, the
global torch RNG of the driver's process, the metrics rows and the client faults so far.
Resuming from it gives the same metrics, bit for bit, as a run that was never interrupted
(local runner: tests/test_checkpoint.py; ``flwr run``: tests/integration/test_flwr_run.py).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from acp_flower.config import ExperimentConfig, config_diff

CHECKPOINT_FILE = "checkpoint.pt"
"""In a run's out-dir: the state after its last finished round (while the run is unfinished)."""
_FORMAT = 1


@dataclass
class Checkpoint:
    """The state of a run after ``server_round`` (see the module docstring)."""

    server_round: int
    rows: list[dict[str, Any]]
    strategy: dict[str, Any]
    clients: dict[int, Any]
    tails: dict[int, Any]
    torch_rng: torch.Tensor
    failures: list[dict[str, Any]] = field(default_factory=list)
    """The client faults so far (summary.json ``failures``)."""


def save_checkpoint(out_dir: str | Path, cfg: ExperimentConfig, ckpt: Checkpoint) -> Path:
    """Write ``out_dir/checkpoint.pt`` atomically (a crash mid-write keeps the previous one)."""
    path = Path(out_dir) / CHECKPOINT_FILE
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"format": _FORMAT, "config": cfg.to_dict(), **vars(ckpt)}, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(out_dir: str | Path, cfg: ExperimentConfig) -> Checkpoint | None:
    """The checkpoint in ``out_dir``, or None if there is none.

    Raises ``ValueError`` naming the file if it is unreadable or was made with a config
    that differs from ``cfg`` in a key that changes results.
    """
    path = Path(out_dir) / CHECKPOINT_FILE
    if not path.exists():
        return None
    if not zipfile.is_zipfile(path):
        raise ValueError(f"checkpoint {path} is unreadable (not a file written by torch.save); "
                         "delete it to start the run over")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a truncated or foreign file
        raise ValueError(f"checkpoint {path} is unreadable ({exc}); delete it to start the run over") from exc
    if not isinstance(raw, dict) or raw.get("format") != _FORMAT:
        raise ValueError(f"checkpoint {path} has an unknown format; delete it to start the run over")
    diff = config_diff(raw["config"], cfg)
    if diff:
        raise ValueError(f"checkpoint {path} was made with a different config (keys {diff}); "
                         "use that config, another output directory, or delete the checkpoint")
    return Checkpoint(**{k: v for k, v in raw.items() if k not in ("format", "config")})


def remove_checkpoint(out_dir: str | Path) -> None:
    (Path(out_dir) / CHECKPOINT_FILE).unlink(missing_ok=True)

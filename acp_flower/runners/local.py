"""Local in-process driver: every client and tail in one process (tests, notebooks, baseline)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Subset
from tqdm.auto import tqdm

from acp_flower.config import ExperimentConfig
from acp_flower.metrics import RunRecorder, check_out_dir
from acp_flower.runners.checkpoint import Checkpoint, load_checkpoint, remove_checkpoint, save_checkpoint
from acp_flower.runtime import (
    ClientResult, ClientRuntime, Evaluator, TailSlots, TailSlotsExecutor, build_client, derive_seed,
    initial_states, resolve_device,
)
from strategies import ClientTask, RoundOutcome, get_strategy

log = logging.getLogger("acp_flower")


@dataclass
class PreparedData:
    """Datasets and the client partitions of a config."""

    train_set: Dataset
    test_set: Dataset
    partitions: list[np.ndarray]
    """Indices into ``train_set`` per client id."""


def prepare_data(cfg: ExperimentConfig) -> PreparedData:
    """Load (fetching if allowed) the datasets, subset them and partition the training data.

    Every data-related mistake in the config raises here, before any output is written.
    """
    from acp_flower.data import dataset_labels, load_dataset, partition_indices

    train_set = load_dataset(cfg.dataset, cfg.data_dir, train=True, augment=cfg.augment, download=cfg.download)
    test_set = load_dataset(cfg.dataset, cfg.data_dir, train=False, download=cfg.download)
    labels = dataset_labels(train_set)
    pool = np.arange(len(labels))
    if cfg.train_subset:
        pool = _subset(len(labels), cfg.train_subset, cfg.seed, "train_subset", key=4)
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
        test_set = Subset(test_set, _subset(len(test_set), cfg.test_subset, cfg.seed, "test_subset", key=5).tolist())
    return PreparedData(train_set, test_set, [pool[p] for p in parts])


def build_evaluator(cfg: ExperimentConfig, data: PreparedData, device: torch.device) -> Evaluator:
    """The test-set evaluator of a run, with its BatchNorm calibration set if the config asks.

    The calibration samples are a seeded draw from the run's training samples, without
    augmentation (the augmentation would draw from torch's global RNG and so change training).
    """
    calibration = None
    if cfg.eval_bn_recalibration:
        from acp_flower.data import TensorImageDataset

        pool = np.concatenate(data.partitions)
        pick = np.sort(pool[_subset(len(pool), cfg.eval_bn_recalibration, cfg.seed, "eval_bn_recalibration", key=6)])
        ts = data.train_set
        plain = TensorImageDataset(ts.data, ts.targets, ts.mean, ts.std) if ts.transform is not None else ts
        calibration = Subset(plain, pick.tolist())
    return Evaluator(cfg, data.test_set, device, calibration_set=calibration)


def _subset(n: int, size: int, seed: int, key_name: str, key: int) -> np.ndarray:
    if size > n:
        raise ValueError(f"config key {key_name!r}: {size} requested but the dataset has {n} samples")
    rng = np.random.default_rng(derive_seed(seed, key))
    return np.sort(rng.choice(n, size=size, replace=False))


class LocalExecutor(TailSlotsExecutor):
    """Executor running clients and tails in this process; tails are created per slot."""

    def __init__(self, cfg: ExperimentConfig, clients: dict[int, ClientRuntime], device: torch.device) -> None:
        self.cfg, self.clients, self.device = cfg, clients, device
        self.client_ids = sorted(clients)
        self.tails = TailSlots(cfg, device, prune_trace=True)

    def train(self, tasks: Sequence[ClientTask], *, interleave: bool = False) -> list[ClientResult]:
        if not interleave:
            return [self.clients[t.client_id].train(t, partial(self.tails.step, t.tail_slot)) for t in tasks]
        if len({t.tail_slot for t in tasks}) > 1:
            raise ValueError("interleaved tasks must share one tail slot")
        gens = {t.client_id: self.clients[t.client_id].iter_train(t, partial(self.tails.step, t.tail_slot)) for t in tasks}
        results: dict[int, ClientResult] = {}
        while gens:  # round-robin: one batch of each active client in task order
            for cid in list(gens):
                try:
                    next(gens[cid])
                except StopIteration as stop:
                    results[cid] = stop.value
                    del gens[cid]
        return [results[t.client_id] for t in tasks]


def run_experiment(cfg: ExperimentConfig, out_dir: str | Path | None = None, *, progress: bool = True,
                   overwrite: bool = False, checkpoint: bool = False, resume: bool = False) -> pd.DataFrame:
    """Run a whole simulation in this process; returns the per-round metrics.

    With ``out_dir``, writes config.toml, metrics.csv (as rounds finish) and summary.json.
    ``checkpoint`` also writes ``out_dir/checkpoint.pt`` after every round (removed when the
    run finishes); ``resume`` continues from that checkpoint if there is one (and keeps
    checkpointing), giving the same metrics as an uninterrupted run. Without a checkpoint,
    ``resume`` restarts an unfinished run and refuses a finished one.
    """
    checkpoint = checkpoint or resume
    if checkpoint and out_dir is None:
        raise ValueError("checkpoint/resume need an out_dir")
    ckpt = load_checkpoint(out_dir, cfg) if resume else None
    if out_dir is not None and ckpt is None:
        if resume and (Path(out_dir) / "summary.json").exists():
            raise FileExistsError(f"output directory {out_dir} holds a finished run; nothing to resume")
        check_out_dir(Path(out_dir), overwrite or resume)
    data = prepare_data(cfg)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    clients = {cid: build_client(cfg, cid, data.train_set, part, device) for cid, part in enumerate(data.partitions)}
    executor = LocalExecutor(cfg, clients, device)
    strategy = get_strategy(cfg.scheme)()
    strategy.initialize(executor, *initial_states(cfg))
    evaluator = build_evaluator(cfg, data, device)
    first_round = 1
    if ckpt is not None:
        strategy.load_state_dict(ckpt.strategy)
        for cid, state in ckpt.clients.items():
            clients[cid].load_state_dict(state)
        executor.tails.load_state_dict(ckpt.tails)
        torch.set_rng_state(ckpt.torch_rng)  # last: building the run above drew from it
        first_round = ckpt.server_round + 1
        log.info("resuming %s after round %d", out_dir, ckpt.server_round)
    recorder = RunRecorder(out_dir, cfg, overwrite=overwrite or resume, resume_rows=ckpt.rows if ckpt else None)
    with tqdm(total=cfg.rounds, initial=first_round - 1, desc=f"{cfg.codec}/{cfg.scheme}", unit="round",
              disable=not progress) as bar:

        def on_round_end(outcome: RoundOutcome) -> None:
            row = recorder.record(outcome)
            recorder.record_prune_trace(outcome.server_round, executor.tails.pop_prune_trace())
            if checkpoint:
                save_checkpoint(out_dir, cfg, Checkpoint(
                    outcome.server_round, recorder.rows, strategy.state_dict(),
                    {cid: c.state_dict() for cid, c in clients.items()}, executor.tails.state_dict(),
                    torch.get_rng_state(),
                ))
            bar.set_postfix(acc=f"{row['test_accuracy']:.4f}", loss=f"{row['train_loss']:.3f}")
            bar.update()

        strategy.start(executor, cfg.rounds, evaluator, on_round_end, first_round=first_round,
                       stop_accuracy=cfg.stop_accuracy)
    recorder.finish()
    if checkpoint:
        remove_checkpoint(out_dir)
    return recorder.frame()

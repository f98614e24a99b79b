"""Local in-process driver: every client and tail in one process (tests, notebooks, baseline)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from acp_flower.config import ExperimentConfig
from acp_flower.data import prepare_data
from acp_flower.metrics import RunRecorder, check_out_dir
from acp_flower.runners.checkpoint import Checkpoint, load_checkpoint, remove_checkpoint, save_checkpoint
from acp_flower.runtime import (
    ClientResult, ClientRuntime, ClientTask, RoundOutcome, RoundRobin, TailSlots, TailStoreExecutor, build_client,
    build_evaluator, initial_states, resolve_device,
)
from strategies import get_strategy

log = logging.getLogger("acp_flower")


class LocalExecutor(TailStoreExecutor):
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
        turns = RoundRobin([t.client_id for t in tasks])
        while (cid := turns.turn()) is not None:
            try:
                next(gens[cid])  # one mini-batch exchange
                turns.advance(cid)
            except StopIteration as stop:
                results[cid] = stop.value
                turns.finish(cid)
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
    strategy = get_strategy(cfg.scheme)()  # an unknown scheme fails before any work
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

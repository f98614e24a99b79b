"""Local in-process driver: every client and tail in one process (tests, notebooks, baseline)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from acp_flower.config import ExperimentConfig
from acp_flower.data import prepare_data
from acp_flower.metrics import RunRecorder, resume_point
from acp_flower.runtime import (
    CLIENT_FAULTS,
    ClientResult,
    ClientRuntime,
    ClientTask,
    FaultLog,
    RoundOutcome,
    RoundRobin,
    TailSlots,
    TailStoreExecutor,
    build_client,
    build_evaluator,
    check_model,
    initial_states,
    resolve_device,
)
from acp_flower.runtime.batched import train_group
from acp_flower.runtime.checkpoint import Checkpoint, remove_checkpoint, save_checkpoint
from strategies import build_strategy

log = logging.getLogger("acp_flower")


class LocalExecutor(TailStoreExecutor):
    """Executor running clients and tails in this process; tails are created per slot."""

    def __init__(self, cfg: ExperimentConfig, clients: dict[int, ClientRuntime], device: torch.device) -> None:
        self.cfg, self.clients, self.device = cfg, clients, device
        self.client_ids = sorted(clients)
        self.tails = TailSlots(cfg, device, prune_trace=True)
        self.faults = FaultLog(cfg.on_client_error)

    def train(self, tasks: Sequence[ClientTask], *, interleave: bool = False) -> list[ClientResult]:
        if interleave and len({t.tail_slot for t in tasks}) > 1:
            raise ValueError("interleaved tasks must share one tail slot")
        if self.cfg.batch_clients and not interleave and len(tasks) > 1:
            return self._train_batched(tasks)
        # A client that fails a round goes back to its round-start state, as on Flower, where
        # a failed ClientApp never writes context.state.
        saved = {t.client_id: self.clients[t.client_id].state_dict() for t in tasks} if self.faults.policy == "skip" else {}
        results: dict[int, ClientResult] = {}
        if not interleave:
            for t in tasks:
                with self._faults(t, saved):
                    results[t.client_id] = self.clients[t.client_id].train(t, partial(self.tails.step, t.tail_slot))
        else:
            gens = {t.client_id: self.clients[t.client_id].iter_train(t, partial(self.tails.step, t.tail_slot))
                    for t in tasks}
            by_id = {t.client_id: t for t in tasks}
            turns = RoundRobin([t.client_id for t in tasks])
            while (cid := turns.turn()) is not None:
                with self._faults(by_id[cid], saved, on_fault=turns.finish):
                    try:
                        next(gens[cid])  # one mini-batch exchange
                        turns.advance(cid)
                    except StopIteration as stop:
                        results[cid] = stop.value
                        turns.finish(cid)
        return [results[t.client_id] for t in tasks if t.client_id in results]

    def _train_batched(self, tasks: Sequence[ClientTask]) -> list[ClientResult]:
        """The tasks (distinct tail slots) as one lockstep group (config ``batch_clients``, which
        requires on_client_error = stop: a fault stops the run, naming its client)."""
        try:
            return train_group([self.clients[t.client_id] for t in tasks],
                               [self.tails.server(t.tail_slot) for t in tasks], tasks)
        except CLIENT_FAULTS as exc:
            self.faults.report(tasks[0].server_round, getattr(exc, "client_id", tasks[0].client_id), str(exc))
            raise

    @contextmanager
    def _faults(self, task: ClientTask, saved: dict, on_fault=None):
        """Apply ``on_client_error`` to a client fault raised inside (``skip``: restore, go on)."""
        try:
            yield
        except CLIENT_FAULTS as exc:
            self.faults.report(task.server_round, task.client_id, str(exc))  # raises on "stop"
            self.clients[task.client_id].load_state_dict(saved[task.client_id])
            if on_fault is not None:
                on_fault(task.client_id)


def run_experiment(cfg: ExperimentConfig, out_dir: str | Path | None = None, *, progress: bool = True,
                   overwrite: bool = False, checkpoint: bool = False, resume: bool = False) -> pd.DataFrame:
    """Run a whole simulation in this process; returns the per-round metrics.

    With ``out_dir``, writes config.toml, metrics.csv (as rounds finish) and summary.json.
    ``checkpoint`` also writes ``out_dir/checkpoint.pt`` after every round (removed when the
    run finishes); ``resume`` continues from that checkpoint if there is one (and keeps
    checkpointing), giving the same metrics as an uninterrupted run. Without a checkpoint,
    ``resume`` restarts an unfinished run and refuses a finished one.
    """
    strategy = build_strategy(cfg)  # an unknown scheme fails before any work
    check_model(cfg)  # and so does a model or codec that cannot work on this dataset
    if cfg.fail_client >= 0 and cfg.fail_kind == "hang":
        raise ValueError("config key 'fail_kind': 'hang' needs a reply timeout, which only the Flower app has "
                         "(acp-flower simulate); in this process a hang would block the run")
    resume = resume or cfg.resume
    checkpoint = checkpoint or resume or cfg.checkpoint
    if checkpoint and out_dir is None:
        raise ValueError("checkpoint/resume need an out_dir")
    ckpt = resume_point(out_dir, cfg, resume=resume, overwrite=overwrite)
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
        executor.faults.restore(ckpt.failures)
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
                    torch.get_rng_state(), executor.faults.as_dicts(),
                ))
            bar.set_postfix(acc=f"{row['test_accuracy']:.4f}", loss=f"{row['train_loss']:.3f}")
            bar.update()

        try:
            strategy.start(executor, cfg.rounds, evaluator, on_round_end, first_round=first_round,
                           stop_accuracy=cfg.stop_accuracy)
        except BaseException as exc:
            recorder.fail(exc, failures=executor.faults.as_dicts())  # the checkpoint stays: --resume
            raise
    recorder.finish(status="completed", failures=executor.faults.as_dicts())
    if checkpoint:
        remove_checkpoint(out_dir)
    return recorder.frame()

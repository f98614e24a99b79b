"""Client runtime: head, optimizer, codec and data of one SL client (no Flower, no Ray)."""

from __future__ import annotations

import math
from collections.abc import Callable, Generator, Iterator
from contextlib import contextmanager
from dataclasses import replace
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from acp_flower.codecs import Codec, build_codec
from acp_flower.config import ExperimentConfig
from acp_flower.runtime.common import (
    StateDict, build_split, clone_state, derive_seed, flatten_optimizer, make_optimizer, unflatten_optimizer,
)
from acp_flower.data import dataset_info
from acp_flower.runtime.protocol import ClientTask
from acp_flower.runtime.stats import ClientResult, TrafficStats
from acp_flower.wire import PayloadError, from_bytes, ideal_bits, to_bytes

Exchange = Callable[[bytes], bytes]


class ClientFailure(RuntimeError):
    """Raised on purpose by the ``fail_client`` testing aid."""


class ClientRuntime:
    """One SL client. ``train`` runs its local epoch(s), one exchange per mini-batch.

    All randomness of a client (shuffling, augmentation, codec) comes from its own
    streams seeded by (seed, client id[, round]), so results do not depend on the order
    in which a driver runs clients, nor on the process it runs them in.
    """

    def __init__(self, cfg: ExperimentConfig, client_id: int, head: torch.nn.Module, codec: Codec,
                 dataset: Dataset, num_classes: int, device: torch.device) -> None:
        self.cfg, self.client_id, self.device = cfg, client_id, device
        self.head = head.to(device)
        self.optimizer = make_optimizer(cfg, self.head.parameters())
        self.codec, self.dataset, self.num_classes = codec, dataset, num_classes
        self.rng_state = torch.Generator().manual_seed(derive_seed(cfg.seed, 2, client_id)).get_state()

    @property
    def steps_per_round(self) -> int:
        return self.cfg.local_epochs * math.ceil(len(self.dataset) / self.cfg.batch_size)

    def train(self, task: ClientTask, exchange: Exchange) -> ClientResult:
        """Run the task's local training to the end; ``exchange(up_bytes) -> down_bytes``."""
        gen = self.iter_train(task, exchange)
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                return stop.value

    def iter_train(self, task: ClientTask, exchange: Exchange) -> Generator[None, None, ClientResult]:
        """Like ``train`` but yields after each mini-batch (for round-robin drivers)."""
        if task.head_state is not None:
            self.head.load_state_dict(task.head_state)
        if self.client_id == self.cfg.fail_client and task.server_round == self.cfg.fail_round:
            raise ClientFailure(f"client {self.client_id} failed on purpose in round {task.server_round} (fail_client)")
        self.head.train()
        traffic, examples = TrafficStats(), 0
        for epoch in range(self.cfg.local_epochs):
            batches = self._batches(task.server_round, epoch)
            while (batch := self._next(batches)) is not None:
                traffic += self.step(batch[0], batch[1], exchange)
                examples += len(batch[1])
                yield
        return ClientResult(self.client_id, clone_state(self.head.state_dict()), examples, traffic,
                            self.codec.eval_state())

    def step(self, x: torch.Tensor, y: torch.Tensor, exchange: Exchange) -> TrafficStats:
        """One SL exchange: head forward, encode, exchange, decode gradient, backward, step."""
        smashed = self.head(x.to(self.device, non_blocking=True))
        payload = replace(self.codec.encode(smashed, y, train=True), labels=y.cpu())
        up = to_bytes(payload)
        down = exchange(up)
        grad_payload = from_bytes(down)
        if grad_payload.shape != payload.shape:
            raise PayloadError(f"gradient shape {grad_payload.shape} != smashed shape {payload.shape}")
        self.optimizer.zero_grad(set_to_none=True)
        smashed.backward(self.codec.decode_grad(grad_payload).to(self.device, non_blocking=True))
        self.optimizer.step()
        return TrafficStats(1, len(up), len(down), ideal_bits(payload, self.num_classes),
                            ideal_bits(grad_payload, self.num_classes), self.codec.dropped_fraction(payload))

    def _batches(self, server_round: int, epoch: int) -> Iterator:
        gen = torch.Generator().manual_seed(derive_seed(self.cfg.seed, 3, self.client_id, server_round, epoch))
        loader = DataLoader(self.dataset, batch_size=self.cfg.batch_size, shuffle=True, generator=gen)
        with self._own_rng():
            return iter(loader)

    def _next(self, batches: Iterator):
        with self._own_rng():  # augmentation draws from the global RNG: make it this client's
            return next(batches, None)

    @contextmanager
    def _own_rng(self):
        saved = torch.get_rng_state()
        torch.set_rng_state(self.rng_state)
        try:
            yield
        finally:
            self.rng_state = torch.get_rng_state()
            torch.set_rng_state(saved)

    def state_dict(self) -> dict[str, StateDict]:
        """Everything that must survive between rounds: head, optimizer, codec, RNG."""
        return {
            "head": clone_state(self.head.state_dict()),
            "optimizer": flatten_optimizer(self.optimizer.state_dict()),
            "codec": self.codec.state_dict(),
            "rng": {"state": self.rng_state.clone()},
        }

    def load_state_dict(self, state: dict[str, StateDict]) -> None:
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(unflatten_optimizer(state["optimizer"], self.optimizer.state_dict()))
        self.codec.load_state_dict(state["codec"])
        self.rng_state = state["rng"]["state"].clone()


def build_client(cfg: ExperimentConfig, client_id: int, train_set: Dataset, indices: np.ndarray,
                 device: torch.device) -> ClientRuntime:
    """A client on its partition ``indices`` of ``train_set``, with a seeded codec."""
    if len(indices) == 0:
        raise ValueError(f"client {client_id} has an empty data partition")
    info = dataset_info(cfg.dataset)
    subset = Subset(train_set, np.asarray(indices).tolist())
    steps = cfg.rounds * cfg.local_epochs * math.ceil(len(subset) / cfg.batch_size)
    codec = build_codec(cfg, total_steps=steps, seed=derive_seed(cfg.seed, 1, client_id))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(cfg.seed, 0))
        head = build_split(cfg).head
    return ClientRuntime(cfg, client_id, head, codec, subset, info.num_classes, device)

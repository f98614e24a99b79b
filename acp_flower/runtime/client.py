"""Client runtime: client model, optimizer, codec and data of one SL client (no Flower, no Ray)."""

from __future__ import annotations

import math
import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from dataclasses import replace

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from acp_flower.codecs import Codec, build_codec
from acp_flower.codecs.dropout import ActivationDropout
from acp_flower.config import ExperimentConfig
from acp_flower.data import dataset_info
from acp_flower.exchanges import Exchange, Send, build_exchange
from acp_flower.guard import NonFiniteError, check_finite
from acp_flower.models.pruning import HeadPruner
from acp_flower.runtime.common import (
    StateDict,
    attach_codec,
    build_client_model,
    clone_state,
    flatten_optimizer,
    has_batchnorm,
    make_optimizer,
    unflatten_optimizer,
)
from acp_flower.runtime.faults import CORRUPTIONS, ClientFailure, corrupt, hang, locate
from acp_flower.runtime.protocol import ClientTask
from acp_flower.runtime.stats import ClientResult, ServerStats, TrafficStats, train_stats
from acp_flower.sampling import resolve_clients_per_round
from acp_flower.seeds import derive_seed
from acp_flower.wire import Payload, PayloadError, from_bytes, ideal_bits, to_bytes


class ClientRuntime:
    """One SL client. ``train`` runs its local epoch(s), one exchange per mini-batch.

    What one mini-batch does is the config's ``Exchange`` (``self.exchange``); this class
    owns what every exchange needs: the client model and its optimizer, the codec, the
    data, the statistics. All randomness of a client (shuffling, augmentation, codec)
    comes from its own streams seeded by (seed, client id[, round]), so results do not
    depend on the order in which a driver runs clients, nor on the process it runs them in.
    """

    def __init__(self, cfg: ExperimentConfig, client_id: int, model: nn.Module, codec: Codec,
                 dataset: Dataset, num_classes: int, device: torch.device, exchange: Exchange | None = None) -> None:
        self.cfg, self.client_id, self.device = cfg, client_id, device
        self.model = model.to(device)
        self.optimizer = make_optimizer(cfg, self.model.parameters())
        self.codec, self.dataset, self.num_classes = codec, dataset, num_classes
        self.exchange = exchange if exchange is not None else build_exchange(cfg)
        attach_codec(cfg, codec, self.exchange.head(self.model))
        self.rng_state = torch.Generator().manual_seed(derive_seed(cfg.seed, 2, client_id)).get_state()
        self.local_stats = ServerStats()
        self.dropout = ActivationDropout(cfg.options("act_dropout"), cfg.seed, client_id)
        self.pruner = HeadPruner(cfg.options("head_pruning"))
        self.skip_single = has_batchnorm(cfg)
        """A trailing batch of one sample is left out (BatchNorm cannot train on it)."""
        self.server_round, self.round_step = 0, 0
        """The round being trained and the uploads made in it (seed the dropout masks)."""
        self.faulty = False
        """This round is the ``fail_client``/``fail_round`` testing aid's."""

    @property
    def steps_per_round(self) -> int:
        single = self.skip_single and len(self.dataset) % self.cfg.batch_size == 1
        return self.cfg.local_epochs * (math.ceil(len(self.dataset) / self.cfg.batch_size) - single)

    def train(self, task: ClientTask, send: Send) -> ClientResult:
        """Run the task's local training to the end; ``send(up_bytes) -> down_bytes``."""
        gen = self.iter_train(task, send)
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                return stop.value

    def iter_train(self, task: ClientTask, send: Send) -> Generator[None, None, ClientResult]:
        """Like ``train`` but yields after each mini-batch (for round-robin drivers)."""
        batches = self.iter_batches(task)
        try:
            x, y = next(batches)
            while True:
                t0 = time.perf_counter()
                traffic = self.step(x, y, send)
                busy = time.perf_counter() - t0
                yield  # a round-robin driver's time between batches is not this client's
                x, y = batches.send((traffic, busy))
        except StopIteration as stop:
            return stop.value
        finally:
            batches.close()  # a failed step ends the round now (the pruner restores plain weights)

    def iter_batches(self, task: ClientTask) -> Generator[tuple[torch.Tensor, torch.Tensor],
                                                          tuple[TrafficStats, float], ClientResult]:
        """The task's round around its mini-batches: yields each (x, y) and takes back the
        exchange's (traffic, seconds) for it; returns the round's result.

        ``iter_train`` runs each exchange itself (``step``); a driver that runs the exchanges
        of several clients together (``runtime.batched``) drives this directly.
        """
        t0 = time.perf_counter()
        if task.head_state is not None:
            self.model.load_state_dict(task.head_state)
        self.faulty = self.client_id == self.cfg.fail_client and task.server_round == self.cfg.fail_round
        if self.faulty and self.cfg.fail_kind == "raise":
            raise ClientFailure(f"client {self.client_id} failed on purpose in round {task.server_round} (fail_client)")
        if self.faulty and self.cfg.fail_kind == "hang":
            hang(self.cfg.reply_timeout_s + 5.0)
        self.model.train()
        self.local_stats = ServerStats()
        self.server_round, self.round_step = task.server_round, 0
        head = self.exchange.head(self.model)
        pruned = self.pruner.begin_round(head, task.server_round)
        traffic, examples, busy = TrafficStats(), 0, time.perf_counter() - t0
        try:
            for epoch in range(self.cfg.local_epochs):
                batches = self._batches(task.server_round, epoch)
                while True:
                    t0 = time.perf_counter()
                    if (batch := self._next(batches)) is None:
                        break
                    if self.skip_single and len(batch[1]) == 1:  # only the last batch can be this short
                        break
                    busy += time.perf_counter() - t0
                    step_traffic, step_s = yield batch
                    traffic += step_traffic
                    examples += len(batch[1])
                    busy += step_s
        finally:
            if pruned:
                self.pruner.end_round(head)  # plain weights again (zeros), also if the round failed
        return ClientResult(self.client_id, clone_state(self.model.state_dict()), examples, traffic,
                            self.codec.eval_state(), self.local_stats, busy)

    def step(self, x: torch.Tensor, y: torch.Tensor, send: Send) -> TrafficStats:
        """One mini-batch exchange (``self.exchange``); its traffic.

        Raises ``NonFiniteError`` (with round, client and batch) when a loss, the smashed
        data or a gradient of this exchange, on either side, is not finite, and
        ``PayloadError`` (likewise located) when either side refuses the other's bytes.
        """
        with self.located():
            return self.traffic(*self.exchange.client_step(self, x, y, send))

    @contextmanager
    def located(self, batch: int | None = None):
        """Name this client, its round and batch (default: the next upload's) in a
        ``NonFiniteError`` or ``PayloadError`` raised inside."""
        batch = self.round_step if batch is None else batch
        try:
            yield
        except (NonFiniteError, PayloadError) as exc:
            located = locate(exc, self.server_round, self.client_id, batch)
            located.client_id = self.client_id  # for drivers that ran several clients at once
            raise located from None

    def traffic(self, payload: Payload, up: bytes, down_payload: Payload | None, down: bytes) -> TrafficStats:
        """The traffic of one exchange: bytes both ways, ideal bits, pruned fraction."""
        down_bits = ideal_bits(down_payload, self.num_classes) if down_payload is not None else 0
        return TrafficStats(1, len(up), len(down), ideal_bits(payload, self.num_classes), down_bits,
                            1.0 - payload.kept_fraction)

    # ------------------------------------------------------------ ClientSide (for exchanges)
    def upload(self, smashed: torch.Tensor, labels: torch.Tensor) -> tuple[Payload, bytes]:
        """The up-link payload of a training batch (codec, activation dropout, labels) and its bytes."""
        check_finite("smashed data", smashed.detach())
        payload = self.dropout(self.codec.encode(smashed, labels, train=True), self.server_round, self.round_step)
        self.round_step += 1
        if payload.label_counts is None:  # merged samples (ADC) carry label counts instead
            payload = replace(payload, labels=labels.cpu())
        up = to_bytes(payload)
        if self.faulty and self.round_step == 1 and self.cfg.fail_kind in CORRUPTIONS:
            up = corrupt(self.cfg.fail_kind, payload, up)  # the fail_kind testing aid
        return payload, up

    def decode_grad(self, down: bytes, up: Payload) -> tuple[Payload, torch.Tensor]:
        """The gradient payload answering ``up`` and the dense gradient on this client's device."""
        grad_payload = from_bytes(down)
        if grad_payload.shape != up.shape:
            raise PayloadError(f"gradient shape {grad_payload.shape} != smashed shape {up.shape}")
        grad = self.codec.decode_grad(grad_payload)
        check_finite("gradient (down-link)", grad)
        return grad_payload, grad.to(self.device, non_blocking=True)

    @torch.no_grad()
    def record_local(self, loss: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        check_finite("client loss", loss)
        self.local_stats += train_stats(loss, logits, labels)

    # ------------------------------------------------------------ data
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

    # ------------------------------------------------------------ state
    def state_dict(self) -> dict[str, StateDict]:
        """Everything that must survive between rounds: client model, optimizer, codec, RNG."""
        return {
            "head": clone_state(self.model.state_dict()),
            "optimizer": flatten_optimizer(self.optimizer.state_dict()),
            "codec": self.codec.state_dict(),
            "rng": {"state": self.rng_state.clone()},
        }

    def load_state_dict(self, state: dict[str, StateDict]) -> None:
        self.model.load_state_dict(state["head"])
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
    # T of ACP-SL's eq. (9): the steps this client is expected to train (with sampling it
    # takes part in clients_per_round / num_clients of the rounds on average).
    rounds = math.ceil(cfg.rounds * resolve_clients_per_round(cfg.clients_per_round, cfg.num_clients)
                       / cfg.num_clients)
    steps = rounds * cfg.local_epochs * math.ceil(len(subset) / cfg.batch_size)
    codec = build_codec(cfg, total_steps=steps, seed=derive_seed(cfg.seed, 1, client_id))
    exchange = build_exchange(cfg)
    return ClientRuntime(cfg, client_id, build_client_model(cfg), codec, subset, info.num_classes, device,
                         exchange)

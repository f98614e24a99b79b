"""An in-process stand-in for Flower's simulation engine (for fast tests of the app logic).

``LoopbackGrid`` implements the ``Grid`` calls the ServerApp uses and delivers each
message straight to the ClientApp, with what the real engine guarantees and no more:
each node's Context persists across messages (a handler's changes are kept only when it
succeeds, as the engine copies the Context to and from an actor), and the messages of a
node are handled by whichever of ``num_actors`` simulated actor processes the seeded
``placement`` picks: each simulated process has its own module-level caches, so a
message that lands in another "process" finds none of the caches of the previous one
(client runtimes, live sessions; only the read-only prepared datasets are shared).
"""

from __future__ import annotations

import copy
import random
from collections import OrderedDict
from collections.abc import Iterable

from flwr.app import Context, Error, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from acp_flower.apps import client_app, client_node, flower_exchange
from acp_flower.config import ExperimentConfig

RUN_ID = 4242


_SHARED_DATA: dict = {}
"""Prepared datasets, shared by the simulated processes (read-only; saves test time)."""


class _Process:
    """The module-level caches of one simulated actor process."""

    def __init__(self) -> None:
        self.data = _SHARED_DATA
        self.runtimes: OrderedDict = OrderedDict()  # as client_node._RUNTIMES (an LRU)
        self.sessions: dict = {}

    def activate(self) -> None:
        client_node._DATA, client_node._RUNTIMES = self.data, self.runtimes
        flower_exchange._SESSIONS = self.sessions


class LoopbackGrid(Grid):
    """Grid whose messages are handled synchronously by the ClientApp in this process.

    Parameters
    ----------
    cfg : ExperimentConfig
        The run config every node sees.
    num_actors : int
        Simulated actor processes.
    move_prob : float
        Probability that a node's message goes to a process other than its previous one.
    """

    def __init__(self, cfg: ExperimentConfig, num_actors: int = 2, move_prob: float = 0.5, seed: int = 0) -> None:
        self.cfg, self.rng, self.move_prob = cfg, random.Random(seed), move_prob
        self.processes = [_Process() for _ in range(num_actors)]
        self.node_ids = [1000 + 7 * i for i in range(cfg.num_clients)]
        self.contexts = {
            nid: Context(RUN_ID, nid, {"partition-id": i, "num-partitions": cfg.num_clients}, RecordDict(),
                         cfg.to_run_config())
            for i, nid in enumerate(self.node_ids)
        }
        self.last_process: dict[int, int] = {}
        self.moves = 0
        self._replies: dict[str, Message] = {}
        self._next_id = 0
        TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = RUN_ID, 1, 1

    # --- Grid API used by the ServerApp ---------------------------------------------
    def set_run(self, run) -> None:  # pragma: no cover - not used
        raise NotImplementedError

    @property
    def run(self):  # pragma: no cover - only the ray transport reads it
        raise NotImplementedError("LoopbackGrid has no Flower run")

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):  # pragma: no cover
        return Message(content, dst_node_id, message_type, group_id=group_id, ttl=ttl)

    def get_node_ids(self) -> Iterable[int]:
        return list(self.node_ids)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            self._next_id += 1
            msg.metadata.__dict__["_message_id"] = f"m{self._next_id}"
            self._replies[msg.metadata.message_id] = self._deliver(msg)
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(mid) for mid in list(message_ids) if mid in self._replies]

    def send_and_receive(self, messages, *, timeout=None):  # pragma: no cover - not used
        return self.pull_messages(self.push_messages(messages))

    # --- engine behaviour --------------------------------------------------------------
    def _deliver(self, msg: Message) -> Message:
        node = msg.metadata.dst_node_id
        self._pick_process(node).activate()
        context = copy.deepcopy(self.contexts[node])  # the engine ships a copy to the actor
        try:
            reply = client_app.app(msg, context)
        except Exception as exc:  # noqa: BLE001 - the engine turns any raising ClientApp into an error reply
            return Message(Error(code=0, reason=f"{type(exc)}:<'{exc}'>"), reply_to=msg)
        self.contexts[node] = context
        reply.metadata.__dict__["_message_id"] = f"r{msg.metadata.message_id}"
        return reply

    def _pick_process(self, node: int) -> _Process:
        previous = self.last_process.get(node)
        choice = previous if previous is not None else self.rng.randrange(len(self.processes))
        if previous is not None and len(self.processes) > 1 and self.rng.random() < self.move_prob:
            choice = self.rng.choice([i for i in range(len(self.processes)) if i != previous])
            self.moves += 1
        self.last_process[node] = choice
        return self.processes[choice]

    def close(self) -> None:
        """Stop the session threads left in every simulated process."""
        for process in self.processes:
            for session in process.sessions.values():
                session.cancel()
            process.sessions.clear()
        _Process().activate()

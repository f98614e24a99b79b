"""The strategies' ``Executor`` on Flower: clients are SuperNodes reached through a Grid.

``FlowerExecutor`` implements the protocol of ``strategies/base.py``. Tails live in a
``TailSlots`` (``flower`` transport: in the ServerApp process) or behind ``RayTails``
(``ray`` transport: one Ray actor). A client that fails a round is recorded; by
``on-client-error`` it is dropped for that round (``skip``) or the run stops (``stop``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from acp_flower.apps import records
from acp_flower.apps.flower_exchange import ExchangeStats, run_exchange
from acp_flower.config import ExperimentConfig
from acp_flower.runtime import ClientResult, ClientTask, FaultLog, TailStore, TailStoreExecutor

log = logging.getLogger("acp_flower")

REQUEST_TIMEOUT_S = 6 * 3600.0
"""Upper bound of one request (a whole client round on the ray transport)."""


class Channel:
    """Sends messages and collects their replies, polling the Grid with a short backoff.

    (``Grid.send_and_receive`` sleeps 0.1 s between pulls, which would add up to 0.1 s
    to every round trip on top of the simulation engine's own 0.1 s sweep.) Polls start
    1 ms apart and back off to ``max_poll_s``: quick replies are seen at once, long waits
    (a client's whole round) cost little CPU.
    """

    def __init__(self, grid: Grid, max_poll_s: float = 0.01, timeout: float = REQUEST_TIMEOUT_S) -> None:
        self.grid, self.max_poll_s, self.timeout = grid, max_poll_s, timeout

    def request(self, messages: Sequence[Message]) -> list[Message | None]:
        """Replies in the order of ``messages``; None where none came within the timeout."""
        if not messages:
            return []
        ids = list(self.grid.push_messages(messages))
        if len(ids) != len(messages):
            raise RuntimeError(f"the SuperLink accepted {len(ids)} of {len(messages)} messages")
        pending = {mid: i for i, mid in enumerate(ids)}
        replies: list[Message | None] = [None] * len(messages)
        deadline, poll = time.monotonic() + self.timeout, 0.001
        while pending and time.monotonic() < deadline:
            for reply in self.grid.pull_messages(list(pending)):
                replies[pending.pop(reply.metadata.reply_to_message_id)] = reply
            if pending:
                time.sleep(poll)
                poll = min(self.max_poll_s, poll * 1.5)
        return replies


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def short_reason(reason: str, limit: int = 400) -> str:
    """The ClientApp's own exception message out of Flower's error reason (a traceback).

    Flower formats it as ``<class 'Type'>:<'message'>``; an exception raised in a
    ClientApp actor arrives wrapped, its message after the last ``Message: ``.
    """
    text = _ANSI.sub("", reason).strip()
    kind = ""
    match = re.fullmatch(r"<class '([^']+)'>:<'(.*)'>", text, re.DOTALL)
    if match:
        kind, text = match.group(1), match.group(2)
    if "Message: " in text:
        text, kind = text.rsplit("Message: ", 1)[1], ""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    text = (f"{kind}: " if kind else "") + (lines[-1] if lines else "")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def task_waves(tasks: Sequence[ClientTask]) -> list[list[ClientTask]]:
    """Split tasks into consecutive groups with distinct tail slots (run in parallel)."""
    waves: list[list[ClientTask]] = []
    for task in tasks:
        if waves and task.tail_slot not in {t.tail_slot for t in waves[-1]}:
            waves[-1].append(task)
        else:
            waves.append([task])
    return waves


class FlowerExecutor(TailStoreExecutor):
    """Executor whose clients are Flower SuperNodes.

    Parameters
    ----------
    cfg : ExperimentConfig
        The run's config (``transport``, ``on_client_error``).
    channel : Channel
        Message transport to the SuperNodes.
    nodes : dict[int, int]
        Client id (partition id) -> node id.
    tails : TailStore
        Where the tails live: ``TailSlots`` in this process, or ``RayTails``.
    capacity : int
        How many ClientApps run at once (Ray client actors); the ``ray`` transport runs
        an interleaved round with one message per client only when all fit at once.
    """

    def __init__(self, cfg: ExperimentConfig, channel: Channel, nodes: dict[int, int], tails: TailStore,
                 capacity: int = 0) -> None:
        self.cfg, self.channel, self.nodes, self.tails, self.capacity = cfg, channel, nodes, tails, capacity
        self.client_ids = sorted(nodes)
        self.faults = FaultLog(cfg.on_client_error)
        self.stats = ExchangeStats()
        self.client_states: dict[int, dict] = {}
        """Checkpointing runs: each client's state after its last finished round."""

    def train(self, tasks: Sequence[ClientTask], *, interleave: bool = False) -> list[ClientResult]:
        if interleave and len({t.tail_slot for t in tasks}) > 1:
            raise ValueError("interleaved tasks must share one tail slot")
        if interleave:
            if self.cfg.transport == "ray" and len(tasks) <= self.capacity:
                return self._ray_wave(tasks, interleave=True)
            if self.cfg.transport == "ray":
                log.info("round-robin round of %d clients > %d concurrent client actors: per-batch messages",
                         len(tasks), self.capacity)
            return self._exchange(tasks, interleave=True)
        results: list[ClientResult] = []
        for wave in task_waves(tasks):
            results += self._ray_wave(wave) if self.cfg.transport == "ray" else self._exchange(wave)
        return results

    def _exchange(self, tasks: Sequence[ClientTask], interleave: bool = False) -> list[ClientResult]:
        return run_exchange(self.channel, tasks, self.nodes, self.tails, interleave=interleave,
                            on_failure=self._on_failure, stats=self.stats, states=self.client_states)

    def _ray_wave(self, tasks: Sequence[ClientTask], interleave: bool = False) -> list[ClientResult]:
        """One ``train.round`` message per task; clients call the tail actor per batch."""
        extra = {"tail-actor": self.tails.name, "tail-namespace": self.tails.namespace, "interleave": interleave}
        messages = [Message(records.task_to_content(t, **extra), self.nodes[t.client_id], records.MSG_ROUND,
                            group_id=str(t.server_round)) for t in tasks]
        if interleave:
            self.tails.begin_interleave([t.client_id for t in tasks])
        t0 = time.perf_counter()
        try:
            replies = self.channel.request(messages)
        finally:
            if interleave:
                self.tails.end_interleave()
        self.stats.request_s += time.perf_counter() - t0
        results = []
        for task, reply in zip(tasks, replies):
            if reply is None or reply.has_error():
                self._on_failure(task, self.nodes[task.client_id], "no reply (timeout)" if reply is None
                                 else reply.error.reason)
            else:
                results.append(records.content_to_result(reply.content))
                if (state := records.content_to_client_state(reply.content)) is not None:
                    self.client_states[task.client_id] = state[0]
                self.stats.pids.setdefault(task.client_id, set()).add(records.reply_pid(reply.content, records.RESULT))
                self.stats.handler_s += float(reply.content.config_records[records.RESULT].get("handler-s", 0.0))
            self.stats.messages += 1
        return results

    def _on_failure(self, task: ClientTask, node_id: int, reason: str) -> None:
        self.faults.report(task.server_round, task.client_id, short_reason(reason), node_id=node_id,
                           detail=_ANSI.sub("", reason))

    def failures_as_dicts(self) -> list[dict]:
        return self.faults.as_dicts()

    def restore_clients(self, states: dict[int, dict], server_round: int) -> None:
        """Resume: send each client its checkpointed state (a new simulation's contexts are empty).

        A client without one (it never finished a round) starts from its initial state, as
        it would have in the unbroken run.
        """
        cids = sorted(states)
        messages = []
        for cid in cids:
            content = RecordDict()
            records.add_client_state(content, states[cid], server_round)
            messages.append(Message(content, self.nodes[cid], records.MSG_RESTORE))
        for cid, reply in zip(cids, self.channel.request(messages)):
            if reply is None or reply.has_error():
                reason = "no reply (timeout)" if reply is None else short_reason(reply.error.reason)
                raise RuntimeError(f"resume: client {cid} could not take its checkpointed state: {reason}")
        self.client_states = dict(states)


def discover_nodes(channel: Channel, grid: Grid, cfg: ExperimentConfig, timeout: float = 300.0):
    """Greet every SuperNode; return (client id -> node id, the hello records by client id).

    The greeting also makes each ClientApp load its data and build its runtime, so that
    this one-time cost is not part of round 1.
    """
    node_ids = _wait_for_nodes(grid, cfg.num_clients, timeout)
    replies = channel.request([Message(RecordDict(), nid, records.MSG_HELLO) for nid in node_ids])
    nodes, hellos = {}, {}
    for nid, reply in zip(node_ids, replies):
        if reply is None or reply.has_error():
            reason = "no reply" if reply is None else reply.error.reason
            raise RuntimeError(f"SuperNode {nid} could not start its client: {reason}")
        hello = reply.content.config_records[records.HELLO]
        nodes[int(hello["client-id"])], hellos[int(hello["client-id"])] = nid, hello
    if sorted(nodes) != list(range(cfg.num_clients)):
        raise RuntimeError(f"SuperNodes report client ids {sorted(nodes)}, expected 0..{cfg.num_clients - 1}")
    return nodes, hellos


def _wait_for_nodes(grid: Grid, expected: int, timeout: float, settle_s: float = 3.0) -> list[int]:
    """Node ids once ``expected`` are there, or once a different count stayed put ``settle_s``."""
    deadline, node_ids, changed = time.monotonic() + timeout, [], time.monotonic()
    while time.monotonic() < deadline:
        current = sorted(grid.get_node_ids())
        if current != node_ids:
            node_ids, changed = current, time.monotonic()
        if len(node_ids) == expected or (node_ids and time.monotonic() - changed > settle_s):
            break
        time.sleep(0.1)
    if len(node_ids) != expected:
        raise ValueError(f"the federation has {len(node_ids)} SuperNodes but num-clients={expected}: "
                         f"pass --federation-config 'num-supernodes={expected}'")
    return node_ids

"""The ``flower`` transport: one Flower message round trip per mini-batch.

Protocol (server pulls). For each client in a round the ServerApp sends ``train.sl_step``
messages numbered k = 0, 1, ...: message 0 carries the task (round, head, tail slot);
message k > 0 carries the gradient bytes ``down[k-1]`` of the client's previous
mini-batch. The client answers message k with ``up[k]`` (the smashed-data payload of
its next mini-batch), or with its ``ClientResult`` when it has no batch left.

Client side. A mini-batch spans two messages (forward + encode in one, decode +
backward + step in the next), and the simulation engine may hand the two messages to
different actor processes. The client runs its round (``ClientRuntime.train``) in a
thread whose ``exchange`` suspends until the next message brings the gradient; that live
session (autograd graph included) stays in a per-process cache, valid only while its
session id and step count equal the ``acp.session`` record in ``context.state``. When
the message lands in another process (cache miss), the client answers ``resync``; the
server then resends the task with every gradient of the round so far, and the client
replays its round deterministically from the round-start state in ``context.state``:
each replayed upload must hash to what the server received (checked), so bytes, state
and results are identical to an uninterrupted run. A replay costs a head forward and
backward per earlier batch (the head is small); its frequency depends on how the engine
assigns actors (see docs/flower.md).

Server side. ``run_exchange`` drives several clients at once, one message per client per
sweep. The tail processes the received uploads in task order; with ``interleave=True``
(SplitFed-v2) strictly round-robin (batch 0 of each client, then batch 1, ...), holding
back uploads that arrive before their turn, as the local runner does.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from flwr.app import ConfigRecord, Context, Message, RecordDict

from acp_flower.apps import client_node, records
from acp_flower.runtime import CLIENT_FAULTS, ClientResult, ClientTask, RoundRobin, TailStore
from acp_flower.runtime.faults import locate

SESSION = "acp.session"
"""context.state record: the id of the live session and how many uploads it produced."""
SESSION_TIMEOUT_S = 900.0


class _Cancelled(Exception):
    """Unwinds a session thread that is no longer needed."""


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class LiveSession:
    """A client's round running in a thread; ``exchange`` suspends it between messages.

    Parameters
    ----------
    replay : list of (up_hash, down)
        Exchanges to answer at once (deterministic replay after a cache miss).
    """

    def __init__(self, client, task: ClientTask, sid: str, replay: Sequence[tuple[str, bytes]] = ()) -> None:
        self.client, self.task, self.sid, self.steps = client, task, sid, 0
        self._replay = list(replay)
        self._to_client: queue.Queue = queue.Queue()
        self._from_client: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"sl-{sid}")
        self.thread.start()

    def _run(self) -> None:
        try:
            self._from_client.put(("result", self.client.train(self.task, self._exchange)))
        except _Cancelled:
            pass
        except BaseException as exc:  # noqa: BLE001 - re-raised by the message handler
            self._from_client.put(("error", exc))

    def _exchange(self, up: bytes) -> bytes:
        self.steps += 1
        if self._replay:
            expected, down = self._replay.pop(0)
            if digest(up) != expected:
                raise RuntimeError(f"replayed upload {self.steps - 1} differs from the one the server received: "
                                   "the client computation is not deterministic")
            return down
        self._from_client.put(("up", up))
        kind, down = self._to_client.get()
        if kind == "cancel":
            raise _Cancelled
        return down

    def advance(self, down: bytes | None) -> tuple[str, object]:
        """Hand in a gradient (None at the start); get ('up', bytes) or ('result', ClientResult)."""
        if down is not None:
            self._to_client.put(("down", down))
        try:
            kind, value = self._from_client.get(timeout=SESSION_TIMEOUT_S)
        except queue.Empty:
            raise TimeoutError(f"client session {self.sid} made no progress in {SESSION_TIMEOUT_S:.0f}s") from None
        if kind == "error":
            raise value  # type: ignore[misc]
        return kind, value

    def cancel(self) -> None:
        if self.thread.is_alive():
            self._to_client.put(("cancel", None))
            self.thread.join(timeout=30)


_SESSIONS: dict[tuple[int, int], LiveSession] = {}


def _session_record(context: Context) -> tuple[str, int]:
    if SESSION not in context.state:
        return "", -1
    rec = context.state.config_records[SESSION]
    return str(rec["sid"]), int(rec["steps"])


def _live_session(context: Context, sid: str, step: int) -> LiveSession | None:
    """The cached session if it is exactly where context.state and the server say; else None."""
    key = (context.run_id, context.node_id)
    session = _SESSIONS.get(key)
    if session is not None and (session.sid, session.steps) == _session_record(context) == (sid, step):
        return session
    if session is not None:  # stale: the node went on in another process
        _SESSIONS.pop(key).cancel()
    return None


def handle_step(msg: Message, context: Context) -> Message:
    """ClientApp handler of ``train.sl_step`` (one message = one mini-batch exchange)."""
    rec = msg.content.config_records[records.STEP]
    sid, step = str(rec["sid"]), int(rec["step"])
    session = _live_session(context, sid, step)
    down = bytes(rec["down"]) if step > 0 else None
    if session is None:
        if step > 0 and records.TASK not in msg.content:
            return Message(RecordDict({records.STEP: ConfigRecord({"resync": True})}), reply_to=msg)
        session, down = _start_session(msg, context, sid, step), None
    key = (context.run_id, context.node_id)
    try:
        kind, value = session.advance(down)
    except BaseException:
        _SESSIONS.pop(key, None)
        raise
    if kind == "up":
        context.state[SESSION] = ConfigRecord({"sid": sid, "steps": session.steps})
        return Message(RecordDict({records.STEP: ConfigRecord({"up": value, "pid": os.getpid()})}), reply_to=msg)
    _SESSIONS.pop(key, None)
    del context.state[SESSION]
    content = client_node.round_reply(context, session.client, value, session.task.server_round)  # type: ignore[arg-type]
    return Message(content, reply_to=msg)


def _start_session(msg: Message, context: Context, sid: str, step: int) -> LiveSession:
    """Start (step 0) or rebuild by replay (step k: k recorded exchanges) a session."""
    task, _ = records.content_to_task(msg.content)
    client = client_node.client_runtime(context)  # round-start state from context.state
    client_node.check_task(task, client)
    replay: list[tuple[str, bytes]] = []
    if step > 0:
        rec = msg.content.config_records[records.STEP]
        replay = list(zip(rec["up-hashes"], rec["downs"]))
        if len(replay) != step:
            raise ValueError(f"resync of step {step} carries {len(replay)} recorded exchanges")
    session = LiveSession(client, task, sid, replay)
    _SESSIONS[(context.run_id, context.node_id)] = session
    context.state[SESSION] = ConfigRecord({"sid": sid, "steps": 0})
    return session


# ----------------------------------------------------------------------------- server side


@dataclass
class _Session:
    """Server-side bookkeeping of one client's exchange in a round."""

    task: ClientTask
    node_id: int
    sid: str = field(default_factory=lambda: uuid.uuid4().hex)
    downs: list[bytes] = field(default_factory=list)
    up_hashes: list[str] = field(default_factory=list)
    buffered: bytes | None = None
    """Upload received but not yet processed by the tail (waiting for its turn)."""
    resync: bool = False
    done: bool = False
    result: ClientResult | None = None


@dataclass
class ExchangeStats:
    """Counters of the per-batch exchange (reported in summary.json)."""

    messages: int = 0
    resyncs: int = 0
    """Messages that reached a process without the client's live session (replayed)."""
    pids: dict[int, set[int]] = field(default_factory=dict)
    """Client id -> the actor processes that served it."""
    request_s: float = 0.0
    """Ray transport: wall time of the round requests (sent to the replies received)."""
    handler_s: float = 0.0
    """Ray transport: time the ClientApps spent in their round handlers (sum)."""

    def as_dict(self) -> dict:
        return {"messages": self.messages, "resyncs": self.resyncs, "request_s": round(self.request_s, 3),
                "handler_s": round(self.handler_s, 3),
                "actor_pids": {str(c): sorted(p) for c, p in sorted(self.pids.items())}}


Failure = Callable[[ClientTask, int, str], None]
"""Called as ``on_failure(task, node_id, reason)``; raises to stop the run."""


def _message(s: _Session) -> Message:
    step = len(s.downs)
    rec: dict = {"sid": s.sid, "step": step, "round": s.task.server_round}
    if step > 0:
        rec["down"] = s.downs[-1]
    if step == 0 or s.resync:
        content = records.task_to_content(s.task)
        if s.resync:
            rec.update({"downs": list(s.downs), "up-hashes": list(s.up_hashes)})
    else:
        content = RecordDict()
    content[records.STEP] = ConfigRecord(rec)
    return Message(content, s.node_id, records.MSG_STEP, group_id=str(s.task.server_round))


def _absorb(s: _Session, reply: Message | None, on_failure: Failure, stats: ExchangeStats,
            states: dict[int, dict] | None = None) -> None:
    """Take a client's reply: an upload, its result, a resync request, or an error."""
    s.resync = False
    stats.messages += 1
    if reply is None or reply.has_error():
        reason = "no reply (timeout)" if reply is None else reply.error.reason
        s.done = True
        on_failure(s.task, s.node_id, reason)
        return
    if records.RESULT in reply.content:
        s.done, s.result = True, records.content_to_result(reply.content)
        if states is not None and (state := records.content_to_client_state(reply.content)) is not None:
            states[s.task.client_id] = state[0]
        stats.pids.setdefault(s.task.client_id, set()).add(records.reply_pid(reply.content, records.RESULT))
        return
    rec = reply.content.config_records[records.STEP]
    if "resync" in rec:
        s.resync = True
        stats.resyncs += 1
        return
    stats.pids.setdefault(s.task.client_id, set()).add(records.reply_pid(reply.content, records.STEP))
    s.buffered = bytes(rec["up"])


def _process(sessions: list[_Session], tails: TailStore, turns: RoundRobin | None, on_failure: Failure) -> None:
    """Run the tail on buffered uploads; interleaved, in the order of ``turns`` (task positions).

    A client that finished (or failed) leaves the cycle; one whose upload has not arrived
    yet holds it, and the uploads that came before their turn wait in ``buffered``.
    """
    if turns is None:
        for s in sessions:
            if s.buffered is not None:
                _tail_step(s, tails, on_failure)
        return
    for i, s in enumerate(sessions):
        if s.done:
            turns.finish(i)
    while (i := turns.turn()) is not None and sessions[i].buffered is not None:
        _tail_step(sessions[i], tails, on_failure)
        if sessions[i].done:
            turns.finish(i)
        else:
            turns.advance(i)


def _tail_step(s: _Session, tails: TailStore, on_failure: Failure) -> None:
    """The tail's step on a buffered upload; an upload the tail refuses (divergence guard,
    malformed payload) is that client's fault: it is done for the round."""
    up, s.buffered = s.buffered, None
    batch = len(s.downs)
    try:
        down = tails.step(s.task.tail_slot, up)
    except CLIENT_FAULTS as exc:
        s.done = True
        on_failure(s.task, s.node_id, str(locate(exc, s.task.server_round, s.task.client_id, batch)))
        return
    s.up_hashes.append(digest(up))
    s.downs.append(down)


def run_exchange(channel, tasks: Sequence[ClientTask], nodes: dict[int, int], tails: TailStore, *,
                 interleave: bool, on_failure: Failure, stats: ExchangeStats,
                 states: dict[int, dict] | None = None) -> list[ClientResult]:
    """Train ``tasks`` over per-batch messages; the results of clients that finished, in task order.

    Tasks must use distinct tail slots unless ``interleave`` (then they share one). With
    ``states``, the client states that checkpointing clients send with their results are
    put there (client id -> state).
    """
    sessions = [_Session(t, nodes[t.client_id]) for t in tasks]
    turns = RoundRobin(range(len(sessions))) if interleave else None
    while not all(s.done for s in sessions):
        ready = [s for s in sessions if not s.done and s.buffered is None]
        if not ready:
            raise RuntimeError("per-batch exchange stalled: every client waits for the tail")
        for s, reply in zip(ready, channel.request([_message(s) for s in ready])):
            _absorb(s, reply, on_failure, stats, states)
        _process(sessions, tails, turns, on_failure)
    return [s.result for s in sessions if s.result is not None]

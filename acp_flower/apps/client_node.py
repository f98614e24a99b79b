"""ClientApp logic: one SuperNode is one SL client; its state lives in ``context.state``.

The simulation engine pickles each node's Context to whichever client actor is free
(no node-to-actor affinity), so ``context.state`` is the truth: the head, optimizer,
codec and RNG state (``ClientRuntime.state_dict()``, ~100 kB) are loaded from it at the
start of every round and saved into it at the end. The per-process caches below only
save work: the prepared datasets and partitions (per config) and the ``RUNTIME_CACHE``
most recently used ``ClientRuntime`` objects (per run and node), whose state is always
overwritten from ``context.state`` (or from the seeded initial state before the first
round) before use. The cache is bounded, so an actor's memory does not grow with the
number of SuperNodes it ever served (10,000-node federations).
"""

from __future__ import annotations

import os
import time
from collections import OrderedDict
from dataclasses import dataclass

from flwr.app import ConfigRecord, Context, Message, RecordDict

from acp_flower.apps import records
from acp_flower.config import ExperimentConfig
from acp_flower.data import PreparedData, prepare_data
from acp_flower.runtime import ClientResult, ClientRuntime, ClientTask, build_client, resolve_device

_DATA: dict[ExperimentConfig, PreparedData] = {}
_RUNTIMES: OrderedDict[tuple[int, int], _CachedRuntime] = OrderedDict()
RUNTIME_CACHE = 32
"""Built client runtimes an actor process keeps (least recently used dropped first)."""


@dataclass
class _CachedRuntime:
    cfg: ExperimentConfig
    client: ClientRuntime
    initial_state: dict
    """``state_dict()`` right after construction: the state before the first round."""


def node_config(context: Context) -> tuple[ExperimentConfig, int]:
    """The run's config and this node's client id (its partition id), cross-checked."""
    cfg = ExperimentConfig.from_run_config(context.run_config)
    partition_id = int(context.node_config["partition-id"])
    num_partitions = int(context.node_config["num-partitions"])
    if num_partitions != cfg.num_clients:
        raise ValueError(f"the federation has {num_partitions} SuperNodes but num-clients={cfg.num_clients}: "
                         f"pass --federation-config 'num-supernodes={cfg.num_clients}'")
    return cfg, partition_id


def prepared_data(cfg: ExperimentConfig) -> PreparedData:
    """The datasets and partitions of ``cfg`` (cached per process, last config only)."""
    if cfg not in _DATA:
        _DATA.clear()
        _DATA[cfg] = prepare_data(cfg)
    return _DATA[cfg]


def client_runtime(context: Context) -> ClientRuntime:
    """This node's ClientRuntime with its state loaded from ``context.state``."""
    cfg, client_id = node_config(context)
    key = (context.run_id, context.node_id)
    cached = _RUNTIMES.get(key)
    if cached is None or cached.cfg != cfg:
        data = prepared_data(cfg)
        client = build_client(cfg, client_id, data.train_set, data.partitions[client_id], resolve_device(cfg.device))
        cached = _RUNTIMES[key] = _CachedRuntime(cfg, client, client.state_dict())
        while len(_RUNTIMES) > RUNTIME_CACHE:
            _RUNTIMES.popitem(last=False)
    _RUNTIMES.move_to_end(key)
    saved = records.load_client_state(context.state)
    cached.client.load_state_dict(saved if saved is not None else cached.initial_state)
    return cached.client


def round_reply(context: Context, client: ClientRuntime, result: ClientResult, server_round: int) -> RecordDict:
    """Save the client's state after a finished round; the reply content with its result
    (and, in a checkpointing run, the state itself for the ServerApp's checkpoint)."""
    state = client.state_dict()
    records.save_client_state(context.state, state, server_round)
    content = records.result_to_content(result, pid=os.getpid())
    if ExperimentConfig.from_run_config(context.run_config).checkpoint:
        records.add_client_state(content, state, server_round)
    return content


def handle_restore(msg: Message, context: Context) -> Message:
    """Resume: put the client state of the ServerApp's checkpoint into ``context.state``
    (a resumed run is a new simulation: every Context starts empty)."""
    _, client_id = node_config(context)
    restored = records.content_to_client_state(msg.content)
    if restored is None:
        raise ValueError(f"restore message for client {client_id} carries no client state")
    state, server_round = restored
    records.save_client_state(context.state, state, server_round)
    client_runtime(context)  # loads it: a state that does not fit this client fails here
    return Message(RecordDict({records.HELLO: ConfigRecord({"client-id": client_id, "round": server_round})}),
                   reply_to=msg)


def check_task(task: ClientTask, client: ClientRuntime) -> None:
    if task.client_id != client.client_id:
        raise ValueError(f"task for client {task.client_id} was sent to the node of client {client.client_id}")


def handle_hello(msg: Message, context: Context) -> Message:
    """Report the partition id and the actor's Ray resources; load the data (once per process).

    The client runtime is built at its first round, not here: a federation of 10,000
    SuperNodes greets every node but trains only the sampled ones.
    """
    import ray

    cfg, client_id = node_config(context)
    partition = prepared_data(cfg).partitions[client_id]
    resources = ray.get_runtime_context().get_assigned_resources() if ray.is_initialized() else {}
    reply = ConfigRecord({
        "client-id": client_id, "num-examples": len(partition), "pid": os.getpid(),
        "num-cpus": float(resources.get("CPU", 0.0)), "num-gpus": float(resources.get("GPU", 0.0)),
        "device": str(resolve_device(cfg.device)),
    })
    return Message(RecordDict({records.HELLO: reply}), reply_to=msg)


def handle_round(msg: Message, context: Context) -> Message:
    """Ray transport: the whole local training of a round, one tail-actor call per batch."""
    from acp_flower.apps.ray_tail import remote_exchange

    t0 = time.perf_counter()
    task, config = records.content_to_task(msg.content)
    client = client_runtime(context)
    check_task(task, client)
    exchange, finish = remote_exchange(str(config["tail-actor"]), str(config["tail-namespace"]),
                                       task.tail_slot, task.client_id)
    try:
        result: ClientResult = client.train(task, exchange)
    finally:
        if config["interleave"]:
            finish()  # leave the round-robin cycle, also on failure
    content = round_reply(context, client, result, task.server_round)
    content.config_records[records.RESULT]["handler-s"] = time.perf_counter() - t0
    return Message(content, reply_to=msg)

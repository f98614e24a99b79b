"""Flower record layouts of the app: tasks, results and client state <-> Message content.

Every key the ServerApp and the ClientApp exchange is a constant here, so both sides and
the tests agree on one layout. State dicts travel as ``ArrayRecord`` (exact dtypes and
shapes), scalars as ``ConfigRecord`` / ``MetricRecord``, wire payloads as ``bytes``.
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import torch
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict

from acp_flower.runtime.common import StateDict
from acp_flower.runtime.protocol import ClientTask
from acp_flower.runtime.stats import ClientResult, ServerStats, TrafficStats

# Message types (category.action) handled by the ClientApp.
MSG_HELLO = "query.hello"
"""Startup: a node reports its partition id and the Ray resources of its actor."""
MSG_ROUND = "train.round"
"""Ray transport: train a whole round, calling the tail actor per mini-batch."""
MSG_STEP = "train.sl_step"
"""Flower transport: one mini-batch exchange per message (see flower_exchange)."""
MSG_RESTORE = "query.restore"
"""Resume: a node's client state from the ServerApp's checkpoint, to put into context.state."""

# Record names inside a Message's RecordDict.
TASK = "acp.task"
HEAD = "acp.head"
RESULT = "acp.result"
CODEC_EVAL = "acp.codec_eval"
TRAFFIC = "acp.traffic"
HELLO = "acp.hello"
STEP = "acp.step"

# Record names inside a ClientApp's context.state.
STATE_PREFIX = "acp.state."
STATE_META = "acp.state_meta"
# Record names of a client's full state inside a Message (checkpointing runs; resume).
CKPT_PREFIX = "acp.ckpt."
CKPT_META = "acp.ckpt_meta"


def state_to_record(state: StateDict) -> ArrayRecord:
    """A state dict as an ArrayRecord (CPU copies; dtypes and shapes kept)."""
    if not state:
        return ArrayRecord()
    return ArrayRecord(torch_state_dict={k: v.detach().cpu() for k, v in state.items()})


def record_to_state(record: ArrayRecord) -> StateDict:
    """The inverse of ``state_to_record`` (writable tensors that own their memory)."""
    return {k: torch.from_numpy(np.array(arr.numpy(), copy=True)) for k, arr in record.items()}


def task_to_content(task: ClientTask, **extra: float | str | bool | bytes) -> RecordDict:
    """A ClientTask (plus driver-specific settings) as Message content."""
    config = ConfigRecord({
        "client-id": task.client_id, "server-round": task.server_round, "tail-slot": task.tail_slot,
        "has-head": task.head_state is not None, **extra,
    })
    content = RecordDict({TASK: config})
    if task.head_state is not None:
        content[HEAD] = state_to_record(task.head_state)
    return content


def content_to_task(content: RecordDict) -> tuple[ClientTask, ConfigRecord]:
    """The ClientTask of a message and its full task ConfigRecord (driver settings)."""
    config = content.config_records[TASK]
    head = record_to_state(content.array_records[HEAD]) if config["has-head"] else None
    task = ClientTask(int(config["client-id"]), int(config["server-round"]), head, int(config["tail-slot"]))
    return task, config


def result_to_content(result: ClientResult, pid: int = -1) -> RecordDict:
    """A ClientResult as reply content (``pid``: the process that trained, for diagnostics)."""
    traffic = {f.name: getattr(result.traffic, f.name) for f in fields(TrafficStats)}
    local = result.local_stats
    return RecordDict({
        RESULT: ConfigRecord({"client-id": result.client_id, "num-examples": result.num_examples, "pid": pid,
                              "train-s": result.train_s, "local-loss-sum": local.loss_sum,
                              "local-correct": local.correct, "local-samples": local.samples}),
        HEAD: state_to_record(result.head_state),
        CODEC_EVAL: state_to_record(result.codec_eval_state),
        TRAFFIC: MetricRecord(traffic),
    })


def content_to_result(content: RecordDict) -> ClientResult:
    """The inverse of ``result_to_content``."""
    meta = content.config_records[RESULT]
    traffic = content.metric_records[TRAFFIC]
    stats = TrafficStats(**{f.name: float(traffic[f.name]) if f.type == "float" else int(traffic[f.name])
                            for f in fields(TrafficStats)})
    local = ServerStats(float(meta["local-loss-sum"]), int(meta["local-correct"]), int(meta["local-samples"]))
    return ClientResult(
        int(meta["client-id"]), record_to_state(content.array_records[HEAD]), int(meta["num-examples"]),
        stats, record_to_state(content.array_records[CODEC_EVAL]), local, float(meta["train-s"]),
    )


def reply_pid(content: RecordDict, record: str) -> int:
    """The client process id a reply reports (-1 if none)."""
    return int(content.config_records[record].get("pid", -1))


def save_client_state(state: RecordDict, client_state: dict[str, StateDict], server_round: int) -> None:
    """Store ``ClientRuntime.state_dict()`` in a ClientApp's ``context.state``."""
    for name, sub in client_state.items():
        state[STATE_PREFIX + name] = state_to_record(sub)
    version = int(state.config_records[STATE_META]["version"]) + 1 if STATE_META in state else 1
    state[STATE_META] = ConfigRecord({"version": version, "round": server_round, "parts": list(client_state)})


def load_client_state(state: RecordDict) -> dict[str, StateDict] | None:
    """The client state saved by ``save_client_state``, or None before the first round."""
    if STATE_META not in state:
        return None
    parts = state.config_records[STATE_META]["parts"]
    return {name: record_to_state(state.array_records[STATE_PREFIX + name]) for name in parts}


def state_version(state: RecordDict) -> int:
    """How many times the client state was saved (0 = never)."""
    return int(state.config_records[STATE_META]["version"]) if STATE_META in state else 0


def add_client_state(content: RecordDict, client_state: dict[str, StateDict], server_round: int) -> None:
    """Put ``ClientRuntime.state_dict()`` into a Message (a round's reply for the ServerApp's
    checkpoint, or a restore message on resume)."""
    for name, sub in client_state.items():
        content[CKPT_PREFIX + name] = state_to_record(sub)
    content[CKPT_META] = ConfigRecord({"round": server_round, "parts": list(client_state)})


def content_to_client_state(content: RecordDict) -> tuple[dict[str, StateDict], int] | None:
    """The client state and its round put by ``add_client_state``, or None if the message has none."""
    if CKPT_META not in content:
        return None
    meta = content.config_records[CKPT_META]
    state = {name: record_to_state(content.array_records[CKPT_PREFIX + name]) for name in meta["parts"]}
    return state, int(meta["round"])

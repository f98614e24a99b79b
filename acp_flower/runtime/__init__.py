"""Transport-agnostic split-learning runtimes (no Flower, no Ray)."""

from acp_flower.runtime.client import ClientFailure, ClientRuntime, build_client
from acp_flower.runtime.common import initial_states, make_optimizer, resolve_device
from acp_flower.runtime.evaluate import Evaluator, build_evaluator
from acp_flower.runtime.protocol import (
    ClientTask, EvaluateFn, Executor, RoundOutcome, TailStore, TailStoreExecutor,
)
from acp_flower.runtime.schedule import RoundRobin
from acp_flower.runtime.server import ServerRuntime, TailSlots, build_server
from acp_flower.runtime.stats import ClientResult, ServerStats, TrafficStats, fedavg_states
from acp_flower.seeds import derive_seed

__all__ = [
    "ClientFailure", "ClientResult", "ClientRuntime", "ClientTask", "EvaluateFn", "Evaluator", "Executor",
    "RoundOutcome", "RoundRobin", "ServerRuntime", "ServerStats", "TailSlots", "TailStore", "TailStoreExecutor",
    "TrafficStats", "build_client", "build_evaluator", "build_server", "derive_seed", "fedavg_states",
    "initial_states", "make_optimizer", "resolve_device",
]

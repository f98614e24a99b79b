"""Transport-agnostic split-learning runtimes (no Flower, no Ray)."""

from acp_flower.runtime.client import ClientRuntime, build_client
from acp_flower.runtime.common import check_model, initial_states, make_optimizer, resolve_device
from acp_flower.runtime.evaluate import Evaluator, build_evaluator
from acp_flower.runtime.faults import CLIENT_FAULTS, ClientFailure, ClientFault, ClientRoundError, FaultLog
from acp_flower.runtime.protocol import (
    ClientTask,
    EvaluateFn,
    Executor,
    RoundOutcome,
    TailStore,
    TailStoreExecutor,
)
from acp_flower.runtime.schedule import RoundRobin
from acp_flower.runtime.server import ServerRuntime, TailSlots, build_server
from acp_flower.runtime.stats import ClientResult, FedAvg, ServerStats, TrafficStats, fedavg_states
from acp_flower.seeds import derive_seed

__all__ = [
    "build_client", "build_evaluator", "build_server", "CLIENT_FAULTS", "ClientFailure", "ClientFault",
    "ClientResult", "ClientRoundError", "ClientRuntime", "ClientTask", "derive_seed", "EvaluateFn",
    "Evaluator", "Executor", "check_model", "FaultLog", "FedAvg", "fedavg_states", "initial_states", "make_optimizer",
    "resolve_device", "RoundOutcome", "RoundRobin", "ServerRuntime", "ServerStats", "TailSlots", "TailStore",
    "TailStoreExecutor", "TrafficStats",
]

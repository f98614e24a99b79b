"""Transport-agnostic split-learning runtimes (no Flower, no Ray)."""

from acp_flower.runtime.client import ClientFailure, ClientRuntime, build_client
from acp_flower.runtime.common import derive_seed, initial_states, make_optimizer, resolve_device
from acp_flower.runtime.evaluate import Evaluator
from acp_flower.runtime.server import ServerRuntime, TailSlots, TailSlotsExecutor, build_server
from acp_flower.runtime.stats import ClientResult, ServerStats, TrafficStats, fedavg_states

__all__ = [
    "ClientFailure", "ClientResult", "ClientRuntime", "Evaluator", "ServerRuntime", "ServerStats",
    "TailSlots", "TailSlotsExecutor", "TrafficStats", "build_client", "build_server", "derive_seed", "fedavg_states", "initial_states",
    "make_optimizer", "resolve_device",
]

"""Peak memory of one training step on the client side and on the server side.

Measured on fresh runtimes of a config (seeded initial weights, the first batch of
client 0), after one warm-up step so that gradients and optimizer state exist, by
stepping each side alone: the client against the reply the server gave in the warm-up
step (no server work in between), the server on the upload it received. A side's peak
is the memory its tensors hold when the step starts (parameters, buffers, gradients,
optimizer state, the input batch) plus the highest net allocation during the step:

- CPU: PyTorch's allocator as its profiler reports it (``torch.profiler`` with
  ``profile_memory=True``: the "Total Allocated" of every allocation event; tensors only,
  not Python objects or the interpreter).
- CUDA: ``torch.cuda.max_memory_allocated`` around the step (all tensors on the device).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from acp_flower.config import ExperimentConfig
from acp_flower.data import PreparedData
from acp_flower.runtime.client import build_client
from acp_flower.runtime.common import initial_states
from acp_flower.runtime.server import build_server


def _tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))


def _held_bytes(module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Parameters, buffers and optimizer state; drops the gradients (a step starts without them).

    The previous step's gradients are dead when a step starts (it zeroes them before its
    backward); dropping them here also keeps the CPU profiler from missing their release
    (it cannot see blocks allocated before it started).
    """
    for p in module.parameters():
        p.grad = None
    state = [v for s in optimizer.state.values() for v in s.values()]
    return _tensor_bytes([*module.parameters(), *module.buffers(), *state])


def _peak_during(fn: Callable[[], object], device: torch.device) -> int:
    """Highest net allocation (bytes) while ``fn`` runs."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "trace.json"
        prof.export_chrome_trace(str(trace))
        events = json.loads(trace.read_text())["traceEvents"]
    allocations = [e["args"] for e in events if e.get("name") == "[memory]"]
    if not allocations:
        return 0
    # "Total Allocated" runs on across profiler sessions: take it relative to the first event
    base = allocations[0]["Total Allocated"] - allocations[0]["Bytes"]
    return max(0, *(a["Total Allocated"] - base for a in allocations))


def measure_step_memory(cfg: ExperimentConfig, data: PreparedData, device: torch.device) -> dict[str, object]:
    """Peak bytes of one training step of ``cfg`` per side: ``client_peak_bytes``, ``server_peak_bytes``.

    Also returns ``method`` (what was measured, see the module docstring). Draws nothing
    from torch's global RNG: a run measured before or after is unchanged.
    """
    with torch.random.fork_rng(devices=[]):
        client = build_client(cfg, 0, data.train_set, data.partitions[0], device)
        server = build_server(cfg, device)
        server.set_state(initial_states(cfg)[1])
        client.model.train()
        x, y = client._next(client._batches(1, 0))
        replies: list[bytes] = []
        uploads: list[bytes] = []

        def send(up: bytes) -> bytes:
            uploads.append(up)
            replies.append(server.step(up))
            return replies[-1]

        client.step(x, y, send)  # warm-up: gradients and optimizer state now exist
        x_bytes = _tensor_bytes([x, y])
        client_held = _held_bytes(client.model, client.optimizer) + x_bytes
        client_peak = _peak_during(lambda: client.step(x, y, lambda up: replies[-1]), device)
        server_held = _held_bytes(server.tail, server.optimizer)
        server_peak = _peak_during(lambda: server.step(uploads[-1]), device)
    method = ("torch.cuda.max_memory_allocated" if device.type == "cuda"
              else "torch.profiler CPU allocator (profile_memory)")
    return {"client_peak_bytes": client_held + client_peak, "server_peak_bytes": server_held + server_peak,
            "client_held_bytes": client_held, "server_held_bytes": server_held, "method": method}

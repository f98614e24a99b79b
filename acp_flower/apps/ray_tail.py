"""Server-side tails for the Flower app: in-process slots, and the Ray actor that holds them.

The ``ray`` transport puts the tails (``ServerRuntime`` per slot) into one Ray actor that
every ClientApp calls once per mini-batch with the wire-protocol bytes. Facts this relies
on (Flower 1.41 simulation, see docs/flower.md):

* Ray is initialised by the simulation engine a few seconds *after* the ServerApp starts:
  ``wait_for_ray`` polls ``ray.is_initialized()``; this module never calls ``ray.init``.
* The client pool reserves every CPU, so the actor asks for ``num_cpus=0`` (a CPU request
  would stay pending forever) and sets its torch thread count to the ServerApp process's.
* An actor with ``num_gpus=0`` gets ``CUDA_VISIBLE_DEVICES=''``; with ``tail-num-gpus=0``
  and a non-CPU ``device`` the actor keeps seeing the GPUs (unreserved) instead.
* Every ``ray.get`` has a timeout and fails with a message saying what was waited for.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import ray
import torch

from acp_flower.config import ExperimentConfig
from acp_flower.runtime import CLIENT_FAULTS, RoundRobin, ServerStats, TailSlots, resolve_device
from acp_flower.runtime.common import StateDict

NAMESPACE = "acp-flower"
"""Ray namespace of the tail actors (Flower's ray.init sets none: random per run)."""
RAY_START_TIMEOUT_S = 180.0
"""How long the ServerApp waits for the simulation engine to initialise Ray."""
CALL_TIMEOUT_S = 900.0
"""Upper bound of one tail call (a step may wait for other clients' turns)."""


class TurnOrder:
    """Admission of concurrent tail calls in ``RoundRobin`` order (SplitFed-v2 on ``ray``).

    Clients call ``run`` concurrently from their actors; each call waits until the round
    robin says it is that client's upload's turn, so the tail sees the batches in the
    local runner's order. A client leaves the cycle with ``finish`` (after its last batch,
    or failing).
    """

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.turns: RoundRobin | None = None

    def begin(self, order: Sequence[int]) -> None:
        with self.cond:
            self.turns = RoundRobin(order)
            self.cond.notify_all()

    def end(self) -> None:
        with self.cond:
            self.turns = None
            self.cond.notify_all()

    def run(self, client_id: int, fn, timeout: float):
        """Run ``fn()`` in the caller's turn (at once when no interleaved round is on)."""
        with self.cond:
            if self.turns is not None:
                if client_id not in self.turns:
                    raise RuntimeError(f"client {client_id} is not in the interleaved round {self.turns.order}")
                if not self.cond.wait_for(lambda: self.turns is None or self.turns.turn() == client_id, timeout):
                    raise TimeoutError(f"client {client_id} waited {timeout:.0f}s for its turn "
                                       f"(turn of client {self.turns.turn()})")
            out = fn()
            if self.turns is not None:
                self.turns.advance(client_id)
                self.cond.notify_all()
            return out

    def finish(self, client_id: int) -> None:
        """``client_id`` has no batch left this round (or failed): it leaves the cycle."""
        with self.cond:
            if self.turns is not None:
                self.turns.finish(client_id)
            self.cond.notify_all()


@ray.remote
class TailActor:
    """Ray actor holding the tails (and their optimizers) for the whole run."""

    def __init__(self, cfg_dict: dict[str, Any], num_threads: int) -> None:
        torch.set_num_threads(num_threads)
        cfg = ExperimentConfig.from_dict(cfg_dict)
        self.slots = TailSlots(cfg, resolve_device(cfg.device))
        self.turns = TurnOrder()

    def describe(self) -> dict[str, Any]:
        return {"device": str(self.slots.device), "threads": torch.get_num_threads(), "pid": os.getpid()}

    def step(self, slot: int, up: bytes, client_id: int) -> bytes:
        return self.turns.run(client_id, lambda: self.slots.step(slot, up), CALL_TIMEOUT_S)

    def begin_interleave(self, order: list[int]) -> None:
        self.turns.begin(order)

    def end_interleave(self) -> None:
        self.turns.end()

    def finish(self, client_id: int) -> None:
        self.turns.finish(client_id)

    def get_tail(self, slot: int) -> StateDict:
        return self.slots.get(slot)

    def set_tail(self, slot: int, state: StateDict) -> None:
        self.slots.set(slot, state)

    def pop_stats(self) -> ServerStats:
        return self.slots.pop_stats()

    def clear(self) -> None:
        self.slots.clear()

    def state_dict(self) -> dict[int, dict[str, StateDict]]:
        return self.slots.state_dict()

    def load_state_dict(self, state: dict[int, dict[str, StateDict]]) -> None:
        self.slots.load_state_dict(state)


def tail_actor_options(cfg: ExperimentConfig, run_id: int) -> dict[str, Any]:
    """Ray options of the tail actor: name, namespace, resources, environment."""
    options: dict[str, Any] = {
        "name": f"acp-tail-{run_id}", "namespace": NAMESPACE, "num_cpus": 0,
        "num_gpus": cfg.tail_num_gpus, "max_concurrency": cfg.num_clients + 4,
    }
    if cfg.tail_num_gpus == 0 and cfg.device != "cpu":
        # Without a GPU reservation Ray hides the GPUs; keep them visible so that
        # device='auto'/'cuda' can still use one (unreserved, shared).
        env = {"RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}
        if os.environ.get("PYTHONPATH"):
            env["PYTHONPATH"] = os.environ["PYTHONPATH"]
        options["runtime_env"] = {"env_vars": env}
    return options


def wait_for_ray(timeout: float = RAY_START_TIMEOUT_S, poll_s: float = 0.2) -> None:
    """Block until the simulation engine has initialised Ray in this process."""
    deadline = time.monotonic() + timeout
    while not ray.is_initialized():
        if time.monotonic() > deadline:
            raise TimeoutError(f"Ray was not initialised within {timeout:.0f}s; the ray transport needs "
                               "the Flower simulation engine (flwr run / run_simulation)")
        time.sleep(poll_s)


def ray_get(ref: Any, what: str, timeout: float = CALL_TIMEOUT_S) -> Any:
    """``ray.get`` with a timeout and an error that says what was waited for."""
    try:
        return ray.get(ref, timeout=timeout)
    except ray.exceptions.RayTaskError as exc:
        if isinstance(exc.cause, CLIENT_FAULTS):  # the tail refused this client's upload: the client's fault
            raise exc.cause from None
        raise
    except ray.exceptions.GetTimeoutError:
        raise TimeoutError(f"{what}: no answer within {timeout:.0f}s (actor pending for resources, "
                           "e.g. tail-num-gpus on a machine without a free GPU?)") from None


class RayTails:
    """The ServerApp's handle on the tail actor (same interface as ``TailSlots``)."""

    def __init__(self, cfg: ExperimentConfig, run_id: int) -> None:
        wait_for_ray()
        options = tail_actor_options(cfg, run_id)
        self.name, self.namespace = options["name"], options["namespace"]
        # the tail gets the thread count a plain process would use (Ray forces 1 on
        # actors with num_cpus=0): torch's default, or OMP_NUM_THREADS when set
        self.actor = TailActor.options(**options).remote(cfg.to_dict(), torch.get_num_threads())
        self.info = ray_get(self.actor.describe.remote(), f"starting tail actor {self.name} with "
                            f"num_gpus={cfg.tail_num_gpus}", timeout=RAY_START_TIMEOUT_S)

    def step(self, slot: int, up: bytes) -> bytes:
        return ray_get(self.actor.step.remote(slot, up, -1), f"tail step (slot {slot})")

    def get(self, slot: int) -> StateDict:
        return ray_get(self.actor.get_tail.remote(slot), f"get tail {slot}")

    def set(self, slot: int, state: StateDict) -> None:
        ray_get(self.actor.set_tail.remote(slot, state), f"set tail {slot}")

    def pop_stats(self) -> ServerStats:
        return ray_get(self.actor.pop_stats.remote(), "tail statistics")

    def clear(self) -> None:
        ray_get(self.actor.clear.remote(), "free the tail copies")

    def state_dict(self) -> dict[int, dict[str, StateDict]]:
        """Every slot's tail and optimizer state (for the ServerApp's checkpoint)."""
        return ray_get(self.actor.state_dict.remote(), "tail state for the checkpoint")

    def load_state_dict(self, state: dict[int, dict[str, StateDict]]) -> None:
        ray_get(self.actor.load_state_dict.remote(state), "restore the tails from the checkpoint")

    def begin_interleave(self, order: list[int]) -> None:
        ray_get(self.actor.begin_interleave.remote(order), "begin interleaved round")

    def end_interleave(self) -> None:
        ray_get(self.actor.end_interleave.remote(), "end interleaved round")

    def close(self) -> None:
        ray.kill(self.actor)


_HANDLES: dict[tuple[str, str], Any] = {}


def remote_exchange(name: str, namespace: str, slot: int, client_id: int):
    """A client's ``exchange(up) -> down`` that calls the named tail actor."""
    key = (name, namespace)
    if key not in _HANDLES:
        _HANDLES[key] = ray.get_actor(name, namespace=namespace)
    actor = _HANDLES[key]

    def exchange(up: bytes) -> bytes:
        return ray_get(actor.step.remote(slot, up, client_id), f"tail step of client {client_id}")

    return exchange, lambda: ray_get(actor.finish.remote(client_id), f"finish of client {client_id}")

"""Client faults shared by every driver and the stop/skip policy for them.

Drivers catch the client faults (``CLIENT_FAULTS`` in the local runner, any ClientApp
error on Flower) and apply ``on_client_error`` through a ``FaultLog``: ``stop`` ends the
run with an error naming round, client and fault; ``skip`` drops that client's result for
the round and records the fault (summary.json ``failures``). Divergence (NaN or inf in a
loss, the smashed data or a gradient) is one such fault: ``acp_flower.guard``.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, replace

import torch

from acp_flower.guard import NonFiniteError
from acp_flower.wire import Payload, PayloadError, to_bytes

log = logging.getLogger("acp_flower")


class ClientFailure(RuntimeError):
    """Raised on purpose by the ``fail_client`` testing aid."""


CLIENT_FAULTS = (ClientFailure, NonFiniteError, PayloadError)
"""What the local runner treats as one client's fault (``on_client_error`` applies); any
other exception is a bug and stops the run."""


def locate(exc: Exception, server_round: int, client_id: int, batch: int) -> Exception:
    """``exc`` (a client fault) again, its message prefixed with round, client and batch."""
    if isinstance(exc, NonFiniteError):
        return exc.at(server_round, client_id, batch)
    return type(exc)(f"round {server_round}, client {client_id}, batch {batch}: {exc}")


@dataclass(frozen=True)
class ClientFault:
    """A client that failed a round (written to summary.json ``failures``)."""

    server_round: int
    client_id: int
    node_id: int
    """The Flower SuperNode (-1 in the local runner)."""
    reason: str
    """The exception message."""
    detail: str = ""
    """Flower's full error reason (traceback of the ClientApp actor); empty in the local runner."""


class ClientRoundError(RuntimeError):
    """A client failed and ``on_client_error = stop``."""


class FaultLog:
    """The faults of a run and the policy for them (``stop`` or ``skip``)."""

    def __init__(self, policy: str) -> None:
        self.policy = policy
        self.faults: list[ClientFault] = []

    def report(self, server_round: int, client_id: int, reason: str, *, node_id: int = -1, detail: str = "") -> None:
        """Record a fault; raise ``ClientRoundError`` when the policy is ``stop``."""
        fault = ClientFault(server_round, client_id, node_id, reason, detail)
        self.faults.append(fault)
        log.warning("round %d: client %d%s failed: %s [on-client-error=%s]", server_round, client_id,
                    f" (node {node_id})" if node_id >= 0 else "", reason, self.policy)
        if self.policy == "stop":
            raise ClientRoundError(f"client {client_id} failed in round {server_round}: {reason} "
                                   "(on-client-error=stop)")

    def as_dicts(self) -> list[dict]:
        return [asdict(f) for f in self.faults]

    def restore(self, faults: list[dict]) -> None:
        """Continue a resumed run's log (``as_dicts`` of the checkpoint)."""
        self.faults = [ClientFault(**f) for f in faults]



# ----------------------------------------------------------------------------- fault injection
CORRUPTIONS = ("nan", "shape", "dtype", "truncate")
"""``fail_kind`` values that corrupt the client's first upload of ``fail_round``."""


def corrupt(kind: str, payload: Payload, up: bytes) -> bytes:
    """The upload ``up`` (of ``payload``) corrupted as ``kind`` says (testing aid; see ``fail_kind``).

    Each is what a buggy or hostile client could send; the receiver must refuse every one
    with a ``PayloadError`` (wire decoding or ``ServerRuntime.check_upload``).
    """
    if kind == "truncate":
        return up[: len(up) // 2]
    if kind == "nan":  # NaN values; quantized payloads carry floats only in scale/offset
        if payload.bits:
            return to_bytes(replace(payload, scale=torch.full_like(payload.scale, math.nan)))
        return to_bytes(replace(payload, values=torch.full_like(payload.values, math.nan)))
    dense_shape = (payload.shape[0], *payload.shape[1:-1], payload.shape[-1] + 1) if kind == "shape" else payload.shape
    wrong = to_bytes(Payload(tuple(dense_shape), torch.zeros(math.prod(dense_shape)), labels=payload.labels))
    if kind == "shape":
        return wrong
    if kind == "dtype":  # the label dtype code: the byte after magic, header and shape
        at = 4 + 3 + 4 * len(dense_shape)
        return wrong[:at] + b"\xff" + wrong[at + 1:]
    raise ValueError(f"unknown corruption {kind!r}; expected one of {CORRUPTIONS}")


def hang(seconds: float) -> None:
    """The ``hang`` testing aid: block past the reply timeout (the ServerApp gives up first)."""
    time.sleep(seconds)

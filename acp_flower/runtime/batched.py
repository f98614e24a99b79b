"""Batched clients: several SL clients, each against its own tail copy, in one vmapped step.

SplitFed-v1 trains the clients of a group independently (own head, own tail copy, own
optimizers and codec state). ``train_group`` runs their mini-batch exchanges in lockstep:
at each step the clients whose next batches have the same shape form a ``ClientGroup``;
their heads run as one ``torch.func.vmap`` over ``functional_call`` with stacked weights,
the codecs and the wire stay per client (exact bytes, per-client codec state), and the tails
run as one vmap again. Each module keeps its own weights and optimizer: while a group runs,
every parameter and buffer of its modules *is* a slice of the stacked tensor
(``StackedModules`` aliases them), so the clients' own optimizers step the stack in place
and the BatchNorm running statistics that vmap updates land in each module's buffers.

Not bit-identical to one client after another: vmap turns G convolutions into one grouped
convolution, whose kernels round differently (about 1e-7 relative per step; the tests
compare within a tolerance). On a CPU, grouped convolutions are slower than G plain ones
(experiments/bench_scale.py measures it); the point is a GPU, where one launch for the
group replaces G small ones.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import ExitStack

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

from acp_flower.guard import check_finite
from acp_flower.runtime.client import ClientRuntime
from acp_flower.runtime.protocol import ClientTask
from acp_flower.runtime.server import ServerRuntime
from acp_flower.runtime.stats import ClientResult
from acp_flower.wire import Payload


class StackedModules:
    """G modules of one architecture seen as one batched module (``__call__`` on G x ... inputs).

    On construction every parameter and buffer of every module is made a view of one stacked
    tensor (``tensor.data = stack[i]``): the modules, their optimizers and state dicts keep
    working as before, and whatever updates the stack updates them. ``release`` gives each
    module its own storage back (call it before the group's membership changes).
    """

    def __init__(self, modules: Sequence[nn.Module]) -> None:
        self.template = modules[0]
        params = [dict(m.named_parameters()) for m in modules]
        buffers = [dict(m.named_buffers()) for m in modules]
        with torch.no_grad():
            self.params = {name: torch.stack([p[name].detach() for p in params]).requires_grad_(value.requires_grad)
                           for name, value in params[0].items()}
            self.buffers = {name: torch.stack([b[name] for b in buffers]) for name in buffers[0]}
        for stack, per_module in ((self.params, params), (self.buffers, buffers)):
            for name, stacked in stack.items():
                for i, owned in enumerate(per_module):
                    owned[name].data = stacked[i]
        self._params, self._buffers = params, buffers

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        def one(params, buffers, xi):
            return functional_call(self.template, (params, buffers), (xi,))

        return vmap(one)(self.params, self.buffers, x)

    def zero_grad(self) -> None:
        for stacked in self.params.values():
            stacked.grad = None

    def scatter_grads(self) -> None:
        """Give each module's parameters their slice of the stacked gradients (as views)."""
        for name, stacked in self.params.items():
            for i, owned in enumerate(self._params):
                owned[name].grad = None if stacked.grad is None else stacked.grad[i]

    def release(self) -> None:
        """Every module's tensors own their storage again; the stack is dropped."""
        with torch.no_grad():
            for per_module in (self._params, self._buffers):
                for owned in per_module:
                    for tensor in owned.values():
                        tensor.data = tensor.data.clone()
                        if tensor.grad is not None:
                            tensor.grad = None
        self.params, self.buffers = {}, {}


class ClientGroup:
    """What a batchable exchange's ``group_step`` works with: the clients of one lockstep step
    (same batch shape) and their tail copies, as stacked heads and tails.

    The per-client parts (codec, wire, guards) loop over the clients and name the client,
    round and batch in any ``NonFiniteError`` / ``PayloadError``, as one-by-one execution does.
    """

    def __init__(self, clients: Sequence[ClientRuntime], servers: Sequence[ServerRuntime]) -> None:
        self.clients, self.servers = list(clients), list(servers)
        self.device = clients[0].device
        self.heads = StackedModules([c.exchange.head(c.model) for c in clients])
        self.tails = StackedModules([s.tail for s in servers])

    def release(self) -> None:
        self.heads.release()
        self.tails.release()

    def forward_heads(self, xs: Sequence[torch.Tensor]) -> torch.Tensor:
        """The smashed data of every client's batch (G x B x ...), heads in training mode."""
        for client in self.clients:
            client.model.train()
        return self.heads(torch.stack([x.to(self.device, non_blocking=True) for x in xs]))

    def upload(self, smashed: torch.Tensor, ys: Sequence[torch.Tensor]) -> tuple[list[Payload], list[bytes]]:
        """Each client's up-link payload and bytes (its codec, dropout, labels)."""
        payloads, ups = [], []
        for client, s, y in zip(self.clients, smashed, ys):
            with client.located():
                payload, up = client.upload(s, y)
            payloads.append(payload)
            ups.append(up)
        return payloads, ups

    def deliver(self, ups: Sequence[bytes]) -> list[Payload]:
        """Each upload decoded and checked by its tail copy's server runtime."""
        received = []
        for client, server, up in zip(self.clients, self.servers, ups):
            with client.located(client.round_step - 1):
                received.append(server.receive(up))
        return received

    def train_tails(self, x: torch.Tensor, ys: Sequence[torch.Tensor]) -> None:
        """``exchanges.base.train_tail`` for every tail copy at once: x is G x B x ... (requires
        grad; its gradient is left in ``x.grad``), ys each client's targets (class indices or
        label counts). Every loss and gradient is guarded before any tail steps."""
        for server in self.servers:
            server.tail.train()
        logits = self.tails(x)
        losses = []
        for client, server, lg, y in zip(self.clients, self.servers, logits, ys):
            loss = F.cross_entropy(lg, y if y.dim() == 1 else y.float() / y.sum(1, keepdim=True))
            with client.located(client.round_step - 1):
                server.record(loss, lg, y)
            losses.append(loss)
        self.tails.zero_grad()
        torch.stack(losses).sum().backward()  # disjoint weights: each slice gets its own loss's gradient
        for client, g in zip(self.clients, x.grad):
            with client.located(client.round_step - 1):
                check_finite("gradient (server, w.r.t. the smashed data)", g)
        self._step(self.tails, [s.optimizer for s in self.servers])

    def decode_grads(self, downs: Sequence[bytes], payloads: Sequence[Payload]) -> tuple[list[Payload], list]:
        """Each client's gradient payload and dense gradient."""
        grad_payloads, grads = [], []
        for client, down, payload in zip(self.clients, downs, payloads):
            with client.located(client.round_step - 1):
                grad_payload, grad = client.decode_grad(down, payload)
            grad_payloads.append(grad_payload)
            grads.append(grad)
        return grad_payloads, grads

    def backward_heads(self, smashed: torch.Tensor, grads: Sequence[torch.Tensor]) -> None:
        """Backpropagate each client's gradient through its head and step its optimizer."""
        self.heads.zero_grad()
        smashed.backward(torch.stack(list(grads)))
        self._step(self.heads, [c.optimizer for c in self.clients])

    @staticmethod
    def _step(stack: StackedModules, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        for opt in optimizers:
            opt.zero_grad(set_to_none=True)
        stack.scatter_grads()
        for opt in optimizers:
            opt.step()  # in place on the aliased slices: the stack moves with them


def train_group(clients: Sequence[ClientRuntime], servers: Sequence[ServerRuntime],
                tasks: Sequence[ClientTask]) -> list[ClientResult]:
    """Run ``tasks`` (client i against tail copy ``servers[i]``) in lockstep, batching the
    exchanges of the clients whose next batches have the same shape; results in task order.

    Each client's share of a batched step's wall time counts as its compute time (the link
    model's ``train_s``). The exchange must be batchable (``Exchange.group_step``).
    """
    exchange = clients[0].exchange
    rounds = [c.iter_batches(t) for c, t in zip(clients, tasks)]
    results: dict[int, ClientResult] = {}
    groups: dict[tuple[int, ...], ClientGroup] = {}
    with ExitStack() as cleanup:
        cleanup.callback(lambda: [g.release() for g in groups.values()])
        for r in rounds:
            cleanup.callback(r.close)
        pending = {i: next(r) for i, r in enumerate(rounds)}
        while pending:
            by_shape: dict[tuple, list[int]] = {}
            for i, (x, y) in pending.items():
                by_shape.setdefault((tuple(x.shape), tuple(y.shape)), []).append(i)
            members = [tuple(ids) for ids in by_shape.values()]
            for key in [k for k in groups if k not in members]:  # membership changed: restack
                groups.pop(key).release()
            for ids in members:
                if ids not in groups:
                    groups[ids] = ClientGroup([clients[i] for i in ids], [servers[i] for i in ids])
                t0 = time.perf_counter()
                steps = exchange.group_step(groups[ids], [pending[i][0] for i in ids], [pending[i][1] for i in ids])
                share = (time.perf_counter() - t0) / len(ids)
                for i, step in zip(ids, steps):
                    try:
                        pending[i] = rounds[i].send((clients[i].traffic(*step), share))
                    except StopIteration as stop:
                        results[i] = stop.value
                        del pending[i]
    return [results[i] for i in range(len(tasks))]

"""Flower ClientApp: each SuperNode is one split-learning client (its partition id).

Handlers are thin adapters; the logic is in ``client_node`` (state, data, ray transport)
and ``flower_exchange`` (per-batch messages).
"""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from acp_flower.apps import client_node, flower_exchange

app = ClientApp()


@app.query("hello")
def hello(msg: Message, context: Context) -> Message:
    """Startup: report the client id and actor resources; load data and build the client."""
    return client_node.handle_hello(msg, context)


@app.query("restore")
def restore(msg: Message, context: Context) -> Message:
    """Resume: take this client's state from the ServerApp's checkpoint into context.state."""
    return client_node.handle_restore(msg, context)


@app.train("round")
def train_round(msg: Message, context: Context) -> Message:
    """Ray transport: a whole round of local training, calling the tail actor per batch."""
    return client_node.handle_round(msg, context)


@app.train("sl_step")
def sl_step(msg: Message, context: Context) -> Message:
    """Flower transport: one mini-batch exchange per message."""
    return flower_exchange.handle_step(msg, context)

"""Mini-batch exchange protocols, one per module, looked up by name (config key ``exchange``).

Every module of this package is imported here, and each registers its exchange (and the
dataclass of its options) with ``register_exchange``: a new scheme is one file plus its test.
"""

import importlib
import pkgutil

from acp_flower.exchanges.base import (
    ClientSide,
    Exchange,
    GroupSide,
    Send,
    ServerSide,
    build_exchange,
    get_exchange,
    list_exchanges,
    register_exchange,
    train_tail,
)

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = [
    "ClientSide", "Exchange", "GroupSide", "Send", "ServerSide", "build_exchange", "get_exchange", "list_exchanges",
    "register_exchange", "train_tail",
]

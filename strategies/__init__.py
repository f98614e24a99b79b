"""Split-learning schemes as server-side strategies, one per module, looked up by name.

Every module of this package that defines an ``SLStrategy`` subclass with a ``name``
registers it: a new scheme is one file (plus its test), found without a list to edit.
"""

import importlib
import inspect
import pkgutil

from strategies.base import ClientTask, Executor, RoundOutcome, SLStrategy

_STRATEGIES: dict[str, type[SLStrategy]] = {}


def _discover() -> None:
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for obj in vars(module).values():
            if (isinstance(obj, type) and issubclass(obj, SLStrategy) and not inspect.isabstract(obj)
                    and obj.__module__ == module.__name__):
                if obj.name in _STRATEGIES:
                    raise ValueError(f"scheme {obj.name!r} is defined twice ({_STRATEGIES[obj.name].__name__}, "
                                     f"{obj.__name__})")
                _STRATEGIES[obj.name] = obj


def list_strategies() -> list[str]:
    """Names of the available schemes."""
    return sorted(_STRATEGIES)


def get_strategy(name: str) -> type[SLStrategy]:
    """The strategy class for a scheme name (config key ``scheme``)."""
    try:
        return _STRATEGIES[name]
    except KeyError:
        raise ValueError(f"config key 'scheme': unknown value {name!r}; allowed: {', '.join(list_strategies())}") from None


def build_strategy(cfg) -> SLStrategy:
    """The strategy of a run config (``scheme``), sampling clients by ``clients_per_round``.

    Every driver builds its strategy here, so all draw the same clients for a seed.
    """
    return get_strategy(cfg.scheme).from_config(cfg)


_discover()

__all__ = ["build_strategy", "ClientTask", "Executor", "RoundOutcome", "SLStrategy", "get_strategy", "list_strategies"]

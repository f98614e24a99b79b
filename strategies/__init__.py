"""Split-learning schemes as server-side strategies, looked up by name."""

from strategies.base import ClientTask, Executor, RoundOutcome, SLStrategy
from strategies.splitfed_v1 import SplitFedV1Strategy
from strategies.splitfed_v2 import SplitFedV2Strategy
from strategies.vanilla import VanillaStrategy

_STRATEGIES: dict[str, type[SLStrategy]] = {
    cls.name: cls for cls in (VanillaStrategy, SplitFedV1Strategy, SplitFedV2Strategy)
}


def list_strategies() -> list[str]:
    """Names of the available schemes."""
    return sorted(_STRATEGIES)


def get_strategy(name: str) -> type[SLStrategy]:
    """The strategy class for a scheme name."""
    try:
        return _STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown scheme {name!r}; allowed: {', '.join(list_strategies())}") from None


__all__ = [
    "ClientTask", "Executor", "RoundOutcome", "SLStrategy", "SplitFedV1Strategy", "SplitFedV2Strategy",
    "VanillaStrategy", "get_strategy", "list_strategies",
]

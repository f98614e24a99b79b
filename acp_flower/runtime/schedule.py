"""Round-robin turn order of an interleaved round (SplitFed-v2's shared tail).

One rule for every driver: upload ``b`` of the client at task position ``i`` is processed
in ``(b, i)`` order over the clients still in the cycle, so the tail sees batch 0 of each
client in task order, then batch 1, ... A client leaves the cycle when it has no batch
left (or fails); a client that has not produced its next upload yet holds the cycle.
The local runner drives generators with it, the ``flower`` transport buffers uploads by
it, and the Ray tail actor admits concurrent calls by it.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence


class RoundRobin:
    """Whose upload the shared tail processes next.

    Parameters
    ----------
    order : sequence of hashable
        The participants (client ids, task positions) in task order.
    """

    def __init__(self, order: Sequence[Hashable]) -> None:
        if len(set(order)) != len(order):
            raise ValueError(f"round-robin participants must be distinct, got {list(order)}")
        self.order = list(order)
        self.steps = {key: 0 for key in self.order}
        """Uploads processed so far, for each participant still in the cycle."""

    def turn(self) -> Hashable | None:
        """The participant whose upload goes next, or None once every one has left."""
        waiting = [(self.steps[key], i) for i, key in enumerate(self.order) if key in self.steps]
        return self.order[min(waiting)[1]] if waiting else None

    def advance(self, key: Hashable) -> None:
        """``key``'s upload has been processed."""
        if key != self.turn():
            raise RuntimeError(f"{key!r} went out of turn (turn of {self.turn()!r})")
        self.steps[key] += 1

    def finish(self, key: Hashable) -> None:
        """``key`` has no upload left this round (or failed): it leaves the cycle."""
        self.steps.pop(key, None)

    def __contains__(self, key: Hashable) -> bool:
        return key in self.steps

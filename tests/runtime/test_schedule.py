"""RoundRobin: the one turn order of interleaved rounds (local runner, flower transport, Ray tail)."""

import pytest

from acp_flower.runtime import RoundRobin


def _drain(turns: RoundRobin, batches: dict) -> list:
    """Process uploads in turn order; a client leaves after its last batch."""
    order = []
    while (key := turns.turn()) is not None:
        if batches[key] == 0:
            turns.finish(key)
            continue
        order.append(key)
        batches[key] -= 1
        turns.advance(key)
    return order


def test_batch_b_of_every_client_before_batch_b_plus_one():
    # Prepare: clients 7, 3, 5 in task order with 2, 3 and 1 batches
    turns = RoundRobin([7, 3, 5])
    # Execute
    order = _drain(turns, {7: 2, 3: 3, 5: 1})
    # Assert: (batch, task position) order over the clients still in the cycle
    assert order == [7, 3, 5, 7, 3, 3]


def test_a_client_that_has_not_uploaded_holds_the_cycle_and_out_of_turn_is_refused():
    turns = RoundRobin(["a", "b"])
    turns.advance("a")
    assert turns.turn() == "b"
    with pytest.raises(RuntimeError, match="out of turn"):
        turns.advance("a")
    turns.finish("b")  # b failed: it leaves, a goes on alone
    assert turns.turn() == "a" and "b" not in turns


def test_participants_must_be_distinct():
    with pytest.raises(ValueError, match="distinct"):
        RoundRobin([1, 1])

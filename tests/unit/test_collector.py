"""The collector's settings while gateways serve: set by the first to start, put back by the last
to stop, whatever the order in between."""

from __future__ import annotations

import gc

import pytest

from gateway.collector import YOUNG_THRESHOLD, tuned_collector


@pytest.fixture
def defaults():
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*before)


async def test_the_first_gateway_sets_the_threshold_and_the_last_puts_it_back(defaults):
    first, second = tuned_collector(None), tuned_collector(None)
    await first.__anext__()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)
    assert gc.get_freeze_count() > 0
    await second.__anext__()
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)
    with pytest.raises(StopAsyncIteration):
        await first.__anext__()  # the first to start stops first: the second still serves
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)
    with pytest.raises(StopAsyncIteration):
        await second.__anext__()
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0

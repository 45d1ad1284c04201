"""Background-task helpers: a loop asked to stop stops, whatever else happens in that instant."""

from __future__ import annotations

import asyncio

import pytest

from gateway import tasks


async def test_a_nap_ends_when_the_event_is_set_or_the_time_is_up():
    event = asyncio.Event()
    assert await tasks.nap(event, 0.01) is False
    event.set()
    assert await tasks.nap(event, 10) is True


async def test_a_task_cancelled_as_its_event_is_set_is_cancelled():
    # asyncio.wait_for on 3.11 returned normally in this instant and the cancellation was lost.
    event = asyncio.Event()
    woke = []

    async def loop() -> None:
        while True:
            woke.append(await tasks.nap(event, 10))
            event.clear()

    task = asyncio.create_task(loop())
    await asyncio.sleep(0)  # the loop is waiting on the event
    event.set()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)  # a guard against a hang, not a timing claim
    assert task.cancelled()

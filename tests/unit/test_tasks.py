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


async def test_a_loop_that_fails_is_said_and_started_again_until_it_is_stopped():
    runs, crashed = [], []
    again = asyncio.Event()

    async def loop() -> None:
        runs.append(len(runs))
        if len(runs) <= 2:
            raise OSError(f"the database went away (run {len(runs)})")
        again.set()
        await asyncio.Event().wait()  # the third run stays up

    [task] = tasks.start([("delivery-CH", loop)], on_crash=lambda name, exc: crashed.append((name, str(exc))), first_delay_s=0.01)
    await asyncio.wait_for(again.wait(), 5)  # a guard against a hang, not a timing claim
    assert runs == [0, 1, 2]
    assert crashed == [("delivery-CH", "the database went away (run 1)"), ("delivery-CH", "the database went away (run 2)")]
    await tasks.stop([task])
    assert task.done() and len(runs) == 3


async def test_a_loop_that_ends_by_itself_is_not_started_again():
    runs = []

    async def loop() -> None:
        runs.append(1)

    [task] = tasks.start([("once", loop)], first_delay_s=0.01)
    await asyncio.wait_for(task, 5)
    assert runs == [1] and task.exception() is None

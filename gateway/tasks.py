"""Background tasks that live as long as an app: started in a cleanup context, stopped in reverse."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Iterable
from typing import Any


def start(coroutines: Iterable[tuple[str, Coroutine[Any, Any, Any]]]) -> list[asyncio.Task]:
    return [asyncio.create_task(coro, name=name) for name, coro in coroutines]


async def stop(tasks: Iterable[asyncio.Task]) -> None:
    """Cancel and await each task, last started first; a task's own cancellation is not an error."""
    for task in reversed(list(tasks)):
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def nap(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds pass; True when it was set.

    Not ``asyncio.wait_for``: on Python 3.11 it returns normally when the event is set in the same
    instant the waiting task is cancelled, and the cancellation is lost, so a background loop
    asked to stop went on (and its stop waited for ever)."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True

"""Background tasks that live as long as an app: started in a cleanup context, stopped in reverse.

Each one is supervised: a loop that fails (the database restarting under it, the broker gone
in the middle of a call) is logged with its error and started again after a growing pause,
instead of ending unseen and leaving messages waiting with nobody to send them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from gateway.logs import get_logger

log = get_logger("epix.tasks")

Loop = Callable[[], Awaitable[Any]]  # makes a fresh run of the loop each time it is called
OnCrash = Callable[[str, BaseException], None]

FIRST_DELAY_S = 0.5
MAX_DELAY_S = 30.0
STEADY_S = 60.0  # a run that lasted this long counts as healthy: the next failure starts over


def start(
    loops: Iterable[tuple[str, Loop]],
    *,
    on_crash: OnCrash | None = None,
    first_delay_s: float = FIRST_DELAY_S,
    max_delay_s: float = MAX_DELAY_S,
) -> list[asyncio.Task]:
    return [
        asyncio.create_task(_supervised(name, loop, on_crash, first_delay_s, max_delay_s), name=name)
        for name, loop in loops
    ]


async def _supervised(name: str, loop: Loop, on_crash: OnCrash | None, first_delay_s: float, max_delay_s: float) -> None:
    clock = asyncio.get_running_loop().time
    delay = first_delay_s
    while True:
        began = clock()
        try:
            await loop()
            return  # a loop that ends by itself has nothing more to do
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 -- whatever it was, the loop must come back
            if clock() - began >= STEADY_S:
                delay = first_delay_s
            log.error("task.crashed", task=name, error=f"{type(exc).__name__}: {exc}", restart_in_s=round(delay, 2), exc_info=exc)
            if on_crash is not None:
                on_crash(name, exc)
            await asyncio.sleep(delay)
            delay = min(max_delay_s, delay * 2)
            log.info("task.restarted", task=name)


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

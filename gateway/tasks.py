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

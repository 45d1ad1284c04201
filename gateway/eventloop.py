"""The event loop a gateway runs on: uvloop where it is installed (Linux and macOS), else asyncio's own.

uvloop runs the same asyncio code with its transports, selector and callbacks in C; for an
exchange of a few HTTP requests that is about a quarter less CPU spent outside our own code.
``--loop asyncio`` keeps the standard loop (for a debugger, or where uvloop misbehaves).
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
CHOICES = ("auto", "uvloop", "asyncio")


def _uvloop():
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop


def new_event_loop(kind: str = "auto") -> asyncio.AbstractEventLoop:
    if kind not in CHOICES:
        raise ValueError(f"event loop {kind!r} is not one of {', '.join(CHOICES)}")
    uvloop = _uvloop() if kind != "asyncio" else None
    if uvloop is None:
        if kind == "uvloop":
            raise RuntimeError("--loop uvloop: uvloop is not installed (pip install uvloop)")
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(main: Coroutine[Any, Any, T], kind: str = "auto") -> T:
    """``asyncio.run`` on the chosen loop."""
    with asyncio.Runner(loop_factory=lambda: new_event_loop(kind)) as runner:
        return runner.run(main)

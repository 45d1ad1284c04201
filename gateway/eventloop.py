"""The event loop a gateway runs on: uvloop where it is installed (Linux and macOS), else asyncio's own.

uvloop runs the same asyncio code with its transports, selector and callbacks in C; for an
exchange of a few HTTP requests that is about a quarter less CPU spent outside our own code.
``--loop asyncio`` keeps the standard loop (for a debugger, or where uvloop misbehaves).

``tune_collector`` sets the cyclic garbage collector for a server (``epix serve``, ``run``).
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
CHOICES = ("auto", "uvloop", "asyncio")
# CPython collects its youngest generation every 700 net new container objects: on a gateway
# under load that is several times a second, and each collection was measured at 1-5 ms (its
# heap is large and long-lived: configuration, schemas, caches of parsed permits and checks).
# Requests free what they make by reference counting, not by the collector, so cycles are few
# and 20,000 is plenty. Measured (bench customs, 1,000,000 permits): 8-15% more verifications
# per second, p99 about a third lower.
GC_THRESHOLDS = (20_000, 50, 100)


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


def tune_collector() -> None:
    gc.set_threshold(*GC_THRESHOLDS)


def run(main: Coroutine[Any, Any, T], kind: str = "auto") -> T:
    """``asyncio.run`` on the chosen loop, with the collector set for a server."""
    tune_collector()
    with asyncio.Runner(loop_factory=lambda: new_event_loop(kind)) as runner:
        return runner.run(main)

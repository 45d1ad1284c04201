"""The cyclic garbage collector's settings while a gateway serves.

Python's defaults (a young collection every 700 net allocations, a full one every 100 of those)
suit short scripts. A serving gateway allocates a few dozen objects per request and keeps large,
long-lived structures: the loaded keys and schemas, the parsed-permit and check caches. Measured
under verification load (bench customs, 10,000 permits): the defaults collected about every 50
requests and ran a full collection, walking every object of the process for ~70 ms, every ~8,000
requests; together ~4% of the CPU, and each full collection a stall that every request in flight
waited out. So, once the gateway has started:

* what start-up made (modules, schemas, keys, configuration) is frozen out of the collector's
  view (``gc.freeze``): it lives as long as the process and holds no garbage worth looking for;
* the young generation is collected every ``YOUNG_THRESHOLD`` net allocations instead of 700.

Reference counting still frees everything that is not in a cycle at once; only cycles wait a
little longer. Several gateways in one process (the demo, the tests) share the setting: the first
to start sets it, the last to stop puts back what was there before (and unfreezes, so that what
the stopped gateways left in cycles can be collected).
"""

from __future__ import annotations

import gc
from typing import AsyncIterator

from aiohttp import web

YOUNG_THRESHOLD = 10_000


class _Serving:
    gateways = 0
    before: tuple[int, int, int] = gc.get_threshold()


async def tuned_collector(app: web.Application) -> AsyncIterator[None]:
    """A cleanup context, appended last: it freezes what the others made at start."""
    if _Serving.gateways == 0:
        _Serving.before = gc.get_threshold()
        gc.set_threshold(max(YOUNG_THRESHOLD, _Serving.before[0]), *_Serving.before[1:])
    _Serving.gateways += 1
    gc.freeze()
    try:
        yield
    finally:
        _Serving.gateways -= 1
        if _Serving.gateways == 0:
            gc.set_threshold(*_Serving.before)
            gc.unfreeze()

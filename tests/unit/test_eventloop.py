"""Which event loop a gateway runs on."""

from __future__ import annotations

import asyncio

import pytest

from gateway import eventloop


def test_auto_and_uvloop_give_uvloop_where_it_is_installed_and_asyncio_the_standard_loop():
    pytest.importorskip("uvloop", reason="uvloop is not installed on this platform")
    for kind, module in (("auto", "uvloop"), ("uvloop", "uvloop"), ("asyncio", "asyncio")):
        loop = eventloop.new_event_loop(kind)
        try:
            assert type(loop).__module__.split(".")[0] == module
        finally:
            loop.close()


def test_an_unknown_loop_is_refused():
    with pytest.raises(ValueError, match="not one of"):
        eventloop.new_event_loop("trio")


def test_run_runs_a_coroutine_on_the_chosen_loop():
    async def which() -> str:
        return type(asyncio.get_running_loop()).__module__.split(".")[0]

    assert eventloop.run(which(), "asyncio") == "asyncio"

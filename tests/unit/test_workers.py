"""The supervisor of ``epix serve --workers N`` (gateway/workers.py), with stand-in workers; the
real ones are in tests/e2e/test_workers.py."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from domain.errors import EpixError, ErrorCode
from gateway import workers
from gateway.workers import Supervisor, listening_socket, resolve_count


def test_the_count_comes_from_the_flag_else_the_configuration():
    assert resolve_count(None, 3) == 3
    assert resolve_count("2", 1) == 2
    assert resolve_count("auto", 1) == max(1, min(workers.MAX_WORKERS, os.cpu_count() or 1))
    for bad, said in (("0", "outside 1..64"), ("65", "outside 1..64"), ("two", "neither a number nor 'auto'")):
        with pytest.raises(EpixError, match=said) as caught:
            resolve_count(bad, 1)
        assert caught.value.code is ErrorCode.CONFIG_INVALID


def _supervisor(code: str, count: int = 2, **kw) -> Supervisor:
    sock = listening_socket("127.0.0.1", 0)
    return Supervisor([sys.executable, "-c", code], count, sock, poll_s=0.01, **kw)


def test_workers_that_keep_failing_to_start_are_given_up_on():
    supervisor = _supervisor("import sys; sys.exit(3)", restart_delays=(0.01, 0.02))
    assert supervisor.run() == 1
    assert max(w.failed_starts for w in supervisor._workers) == workers.MAX_FAILED_STARTS


def test_a_stop_ends_every_worker_and_the_socket(tmp_path):
    marks = tmp_path / "started"
    marks.mkdir()
    code = f"import os, pathlib, time; pathlib.Path({str(marks)!r}, os.environ['EPIX_WORKER']).touch(); time.sleep(600)"
    supervisor = _supervisor(code)

    def stop_when_both_started():
        deadline = time.monotonic() + 30
        while len(list(marks.iterdir())) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        supervisor._stop(None, None)  # as SIGTERM does

    threading.Thread(target=stop_when_both_started, daemon=True).start()
    assert supervisor.run() == 0
    assert sorted(p.name for p in marks.iterdir()) == ["0", "1"]  # each worker told its index
    assert all(w.proc.poll() is not None for w in supervisor._workers)
    assert supervisor.sock.fileno() == -1

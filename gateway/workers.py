"""Several worker processes behind one listening socket: ``epix serve --workers N``.

One gateway process is one event loop, so it uses one core however many the machine has. With
``workers`` > 1 the process that ``epix serve`` starts becomes a supervisor: it binds the port
itself (so that a port in use is refused once, before anything starts), then runs N copies of the
gateway, each ``epix serve`` again with the socket handed down, and the kernel gives each new
connection to whichever worker accepts it first. The workers share nothing but the store (and the
broker): everything a gateway keeps between requests lives there, as for several instances on one
PostgreSQL database. Processes sharing one SQLite file take its write lock in turn. Every worker
delivers (what it accepted at once, the rest by lease) and feeds customs (by turns); the loops one
gateway needs once (webhook, hub pull and tracking, customs checks, retention) run in worker 0
only (``leads``).

The supervisor forwards SIGTERM and SIGINT (each worker stops gracefully, handing back what it
holds), starts a worker again when it dies (after 0.5 s, doubling to 30 s while it keeps dying
within ``STARTED_S`` of its start), and gives up, stopping the others, after ``MAX_FAILED_STARTS``
such starts in a row: a worker that cannot start (a database that refuses it) is not started
forever. A worker whose supervisor is gone (killed with SIGKILL) stops by itself.

Metrics: each worker counts in prometheus_client's multiprocess files in a directory the
supervisor makes and removes; ``/metrics``, whichever worker answers, sums every worker's.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from domain.errors import EpixError, ErrorCode
from gateway.logs import WORKER_ENV, get_logger, worker_index
from gateway.metrics import METRICS_ENV

log = get_logger("epix.workers")

MAX_WORKERS = 64
STARTED_S = 10.0  # a worker that dies sooner than this after its start failed to start
MAX_FAILED_STARTS = 5
RESTART_DELAYS = (0.5, 30.0)
STOP_GRACE_S = 20.0  # the workers' own shutdown (5 s) and their stores' closing, then SIGKILL
BIND_WAIT_S = 10.0  # how long a port in use is waited for (see listening_socket)


def resolve_count(given: str | int | None, configured: int) -> int:
    """``--workers`` (a number or "auto": one per core) over the configuration's ``workers``."""
    if given is None:
        return configured
    if given == "auto":
        return max(1, min(MAX_WORKERS, os.cpu_count() or 1))
    try:
        count = int(given)
    except ValueError:
        raise EpixError(ErrorCode.CONFIG_INVALID, f"--workers {given!r} is neither a number nor 'auto'") from None
    if not 1 <= count <= MAX_WORKERS:
        raise EpixError(ErrorCode.CONFIG_INVALID, f"--workers {count} is outside 1..{MAX_WORKERS}")
    return count


def listening_socket(host: str, port: int, *, wait_s: float = BIND_WAIT_S, backlog: int = 1024) -> socket.socket:
    """The port, bound once for every worker. A port held by another program is refused after
    ``wait_s``: that long, because the workers of a supervisor that was killed stop by themselves
    within a few seconds (``stop_with_parent``) and only then let go of the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    deadline = time.monotonic() + wait_s
    while True:
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            break
        except OSError as exc:
            sock.close()
            if exc.errno != errno.EADDRINUSE or time.monotonic() >= deadline:
                raise EpixError(ErrorCode.CONFIG_INVALID, f"cannot listen on {host}:{port}: {exc.strerror}") from None
            time.sleep(0.2)
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def leads() -> bool:
    """Whether this process runs the background loops one gateway needs once: the only process,
    or worker 0 of several. The webhook push keeps its retry state in memory and would post every
    permit once per worker; the hub's pull and tracking and the customs checks would do the same
    work twice (harmless: it is idempotent, but wasted); retention needs one runner."""
    return worker_index() in (None, 0)


def inherited_socket(fd: int) -> socket.socket:
    return socket.socket(fileno=fd)


def stop_with_parent(parent: int, interval_s: float = 1.0) -> None:
    """A worker stops gracefully (SIGTERM to itself) once its supervisor is gone, e.g. killed with
    SIGKILL: the port is then free for the next supervisor, and no orphan keeps serving."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(interval_s)
        log.warning("worker.orphaned", supervisor=parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen | None = None
    started: float = 0.0
    failed_starts: int = 0
    restart_at: float | None = None


@dataclass
class Supervisor:
    """Runs ``command`` ``count`` times with ``sock`` handed down, until told to stop."""

    command: list[str]
    count: int
    sock: socket.socket
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    poll_s: float = 0.1
    restart_delays: tuple[float, float] = RESTART_DELAYS  # the first, doubling up to the second
    _workers: list[_Worker] = field(default_factory=list)
    _stopping: bool = False

    def run(self) -> int:
        metrics_dir = tempfile.mkdtemp(prefix="epix-metrics-")
        previous = {s: signal.signal(s, self._stop) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self._workers = [_Worker(i) for i in range(self.count)]
            for w in self._workers:
                self._start(w, metrics_dir)
            log.info("workers.started", count=self.count, pids=[w.proc.pid for w in self._workers if w.proc])
            return self._watch(metrics_dir)
        finally:
            self._terminate()
            for s, handler in previous.items():
                signal.signal(s, handler)
            self.sock.close()
            shutil.rmtree(metrics_dir, ignore_errors=True)

    def _stop(self, signum, frame) -> None:  # noqa: ARG002 -- a signal handler's signature
        self._stopping = True

    def _start(self, w: _Worker, metrics_dir: str) -> None:
        env = {**self.env, WORKER_ENV: str(w.index), METRICS_ENV: metrics_dir}
        w.proc = subprocess.Popen(self.command, env=env, pass_fds=(self.sock.fileno(),), stdin=subprocess.DEVNULL)
        w.started, w.restart_at = time.monotonic(), None

    def _watch(self, metrics_dir: str) -> int:
        while not self._stopping:
            now = time.monotonic()
            for w in self._workers:
                if w.restart_at is not None:
                    if now >= w.restart_at and not self._stopping:
                        self._start(w, metrics_dir)
                        log.info("worker.restarted", worker=w.index, pid=w.proc.pid if w.proc else None)
                    continue
                code = w.proc.poll() if w.proc else None
                if code is None:
                    if w.failed_starts and now - w.started >= STARTED_S:
                        w.failed_starts = 0
                    continue
                w.failed_starts = w.failed_starts + 1 if now - w.started < STARTED_S else 0
                if w.failed_starts >= MAX_FAILED_STARTS:
                    log.error("workers.giving_up", worker=w.index, exit_code=code, failed_starts=w.failed_starts)
                    return 1
                first, most = self.restart_delays
                delay = min(first * 2 ** max(0, w.failed_starts - 1), most)
                log.error("worker.exited", worker=w.index, exit_code=code, restart_in_s=delay)
                w.restart_at = now + delay
            time.sleep(self.poll_s)
        log.info("workers.stopping", count=self.count)
        return 0

    def _terminate(self) -> None:
        alive = [w.proc for w in self._workers if w.proc is not None and w.proc.poll() is None]
        for proc in alive:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for proc in alive:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker.killed", pid=proc.pid, after_s=STOP_GRACE_S)
                proc.kill()
                proc.wait()


def worker_command(argv: list[str], fd: int) -> list[str]:
    """``epix serve`` again (``argv``: its arguments), as a worker on the inherited ``fd``."""
    return [sys.executable, "-m", "gateway.cli", *argv, "--listen-fd", str(fd), "--supervisor", str(os.getpid())]

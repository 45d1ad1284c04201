"""Structured logging: one structlog configuration for the service, the CLI and the demo.

Context (message_id, sender, receiver, party) is bound with contextvars per request or delivery.
Payloads, keys and passphrases are never passed to a logger: log calls take ids and codes only.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog

_configured = False
WORKER_ENV = "EPIX_WORKER"  # a worker's index under ``epix serve --workers N`` (gateway/workers.py)


def configure_logging(*, level: str = "INFO", json: bool = False, stream=None, cache: bool = False) -> None:
    """``cache``: each module's logger is assembled once, on its first call, instead of on every
    call (what a long-running service wants; tests that capture logs reconfigure, so not there)."""
    global _configured
    worker = worker_index()
    processors = [
        structlog.contextvars.merge_contextvars,
        *([_add_worker(worker)] if worker is not None else []),
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False),
    ]
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream or sys.stderr),
        cache_logger_on_first_use=cache,
    )
    _configured = True


def worker_index() -> int | None:
    """This process's index among the workers of ``epix serve --workers N``; None when it serves alone."""
    index = os.environ.get(WORKER_ENV)
    return None if index is None else int(index)


def _add_worker(worker: int):
    def add(logger, method_name, event_dict):
        event_dict.setdefault("worker", worker)
        return event_dict

    return add


def get_logger(name: str):
    return structlog.get_logger(name)

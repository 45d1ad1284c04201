"""Where outbound messages wait for the sender: the embedded store queue, or RabbitMQ.

``open_queue(config, store, actor=...)`` picks the backend from ``[queue] url`` (absent: embedded).
"""

from __future__ import annotations

from gateway.config import GatewayConfig
from gateway.store.base import Store

from .base import Deliver, DeliveryQueue
from .embedded import EmbeddedQueue

__all__ = ["Deliver", "DeliveryQueue", "EmbeddedQueue", "open_queue"]


def open_queue(config: GatewayConfig, store: Store, *, actor: str) -> DeliveryQueue:
    """The queue the configuration asks for. Nothing connects here: ``run`` connects."""
    if config.queue.url is None:
        return EmbeddedQueue(store, config.delivery, actor=actor)
    from .rabbit import RabbitQueue  # aio-pika is imported only by gateways that use it

    return RabbitQueue(config, store, actor=actor)

"""Typed application keys: the one place where what lives on the aiohttp app is declared."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.delivery import DeliveryWorker
    from gateway.inbound import InboundService
    from gateway.metrics import Metrics
    from gateway.outbound import OutboundService
    from gateway.security import Security
    from gateway.store.base import Store

CONFIG: web.AppKey["GatewayConfig"] = web.AppKey("config")
STORE: web.AppKey["Store"] = web.AppKey("store")
SECURITY: web.AppKey["Security"] = web.AppKey("security")
HTTP: web.AppKey[aiohttp.ClientSession] = web.AppKey("http_client")
OUTBOUND: web.AppKey["OutboundService"] = web.AppKey("outbound")
INBOUND: web.AppKey["InboundService"] = web.AppKey("inbound")
DELIVERY: web.AppKey["DeliveryWorker"] = web.AppKey("delivery")
METRICS: web.AppKey["Metrics"] = web.AppKey("metrics")

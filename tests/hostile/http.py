"""Requests sent byte for byte over a real socket: an HTTP client would normalise the path (dot
segments, percent-encoding) or refuse the header before the gateway ever saw it."""

from __future__ import annotations

import asyncio
import json


async def send(
    base_url: str, method: str, target: str, *, headers: dict[str, str] | None = None, body: bytes = b""
) -> tuple[int, dict | bytes]:
    """(status, JSON body or raw bytes) of one request to ``base_url`` (http://127.0.0.1:port)."""
    port = int(base_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    lines = [f"{method} {target} HTTP/1.1", "Host: gw", "Connection: close", f"Content-Length: {len(body)}"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    # latin-1 with surrogateescape writes each header character as the byte it stands for.
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1", "surrogateescape") + body)
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, payload = answer.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(payload) if b"application/json" in head.lower() else payload

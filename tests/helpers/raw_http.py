"""A bare HTTP/1.1 request reader for test servers that script their responses byte by byte."""

from __future__ import annotations

import asyncio


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One request off ``reader``: its head (request line and headers) returned, its Content-Length body read
    and dropped. Raises ``asyncio.IncompleteReadError`` when the client closes the connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    await reader.readexactly(length)
    return head

"""Serve the API with uvicorn inside the gateway's running event loop.

The listening socket is bound here, before uvicorn runs, so a port in use is an ``OSError`` the composition
root reports like a SIP bind failure (uvicorn's own bind would ``sys.exit`` inside a task). uvicorn's
signal capture is switched off: SIGINT/SIGTERM belong to the gateway, whose SIGTERM drains calls while the
API keeps answering (``/readyz`` says 503) and is stopped last.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Generator

import uvicorn
from fastapi import FastAPI

from gateway.config import parse_host_port

__all__ = ["ApiServer"]

GRACEFUL_SHUTDOWN_SECONDS = 5


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        # The gateway's loop.add_signal_handler keeps SIGINT/SIGTERM: uvicorn MUST NOT replace them.
        yield


class ApiServer:
    """``app`` on ``listen`` (``host:port``; port 0 picks a free one, see :attr:`address`)."""

    def __init__(self, app: FastAPI, listen: str) -> None:
        host, port = parse_host_port(listen, default_port=8080)
        self.socket = _bind(host.strip("[]"), port)
        name = self.socket.getsockname()
        self.address: tuple[str, int] = (str(name[0]), int(name[1]))
        config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False,
                                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS, server_header=False)
        self._server = _Server(config)

    async def serve(self) -> None:
        """Run until :meth:`stop`; closes the socket on the way out."""
        try:
            await self._server.serve(sockets=[self.socket])
        finally:
            self.socket.close()

    def stop(self) -> None:
        self._server.should_exit = True

    @property
    def started(self) -> bool:
        return bool(self._server.started)


def _bind(host: str, port: int) -> socket.socket:
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, addr = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(addr)
        sock.listen(128)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock

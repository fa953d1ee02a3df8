"""cardcube.serving: the socket the HTTP commands (``serve``, ``catalog serve``) listen on."""

from __future__ import annotations

import asyncio
import socket

from cardcube.serving import listen


def test_connections_to_a_served_port_are_sent_without_nagles_delay():
    """Each connection accepted from the socket, as uvicorn accepts them (asyncio), has TCP_NODELAY set: without it
    every answer after the first on a kept-alive connection (a browser's) waited ~40 ms for a delayed ACK."""

    async def accepted_nodelay() -> int:
        loop = asyncio.get_running_loop()
        found: asyncio.Future[int] = loop.create_future()

        class Accepted(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                found.set_result(transport.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP,
                                                                               socket.TCP_NODELAY))

        sock = listen("127.0.0.1", 0)
        server = await loop.create_server(Accepted, sock=sock)
        _, writer = await asyncio.open_connection(*sock.getsockname())
        try:
            return await asyncio.wait_for(found, 30)
        finally:
            writer.close()
            server.close()

    assert asyncio.run(accepted_nodelay()) != 0

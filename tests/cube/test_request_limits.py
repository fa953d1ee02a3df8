"""The REST service's limits on requests (:mod:`cube.request_limits`): a turn to read for so many at once."""

from __future__ import annotations

import pytest


def test_a_request_whose_client_left_while_it_waited_its_turn_to_read_reads_nothing():
    """The service reads for so many requests at once (``--reads``): one whose client has gone by its turn is
    answered nothing and frees the turn (tests/cube/test_s3_reads.py has the turns on a real server)."""
    import asyncio

    from starlette.requests import Request

    from cardcube.errors import ClientGoneError, ServiceBusyError
    from cube.request_limits import ReadSlots

    scope = {"type": "http", "method": "GET", "path": "/", "headers": [], "query_string": b""}

    async def connected():  # a client that is still there sends nothing more
        await asyncio.sleep(3600)

    async def gone():
        return {"type": "http.disconnect"}

    async def turns() -> None:
        slots = ReadSlots(1, 30)
        reading = slots.turn(Request(scope, connected))
        await reading.__aenter__()  # the one turn taken
        waiting = asyncio.ensure_future(slots.turn(Request(scope, gone)).__aenter__())
        await asyncio.sleep(0.1)
        assert not waiting.done()  # waits its turn
        await reading.__aexit__(None, None, None)  # the first request answered
        with pytest.raises(ClientGoneError, match="closed the connection while its request waited its turn"):
            await waiting
        async with asyncio.timeout(5), slots.turn(Request(scope, connected)):  # the turn was freed
            pass
        at_once = ReadSlots(1, 0)  # no wait: a free turn all the same (asyncio.wait_for(..., 0) gave none)
        async with at_once.turn(Request(scope, connected)):
            with pytest.raises(ServiceBusyError, match="waited 0 s for its turn"):
                async with at_once.turn(Request(scope, connected)):
                    pass

    asyncio.run(turns())

"""Store locations as messages and documents name them."""

from __future__ import annotations

import functools
import http.server
import threading

import pytest

from cardcube.errors import CubeNotFoundError
from cardcube.storage import open_store, store_url


def test_an_http_location_is_named_as_given(tmp_path):
    """fsspec's HTTP file system keeps the whole URL as the path: messages named "http://https://host/cube"."""
    from cube.dataset import open_cube

    assert store_url(open_store("https://example.org/cubes/nl", read_only=True)) == "https://example.org/cubes/nl"
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/nothing"
        with pytest.raises(CubeNotFoundError, match=f"no 's2' cube at {url}: no committed version$"):
            open_cube(url)
    finally:
        server.shutdown()
        server.server_close()

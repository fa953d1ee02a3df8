"""Source scenes behind a real HTTP server, run in a child process (GDAL's reads hang on a server in the test's)."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager

# Serves the folder argv[1] with byte ranges (GDAL reads by ranges) and counts the body bytes sent per path,
# answered at /__counts. With a folder argv[2]: once a file was sent whole (a check's read), it is served from
# there, the same path under the other folder: a file replaced at the source after it was checked. Each answer has
# an ETag, as a web server's or S3's has.
COUNTING_SERVER = """
import json, os, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
roots, counts, whole, lock = sys.argv[1:], {}, set(), threading.Lock()
class Counting(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self, body=True):
        path = self.path.split("?")[0]
        if path == "/__counts":
            with lock:
                return self.answer(200, json.dumps(counts).encode(), {}, body)
        with lock:
            local = os.path.join(roots[-1] if path in whole else roots[0], path.lstrip("/"))
        if not os.path.isfile(local):
            return self.answer(404, b"", {}, body)
        with open(local, "rb") as f:
            data = f.read()
        size, status, stat = len(data), 200, os.stat(local)  # an ETag as nginx makes it: time and size
        headers = {"Accept-Ranges": "bytes", "ETag": f'"{stat.st_mtime_ns:x}-{size:x}"'}
        if "Range" in self.headers:
            first, _, last = self.headers["Range"].removeprefix("bytes=").partition("-")
            start, end = (size - int(last), size) if not first else (int(first), min(int(last or size), size - 1) + 1)
            data, status = data[start:end], 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
        if body:
            with lock:
                counts[path] = counts.get(path, 0) + len(data)
                if status == 200:
                    whole.add(path)
        self.answer(status, data, headers, body)
    def do_HEAD(self):
        self.do_GET(body=False)
    def answer(self, status, data, headers, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(data)
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(("127.0.0.1", 0), Counting)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


@contextmanager
def http_server(script: str, *args: str) -> Iterator[str]:
    """``script`` (a server printing its port) run in a child process: GDAL's reads hang on a server in this
    one. Yields its base URL."""
    server = subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.PIPE, text=True)
    try:
        yield f"http://127.0.0.1:{int(server.stdout.readline())}"
    finally:
        server.kill()


def served(feature: dict, base: str, query: str = "") -> dict:
    """``feature`` with its (relative) asset hrefs under the server at ``base``, each ending with ``query``."""
    return dict(feature, assets={band: dict(asset, href=f"{base}/{asset['href'].removeprefix('./')}{query}")
                                 for band, asset in feature["assets"].items()})


def bytes_sent(base: str) -> dict[str, int]:
    """Body bytes the :data:`COUNTING_SERVER` at ``base`` sent so far, per path."""
    with urllib.request.urlopen(f"{base}/__counts") as answer:
        return json.loads(answer.read())

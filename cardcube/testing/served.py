"""A ``cardcube`` HTTP command (``catalog serve``, ``serve``) in a child process on a free loopback port.

What a user runs, as they run it: the real console entry point and uvicorn, reached over TCP with httpx.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]

__all__ = ["ServedCommand"]


class ServedCommand:
    """``python -m cardcube.cli *args --port P``, started (with ``env`` added to the environment) and waited
    for until ``ready`` answers. Its stderr goes to a file (a pipe nobody reads would fill and stall it),
    shown if it does not start."""

    def __init__(self, args: Sequence[str], *, ready: str = "/", env: Mapping[str, str] | None = None,
                 timeout: float = 60.0) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        self.base = f"http://127.0.0.1:{port}/"
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 -- the server's lifetime; closed by close()
        self.proc = subprocess.Popen([sys.executable, "-m", "cardcube.cli", *map(str, args), "--port", str(port)],
                                     cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
                                     stdout=subprocess.DEVNULL, stderr=self.log)
        self.http = httpx.Client(base_url=self.base, timeout=120)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.http.head(ready)
                return
            except httpx.TransportError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.log.seek(0)
                    why = self.log.read().decode(errors="replace")[-3000:] or "timeout"
                    self.close()
                    raise AssertionError(f"cardcube {' '.join(map(str, args))} did not start: {why}") from None
                time.sleep(0.05)

    def close(self) -> None:
        self.http.close()
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()

"""Test infrastructure shared by tests and benchmarks: a real S3 server on loopback and a proxy in front of it.

* :mod:`cardcube.testing.s3server` — moto's S3 server in a child process (:func:`start_s3_server`);
* :mod:`cardcube.testing.s3proxy` — latency, bandwidth cap, injected S3 errors and server-side request
  counts (:func:`start_s3_proxy`);
* :mod:`cardcube.testing.tls` — a CA and a server certificate for an endpoint behind TLS (``start_s3_proxy(...,
  tls=...)``);
* :mod:`cardcube.testing.fixtures` — the pytest plugin (``s3_server``, ``s3_bucket``, ``s3_proxy``).
"""

from __future__ import annotations

from cardcube.testing.s3proxy import Fault, ProxyConfig, ProxyStats, S3Proxy, start_s3_proxy
from cardcube.testing.s3server import S3Server, s3fs_options, start_s3_server

__all__ = [
    "Fault",
    "ProxyConfig",
    "ProxyStats",
    "S3Proxy",
    "S3Server",
    "s3fs_options",
    "start_s3_proxy",
    "start_s3_server",
]

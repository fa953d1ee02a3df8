"""Whether an S3 endpoint (Ceph, MinIO) can be used at all, told at once before a store is: one TCP connection to
it and one request on it. A wrong host or port, a gateway that never answers, the wrong scheme or a certificate the
S3 client will not trust is then one clear error, where botocore's and s3fs's retries, right for a throttling
store, spent minutes on it."""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from botocore.exceptions import BotoCoreError

from cardcube.errors import CardcubeError, InvalidRequestError, StoreError, StoreUnavailableError

CONNECT_TIMEOUT_S = 5.0  # to reach an S3 endpoint at all
ANSWER_TIMEOUT_S = 15.0  # for it to answer a first request


def check_endpoint(opts: Mapping[str, Any], location: str, *, timeout: float | None = None) -> None:
    """:func:`_check_reachable` for the endpoint of s3fs options ``opts``, if they name one."""
    if endpoint := endpoint_of(opts):
        _check_reachable(endpoint, location, answer_timeout=min(timeout or ANSWER_TIMEOUT_S, ANSWER_TIMEOUT_S),
                         verify=_tls_verify(opts) if endpoint.lower().startswith("https:") else None)


def endpoint_of(options: Mapping[str, Any]) -> str | None:
    """The endpoint s3fs options name, at their top or in their ``client_kwargs``."""
    return options.get("endpoint_url") or (options.get("client_kwargs") or {}).get("endpoint_url")


def _tls_verify(opts: Mapping[str, Any]) -> bool | str | None:
    """How the S3 client of s3fs options ``opts`` checks an endpoint's TLS certificate, as botocore decides it:
    ``client_kwargs`` ``verify``, else the session's ``ca_bundle`` (``AWS_CA_BUNDLE``, a profile's), else
    ``REQUESTS_CA_BUNDLE``, else the bundled CAs (True); False: not checked. None: it cannot be told (a profile
    that does not exist: the client will say so)."""
    verify = opts.get("client_kwargs", {}).get("verify")
    if verify is None:
        import botocore.session

        try:
            verify = botocore.session.Session(profile=opts.get("profile")).get_config_variable("ca_bundle")
        except BotoCoreError:
            return None
    return os.environ.get("REQUESTS_CA_BUNDLE", True) if verify is None else verify


def _tls_context(verify: bool | str) -> ssl.SSLContext:
    """The TLS context the S3 client (aiobotocore) connects with, for ``verify`` as :func:`_tls_verify` gives it."""
    from botocore.httpsession import create_urllib3_context, get_cert_path

    context = create_urllib3_context()
    if verify:
        context.check_hostname = True
        context.load_verify_locations(get_cert_path(verify))
    else:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    return context


def _check_reachable(endpoint: str, location: str, *, answer_timeout: float, verify: bool | str | None = None
                     ) -> None:
    """One TCP connection to an S3 endpoint (Ceph, MinIO), and one request on it: a wrong host or port, or a
    gateway that takes connections but does not answer within ``answer_timeout`` s, is one clear error at once,
    where botocore's retries, right for a throttling server, would spend minutes on it. So is an endpoint without
    its scheme (``minio:9000``, not a refused connection to port 80), one of the wrong scheme (``https://`` to a
    plain HTTP port failed each request's TLS handshake, ``http://`` to a TLS port had each connection closed:
    minutes of retries, then "cannot be reached"), and a certificate the client will not trust (``verify``, as
    :func:`_tls_verify` tells it: a Ceph gateway's own CA, retried as an outage)."""
    url = urlparse(endpoint)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise InvalidRequestError(f"the S3 endpoint {endpoint} of {location} is no http:// or https:// URL: write "
                                  f"it with its scheme, e.g. http://{endpoint.split('://')[-1]}")
    port = url.port or (443 if url.scheme == "https" else 80)
    sock = _connect(endpoint, location, url.hostname, port)
    try:  # a gateway that accepts connections and never answers held a batch job for as long as its retries go
        sock.settimeout(answer_timeout)  # the TLS handshake is part of the answer
        if url.scheme == "https":
            sock = _tls_handshake(sock, endpoint, location, url.hostname, port, verify, answer_timeout)
        answer = _probe(sock, url.netloc)  # any answer, or a closed connection, is an answer
    except TimeoutError:
        raise StoreUnavailableError(f"the S3 endpoint {endpoint} of {location} accepts connections but sends no "
                                    f"answer within {answer_timeout:g} s: is its gateway hung?") from None
    except CardcubeError:
        raise
    except OSError:  # reset, TLS refused: the requests will say what is wrong
        return
    finally:
        sock.close()
    if url.scheme == "http" and answer != b"HTTP/" and _speaks_tls(url.hostname, port, answer_timeout):
        raise InvalidRequestError(f"the S3 endpoint {endpoint} of {location} answers with TLS, not plain HTTP: write "
                                  f"it https://{endpoint.split('://', 1)[1]}")


def _connect(endpoint: str, location: str, host: str, port: int) -> socket.socket:
    try:
        return socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
    except OSError as exc:
        raise StoreUnavailableError(f"cannot reach the S3 endpoint {endpoint} of {location}: "
                                    f"{exc.strerror or exc}") from exc


def _tls_handshake(sock: socket.socket, endpoint: str, location: str, host: str, port: int,
                   verify: bool | str | None, timeout: float) -> ssl.SSLSocket:
    """``sock`` after a TLS handshake as the S3 client makes it (``verify``; None: without checking the certificate):
    :class:`StoreError` for a certificate it will not trust, :class:`InvalidRequestError` for a plain HTTP port."""
    try:
        return _tls_context(False if verify is None else verify).wrap_socket(sock, server_hostname=host)
    except ssl.SSLCertVerificationError as exc:
        sock.close()
        raise StoreError(
            f"the S3 endpoint {endpoint} of {location} has a TLS certificate the S3 client does not trust "
            f"({exc.verify_message}): give the certificate of the CA that signed it, AWS_CA_BUNDLE=/path/ca.pem "
            f"(Python: storage_options={{'client_kwargs': {{'verify': '/path/ca.pem'}}}}), or an endpoint name the "
            f"certificate is for") from None
    except ssl.SSLError:
        sock.close()
        if _speaks_http(host, port, timeout):
            raise InvalidRequestError(f"the S3 endpoint {endpoint} of {location} answers in plain HTTP, not TLS: "
                                      f"write it http://{endpoint.split('://', 1)[1]}") from None
        raise


def _probe(sock: socket.socket, host: str) -> bytes:
    """The first bytes a server answers a plain ``HEAD /`` with on ``sock`` (``b"HTTP/"`` from an HTTP server)."""
    sock.sendall(f"HEAD / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    return sock.recv(5)


def _speaks_http(host: str, port: int, timeout: float) -> bool:
    """Whether the server at ``host``:``port`` answers a plain HTTP request with HTTP."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            return _probe(sock, host) == b"HTTP/"
    except OSError:
        return False


def _speaks_tls(host: str, port: int, timeout: float) -> bool:
    """Whether the server at ``host``:``port`` completes a TLS handshake (its certificate not checked)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock, \
                _tls_context(False).wrap_socket(sock, server_hostname=host):
            return True
    except OSError:
        return False

"""run_tasks: results in order, tasks started in the order given (longest-first balancing relies on it)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest

from cardcube.errors import InvalidRequestError
from cardcube.parallel import run_tasks


def test_tasks_start_in_the_order_given_and_results_come_back_in_order() -> None:
    started: list[int] = []
    lock = threading.Lock()

    def task(i: int) -> int:
        with lock:
            started.append(i)
        time.sleep(0.005)
        return i * i

    assert run_tasks(task, [(i,) for i in range(30)], progress=False) == [i * i for i in range(30)]
    # Two workers may swap neighbours; nothing starts before a task given well ahead of it.
    assert all(abs(pos - i) <= 2 for pos, i in enumerate(started)), started


def test_the_first_error_is_raised() -> None:
    def task(i: int) -> int:
        if i == 3:
            raise ValueError("bad unit 3")
        return i

    with pytest.raises(ValueError, match="bad unit 3"):
        run_tasks(task, [(i,) for i in range(6)], progress=False, scheduler="sync")


def test_an_unknown_scheduler_is_a_clear_error() -> None:
    with pytest.raises(InvalidRequestError, match="unknown scheduler 'bogus'"):
        run_tasks(abs, [(1,)], progress=False, scheduler="bogus")


def test_a_scheduler_address_of_an_unknown_scheme_is_a_clear_error() -> None:
    with pytest.raises(InvalidRequestError, match=r"tpc://127.0.0.1:8786: unknown address scheme 'tpc' \(known"):
        run_tasks(abs, [(1,)], progress=False, scheduler="tpc://127.0.0.1:8786")


def test_a_scheduler_address_where_nothing_listens_fails_at_once() -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(InvalidRequestError, match="connection refused \\(is dask-scheduler running there"):
        run_tasks(abs, [(1,)], progress=False, scheduler=f"tcp://127.0.0.1:{port}")


def test_a_scheduler_address_where_another_service_answers_is_named_so() -> None:
    """The dashboard's port (8787) or any HTTP server: distributed read its answer as a message of exabytes (a
    MemoryError), or waited for a handshake forever when it said nothing."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        accepted: list[socket.socket] = []

        def answer_http() -> None:
            with contextlib.suppress(OSError):
                while True:
                    conn, _ = server.accept()
                    accepted.append(conn)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

        threading.Thread(target=answer_http, daemon=True).start()
        try:
            with pytest.raises(InvalidRequestError, match=rf"tcp://127.0.0.1:{port} does not answer as a dask "
                                                          rf"scheduler .*not its dashboard's \(8787\)"):
                run_tasks(abs, [(1,)], progress=False, scheduler=f"tcp://127.0.0.1:{port}")
        finally:
            for conn in accepted:
                conn.close()

"""Running a real ``cardcube ingest`` in a subprocess, optionally killed (SIGKILL) at a step or a moment; or its
command line in the test's process, for a run neither killed nor signalled (:func:`run_ingest_here`)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cardcube.checkpoints import STOP_ENV
from tests.in_process import run_here

CHUNKS = "time=4,space=64,shard_space=256"


def ingest_command(items: Path, cube: str, collection: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "cardcube.cli", "ingest", str(items), "--cube", cube, "--collection", collection,
            "--quiet", "--chunks", CHUNKS, *extra]


def run_ingest(items: Path, cube: str, collection: str, *extra: str, kill_at: str | None = None,
               env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run an ingest to completion (or to its SIGKILL at the named commit step)."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("CARDCUBE_KILL_AT", None)
    if kill_at:
        full_env["CARDCUBE_KILL_AT"] = kill_at
    return subprocess.run(ingest_command(items, cube, collection, *extra), env=full_env, capture_output=True,
                          text=True, timeout=timeout)


def run_ingest_here(items: Path, cube: str, collection: str, *extra: str,
                    env: dict | None = None) -> subprocess.CompletedProcess:
    """:func:`run_ingest`'s command line run in this process (:func:`tests.in_process.run_here`): for a run neither
    killed nor signalled."""
    return run_here(ingest_command(items, cube, collection, *extra)[3:], env=env)  # after "python -m cardcube.cli"


def stopped_at(command: list[str], step: str, *, env: dict | None = None) -> subprocess.Popen:
    """Start ``command`` and return once it has stopped itself (SIGSTOP) at the checkpoint ``step``
    (``CARDCUBE_STOP_AT``), to be woken by SIGCONT. It is killed when the test's process ends: a test failing before
    it wakes the process left it stopped for good, holding its memory (the pytest run long gone)."""
    full_env = {**os.environ, **(env or {}), STOP_ENV: step}
    proc = subprocess.Popen(command, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_killed_with_the_test)
    deadline = time.monotonic() + 300  # only so a broken run ends; nothing about time is asserted
    while proc_stat(proc.pid)[0] != "T":
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"the process never stopped at {step}"
        time.sleep(0.05)
    return proc


def proc_stat(pid: int) -> list[str]:
    """The fields of ``/proc/PID/stat`` after the process's name: its state (T stopped, Z ended), its parent, ..."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def kill_after(items: Path, cube: str, collection: str, seconds: float, *, env: dict | None = None) -> int:
    """Start an ingest and SIGKILL it after ``seconds`` (if still running); returns its exit code."""
    full_env = {**os.environ, **(env or {})}
    full_env.pop("CARDCUBE_KILL_AT", None)
    proc = subprocess.Popen(ingest_command(items, cube, collection), env=full_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    return proc.wait(timeout=60)


def stopped_while_held(command: list[str], proxy, *, env: dict | None = None,
                       sig: signal.Signals = signal.SIGTERM) -> subprocess.Popen:
    """Start ``command`` and send it ``sig`` once ``proxy`` holds back one of its requests (:meth:`S3Proxy.hold`,
    set by the caller): a write slow to land, behind a busy gateway."""
    proc = subprocess.Popen(command, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300  # only so a broken run ends; nothing about time is asserted
    while not proxy.held:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no request was ever held"
        time.sleep(0.05)
    proc.send_signal(sig)
    return proc


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            if int(proc_stat(int(entry))[1]) == pid:
                found.append(int(entry))
        except OSError:  # ended meanwhile
            pass
    return found


def pool_workers(pid: int) -> list[int]:
    """The worker processes of ``pid``'s process pool: its children but multiprocessing's resource tracker, which
    ends by itself, cleaning up."""
    return [p for p in children(pid) if b"resource_tracker" not in Path(f"/proc/{p}/cmdline").read_bytes()]


def still_running(pids: list[int], *, within: float = 30) -> list[int]:
    """Those of ``pids`` still running after up to ``within`` seconds (a killed process takes a moment to end)."""
    deadline = time.monotonic() + within
    while (running := [p for p in pids if alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.1)
    return running


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie has ended)."""
    try:
        return proc_stat(pid)[0] != "Z"
    except OSError:
        return False


def _killed_with_the_test() -> None:
    """In the child, before it runs: Linux sends it SIGKILL when the process that started it ends (a stopped process
    too); elsewhere, nothing."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG

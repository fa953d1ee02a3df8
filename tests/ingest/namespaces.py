"""A real process in a pid namespace of its own (``unshare -pf``, as root): a container on the host network, or in
a pod beside another, as another cardcube sees it: the same host name, pids of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def can_unshare_pids() -> bool:
    """Whether this process may start one in a new pid namespace and set the pid it gets there."""
    try:
        return subprocess.run(["unshare", "-pf", "--mount-proc", "sh", "-c",
                               "echo 300 > /proc/sys/kernel/ns_last_pid"], capture_output=True).returncode == 0
    except FileNotFoundError:
        return False


@contextmanager
def in_another_pid_namespace(code: str, *args: str) -> Iterator[tuple[int, str]]:
    """Run the Python ``code`` (given ``args`` as sys.argv[1:]) in a pid namespace of its own; it prints a line once
    ready, then waits until its stdin closes, which the block's end does. Its pid there is one that names no process
    here (a pid of a live process in another namespace is mostly none here, or another one). Yields that pid (as the
    process sees it) and the line printed."""
    pid = 30000
    while any(os.path.exists(f"/proc/{p}") for p in range(pid, pid + 5)):
        pid += 100
    # not exec'd: sh is the namespace's pid 1, python the next pid after the one set
    inner = f'echo {pid} > /proc/sys/kernel/ns_last_pid && "$0" -c "$@"; exit $?'
    code = f"import os, sys; print(os.getpid(), flush=True)\n{code}"
    command = ["unshare", "-pf", "--kill-child", "--mount-proc", "sh", "-c", inner, sys.executable, code, *args]
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT)
    try:
        theirs = proc.stdout.readline()
        line = proc.stdout.readline()
        assert theirs and line, proc.communicate()
        yield int(theirs), line.strip()
    except BaseException:
        proc.communicate("", timeout=120)  # its stdin closed: it ends
        raise
    _, err = proc.communicate("", timeout=120)
    assert proc.returncode == 0, err

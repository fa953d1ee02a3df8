"""A ``cardcube`` command line run in this process (:func:`cardcube.cli.main`, as the console script calls it): for
a run a test needs done (a re-run after a kill, a run refused), not killed nor signalled, without the seconds a new
interpreter takes to start and import everything."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from collections.abc import Iterator

from cardcube.checkpoints import STOP_ENV
from cardcube.cli import main

_CHECKPOINTS = ("CARDCUBE_KILL_AT", STOP_ENV)  # a run here must never kill nor stop the test's own process


def run_here(argv: list[str], *, env: dict | None = None) -> subprocess.CompletedProcess:
    """The ``cardcube`` command line ``argv`` run by :func:`cardcube.cli.main`, with ``env`` added to the
    environment while it runs; its exit status (argparse's 2 for a bad option too) and what it printed, as a
    finished process's."""
    out, err = io.StringIO(), io.StringIO()
    with environment(env or {}), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exit_:  # argparse refusing an option
            code = exit_.code if isinstance(exit_.code, int) else 1
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


@contextlib.contextmanager
def environment(env: dict[str, str]) -> Iterator[None]:
    """``os.environ`` with ``env`` set and no checkpoint variable, restored after the block."""
    names = set(env) | set(_CHECKPOINTS)
    former = {name: os.environ.get(name) for name in names}
    for name in _CHECKPOINTS:
        os.environ.pop(name, None)
    os.environ.update(env)
    try:
        yield
    finally:
        for name, value in former.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

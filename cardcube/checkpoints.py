"""Named checkpoints of long jobs, where the crash tests kill a real process.

``CARDCUBE_KILL_AT=<step>`` makes the process die by SIGKILL the first time it reaches ``<step>``: no
cleanup runs, exactly as after a power cut or an OOM kill. ``CARDCUBE_STOP_AT=<step>`` stops it there
by SIGSTOP instead, as a frozen process or a suspended machine, until a SIGCONT. Only the crash tests
set them.
"""

from __future__ import annotations

import logging
import os
import signal

KILL_ENV = "CARDCUBE_KILL_AT"
STOP_ENV = "CARDCUBE_STOP_AT"

log = logging.getLogger("cardcube")


def checkpoint(step: str) -> None:
    """Mark a named step; under ``CARDCUBE_KILL_AT=<step>`` the process dies here by SIGKILL, under
    ``CARDCUBE_STOP_AT=<step>`` it stops here by SIGSTOP."""
    log.info("step: %s", step)
    if os.environ.get(KILL_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)
    if os.environ.get(STOP_ENV) == step:
        os.kill(os.getpid(), signal.SIGSTOP)

"""Named checkpoints of long jobs, where the crash tests kill a real process.

``CARDCUBE_KILL_AT=<step>`` makes the process die by SIGKILL the first time it reaches ``<step>``: no
cleanup runs, exactly as after a power cut or an OOM kill. Only the crash tests set it.
"""

from __future__ import annotations

import logging
import os
import signal

KILL_ENV = "CARDCUBE_KILL_AT"

log = logging.getLogger("cardcube")


def checkpoint(step: str) -> None:
    """Mark a named step; under ``CARDCUBE_KILL_AT=<step>`` the process dies here by SIGKILL."""
    log.info("step: %s", step)
    if os.environ.get(KILL_ENV) == step:
        os.kill(os.getpid(), signal.SIGKILL)

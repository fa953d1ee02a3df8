"""The ``cardcube`` command: argparse subcommands, each a thin shell over the Python API.

Each package contributes its subcommands through a ``register(subparsers)`` function in its own
``cli`` module, so this file only assembles them and turns cardcube errors, and failures of the disk or
the network, into a one-line message and exit status 2 (``cardcube -v COMMAND``: the traceback); 1 when no
acquisition falls within ``--time`` (:class:`~cardcube.errors.DateNotFoundError`). A command given ``--json`` then
prints the error as its JSON document too, ``{"error": <kind>, "detail": <message>}`` as the REST service answers
one, so a script reading its output reads JSON whether it succeeded or not.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import multiprocessing
import os
import signal
import sys
import threading
import warnings
from collections.abc import Iterator, Sequence
from typing import NoReturn

from botocore.exceptions import BotoCoreError

from cardcube import __version__
from cardcube.errors import CardcubeError, DateNotFoundError, TasksStillRunningError
from cardcube.io_loop import cancel_pending_io
from cardcube.option_types import number
from cardcube.parallel import STOP_GRACE
from cardcube.serving import STORE_TIMEOUT, error_kind

EXIT_GRACE_S = 5.0  # at exit, how long the store reads a failed one left behind have to end once cancelled

# Modules that define ``register(subparsers)``; order is the order of ``cardcube --help``.
_SUBCOMMAND_MODULES = (
    "cardcube.demo",
    "cardcube.synth.cli",
    "ingest.cli",
    "catalog.cli",
    "cube.cli",
)


def add_endpoint_option(p: argparse.ArgumentParser, *, note: str = "") -> None:
    """``--endpoint-url``: the S3 endpoint (Ceph, MinIO) of the stores a command reads and writes (``note``: what
    it does not apply to)."""
    p.add_argument("--endpoint-url", default=None, help=f"S3 endpoint (Ceph, MinIO); default $AWS_ENDPOINT_URL{note}")


def add_store_timeout_option(p: argparse.ArgumentParser, *, served: bool = True) -> None:
    """``--store-timeout``: how long a request to an S3 store may take to fail: of an HTTP command (``serve``,
    ``catalog serve``; ``served``), so that an outage is answered at once (:data:`cardcube.serving.STORE_TIMEOUT`);
    of an interactive read (``timeseries``, ``chip``), unbounded unless given, so that a user behind a gateway that
    hangs is told within about that, not after minutes of the client's retries."""
    if served:
        p.add_argument("--store-timeout", type=number("a number of seconds", above=0), default=STORE_TIMEOUT,
                       metavar="SECONDS", help=f"seconds a request to an S3 cube may take to fail, retries included "
                       f"(default {STORE_TIMEOUT:g}): a store out of reach is then a 503 with Retry-After within "
                       f"about that, not after a minute of retries")
        return
    p.add_argument("--store-timeout", type=number("a number of seconds", above=0), default=None, metavar="SECONDS",
                   help="seconds a request to an S3 cube may take to fail, retries included (default: the client's "
                   "retries, which ride out a throttling store but wait minutes on one that hangs)")


def add_stop_grace_option(p: argparse.ArgumentParser, *, tasks: str, then: str) -> None:
    """``--stop-grace``: how long a stopped run waits for its running ``tasks`` (:data:`STOP_GRACE`); ``then``: what
    becomes of those still running."""
    p.add_argument("--stop-grace", type=number("a number of seconds", at_least=0), default=STOP_GRACE,
                   metavar="SECONDS", help=f"when the run is stopped (Ctrl-C, SIGTERM, an error) while {tasks} run, "
                   f"wait this long for them to end (default {STOP_GRACE:.0f}); {then}")


def storage_options(args: argparse.Namespace) -> dict | None:
    """The storage options :func:`add_endpoint_option` gives, as the Python API takes them."""
    return {"endpoint_url": args.endpoint_url} if args.endpoint_url else None


def build_parser() -> argparse.ArgumentParser:
    """The ``cardcube`` parser: every subcommand, each registered by the package that implements it."""
    parser = argparse.ArgumentParser(
        prog="cardcube",
        description="Sentinel-1/2 CARD scenes as time-first Zarr v3 cubes for CAP checks by monitoring.",
    )
    parser.add_argument("--version", action="version", version=f"cardcube {__version__}",
                        help="the version of cardcube installed (a bug report's first line)")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log progress details, and show the traceback of an error (without it: one error line)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def quiet_rasterio_threads() -> None:
    """Hide rasterio's NotGeoreferencedWarning of its own in-memory datasets. Its reproject (ingest --warp) and
    rasterize (extract's label layers) of arrays in threads now and then warn of one, georeferenced as given and
    burnt or warped right (opendatacube/odc-geo#131): noise that would read as a fault of the user's data."""
    for module in ("rasterio.warp", "rasterio.features"):
        warnings.filterwarnings("ignore", message="Dataset has no geotransform", module=module)


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, Kubernetes stopping a pod), raised where Ctrl-C would be: the command
    unwinds as on Ctrl-C, so a writer lets go of its lock instead of leaving it to block the cube for
    ``--stale-after`` seconds to a run on another host (the next pod)."""


@contextlib.contextmanager
def _sigterm_raises(error: type[KeyboardInterrupt]) -> Iterator[None]:
    """Within the block, SIGTERM raises ``error`` (in the main thread, the only one that may set a handler); the
    former handler is restored after it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raising(signum: int, frame: object) -> NoReturn:
        raise error()

    former = signal.signal(signal.SIGTERM, raising)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, former)


class _ServingStopped(KeyboardInterrupt):
    """SIGTERM within :func:`sigterm_stops_serving` (a KeyboardInterrupt as :class:`Terminated`, which, raised by
    this module run as ``__main__``, is another class than the one its importers see)."""


@contextlib.contextmanager
def sigterm_stops_serving(command: str) -> Iterator[None]:
    """The block of a server command (``serve``, ``catalog serve``): SIGTERM, a process manager's stop, ends it as
    asked, with exit status 0 as uvicorn's own, once the requests held were answered (uvicorn's shutdown raises the
    signal again after); the 143 of a run cut short made ``systemctl stop`` list the unit as failed."""
    try:
        with _sigterm_raises(_ServingStopped):
            yield
    except _ServingStopped:
        print(f"cardcube {command}: stopped (SIGTERM)", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one ``cardcube`` command line; its exit status."""
    return _main(argv)[0]


def run() -> NoReturn:
    """The ``cardcube`` command: :func:`main`, then exit. A run stopped with tasks still running past its
    ``--stop-grace`` (which it has said, leaving its lock in place) ends at once: Python's exit would wait for
    dask's threads to end their writes, for as long as a store holds them back, and fail zarr's pending ones with
    tracebacks. Cutting them is what a kill does, which the cube is built to survive (nothing is committed; the
    lock, left in place, says how long what was sent may still land). Worker processes of ``--scheduler processes``
    are killed first, or they would run on, and their queued tasks too, after this process had ended."""
    code, tasks_left = _main(None)
    if not tasks_left:
        cancel_pending_io(EXIT_GRACE_S)
    if tasks_left:
        for child in multiprocessing.active_children():
            child.kill()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


def _say(args: argparse.Namespace, command: str, kind: str, message: str) -> None:
    """An error or a stop, ``message``, on stderr; with ``--json`` also on stdout, as the command's JSON document
    (``{"error": kind, "detail": message}``): a script reads JSON whatever the outcome, not an empty output."""
    print(f"cardcube {command}: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"error": kind, "detail": message.removeprefix("error: ")}))


def _main(argv: Sequence[str] | None) -> tuple[int, bool]:
    """The exit status of a command line, and whether it stopped with tasks still running (said by the error, or
    by one it was raised while handling: a second Ctrl-C while the run unwinds)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    quiet_rasterio_threads()
    command = " ".join(filter(None, (args.command, getattr(args, "verb", None))))  # as argparse names it
    try:
        with _sigterm_raises(Terminated):
            code = int(args.func(args) or 0)
            sys.stdout.flush()  # here, not at exit: a reader gone (| head) is a broken pipe, below
            return code, False
    except BrokenPipeError:  # the reader of stdout went away (| head, | grep -q), once the work was done
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nor may exit's flush fail again
        return 128 + signal.SIGPIPE, False  # as a process killed by SIGPIPE, and no error: the shell's convention
    except CardcubeError as exc:
        if args.verbose:
            raise
        _say(args, command, error_kind(exc), f"error: {exc}")
        if isinstance(exc.__cause__, KeyboardInterrupt):  # stopped, then something to say (writes still running)
            code = 128 + signal.SIGTERM if isinstance(exc.__cause__, Terminated) else 130
        else:
            code = 1 if isinstance(exc, DateNotFoundError) else 2  # nothing to measure, as timeseries' empty file
        return code, TasksStillRunningError.in_chain(exc)
    except (OSError, BotoCoreError) as exc:  # the disk or the network, outside cardcube's own checks
        if args.verbose:
            raise
        _say(args, command, error_kind(exc), f"error: {type(exc).__name__}: {exc} (-v shows where)")
        return 2, False
    except KeyboardInterrupt as exc:  # Terminated too
        said = "terminated" if isinstance(exc, Terminated) else "interrupted"
        then = f": {args.on_stop}" if getattr(args, "on_stop", None) else ""  # what a command set_defaults says
        _say(args, command, said.capitalize(), f"{said}{then}")
        return 128 + signal.SIGTERM if isinstance(exc, Terminated) else 130, TasksStillRunningError.in_chain(exc)


if __name__ == "__main__":
    run()

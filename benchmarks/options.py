"""Command-line checks the benchmark scripts share. A run takes minutes and keeps its figures only at its
end, so a bad option is refused with one argparse error (exit 2) before any work, never as a traceback after."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cardcube.option_types import number
from cardcube.storage import replacing

S3_SERVER = ("moto", "flask")  # moto[server]: the S3 tiers' server on loopback
BENCH_EXTRA = {"moto": "moto[server]", "flask": "moto[server]", "odc.stac": "odc-stac", "exactextract": "exactextract",
               "httpx": "httpx"}  # the modules of the bench extra a benchmark may need, and their distributions


def check_extra(parser: argparse.ArgumentParser, *modules: str) -> None:
    """Refuse the run if one of ``modules`` (of :data:`BENCH_EXTRA`) is not installed, naming the extra to install:
    a base install (``pip install cardcube``) otherwise generated and ingested its region, minutes, before an
    ImportError traceback."""
    missing = dict.fromkeys(BENCH_EXTRA[m] for m in modules if not _installed(m))
    if missing:
        parser.error(f"needs {', '.join(missing)}, of cardcube's bench extra: pip install 'cardcube[bench]' (from a "
                     f"checkout: pip install -e '.[bench]')")


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # its parent package is missing (odc for odc.stac)
        return False


def check_out(parser: argparse.ArgumentParser, out: Path, *, names: Iterable[str] = (),
              given: Path | None = None) -> None:
    """Refuse ``--out`` unless the figures can be written into the folder ``out`` after the run: nothing but
    folders in its place and above it, the nearest existing one writable, and none of ``names`` (the files the
    run writes there) a folder. Nothing is created here. ``given``: the ``--out`` as typed, if ``out`` is
    derived from it (a dated subfolder, or the folder of a file)."""
    shown = given if given is not None else out
    for path in (out, *out.parents):
        if not path.exists():
            continue
        if not path.is_dir():
            parser.error(f"--out {shown}: {path} is a file, not a folder")
        if not os.access(path, os.W_OK | os.X_OK):
            parser.error(f"--out {shown}: cannot write in {path}")
        break
    for name in names:
        if (out / name).is_dir():
            parser.error(f"--out {shown}: {out / name} is a folder")


def repeat_command(module: str, given: Mapping[str, Any], flags: Mapping[str, str], defaults: Mapping[str, Any]) -> str:
    """``python -m module`` with the flag of each setting in ``given`` that is not its default: the command that
    repeats a run, as its report states it. A tuple is shown comma-separated, a float as ``:g``."""
    def shown(value: Any) -> str:
        if isinstance(value, tuple):
            return ",".join(map(str, value))
        return f"{value:g}" if isinstance(value, float) else str(value)

    return " ".join([f"python -m {module}", *(f"{flags[k]} {shown(v)}" for k, v in given.items() if v != defaults[k])])


def write_whole(path: Path, data: str | bytes) -> None:
    """``data`` into the file ``path`` whole or not at all (:func:`cardcube.storage.replacing`): a run stopped or a
    disk full while writing leaves the figures or report an earlier run wrote there as they were, not cut short."""
    with replacing(path) as part:
        Path(part).write_bytes(data.encode() if isinstance(data, str) else data)


def read_json(parser: argparse.ArgumentParser, path: Path, flag: str = "--from-json") -> Any:
    """The JSON in the file ``path`` (``--from-json``), or one argparse error naming what is wrong with it."""
    if not path.is_file():
        parser.error(f"{flag} {path}: no such file")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        parser.error(f"{flag} {path}: not a JSON file ({exc})")


def milliseconds(text: str) -> tuple[float, ...]:
    """``"0,20"`` -> (0.0, 20.0): latencies per request, comma-separated, each finite and >= 0 ms (argparse
    reports the error)."""
    one = number("milliseconds", at_least=0)
    values = tuple(one(v.strip()) for v in text.split(",") if v.strip())
    if not values:
        raise argparse.ArgumentTypeError(f"expected milliseconds, comma-separated (e.g. 0,20), got {text!r}")
    return values


def add_s3_options(parser: argparse.ArgumentParser, *, latency_ms: float, bandwidth_mbps: float) -> None:
    """``--latency`` and ``--bandwidth`` of the proxy an S3 benchmark reads through (:mod:`benchmarks.storage`),
    and ``--out`` and ``--from-json`` of its report (``<stem>.md`` and ``<stem>.json``, named by ``prog``)."""
    parser.add_argument("--latency", type=number("milliseconds", at_least=0), default=latency_ms,
                        help=f"ms added per S3 request (default {latency_ms:g})")
    parser.add_argument("--bandwidth", type=number("MB/s", at_least=0), default=bandwidth_mbps,
                        help=f"MB/s per S3 response (default {bandwidth_mbps:g}; 0: no cap)")
    parser.add_argument("--out", type=Path, default=None, help="folder for the report and its JSON")
    parser.add_argument("--from-json", type=Path, default=None, help="re-render the report from its JSON")


AWS_SETTINGS = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")


@contextmanager
def own_s3_settings() -> Iterator[None]:
    """Within the block (a benchmark's run, its child processes too), no AWS profile or config file of the user's: the
    benchmarks' S3 is their own moto server on loopback with its own keys. ``AWS_PROFILE`` of a profile this machine's
    config lacks ended every S3 benchmark in botocore's ProfileNotFound; a profile's settings applied to it."""
    before = {k: os.environ.get(k) for k in AWS_SETTINGS}
    for k in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        os.environ.pop(k, None)
    os.environ.update(AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

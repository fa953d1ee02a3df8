"""argparse types of the command lines' numbers, shared by every CLI (``cardcube`` and the benchmarks).

Each refuses a value its option cannot take while the arguments are parsed, before any work, with one line
naming the constraint: ``argument --refresh: expected a number of seconds >= 0, got '-1'``. NaN and
infinities are refused too: no option takes them.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable
from datetime import date, timedelta

from cardcube.errors import InvalidRequestError


def number(what: str = "a number", *, at_least: float | None = None, above: float | None = None
           ) -> Callable[[str], float]:
    """The type of a finite number ``>= at_least`` or ``> above`` (or both); ``what`` names it in the refusal
    ("a number of seconds")."""
    bounds = " and ".join([*([f">= {at_least:g}"] if at_least is not None else []),
                           *([f"> {above:g}"] if above is not None else [])])

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or (at_least is not None and value < at_least) or (
                above is not None and value <= above):
            raise argparse.ArgumentTypeError(f"expected {what}{' ' + bounds if bounds else ''}, got {text!r}")
        return value

    return parse


def whole_number(*, at_least: int = 0) -> Callable[[str], int]:
    """The type of a whole number ``>= at_least`` (a count: 0 or more by default)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = at_least - 1
        if value < at_least:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {at_least}, got {text!r}")
        return value

    return parse


def day(text: str) -> date:
    """The type of a date written ``YYYY-MM-DD`` (argparse's own refusal named Python's parser: "invalid
    fromisoformat value")."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def path_prefix(text: str) -> str:
    """The type of a URL path prefix (``serve --root-path /cardcube``): from the root, ``/`` first. Without it,
    ``cardcube`` made the docs page's links relative (``cardcube/openapi.json``), read from ``/cardcube/docs`` as
    ``/cardcube/cardcube/openapi.json``: a page without its API; a whole URL is no prefix either, nor one with an
    empty segment: ``//cardcube`` (``"$PREFIX/cardcube"`` of ``PREFIX=/``) made the docs page load its scripts from
    the host ``cardcube`` (``//cardcube/docs-assets/...``, a URL of the page's scheme)."""
    if (text and not text.startswith("/")) or "://" in text or "?" in text or "#" in text or "//" in text.rstrip("/"):
        path = text.split("://", 1)[-1].partition("/")[2] if "://" in text else text
        path = re.sub("/+", "/", path).strip("/")
        raise argparse.ArgumentTypeError(f"expected a path prefix from the root, e.g. /{path or 'cardcube'}"
                                         f", got {text!r}")
    return text


def parse_age(text: str) -> timedelta:
    """``"7d"``, ``"12h"``, ``"30m"``, ``"45s"`` or ``"0"`` as a duration. The unit is required (but for 0): the
    ages say what deleting commands may delete, and ``7`` meant as a week would be 7 seconds."""
    units = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}
    text = text.strip().lower()
    number, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "")
    try:
        value = float(number)
    except ValueError:
        raise InvalidRequestError(f"cannot read {text!r} as an age; write e.g. 7d, 12h, 30m or 0") from None
    if not math.isfinite(value) or value < 0:  # before the unit: "write nand for days" made no sense
        raise InvalidRequestError(f"an age must be a finite number of days, hours, minutes or seconds >= 0: {text!r}")
    if not unit and value != 0:
        raise InvalidRequestError(f"the age {text!r} has no unit; write {text}d for days, or {text}h, {text}m, "
                                  f"{text}s")
    try:
        return timedelta(**{units[unit or "s"]: value})
    except OverflowError:
        raise InvalidRequestError(f"{text!r} is longer than any cube has existed; write e.g. 7d") from None

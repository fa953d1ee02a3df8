"""The command lines' number types: what each takes, and the one line refusing the rest."""

from __future__ import annotations

import argparse
from datetime import date

import pytest

from cardcube.option_types import day, number, path_prefix, whole_number

SECONDS = "a number of seconds"


@pytest.mark.parametrize(("kind", "text", "value"), [
    (number(SECONDS, at_least=0), "0", 0.0),
    (number(SECONDS, at_least=0), "2.5", 2.5),
    (number(SECONDS, above=0), "1e-3", 0.001),
    (number(SECONDS, at_least=1), "1", 1.0),
    (number("a side in km", at_least=0.4), "0.4", 0.4),
    (number(), "-7", -7.0),
    (whole_number(), "0", 0),
    (whole_number(at_least=1), " 12 ", 12),
    (day, "2024-05-01", date(2024, 5, 1)),
    (path_prefix, "/cardcube", "/cardcube"),
    (path_prefix, "/cardcube/", "/cardcube/"),
    (path_prefix, "", ""),
])
def test_a_number_within_the_bounds_is_taken(kind, text: str, value) -> None:
    got = kind(text)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(("kind", "text", "says"), [
    (number(SECONDS, at_least=0), "-1", "expected a number of seconds >= 0, got '-1'"),
    (number(SECONDS, above=0), "0", "expected a number of seconds > 0, got '0'"),
    (number(SECONDS, at_least=1), "0.1", "expected a number of seconds >= 1, got '0.1'"),
    (number(SECONDS, at_least=1), "soon", "expected a number of seconds >= 1, got 'soon'"),
    (number(SECONDS, at_least=0), "nan", "expected a number of seconds >= 0, got 'nan'"),
    (number(SECONDS, above=0), "inf", "expected a number of seconds > 0, got 'inf'"),
    (number("a side in km", at_least=0.4), "0.1", "expected a side in km >= 0.4, got '0.1'"),
    (number(), "", "expected a number, got ''"),
    (whole_number(), "-1", "expected a whole number >= 0, got '-1'"),
    (whole_number(), "1.5", "expected a whole number >= 0, got '1.5'"),
    (whole_number(at_least=1), "0", "expected a whole number >= 1, got '0'"),
    (day, "2024-7-1", "expected a date YYYY-MM-DD, got '2024-7-1'"),
    (day, "2024-02-30", "expected a date YYYY-MM-DD, got '2024-02-30'"),
    # the docs page of --root-path cardcube asked for /cardcube/cardcube/openapi.json
    (path_prefix, "cardcube", "expected a path prefix from the root, e.g. /cardcube, got 'cardcube'"),
    (path_prefix, "api/cardcube/", "expected a path prefix from the root, e.g. /api/cardcube, got 'api/cardcube/'"),
    # the docs page loaded its scripts from the host "cardcube": //cardcube/docs-assets/swagger-ui-bundle.js
    (path_prefix, "//cardcube", "expected a path prefix from the root, e.g. /cardcube, got '//cardcube'"),
    (path_prefix, "/api//cardcube/", "expected a path prefix from the root, e.g. /api/cardcube, got '/api//cardcube/'"),
    (path_prefix, "https://gis.example.org/cardcube", "expected a path prefix from the root, e.g. /cardcube, got "
                                                      "'https://gis.example.org/cardcube'"),
])
def test_anything_else_is_refused_naming_the_constraint(kind, text: str, says: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        kind(text)
    assert str(refused.value) == says


def test_argparse_reports_the_refusal_with_the_option(capsys) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--refresh", type=number(SECONDS, at_least=0))
    with pytest.raises(SystemExit) as stop:
        p.parse_args(["--refresh", "-1"])
    assert stop.value.code == 2
    assert "argument --refresh: expected a number of seconds >= 0, got '-1'" in capsys.readouterr().err


def test_serve_refuses_a_root_path_not_from_the_root(capsys) -> None:
    """``cardcube serve --root-path cardcube`` served a docs page whose API, behind the proxy, was not found."""
    from cardcube.cli import build_parser

    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["serve", "--cube", "cube", "--root-path", "cardcube"])
    assert stop.value.code == 2
    assert "argument --root-path: expected a path prefix from the root, e.g. /cardcube" in capsys.readouterr().err
    assert build_parser().parse_args(["serve", "--cube", "cube", "--root-path", "/cardcube/"]).root_path == "/cardcube/"

"""What an ``Accept-Encoding`` header accepts (:mod:`cube.content_coding`); the service's gzip in
tests/cube/test_service.py."""

from __future__ import annotations

import pytest

from cube.content_coding import accepts_gzip


@pytest.mark.parametrize(("header", "gzip"), [
    ("gzip", True), ("gzip, deflate, br", True), ("GZIP", True), ("x-gzip", True), ("gzip;q=0.5", True),
    ("*", True), ("*;q=0, gzip", True), ("gzip;q=high", True),  # a weight that is none: as if none were given
    ("gzip;q=0", False), ("gzip; q=0.000", False), ("identity, gzip;q=0", False), ("gzip;q=0, *", False),
    ("br, *;q=0", False), ("identity", False), ("", False), ("br", False)])
def test_gzip_is_accepted_as_rfc_9110_weighs_it(header, gzip):
    assert accepts_gzip(header) is gzip

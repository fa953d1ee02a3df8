"""The project as `make` installs it: its packages are found whatever folder a command runs in."""

from __future__ import annotations

import subprocess
import sys


def test_the_packages_are_found_from_a_folder_holding_a_cube(tmp_path):
    """`python -m cardcube.cli serve` run in the demo's folder, which holds the cube in `cube/`, imported that
    folder as the package `cube` (a namespace package of no file: a TypeError at start): the editable install's
    import hook came after the folder. The install puts the project on the path, ahead of such a folder."""
    for name in ("cube", "catalog", "ingest"):
        (tmp_path / name).mkdir()
    script = ("import cardcube, catalog, cube, ingest\n"
              "from cube.service import code_digest\n"
              "print(code_digest())\n"
              "print(*(m.__file__ for m in (cardcube, catalog, cube, ingest)))")
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    digest, files = run.stdout.splitlines()
    assert len(digest) >= 16 and all(f.endswith("__init__.py") and str(tmp_path) not in f for f in files.split())

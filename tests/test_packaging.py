"""The project as `make` installs it: its packages are found whatever folder a command runs in."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest


def test_the_packages_are_found_from_a_folder_holding_a_cube(tmp_path):
    """`python -m cardcube.cli serve` run in the demo's folder, which holds the cube in `cube/`, imported that
    folder as the package `cube` (a namespace package of no file: a TypeError at start): the editable install's
    import hook came after the folder. The install puts the project on the path, ahead of such a folder."""
    for name in ("cube", "catalog", "ingest"):
        (tmp_path / name).mkdir()
    script = ("import cardcube, catalog, cube, ingest\n"
              "from cube.revalidation import code_digest\n"
              "print(code_digest())\n"
              "print(*(m.__file__ for m in (cardcube, catalog, cube, ingest)))")
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    digest, files = run.stdout.splitlines()
    assert len(digest) >= 16 and all(f.endswith("__init__.py") and str(tmp_path) not in f for f in files.split())


@pytest.mark.parametrize("cache_dir", [None, "file/numba"])
def test_the_statistics_run_where_numba_may_not_cache_them(cache_dir, tmp_path):
    """Installed read-only (a container image) and run with no writable home or NUMBA_CACHE_DIR, numba found no
    folder for the kernels' cache and its decorator raised on import: every command computing statistics ended in
    "RuntimeError: cannot cache function '_lerp': no locator available". The kernels are compiled uncached then,
    with a warning naming NUMBA_CACHE_DIR. Here the package's `__pycache__` is a file and the home is under one."""
    import shutil

    import cube

    site = tmp_path / "site"
    shutil.copytree(os.path.dirname(cube.__file__), site / "cube", ignore=shutil.ignore_patterns("__pycache__"))
    (site / "cube" / "__pycache__").write_text("not a folder")
    (tmp_path / "file").write_text("not a folder")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "XDG_"))}
    env.update(HOME=str(tmp_path / "file" / "home"), PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1")
    if cache_dir:  # given, but a folder that cannot be made: the warning says so rather than to set it
        env["NUMBA_CACHE_DIR"] = str(tmp_path / cache_dir)
    script = ("import numpy as np\n"
              "from cube import kernels\n"
              "classes = np.array([[3, 4, 9, 4], [8, 8, 3, 0]], dtype=np.uint8)\n"
              "labels = np.array([0, 1, 1, -1], dtype=np.int32)\n"
              "slot = np.array([0, 1, -1, -1, -1, -1, 2], dtype=np.int64)  # codes 3, 4 and 9 counted\n"
              "out = np.zeros((2, 2, 3), dtype=np.int64)\n"
              "kernels.count_classes(classes, labels, 3, slot, out)\n"
              "print(kernels.__file__)\n"
              "print(out.ravel().tolist())")
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    where, counts = run.stdout.splitlines()
    assert where == str(site / "cube" / "kernels.py")
    expected = np.zeros((2, 2, 3), dtype=np.int64)  # by hand: parcel 0 holds pixel 0, parcel 1 pixels 1 and 2
    expected[0, 0, 0] = 1  # date 0: pixel 0 is code 3
    expected[1, 0, 1] = expected[1, 0, 2] = 1  # pixels 1 (4) and 2 (9)
    expected[1, 1, 0] = 1  # date 1: pixel 2 is code 3 (pixel 1's 8 not counted)
    assert counts == str(expected.ravel().tolist())
    assert "set NUMBA_CACHE_DIR to a writable folder" in run.stderr and "RuntimeWarning" in run.stderr
    assert (f"not in NUMBA_CACHE_DIR {tmp_path / (cache_dir or '')}, beside" in run.stderr) == bool(cache_dir)
    assert "Traceback" not in run.stderr


def _declared(requirements: list[str], extras: set[str] = frozenset()) -> set[str]:
    """The distributions ``requirements`` bring, theirs included (as installed here), each's extras' too where
    asked for: what a user's install of them holds."""
    from importlib.metadata import PackageNotFoundError, requires

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    found: set[str] = set()
    todo = [(Requirement(r), extras) for r in requirements]
    while todo:
        req, asked = todo.pop()
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (asked or {""})):
            continue
        name = canonicalize_name(req.name)
        if name in found:
            continue
        found.add(name)
        with contextlib.suppress(PackageNotFoundError):  # not installed here: nothing of its own to follow
            todo.extend((Requirement(r), set(req.extras)) for r in requires(req.name) or ())
    return found


def _imported(files: list) -> dict[str, str]:
    """The top-level modules ``files`` import, not the standard library's nor the project's: one file each."""
    import ast

    out: dict[str, str] = {}
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for top in {n.split(".")[0] for n in names} - set(sys.stdlib_module_names) - set(PACKAGES):
                out.setdefault(top, str(f))
    return out


PACKAGES = ("cardcube", "cube", "ingest", "catalog", "benchmarks")
ROOT = Path(__file__).resolve().parent.parent


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _product_files() -> list[Path]:
    """The modules of the Python API's packages, without their test helpers (cardcube.testing)."""
    return [f for p in PACKAGES[:4] for f in (ROOT / p).rglob("*.py") if "testing" not in f.parts]


def test_every_module_imported_is_installed_by_the_dependencies_or_the_extra():
    """`pip install 'cardcube[bench]'` left httpx out (the test extra's alone), which benchmarks.service and
    service_load need to ask the REST service: both ended in "No module named 'httpx'" after generating and
    ingesting their region. Every module the packages import comes with the base dependencies, and the benchmarks'
    (and the S3 server, proxy and served command they run) with those and the bench extra."""
    from importlib.metadata import packages_distributions

    from packaging.utils import canonicalize_name

    project = _pyproject()["project"]
    base = _declared(project["dependencies"])
    bench = _declared(project["dependencies"] + project["optional-dependencies"]["bench"])
    testing = [ROOT / "cardcube" / "testing" / n for n in ("__init__.py", "s3server.py", "s3proxy.py", "served.py")]
    product = _product_files()
    providers = packages_distributions()
    missing = []
    for files, declared, install in ((product, base, "cardcube"), ([*(ROOT / "benchmarks").rglob("*.py"), *testing],
                                                                     bench, "cardcube[bench]")):
        for module, where in sorted(_imported(files).items()):
            if not {canonicalize_name(d) for d in providers.get(module, ())} & declared:
                missing.append(f"{module} ({where}) with pip install '{install}'")
    assert not missing, missing


def test_every_dependency_is_imported_by_the_packages():
    """pyproject.toml's base dependencies held pydantic-settings, which nothing imports, and rio-cogeo, which only a
    test does: every user's install (a JupyterHub's, a dask worker's image) carried them and theirs. Each base
    dependency is a distribution some module of the packages imports."""
    from importlib.metadata import packages_distributions

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = _pyproject()["project"]
    providers = packages_distributions()
    imported = {canonicalize_name(d) for module in _imported(_product_files()) for d in providers.get(module, ())}
    unused = [r for r in project["dependencies"] if canonicalize_name(Requirement(r).name) not in imported]
    assert not unused, unused


def test_the_command_says_the_version_the_package_is_built_with(capsys):
    """`cardcube --version` was refused ("the following arguments are required: COMMAND", exit 2), and the
    version was written twice, in pyproject.toml and cardcube/__init__.py, free to drift apart: a user had no
    way to say which cardcube an extraction's "software" field or a bug came from. pyproject.toml takes
    cardcube.__version__, which the command prints."""
    import cardcube
    from cardcube.cli import main

    project = _pyproject()
    assert "version" not in project["project"] and project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "cardcube.__version__"}
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out == f"cardcube {cardcube.__version__}\n"


def test_the_packages_say_their_type_hints_are_to_be_checked():
    """The packages carry type hints on their public functions, but no `py.typed`: a pipeline checked with mypy
    was told "module is installed, but missing library stubs or py.typed marker" for `from cube.dataset import
    open_cube`, and its calls went unchecked. Each package of the Python API has the marker, and the wheel takes
    it (package-data)."""
    data = _pyproject()["tool"]["setuptools"]["package-data"]
    for package in PACKAGES[:4]:
        assert (ROOT / package / "py.typed").is_file() and "py.typed" in data.get(package, ())

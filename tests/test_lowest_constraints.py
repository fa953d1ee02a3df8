"""`make test-lowest`'s constraints: each direct dependency pinned to its lower bound, as pyproject.toml says it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def constraints(pyproject: Path, *extras: str) -> list[str]:
    script = ROOT / "tests" / "lowest_constraints.py"
    run = subprocess.run([sys.executable, str(script), str(pyproject), *extras], capture_output=True, text=True,
                         timeout=60, check=True)
    return run.stdout.splitlines()


def test_each_direct_dependency_is_pinned_to_its_lower_bound(tmp_path):
    """Extras of a requirement dropped (a constraint takes none), the highest of two bounds, only the extras asked
    for, and nothing for a dependency without a lower bound."""
    pyproject = tmp_path / "pyproject.toml"
    pyproject.write_text('[project]\nname = "x"\n'
                         'dependencies = ["dask[array]>=2025.1", "matplotlib>=3.9", "tqdm", "botocore>=1.36"]\n'
                         '[project.optional-dependencies]\n'
                         'test = ["moto[server]>=5.2.6", "matplotlib>=3.8"]\nbench = ["psutil>=5.9"]\n')
    assert constraints(pyproject, "test") == ["botocore==1.36", "dask==2025.1", "matplotlib==3.9", "moto==5.2.6"]


def test_the_projects_floors_are_all_constrained():
    """Every name in pyproject.toml's dependencies and its test and bench extras, botocore's 1.36 among them."""
    pinned = constraints(ROOT / "pyproject.toml", "test", "bench")
    assert "botocore==1.36" in pinned and all("==" in line and "[" not in line for line in pinned)
    assert {"moto", "odc-stac", "pytest"} <= {line.split("==")[0] for line in pinned}

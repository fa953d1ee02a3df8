"""Print a constraints file that pins each direct dependency of pyproject.toml to its lower bound.

`make test-lowest` resolves with uv's lowest-direct strategy, which takes a direct dependency's lowest version only
where nothing else asks for more: s3fs's lowest release allows an aiobotocore that pins a botocore far above
ours, so botocore's floor went untested. Given these pins as constraints (`uv pip compile --constraints`), uv has
to pick versions of the other packages that accept every floor, or fail saying which floor it cannot reach.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version


def lower_bounds(pyproject: Path, *, extras: list[str]) -> dict[str, Version]:
    """Each direct dependency's lower bound (of the main list and `extras`), by name; the highest where several say."""
    project = tomllib.loads(pyproject.read_text())["project"]
    declared = list(project["dependencies"])
    for extra in extras:
        declared += project["optional-dependencies"][extra]
    bounds: dict[str, Version] = {}
    for line in declared:
        requirement = Requirement(line)
        floors = [Version(spec.version) for spec in requirement.specifier if spec.operator in (">=", "==", "~=")]
        if floors:
            name = canonicalize_name(requirement.name)
            bounds[name] = max([*floors, bounds.get(name, floors[0])])
    return bounds


def main(argv: list[str]) -> None:
    """`lowest_constraints.py PYPROJECT [EXTRA ...]`: the constraints on standard output, one `name==floor` a line."""
    bounds = lower_bounds(Path(argv[0]), extras=argv[1:])
    sys.stdout.write("".join(f"{name}=={floor}\n" for name, floor in sorted(bounds.items())))


if __name__ == "__main__":
    main(sys.argv[1:])

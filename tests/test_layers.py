"""The package's layers: every import inside src/babelcast points down the architecture's path
(audio → features → model → decoding → streaming → server / cli, with eval, train, bench and data beside),
never back up; lazy imports inside functions count too. Rank is the position in LAYERS; a unit imports
only units of lower rank (units of one rank are beside each other and import none of each other)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "babelcast"
LAYERS = [
    {"errors"}, {"config"}, {"chunking"}, {"audio"}, {"manifest"}, {"model"}, {"checkpoint"}, {"decoding"},
    {"formats", "argtypes"}, {"streaming"}, {"recognizer"}, {"cli_errors"}, {"server"}, {"scale"},
    {"eval", "train", "bench", "data"}, {"cli_serve"}, {"cli"}, {"__main__"},
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
# The package root (babelcast/__init__.py: lazy public names and the settable DEFAULT_MODEL) may be read by
# the units that load the default model or print the version; it imports nothing eagerly.
ROOT_READERS = {"recognizer", "cli_errors", "eval", "bench", "cli"}


def unit_of(parts: tuple[str, ...]) -> str:
    """A module's unit: its subpackage, or the top-level module itself ("" for the package root)."""
    return "" if parts in ((), ("__init__",)) else parts[0]


def imported_units(path: Path, package_dir: Path = PACKAGE) -> set[str]:
    """The units of babelcast that one file imports (relative or absolute, at any depth of the file)."""
    rel = path.relative_to(package_dir).with_suffix("").parts
    package = rel[:-1]  # the file's own package, relative to babelcast
    units = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - node.level + 1]
            module = base + tuple(node.module.split(".") if node.module else ())
            targets = [module] if node.module else [base + (alias.name,) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "babelcast":
            module = tuple(node.module.split(".")[1:])
            targets = [module] if module else [(alias.name,) for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [tuple(a.name.split(".")[1:]) for a in node.names if a.name.split(".")[0] == "babelcast"]
        else:
            continue
        units |= {unit_of(t) if unit_of(t) in RANK else "" for t in targets}
    return units


def test_every_unit_has_a_layer():
    found = {unit_of(p.relative_to(PACKAGE).with_suffix("").parts) for p in PACKAGE.rglob("*.py")}
    assert found - {""} <= set(RANK), f"give these a place in LAYERS: {sorted(found - {''} - set(RANK))}"


def test_imports_point_down():
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = unit_of(path.relative_to(PACKAGE).with_suffix("").parts)
        if unit == "":
            continue  # the root's lazy names point anywhere by design
        for target in imported_units(path) - {unit}:
            if target == "" and unit in ROOT_READERS:
                continue
            if target == "" or RANK[target] >= RANK[unit]:
                upward.append(f"{path.relative_to(PACKAGE)} imports {target or 'the package root'}")
    assert not upward, "imports that point up or sideways:\n" + "\n".join(upward)


def test_the_checker_sees_relative_and_absolute_imports(tmp_path):
    """The checker itself: a model file's imports of the server and of streaming are both found."""
    fake = tmp_path / "babelcast"
    (fake / "model").mkdir(parents=True)
    (fake / "model" / "bad.py").write_text("from ..server.app import create_app\nimport babelcast.streaming\n")
    assert imported_units(fake / "model" / "bad.py", fake) == {"server", "streaming"}

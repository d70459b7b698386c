"""Imports point down: a package may import only packages below it in LAYERS (and nothing imports cli).

Read from the source (every import statement, including the ones inside functions), so an upward
import fails here before it becomes a cycle at run time.
"""

import ast
from pathlib import Path

from distill_jax import LAYERS

PACKAGE = Path(__file__).resolve().parents[1] / "distill_jax"


def _unit(path: Path) -> str:
    """The layer a file belongs to: its sub-package, or the module's own name for top-level modules."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module] + (
                [f"{node.module}.{a.name}" for a in node.names] if node.module == "distill_jax" else []
            )
        elif isinstance(node, ast.Import):
            modules = [a.name for a in node.names]
        else:
            continue
        found += [(node.lineno, m) for m in modules if m.startswith("distill_jax.")]
    return found


def upward_imports(layers: tuple[tuple[str, ...], ...]) -> list[str]:
    rank = {unit: i for i, level in enumerate(layers) for unit in level}
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = _unit(path)
        if unit == "__init__":
            continue
        if unit not in rank:
            problems.append(f"{path.relative_to(PACKAGE.parent)}: {unit!r} is in no layer of distill_jax.LAYERS")
            continue
        for line, module in _imports(path):
            target = module.split(".")[1]
            if target != unit and target in rank and rank[target] <= rank[unit]:
                problems.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {unit} imports {module} (not below it)")
    return problems


def test_every_import_points_down():
    assert upward_imports(LAYERS) == []


def test_the_check_catches_an_upward_import():
    # Negative control: with training placed above distill, distill's imports of training point up.
    swapped = tuple(level for level in LAYERS if "training" not in level)
    swapped = (("training",),) + swapped
    problems = upward_imports(swapped)
    assert any("distill imports distill_jax.training" in p for p in problems), problems[:3]

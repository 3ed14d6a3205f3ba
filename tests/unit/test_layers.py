"""The package layout is the architecture: each subpackage imports only the layers below it.

    errors  <  pieces  <  catalog, build  <  judge  <  pipeline  <  post  <  cli

``catalog`` (what onnxspec knows about models) and ``build`` (turning specs into graphs) are
side by side and do not import each other. Imports inside functions count too: a lazy import
is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import onnxspec

PACKAGE = Path(onnxspec.__file__).parent

ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "pieces": {"errors", "pieces"},
    "catalog": {"errors", "pieces", "catalog"},
    "build": {"errors", "pieces", "build"},
    "judge": {"errors", "pieces", "build", "judge"},
    "pipeline": {"errors", "pieces", "catalog", "build", "judge", "pipeline"},
    "post": {"errors", "pieces", "catalog", "build", "judge", "pipeline", "post"},
    "cli": {"errors", "pieces", "catalog", "build", "judge", "pipeline", "post", "cli"},
}


def _layer(module: str) -> str:
    """``onnxspec.pieces.spec`` -> ``pieces``; the package root's own names -> ``root``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in {*ALLOWED, "errors"} else "root"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("onnxspec")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("onnxspec"):
            if node.module == "onnxspec":
                found |= {f"onnxspec.{a.name}" if a.name in {*ALLOWED} else "onnxspec" for a in node.names}
            else:
                found.add(node.module)
    return found


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if p.parent != PACKAGE)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_imports_only_lower_layers(path: Path) -> None:
    layer = path.relative_to(PACKAGE).parts[0]
    assert layer in ALLOWED, f"{path}: subpackage {layer!r} has no place in the layer table; add it to ALLOWED"
    wrong = {
        m: _layer(m)
        for m in _imports(path)
        if _layer(m) not in ALLOWED[layer] and not (m == "onnxspec" and layer in {"pipeline", "post", "cli"})
    }
    assert not wrong, f"{path.relative_to(PACKAGE)} ({layer}) imports {wrong}; {layer} may import {sorted(ALLOWED[layer])}"


def test_every_module_lives_in_a_layer() -> None:
    loose = sorted(p.name for p in PACKAGE.glob("*.py")) 
    assert loose == ["__init__.py", "__main__.py", "errors.py"], f"modules outside the subpackages: {loose}"


def test_a_violation_is_seen(tmp_path: Path) -> None:
    """The check can fail: a piece importing the pipeline is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from onnxspec.pipeline.core import export\n")
    assert _layer(next(iter(_imports(bad)))) == "pipeline" not in ALLOWED["pieces"]

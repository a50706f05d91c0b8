"""The layers point one way: ``contract`` at the bottom imports none of the others;
``trainers`` and ``analysis`` import only ``contract``; ``service`` may import them all.
Torch stays out of ``contract`` and ``analysis``, Ray out of everything but ``service``.

Checked statically over every import statement (those inside functions too), so a lazy
import cannot hide an upward edge."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("contract", "trainers", "analysis", "service")
ALLOWED = {
    "contract": set(),
    "trainers": {"contract"},
    "analysis": {"contract"},
    "service": {"contract", "trainers", "analysis"},
}
FORBIDDEN_THIRD_PARTY = {
    "contract": {"torch", "ray", "matplotlib"},
    "trainers": {"ray"},
    "analysis": {"torch", "ray"},
    "service": set(),
}


def imported_packages(path: Path) -> set[str]:
    """Top-level names of every absolute import in one module."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def edges(package: str) -> dict[str, set[str]]:
    return {
        str(path.relative_to(ROOT)): imported_packages(path)
        for path in sorted((ROOT / package).rglob("*.py"))
    }


@pytest.mark.parametrize("package", PACKAGES)
def test_no_upward_or_sideways_edge(package):
    bad = {
        module: sorted((names & set(PACKAGES)) - ALLOWED[package] - {package})
        for module, names in edges(package).items()
    }
    assert {m: b for m, b in bad.items() if b} == {}


@pytest.mark.parametrize("package", PACKAGES)
def test_heavy_frameworks_stay_in_their_layers(package):
    bad = {
        module: sorted(names & FORBIDDEN_THIRD_PARTY[package])
        for module, names in edges(package).items()
    }
    assert {m: b for m, b in bad.items() if b} == {}


def test_the_checker_sees_an_upward_edge(tmp_path):
    """The test can fail: a lazy import inside a function is an edge too."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from service.plan import trial_id\n    import torch.nn\n")
    assert imported_packages(module) == {"service", "torch"}

"""The layers of DESIGN.md: data flows api -> services -> domain/store/runtime; never upward."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "cove"
ALLOWED = {
    "domain": {"domain"},
    "store": {"domain", "store"},
    "runtime": {"runtime", "config"},
    "services": {"services", "domain", "store", "runtime", "config", "egress"},
    "egress": {"egress", "domain", "runtime", "config"},
    "scheduler": {"scheduler", "services", "domain"},
    "api": {"api", "services", "domain"},
}


def cove_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        found |= {n.split(".")[1] for n in names if n.startswith("cove.") and n.count(".") >= 1}
    return found


def test_no_upward_imports() -> None:
    violations = []
    for layer, allowed in ALLOWED.items():
        for path in (SRC / layer).rglob("*.py"):
            bad = cove_imports(path) - allowed
            if bad:
                violations.append(f"{path.relative_to(SRC)} imports {sorted(bad)}")
    assert violations == []

"""Verbs are nobody's library: no module of seremo/, benchmarks/ or jobs/ reaches into another's private names.

What two stages share lives in a module both import under a public name; a leading
underscore means "this module's own", so a change to it cannot break another stage.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _seremo_module(name: str | None) -> bool:
    return bool(name) and (name == "seremo" or name.startswith("seremo."))


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def foreign_private_uses(where: str, source: str) -> list[str]:
    """``from seremo.x import _y`` and ``x._y`` (``x`` a seremo module imported here) in one file's source."""
    tree = ast.parse(source, where)
    aliases: set[str] = set()  # local names bound to seremo modules
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases |= {(a.asname or a.name).split(".")[0] for a in node.names if _seremo_module(a.name)}
        elif isinstance(node, ast.ImportFrom) and (_seremo_module(node.module) or node.level):
            for a in node.names:
                if _private(a.name):
                    found.append(f"{where}: from {node.module} import {a.name}")
                else:  # a module (from seremo import tune; from seremo.scoring import sink) or a class
                    aliases.add(a.asname or a.name)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name)
                and node.value.id in aliases):  # fmt: skip
            found.append(f"{where}: {node.value.id}.{node.attr}")
    return found


def test_the_checker_sees_both_forms():
    source = ("from seremo import tune\nfrom seremo.train import _x, y\nfrom seremo.scoring import sink\n"
              "import numpy as np\ntune._nested()\nnp._x\nsink._commits()\n")  # fmt: skip
    assert foreign_private_uses("probe.py", source) == ["probe.py: from seremo.train import _x", "probe.py: tune._nested",
                                                        "probe.py: sink._commits"]  # fmt: skip


def test_no_module_uses_another_modules_private_names():
    files = [p for d in ("seremo", "benchmarks", "jobs") for p in sorted((ROOT / d).rglob("*.py"))]
    found = {f for p in files for f in foreign_private_uses(p.relative_to(ROOT).as_posix(), p.read_text())}
    assert not found, "private names used across modules:\n" + "\n".join(sorted(found))

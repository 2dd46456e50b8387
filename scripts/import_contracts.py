"""An import-linter contract type that puts top-level scripts (train.py) into the layers.

Why: import-linter builds its graph from packages, so a script beside them, the one file every
user reads first, was not checked at all (it once imported a tool). This contract type is the
built-in `layers` contract plus a `scripts` option: each script is parsed with `ast`, added to
the graph as a module of its own, with its imports of the template's packages, and then the
layers are checked as usual. `pyproject.toml` registers it under `contract_types`.
"""

from __future__ import annotations

import ast
from pathlib import Path

from grimp import ImportGraph
from importlinter.contracts.layers import LayersContract
from importlinter.domain import fields
from importlinter.domain.contract import ContractCheck


class LayersWithScriptsContract(LayersContract):
    """Options as `layers`, plus `scripts`: paths of scripts (a script's module is its stem)."""

    scripts = fields.ListField(subfield=fields.StringField())

    def check(self, graph: ImportGraph, verbose: bool) -> ContractCheck:
        for script in self.scripts:  # type: ignore[attr-defined]
            add_script(graph, Path(script))
        return super().check(graph, verbose)


def add_script(graph: ImportGraph, path: Path) -> None:
    """Add `path` as module `<stem>` with its imports of modules already in the graph."""
    importer = path.stem
    graph.add_module(importer)
    known = graph.modules
    lines = path.read_text().splitlines()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module]
        else:
            continue
        for name in names:
            imported = _nearest_known(name, known)
            if imported is not None:
                graph.add_import(
                    importer=importer,
                    imported=imported,
                    line_number=node.lineno,
                    line_contents=lines[node.lineno - 1].strip(),
                )


def _nearest_known(name: str, known: set[str]) -> str | None:
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None

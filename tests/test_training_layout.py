"""training/ keeps its import picture (training/__init__.py): trainers side by side, never importing
each other; only cli and ensemble sit above them. Read from the source (ast), nothing imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TRAINING = Path(__file__).resolve().parent.parent / "training"
# Rows of the picture, top to bottom: a module may import only from rows below its own.
ROWS = [
    {"__main__"},
    {"cli"},
    {"ensemble"},
    {"classic", "loop", "transfer", "musicnn_head", "realworld"},
    {"musicnn_onnx"},
    {"nets", "musicnn"},
    {"extract", "evaluate", "export"},
    {"data"},
]
ROW = {m: i for i, row in enumerate(ROWS) for m in row}


def _local_imports(path: Path) -> set[str]:
    """Sibling modules of training/ that ``path`` imports, at any depth (lazy imports included)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                out.add(node.module.split(".")[0])
            elif node.level == 0 and node.module and node.module.startswith("training."):
                out.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("training.")}
    return out


def test_every_training_module_has_a_place_in_the_picture():
    modules = {p.stem for p in TRAINING.glob("*.py")} - {"__init__"}
    assert modules == set(ROW), "add new modules to training/__init__.py's picture and to ROWS here"


@pytest.mark.parametrize("module", sorted(ROW))
def test_imports_only_go_down(module):
    for dep in _local_imports(TRAINING / f"{module}.py"):
        assert ROW[dep] > ROW[module], f"training/{module}.py imports {dep} (row {ROW[dep]} vs {ROW[module]})"

"""training/ keeps its import picture (training/__init__.py): trainers side by side, never importing
each other; only cli, chain and ensemble sit above them. Read from the source (ast), nothing imported."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TRAINING = Path(__file__).resolve().parent.parent / "training"
# Rows of the picture, top to bottom: a module may import only from rows below its own.
ROWS = [
    {"__main__"},
    {"cli"},
    {"chain"},
    {"ensemble"},
    {"classic", "cnn", "wavenet", "distil", "transfer", "musicnn_head", "taxonomy", "reference",
     "musicnn_convert", "musicnn_vgg"},  # and any module not listed
    {"loop", "musicnn_onnx", "realworld"},
    {"nets", "musicnn", "windows", "tf_graph"},
    {"extract", "evaluate", "export", "runfolder"},
    {"data"},
]
ROW = {m: i for i, row in enumerate(ROWS) for m in row}
TRAINERS = 4  # the row a module not listed here is checked as: a new trainer imports no other


def _row(module: str) -> int:
    return ROW.get(module, TRAINERS)


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


MODULES = sorted(p.stem for p in TRAINING.glob("*.py") if p.stem != "__init__")


def test_the_picture_names_existing_modules():
    assert ROWS[TRAINERS] >= {"classic", "cnn", "wavenet", "transfer"}
    assert set(ROW) <= set(MODULES), "a module named here is gone: update ROWS and training/__init__.py"


@pytest.mark.parametrize("module", MODULES)
def test_imports_only_go_down(module):
    for dep in _local_imports(TRAINING / f"{module}.py"):
        assert _row(dep) > _row(module), f"training/{module}.py imports {dep} (row {_row(dep)} vs {_row(module)})"

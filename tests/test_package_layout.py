"""gtag/ keeps the shape its wings' docstrings describe: each wing imports only the wings below it,
no module imports itself back through others, no module grows past ~400 lines, and the beets
plugin uses the documented API only. Read from the source (ast), nothing imported."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
GTAG = ROOT / "gtag"
MAX_LINES = 400

# What each wing (subpackage or top-level module) may import of gtag, besides itself and the root
# package's ``__version__``. Read top to bottom, it is the pipeline: the cli drives everything,
# a run drives predictions, a prediction reads audio, models and tags, and the vocabulary is below all.
ALLOWED: dict[str, set[str]] = {
    "__main__": {"cli"},
    "cli": {"api", "audio", "config", "exitcodes", "genres", "keep", "learn", "models", "output",
            "predict", "run", "tags"},
    "api": {"audio", "config", "models", "predict", "run"},
    "keep": {"exitcodes", "output", "run", "tags"},
    "learn": {"audio", "exitcodes", "genres", "models", "predict", "run", "tags"},
    "run": {"audio", "config", "exitcodes", "genres", "predict", "tags"},
    "predict": {"audio", "genres", "models", "tags"},
    "models": {"genres"},
    "config": {"genres"},
    "tags": set(),
    "audio": set(),
    "genres": set(),
    "exitcodes": set(),
    "output": set(),
}
WINGS = {p.name for p in GTAG.iterdir() if (p / "__init__.py").is_file()}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(GTAG.rglob("*.py"))}


def _imports(path: Path) -> list[tuple[str, int]]:
    """(module, level) of every import in ``path``, at any depth (lazy imports included); a
    ``from gtag.x import y`` where y is a module counts as importing gtag.x.y."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            out.append((base, node.level))
            out += [(f"{base}.{a.name}", node.level) for a in node.names
                    if node.level == 0 and f"{base}.{a.name}" in MODULES]
        elif isinstance(node, ast.Import):
            out += [(a.name, 0) for a in node.names]
    return [(m, level) for m, level in out if level or m == "gtag" or m.startswith("gtag.")]


def _wing(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _known(module: str) -> str:
    """The gtag module an import names (``gtag.x.y.Name`` -> ``gtag.x.y``)."""
    while module not in MODULES and "." in module:
        module = module.rsplit(".", 1)[0]
    return module


def test_the_table_names_every_wing():
    tops = {_wing(m) for m in MODULES if m != "gtag"}
    assert tops == set(ALLOWED), (
        f"not in ALLOWED: {sorted(tops - set(ALLOWED))}; gone: {sorted(set(ALLOWED) - tops)}"
    )


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_follow_the_table(module):
    for name, level in _imports(MODULES[module]):
        assert level == 0, f"{module} uses a relative import: gtag imports are absolute"
        target = _wing(_known(name))
        if name == "gtag" or target in ("", _wing(module)):
            continue
        allowed = ALLOWED[_wing(module)] if module != "gtag" else {"api"}  # the root's lazy API names
        assert target in allowed, f"{module} imports {name}: {_wing(module)} may not use {target}"


def test_the_root_package_imports_nothing_at_load():
    """``import gtag`` (and so ``from gtag import __version__`` in every wing) must stay free."""
    tree = ast.parse((GTAG / "__init__.py").read_text())
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert top == []


def test_no_import_cycle_between_modules():
    graph = {m: {_known(n) for n, _ in _imports(p)} - {m, "gtag"} for m, p in MODULES.items()}
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join([*path[path.index(nxt):], nxt])
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


@pytest.mark.parametrize("path", sorted(GTAG.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_over_the_limit(path):
    lines = len(path.read_text().splitlines())
    assert lines <= MAX_LINES, f"{path.relative_to(ROOT)} has {lines} lines: split it along the data"


@pytest.mark.parametrize("wing", sorted(WINGS - {"cli"}))
def test_every_wing_says_what_it_owns_and_imports(wing):
    """The docstring's "Imports:" paragraph is the table's row, so a reader can trust it."""
    doc = ast.get_docstring(ast.parse((GTAG / wing / "__init__.py").read_text())) or ""
    assert "Imports:" in doc, f"gtag/{wing}/__init__.py needs a docstring that says what it may import"
    said = set(re.findall(r"gtag\.(\w+)", doc.split("Imports:", 1)[1].split("\n\n")[0]))
    assert said == ALLOWED[wing], f"gtag/{wing}/__init__.py says it imports {sorted(said)}, the table {sorted(ALLOWED[wing])}"


def test_the_beets_plugin_uses_the_documented_api_only():
    plugin = ROOT / "beetsplug" / "gtag.py"
    used = {_known(n) for n, _ in _imports(plugin)} - {"gtag"}
    assert used <= {"gtag.api"}, f"beetsplug/gtag.py reaches past gtag.api: {sorted(used)}"
    assert not (ROOT / "beetsplug" / "__init__.py").exists(), "beetsplug is a namespace package"

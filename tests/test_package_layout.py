"""The package's layers depend one way: errors <- layers <- models <- checkpoints <- hub <- training <- tools, CLI.

Read from the source (every import, at module level or inside a function), so a lazy import cannot hide a
cycle or a library module reaching up into the tools.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "fdconv_zoo"

#: rank of each part; a module may import parts of its own rank or lower only
RANKS = {
    "errors": 0,
    "layers": 1,
    "models": 2, "baselines": 2,
    "checkpoints": 3,
    "": 3,              # the package root: registers the models, re-exports the public API
    "hub": 4,
    "training": 5,
    "tools": 6,
    "commands": 7, "cli": 7,
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_deprecated_alias(tree: ast.Module) -> bool:
    """The old import paths kept for one release (``_moved.alias_module`` or a warning at import)."""
    source = ast.dump(tree)
    return "alias_module" in source or ("DeprecationWarning" in source and "warn" in source and len(tree.body) < 12)


def _imports(path: Path) -> set[str]:
    """Every ``fdconv_zoo`` module ``path`` imports, submodules resolved where the import names one."""
    tree = ast.parse(path.read_text())
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "fdconv_zoo")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "fdconv_zoo":
                continue
            for alias in node.names:
                child = f"{module}.{alias.name}"
                is_module = (PACKAGE.parent / Path(*child.split("."))).with_suffix(".py").is_file() or \
                    (PACKAGE.parent / Path(*child.split("."))).is_dir()
                found.add(child if is_module else module)
    return found


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))
           if not _is_deprecated_alias(ast.parse(p.read_text())) and p.name != "_moved.py"}


def _part(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_only_its_own_layer_or_lower(module):
    rank = RANKS[_part(module)]
    upward = sorted(m for m in _imports(MODULES[module]) if m in MODULES and RANKS[_part(m)] > rank)
    assert not upward, f"{module} (rank {rank}) imports {upward}"


def test_the_reference_and_the_fast_paths_stay_apart():
    assert not [m for m in _imports(MODULES["fdconv_zoo.layers.fd_reference"]) if ".layers._ops" in m]


def test_no_import_cycles():
    graph = {m: {d for d in _imports(p) if d in MODULES and d != m} for m, p in MODULES.items()}
    done: set[str] = set()

    def visit(module: str, stack: list[str]) -> None:
        if module in stack:
            raise AssertionError("import cycle: " + " -> ".join(stack[stack.index(module):] + [module]))
        if module in done:
            return
        for dep in sorted(graph[module]):
            visit(dep, stack + [module])
        done.add(module)

    for module in sorted(graph):
        visit(module, [])

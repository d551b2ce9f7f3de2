"""The architecture holds: each part imports only the parts below it, and only the face talks to the terminal.

Layers, bottom to top: errors, fast (speed machinery), core (the maths), store (disk), engines (what runs a training
step), runs (what a command does), cli (the face); torch is the torch engine's alone.  Read from the source with
ast, so a violation anywhere in a module (a lazy import inside a function too) fails here.
"""

import ast
from pathlib import Path

import pytest

import charrnn

ROOT = Path(charrnn.__file__).parent
LAYERS = ["errors", "fast", "core", "store", "engines", "runs", "cli"]  # bottom to top
TERMINAL = {"click", "rich", "tqdm"}  # libraries only the face may import
TORCH = ROOT / "engines" / "torch"  # the only folder that may import torch


def part(module: str) -> str | None:
    """The part a charrnn module belongs to: charrnn.core.model -> core; charrnn.errors -> errors."""
    pieces = module.split(".")
    return pieces[1] if len(pieces) > 1 and pieces[0] == "charrnn" and pieces[1] in LAYERS else None


def module(path: Path) -> str:
    """charrnn/core/model.py -> charrnn.core.model"""
    return ".".join(path.relative_to(ROOT.parent).with_suffix("").parts)


def imports(path: Path) -> list[str]:
    """Every module the file imports, top level or not, relative imports resolved."""
    package = module(path).rsplit(".", 1)[0].split(".")
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            found.append(base)
            found += [f"{base}.{a.name}" for a in node.names]  # `from charrnn import x` names a module
    return found


SOURCES = sorted(p for p in ROOT.rglob("*.py") if part(module(p)))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_module_imports_only_what_its_part_may(path):
    own = part(module(path))
    above = {name for name in imports(path) if part(name) and LAYERS.index(part(name)) > LAYERS.index(own)}
    assert not above, f"{path.relative_to(ROOT)} ({own}) imports from a layer above it: {sorted(above)}"
    if own != "cli":
        terminal = {name for name in imports(path) if name.split(".")[0] in TERMINAL}
        assert not terminal, f"{path.relative_to(ROOT)} talks to the terminal: {sorted(terminal)}"
    if not path.is_relative_to(TORCH):
        torch = {name for name in imports(path) if name.split(".")[0] == "torch"}
        assert not torch, f"{path.relative_to(ROOT)} imports torch, which only the torch engine may: {sorted(torch)}"


def test_every_module_belongs_to_a_part():
    loose = [p.name for p in ROOT.glob("*.py") if p.stem not in ("__init__", "__main__", "errors")]
    assert not loose, f"modules outside the parts: {loose}"


@pytest.mark.parametrize("folder", [ROOT / name for name in LAYERS[1:]] + [ROOT / "core" / "cells", TORCH],
                         ids=lambda p: p.name)
def test_every_folder_says_what_lives_there_and_what_it_may_import(folder):
    doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text())) or ""
    assert len(doc.split()) >= 15 and "import" in doc, f"{folder.name}/__init__.py: say its job and its imports"

"""The files a user migrates together with a bed script: the script and the sibling modules it imports."""

from __future__ import annotations

import ast
from pathlib import Path


def program_files(folder: Path, script: str) -> list[str]:
    """``script`` (relative to ``folder``) first, then every module of the script's own
    directory (or a package in it) that the script imports, directly or through another such
    module: what a user names on ``migrate main.py data.py model.py`` (docs/programs.md: the
    files are one program; a helper function that needs the wrapper takes it as a parameter).
    Installed packages and the standard library are not in the folder, so they are not found."""
    home = (folder / script).parent
    found = [folder / script]
    todo = list(found)
    while todo:
        path = todo.pop()
        try:
            tree = ast.parse(path.read_text(), filename=str(path))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            for module in _modules(node, path, home):
                if module not in found:
                    found.append(module)
                    todo.append(module)
    return [str(p.relative_to(folder)) for p in found]


def _modules(node: ast.AST, path: Path, home: Path) -> list[Path]:
    """The files of ``home`` (a sibling module, a package module) that ``node`` imports."""
    if isinstance(node, ast.Import):
        names = [(home, a.name) for a in node.names]
    elif isinstance(node, ast.ImportFrom):
        base = home if not node.level else _up(path.parent, node.level - 1)
        if base is None:
            return []
        mod = node.module or ""
        names = [(base, f"{mod}.{a.name}" if mod else a.name) for a in node.names]
        if mod:
            names.append((base, mod))
    else:
        return []
    out = []
    for base, dotted in names:
        parts = dotted.split(".")
        for candidate in (
            base.joinpath(*parts).with_suffix(".py"),
            base.joinpath(*parts, "__init__.py"),
        ):
            if candidate.is_file() and candidate not in out:
                out.append(candidate)
    return out


def _up(folder: Path, levels: int) -> Path | None:
    for _ in range(levels):
        folder = folder.parent
    return folder

"""Find the Python files to migrate: explicit files, recursive directories, .gitignore, excludes."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

# Directories never worth descending into (tools' caches, virtual environments, builds);
# `exclude` in the configuration or `--exclude` replaces this list, `extend-exclude` adds.
DEFAULT_EXCLUDE: tuple[str, ...] = (
    ".git", ".hg", ".svn", ".venv", "venv", ".tox", ".nox", "__pycache__", ".mypy_cache",
    ".ruff_cache", ".pytest_cache", "node_modules", "build", "dist", ".eggs", "*.egg-info",
)

STDIN = "-"


@dataclass(frozen=True)
class Candidate:
    """One input: a file path (or ``-`` for stdin) and the name shown in reports."""

    path: Path
    display: str
    explicit: bool  # named on the command line (as opposed to found in a directory)
    error: str | None = None  # discovery-time problem (missing path, ...): one line

    @property
    def is_stdin(self) -> bool:
        return self.display == STDIN and self.explicit


class _Matcher:
    """gitwildmatch patterns anchored at ``root`` (pathspec is a dependency of black too)."""

    def __init__(self, root: Path, patterns: Iterable[str]) -> None:
        import pathspec  # only when walking: keeps single-file runs fast

        self.root = root
        self.spec = pathspec.GitIgnoreSpec.from_lines(list(patterns))

    def _target(self, path: Path, is_dir: bool) -> str | None:
        try:
            rel = path.relative_to(self.root).as_posix()
        except ValueError:
            return None
        if rel == ".":
            return None
        return rel + "/" if is_dir else rel

    def check(self, path: Path, is_dir: bool) -> bool | None:
        """True = excluded, False = re-included (``!pattern``), None = no pattern matched;
        a pattern matching one of the path's directories counts (``build/`` excludes
        ``build/a/b.py``)."""
        target = self._target(path, is_dir)
        return None if target is None else self.spec.check_file(target).include

    def check_entry(self, path: Path, is_dir: bool) -> bool | None:
        """Like ``check``, but only patterns that match ``path`` itself count, as in git's
        own walk: the walk never enters a directory a pattern matched, so a match through a
        parent can only come from the directory the user named, which is walked anyway."""
        target = self._target(path, is_dir)
        if target is None:
            return None
        verdict = None
        for pattern in self.spec.patterns:
            if pattern.include is not None and pattern.regex.fullmatch(target):
                verdict = pattern.include
        return verdict


def discover(
    paths: Sequence[str],
    *,
    root: Path,
    exclude: Sequence[str] = DEFAULT_EXCLUDE,
    respect_gitignore: bool = True,
    force_exclude: bool = False,
) -> Iterator[Candidate]:
    """Yield the files to migrate, in a stable (sorted) order, each once.

    Directories are walked recursively for ``*.py`` files, honouring ``.gitignore`` files
    (and ``.git/info/exclude``) from the repository root down, without following symbolic
    links to directories (no loops). ``exclude`` patterns (gitwildmatch, relative to
    ``root``) and ``.gitignore`` apply to what a walk finds. A path named in ``paths`` is
    always migrated, as ruff does, even under an excluded or ignored directory (what lies
    below it is still filtered); ``force_exclude`` applies ``exclude`` to named paths too,
    so a pre-commit hook, which names every staged file, honours the excludes.
    """
    excluder = None
    seen: set[Path] = set()
    for raw in paths:
        if raw == STDIN:
            yield Candidate(Path(STDIN), STDIN, explicit=True)
            continue
        path = Path(raw)
        absolute = Path(os.path.abspath(path))
        is_dir = os.path.isdir(path)
        maybe = force_exclude and _may_match(exclude, str(absolute))
        if exclude and (excluder or is_dir or maybe):
            excluder = excluder or _Matcher(root, exclude)
            if force_exclude and _excluded(excluder, absolute, is_dir):
                continue
        if is_dir:
            ignores = _ancestor_ignores(absolute) if respect_gitignore else []
            for found, problem in _walk(absolute, ignores, excluder, respect_gitignore):
                if found not in seen:
                    seen.add(found)
                    shown = _display(found, raw, absolute)
                    yield Candidate(found, shown, explicit=False, error=problem)
        elif os.path.lexists(path):
            if absolute not in seen:
                seen.add(absolute)
                yield Candidate(absolute, _clean(raw), explicit=True)
        else:
            yield Candidate(absolute, _clean(raw), explicit=True, error="no such file or directory")


def _may_match(patterns: Sequence[str], path: str) -> bool:
    """False when no pattern can match ``path`` or a parent: some literal piece of each
    pattern (between wildcards, brackets and slashes) is nowhere in it. Saves importing
    pathspec (~20 ms) for the single file of a pre-commit run or an editor."""
    for pattern in patterns:
        pieces = re.split(r"\[[^\]]*\]|[*?/\\!\[\]]", pattern.rstrip())
        if all(piece in path for piece in pieces):
            return True
    return False


def _clean(raw: str) -> str:
    return os.path.normpath(raw)


def _display(found: Path, raw: str, top: Path) -> str:
    """The path as the user would type it: relative to what they passed."""
    return os.path.normpath(os.path.join(raw, os.path.relpath(found, top)))


def _excluded(excluder: _Matcher, path: Path, is_dir: bool) -> bool:
    # A pattern can match any ancestor directory (`build/` excludes build/a/b.py).
    for candidate in (path, *path.parents):
        verdict = excluder.check(candidate, is_dir or candidate != path)
        if verdict is not None:
            return verdict
    return False


def _ancestor_ignores(top: Path) -> list[_Matcher]:
    """The .gitignore files between the repository root and ``top`` (root first)."""
    chain: list[Path] = []
    for d in (top, *top.parents):
        chain.append(d)
        if (d / ".git").exists():
            break
    else:
        chain = [top]  # not in a repository: only .gitignore files inside the walk count
    matchers = []
    for d in reversed(chain):
        if d != top:
            matchers.extend(_load_ignores(d))
    return matchers


def _load_ignores(directory: Path) -> list[_Matcher]:
    out = []
    for name in (".git/info/exclude", ".gitignore"):
        try:
            lines = (directory / name).read_text(encoding="utf-8", errors="replace").splitlines()
        except OSError:
            continue
        out.append(_Matcher(directory, lines))
    return out


def _ignored(ignores: list[_Matcher], path: Path, is_dir: bool) -> bool:
    verdict = False
    for matcher in ignores:  # deeper .gitignore files decide last, as in git
        result = matcher.check_entry(path, is_dir)
        if result is not None:
            verdict = result
    return verdict


def _walk(
    top: Path, ignores: list[_Matcher], excluder: _Matcher | None, gitignore: bool
) -> Iterator[tuple[Path, str | None]]:
    """(file, None) for each file found; (directory, why) for a directory that cannot be read."""
    stack = [(top, ignores)]
    while stack:
        directory, inherited = stack.pop()
        local = inherited + _load_ignores(directory) if gitignore else inherited
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            # Git warns and goes on; so do we: one MIG003 line, so the user learns that part
            # of the tree was not migrated, and the rest is still processed.
            yield directory, f"cannot read directory: {exc.strerror or exc}"
            continue
        subdirs = []
        for entry in entries:
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if not is_dir and not entry.name.endswith(".py"):
                continue
            if excluder and excluder.check_entry(path, is_dir):
                continue
            if _ignored(local, path, is_dir):
                continue
            if is_dir:
                subdirs.append((path, local))
            else:
                yield path, None
        stack.extend(reversed(subdirs))

"""Helper modules and several files migrated as one program: who owns the wrapper, who borrows it.

A training program is often an entry script (``train.py``: arguments, model, optimizer,
loaders, the epoch loop) and helper modules it imports (``engine.py`` with
``train_one_epoch(model, loader, optimizer, device)``, ``models.py``, ``data.py``). Importing a
helper module does no work, so it must never create a wrapper object of its own: a second
``Runtime()``/``Fabric()``/``Accelerator()`` per process would own a second precision and
strategy, and an inference script importing ``models.py`` would start a process group.

The entry script owns the one wrapper. A helper function that needs it (a backward, a save,
a rank-0 print) takes it as its first parameter, the way human Fabric and Accelerate ports
write ``train(fabric, model, ...)``, and every call in the program passes it. That is only
exact when every use of the function is a call the migration sees; otherwise the helper is
refused (MIG908) where what it does is unsafe on N processes, and left alone where it is
only noisy (a print). Names are resolved through each file's imports, never by spelling
across files: ``from engine import train_one_epoch as step`` makes ``step(...)`` a call of it.

This module reads CPython's ``ast`` only (cheap); what a helper needs comes from planning it
with the ordinary rules (``needs``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import PurePath

# What a helper module may do at import time and still be a library: bind names. A call at
# module level is work unless it only builds a value (a logger, a path, a transform, a device).
_PURE_CALLS = frozenset({
    "getLogger", "TypeVar", "NewType", "namedtuple", "Path", "join", "dirname", "abspath",
    "basename", "realpath", "expanduser", "get", "getenv", "compile", "frozenset", "set", "dict",
    "tuple", "list", "object", "field", "partial", "device", "Compose", "dtype", "float", "int",
    "str", "bool", "range", "len", "Enum", "defaultdict", "OrderedDict",
})

# Wrapper uses that are only noise on N processes (every rank prints), or that the helper
# keeps in its own semantics (a data file loaded in ``__getitem__`` is no checkpoint), or
# that the entry decides (data sharding, seeds): never a reason to refuse a helper module.
HARMLESS = frozenset({"MIG401", "MIG403", "MIG409"})
# Fixes a helper module needs on N processes that need no wrapper: makedirs(exist_ok=True),
# buffers registered with default strides (a model class's module is a helper: MIG213).
SAFE_ALONE = frozenset({"MIG405", "MIG213"})


@dataclass(frozen=True)
class Role:
    """How one file takes part in the migration.

    ``library``: importing it does no work, so it gets no wrapper object; ``trains``: a
    script that trains, iterates a DataLoader or has a wrapper already (an inference or
    data-preparation script gets no wrapper either); ``threaded``: its
    top-level functions that take the wrapper as first parameter; ``pass_wrapper``: the
    spellings (``"train_one_epoch"``, ``"engine.evaluate"``) of calls in this file that must
    pass the wrapper; ``program_calls``: the spellings of every call here of a function of
    another file of the program; ``blocked``: (function, why it cannot take the wrapper);
    ``locks_downloads``: a helper module of a module-form program (``--form module``), whose
    functions run where no wrapper and no process group exist (before ``fit``): its downloads
    (MIG405) run under a file lock, local rank 0 first, instead of borrowing a wrapper.
    """

    library: bool = False
    trains: bool = True
    threaded: frozenset[str] = frozenset()
    pass_wrapper: frozenset[str] = frozenset()
    program_calls: frozenset[str] = frozenset()
    blocked: tuple[tuple[str, str], ...] = ()
    locks_downloads: bool = False

    def why_blocked(self, function: str | None) -> str:
        for name, why in self.blocked:
            if name == function:
                return why
        return "the script that calls it is not migrated with it"


def is_library(tree: ast.Module) -> bool:
    """True when importing the module does no work (definitions, imports and plain values)
    and it builds no DataLoader or optimizer of its own: a file that does (in a ``main()``
    that another launcher calls, say) owns its wrapper like a script."""
    return all(_binds_only(stmt) for stmt in tree.body) and not _builds(tree)


def _builds(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            if _last_name(f) == "DataLoader":
                return True
            while isinstance(f, ast.Attribute):
                f = f.value
                if isinstance(f, ast.Attribute) and f.attr == "optim" or isinstance(f, ast.Name) and f.id == "optim":
                    return True
    return False


# Calls that make a script one whose work a wrapper distributes.
_TRAINING_CALLS = frozenset({
    "backward", "step", "zero_grad", "DataLoader", "setup", "setup_dataloaders", "prepare",
    "Runtime", "Fabric", "Accelerator", "init_process_group", "fit",
})


def trains(tree: ast.Module) -> bool:
    """True when the script trains (a backward, an optimizer), iterates a DataLoader, or
    already has a wrapper: the work a wrapper distributes. An inference or data-preparation
    script runs on one process as it is."""
    calls = set(_TRAINING_CALLS)
    for node in ast.walk(tree):  # aliases: from torch.utils.data import DataLoader as DL
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            calls.update(a.asname for a in node.names if a.asname and a.name.rsplit(".", 1)[-1] in _TRAINING_CALLS)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _last_name(node.func) in calls:
            return True
        if isinstance(node, ast.Attribute) and node.attr == "optim":
            return True
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torch.optim"):
            return True
        if isinstance(node, ast.ImportFrom) and node.module == "torch" and any(a.name == "optim" for a in node.names):
            return True
    return False


def _runs(tree: ast.Module) -> bool:
    """A script someone runs: a ``__main__`` guard, or a loop at module level."""
    for stmt in tree.body:
        if isinstance(stmt, (ast.For, ast.While, ast.AsyncFor)):
            return True
        if isinstance(stmt, ast.If) and "__name__" in {n.id for n in ast.walk(stmt.test) if isinstance(n, ast.Name)}:
            return True
    return False


def _binds_only(stmt: ast.stmt) -> bool:
    if isinstance(stmt, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Pass)):
        return True
    if isinstance(stmt, ast.Expr):
        return isinstance(stmt.value, ast.Constant)  # a docstring
    if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
        return stmt.value is None or _pure(stmt.value)
    if isinstance(stmt, ast.Try):  # try: import apex / except ImportError: apex = None
        blocks = [stmt.body, stmt.orelse, stmt.finalbody, *(h.body for h in stmt.handlers)]
        return all(_binds_only(s) for block in blocks for s in block)
    if isinstance(stmt, ast.If):  # if TYPE_CHECKING / sys.version_info; never the __main__ guard
        if "__name__" in {n.id for n in ast.walk(stmt.test) if isinstance(n, ast.Name)}:
            return False
        return all(_binds_only(s) for s in (*stmt.body, *stmt.orelse))
    return False


def _pure(value: ast.expr) -> bool:
    for node in ast.walk(value):
        if isinstance(node, ast.Call) and _last_name(node.func) not in _PURE_CALLS:
            return False
        if isinstance(node, (ast.Await, ast.Yield, ast.YieldFrom, ast.NamedExpr)):
            return False
    return True


def _last_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


# --- the program: which helper functions take the wrapper ---------------------------------
@dataclass(frozen=True)
class _Ref:
    """One use of a program function: where it is and whether it is a plain call."""

    file: str
    context: str | None  # the top-level function it sits in; None: module level or a class
    callee: tuple[str, str]  # (file, function)
    spelling: str
    is_call: bool
    line: int


def resolve(
    sources: Mapping[str, str], needs: Callable[[str, str], dict[str, set[str]]]
) -> dict[str, Role]:
    """Roles of the files of one program (display path -> source text).

    ``needs(path, source)`` plans a helper module on its own and returns, per top-level
    function, the codes of its changes that use the wrapper. Work grows with the program,
    not the directory: only scripts someone runs (a ``__main__`` guard or a module-level
    loop) that train, the helpers they reach, and the files that name a borrowing function
    are parsed; every other file keeps the role the engine gives it alone (None here).
    """
    program = _Program(sources)
    entries = [p for p, text in sources.items() if _MAY_RUN.search(text) and program.entry(p)]
    used: set[str] = set()  # helper modules a training script reaches, directly or through helpers
    callers = set(entries)
    while callers:
        reached = {r.callee[0] for p in callers for r in program.refs(p)}
        reached = {p for p in reached if program.library(p)} - used
        used |= reached
        callers = reached
    wants: dict[tuple[str, str], set[str]] = {}
    for path in sorted(used):
        for function, codes in needs(path, sources[path]).items():
            wants[(path, function)] = set(codes)
    # Every file that may use a borrowing function (its name appears in the text) is read.
    names = {f for _, f in wants}
    readers = [p for p, text in sources.items() if any(n in text for n in names)] if names else []
    refs = [r for p in sorted({*entries, *used, *readers}) for r in program.refs(p)]
    grow = True  # helpers calling a helper that borrows the wrapper borrow it too
    while grow:
        grow = False
        for r in refs:
            caller = (r.file, r.context)
            if r.callee in wants and program.library(r.file) and r.context and caller not in wants:
                wants[caller] = set()
                grow = True
    threaded = set(wants)
    blocked: dict[tuple[str, str], str] = {}
    shrink = True
    while shrink:
        shrink = False
        for fn in sorted(threaded):
            why = _cannot_thread(fn, refs, program.library, threaded)
            if why:
                threaded.discard(fn)
                blocked[fn] = why
                shrink = True
    roles = {}
    for path in program.parsed():
        mine = frozenset(f for p, f in threaded if p == path)
        passing = frozenset(r.spelling for r in refs if r.file == path and r.callee in threaded)
        calls = frozenset(r.spelling for r in refs if r.file == path and r.is_call and r.callee[0] != path)
        why = tuple(sorted((f, w) for (p, f), w in blocked.items() if p == path))
        tree = program.tree(path)
        roles[path] = Role(program.library(path), trains(tree) or bool(passing), mine, passing, calls, why)
    return roles


# A script someone runs has a __main__ guard or a loop at module level (text, before parsing).
_MAY_RUN = re.compile(r"__main__|^(?:for|while|async\s+for)\b", re.MULTILINE)


class _Program:
    """The files of one run, parsed on demand (a directory of thousands of modules holds a
    program of a few files)."""

    def __init__(self, sources: Mapping[str, str]) -> None:
        self.sources = sources
        self.modules = _module_names(sources)
        self._trees: dict[str, ast.Module | None] = {}
        self._refs: dict[str, list[_Ref]] = {}
        self._functions: dict[str, set[str]] = {}

    def tree(self, path: str) -> ast.Module | None:
        if path not in self._trees:
            try:
                self._trees[path] = ast.parse(self.sources[path])
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                self._trees[path] = None  # the engine reports it
        return self._trees[path]

    def parsed(self) -> list[str]:
        return [p for p, t in self._trees.items() if t is not None]

    def library(self, path: str) -> bool:
        tree = self.tree(path)
        return tree is not None and is_library(tree)

    def entry(self, path: str) -> bool:
        tree = self.tree(path)
        return tree is not None and not is_library(tree) and _runs(tree) and trains(tree)

    def functions(self, path: str) -> set[str]:
        if path not in self._functions:
            tree = self.tree(path)
            body = tree.body if tree is not None else []
            self._functions[path] = {s.name for s in body if isinstance(s, (ast.FunctionDef, ast.AsyncFunctionDef))}
        return self._functions[path]

    def refs(self, path: str) -> list[_Ref]:
        if path not in self._refs:
            tree = self.tree(path)
            self._refs[path] = _references(path, tree, self.modules, self.functions) if tree else []
        return self._refs[path]


def _cannot_thread(fn, refs, library, threaded) -> str | None:
    """Why ``fn`` cannot take the wrapper as a parameter, or None."""
    mine = [r for r in refs if r.callee == fn]
    if not any(r.is_call for r in mine):
        return "no file migrated with it calls it"
    for r in mine:
        where = f"{r.file}:{r.line}"
        if not r.is_call:
            return f"{where} uses it other than by a direct call ({r.spelling})"
        if library(r.file) and (r.file, r.context) not in threaded:
            return f"{where} calls it from code that has no wrapper to pass"
    return None


def _module_names(paths) -> dict[str, str]:
    """Import name -> file: ``engine`` for engine.py, ``pkg.engine`` and ``engine`` for pkg/engine.py."""
    names: dict[str, str] = {}
    for path in paths:
        parts = PurePath(path).with_suffix("").parts
        if parts and parts[-1] == "__init__":
            parts = parts[:-1]
        for i in range(len(parts)):
            dotted = ".".join(p for p in parts[i:] if p not in ("", ".", ".."))
            if dotted:
                names.setdefault(dotted, path)
    return names


def _references(path: str, tree: ast.Module, modules: dict[str, str], functions) -> list[_Ref]:
    """Every use in ``path`` of a top-level function of a program file (its own included);
    ``functions(file)`` names a file's top-level functions."""
    names: dict[str, tuple[str, str]] = {n: (path, n) for n in functions(path)}
    mods: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            target = modules.get(node.module) if node.level <= 1 else None
            for alias in node.names:
                if target and alias.name in functions(target):
                    names[alias.asname or alias.name] = (target, alias.name)
        elif (isinstance(node, ast.ImportFrom) and node.level == 1) or isinstance(node, ast.Import):
            # import engine [as eng]; from . import engine
            for alias in node.names:
                if alias.name in modules:
                    mods[alias.asname or alias.name] = modules[alias.name]
    out: list[_Ref] = []
    for stmt in tree.body:
        context = stmt.name if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) else None
        calls = {id(n.func) for n in ast.walk(stmt) if isinstance(n, ast.Call)}
        for node in ast.walk(stmt):
            callee = spelling = None
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in names:
                callee, spelling = names[node.id], node.id
            elif (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                  and node.value.id in mods and node.attr in functions(mods[node.value.id])):
                callee, spelling = (mods[node.value.id], node.attr), f"{node.value.id}.{node.attr}"
            if callee is not None:
                out.append(_Ref(path, context, callee, spelling, id(node) in calls, node.lineno))
    return out

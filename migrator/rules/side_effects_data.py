"""Side-effect rule for data preparation: downloads and data folders are made by rank 0 first."""

from __future__ import annotations

import libcst as cst

from migrator import anchors_spec as A
from migrator.rules._util import find_arg as arg
from migrator.rules.base import Rule
from migrator.rules.side_effects_common import (
    call_is_safe,
    expression_statement,
    guard_run,
    in_rank_zero_guard,
    runs,
    unsafe_calls,
)

_DOWNLOADERS = {
    "urllib.request.urlretrieve",
    "torch.hub.download_url_to_file",
    "torchvision.datasets.utils.download_url",
    "torchvision.datasets.utils.download_and_extract_archive",
    "torchvision.datasets.utils.download_file_from_google_drive",
    "datasets.load_dataset",
    "wget.download",
    "gdown.download",
    "gdown.download_folder",
    "gdown.cached_download",
    "gdown.extractall",
    "shutil.unpack_archive",
}
# Downloads when streamed (``stream=True``) or when their ``.content`` is read.
_FETCHERS = {"requests.get", "requests.request", "requests.api.get"}
# Archives whose ``extractall`` / ``extract`` writes files next to every other rank's.
_ARCHIVES = {"tarfile.open", "tarfile.TarFile", "zipfile.ZipFile"}
_EXTRACT = {"extractall", "extract"}
_MAKEDIRS = {"os.makedirs", "os.mkdir"}


def _is_true(a: cst.Arg | None) -> bool:
    return a is not None and isinstance(a.value, cst.Name) and a.value.value == "True"


def _is_false(a: cst.Arg) -> bool:
    return isinstance(a.value, cst.Name) and a.value.value == "False"


class DownloadRankZeroFirst(Rule):
    """Dataset downloads and data folders are made by rank 0 first, then read by the others.

    **What**: statements that download (`download=True`, `urlretrieve`, `download_url`,
    `datasets.load_dataset`, `wget`/`gdown.download`, `requests.get(url, stream=True)` or
    its `.content`, `tarfile`/`zipfile` extraction, `shutil.unpack_archive`) and
    `if not os.path.exists(d): os.makedirs(d)` go inside `with rt.rank_zero_first():`
    (Fabric: `fabric.rank_zero_first()`); consecutive ones share one block, together with the
    statements right after them that use what they fetched (writing the response to a file).
    A download inside `with`/`for` takes that statement along, and one under an
    `if not os.path.exists(...)` takes the `if` (in the `else` of `if os.path.isfile(...)`,
    the whole `if`/`else`: every rank must test after rank 0 downloaded). Where the block only
    writes files (nothing it binds is read after it, it changes no outside object and returns
    no data set), rank 0 runs it alone, `if rt.is_global_zero: ...` then `rt.barrier()`:
    inside `rank_zero_first` the others would run an unconditional download again, rewriting
    the files rank 0 already reads. Statements a rewrite adds next to them
    (`setup_dataloaders`) go after the block: a collective inside it would deadlock.
    A bare `os.makedirs(d)` gets `exist_ok=True` instead (inside the block the
    other ranks would still fail on the folder rank 0 made). A call that passes `exist_ok`
    itself (or `**kwargs`) is left alone; `exist_ok=False` is reported, not changed: it races
    only when every rank makes the same path, which the migrator cannot tell.

    In a helper module of a `--form module` program no wrapper exists to borrow (the
    Trainer creates the process group in `fit`): the same statements run under
    `with FileLock(<temp dir>/torch-migrate-download-<module>.<function>.lock):`, one
    process at a time, and when they sit under `if not exists(path):` the other processes of
    the machine first wait (a minute at most) until local rank 0 has made `path` inside its
    lock, so local rank 0 fetches, prints and writes, and the others find the files.

    **Why**: N processes downloading into the same folder corrupt the archive or crash on
    half-extracted files, and the second `makedirs` raises `FileExistsError`. Rank 0 goes
    first, the others wait and then find the files. The block is a collective: every rank
    must reach it, which holds for the data set-up code of a training script.

    **Before**
    ```python
    train_set = datasets.MNIST("../data", train=True, download=True)
    ```
    **After**
    ```python
    with rt.rank_zero_first():
        train_set = datasets.MNIST("../data", train=True, download=True)
    ```
    """

    code = "MIG405"
    anchors = A.Any(
        A.Part("download"),
        A.Call(
            "makedirs", "mkdir", "urlretrieve", "load_dataset", "requests", "extractall", "extract",
            "unpack_archive",
        ),
    )
    name = "download-rank-zero-first"
    summary = "download data on rank 0 first, inside rank_zero_first"

    def plan(self, ctx) -> None:
        ix = ctx.ix
        wrap: dict[cst.CSTNode, object] = {}
        archives = _archive_names(ix)
        locking = _locks(ctx)
        for call in ix.calls:
            if in_rank_zero_guard(ctx, call) or (locking and _in_file_lock(ix, call)):
                continue
            q = _plain_qname(ix.call_qname(call))
            if q in _MAKEDIRS:
                self._makedirs(ctx, call, wrap)
            elif _downloads(ix, call, q, archives):
                stmt = _unit(ctx, ix.statement(call), archives)
                if stmt in wrap:
                    continue
                change = ctx.finding(self.code, call, "download on rank 0 first (rank_zero_first)")
                wrap[stmt] = change
                _take_users(ctx, stmt, wrap, change)
        # The writes of a guarded download are its own (MIG406 leaves them to this block), as
        # are those under a file lock already there (a module-form helper migrated before).
        ctx.zero_first = set(wrap) | (_file_locks(ix) if locking else set())
        if locking:
            _lock(ctx, wrap)
            return
        for first, last in runs(ctx, wrap):
            for alone, stmts in _split(ctx, wrap, first, last):
                change = wrap[stmts[0]]
                if alone:
                    self._guard_alone(ctx, wrap, stmts)
                else:
                    change.wrap_with(stmts[0], stmts[-1], ctx.vocab.rank_zero_first)

    def _guard_alone(self, ctx, wrap: dict, stmts: list[cst.CSTNode]) -> None:
        """``if rt.is_global_zero: <stmts>`` then ``rt.barrier()``. Nothing the statements bind
        is read after them, so rank 0 may run them alone while the others wait; inside
        ``rank_zero_first`` the others would run them again after rank 0, and an unconditional
        download (``urlretrieve``, a streamed archive extracted) would be written once more, by
        every rank, while rank 0 already reads the files."""
        change = wrap[stmts[0]]
        guard_run(change, stmts[0], stmts[-1])
        change.insert_after(stmts[-1], change.stmt(ctx.vocab.barrier))
        for stmt in stmts:
            c = wrap[stmt]
            if c.message.endswith("first (rank_zero_first)"):
                c.message = c.message.replace(
                    "first (rank_zero_first)", "alone; the others wait at a barrier"
                )

    def _makedirs(self, ctx, call: cst.Call, wrap: dict) -> None:
        ix = ctx.ix
        if _is_true(arg(call, 2, "exist_ok")):
            return
        stmt = expression_statement(ctx, call)
        if stmt is None:
            return
        guard = ix.parent.get(ix.block_of(stmt))
        if isinstance(guard, cst.If) and any(x in ix.code(guard.test) for x in ("exists", "isdir")):
            change = ctx.finding(
                self.code, call, "make the folder on rank 0 first (rank_zero_first)"
            )
            wrap.setdefault(guard, change)
            return
        if (
            any(isinstance(a, cst.Try) for a in ix.ancestors(call))
            or ix.call_qname(call) != "os.makedirs"
        ):
            return  # the script handles FileExistsError itself / os.mkdir has no exist_ok
        given = arg(call, 2, "exist_ok")
        if given is not None or any(a.star for a in call.args):
            # The script chose exist_ok itself (or may pass it through *args/**kwargs): adding a
            # second one is a SyntaxError. A literal False is a real race only when the path is
            # the same on every rank, which the migrator cannot know: say so, change nothing.
            if given is not None and _is_false(given):
                ctx.finding(
                    self.code,
                    call,
                    "exist_ok=False: every rank but the first raises FileExistsError unless the"
                    " path differs per process; make it on rank 0 first or pass exist_ok=True",
                    fixed=False,
                )
            return
        change = ctx.finding(
            self.code, call, "several ranks create this folder: pass exist_ok=True"
        )
        equal = cst.AssignEqual(
            whitespace_before=cst.SimpleWhitespace(""), whitespace_after=cst.SimpleWhitespace("")
        )
        extra = cst.Arg(keyword=cst.Name("exist_ok"), value=cst.Name("True"), equal=equal)

        def add(updated: cst.Call) -> cst.Call:
            args = list(updated.args)
            args[-1] = args[-1].with_changes(
                comma=cst.Comma(whitespace_after=cst.SimpleWhitespace(" "))
            )
            return updated.with_changes(args=[*args, extra])

        change.replace(call, add)


# --- a helper module of a module-form program: a file lock, local rank 0 first -------------
# Its functions run where no wrapper and no process group exist (the module form creates both
# in ``fit``), so ``rank_zero_first`` is not available. The files are fetched under a file
# lock in the temporary folder, one process at a time; each function has its own lock, so a
# download that calls another function's download does not wait on itself. Where the download
# sits under ``if not exists(path):``, the other processes of the machine first wait (a minute
# at most) for the files to appear: local rank 0 made them inside its lock, so it fetches and
# prints, and the others then find them under the lock (on one machine: rank 1 stays silent and
# every file is written once). Without such a test whichever process comes first fetches.
_LOCKS = {"filelock.FileLock", "filelock.SoftFileLock"}
_LOCK_NAMES = {"os": "os", "tempfile": "tempfile", "time": "time", "FileLock": "filelock.FileLock"}
_WAIT_SECONDS = 60


def _locks(ctx) -> bool:
    """Downloads go under a file lock (``Role.locks_downloads``) and the names the lock code
    reads are free or bound to what it means (``from time import time`` is not ``time``)."""
    role = ctx.options.role
    if role is None or not role.locks_downloads:
        return False
    scope = ctx.ix.scopes.get(ctx.ix.module)
    for name, qname in _LOCK_NAMES.items():
        if scope is not None and name in scope.assignments:
            if {q.name for q in scope.get_qualified_names_for(name)} != {qname}:
                return False
    return True


def _is_file_lock(ix, node: cst.CSTNode) -> bool:
    """``with FileLock(...):`` (this rule's own lock, or the script's)."""
    return isinstance(node, cst.With) and any(
        isinstance(i.item, cst.Call) and ix.call_qname(i.item) in _LOCKS for i in node.items
    )


def _in_file_lock(ix, node: cst.CSTNode) -> bool:
    return any(_is_file_lock(ix, a) for a in ix.ancestors(node))


def _file_locks(ix) -> set[cst.CSTNode]:
    return {w for w in ix.withs if _is_file_lock(ix, w)}


def _lock(ctx, wrap: dict) -> None:
    """Each run of outermost statements under its function's lock. A statement inside another
    one (a download inside an ``if not exists(d): os.makedirs(d)``) is covered by the outer
    lock: a second lock on the same file inside it would wait for itself."""
    ix = ctx.ix
    outer = {s: c for s, c in wrap.items() if not any(a in wrap for a in ix.ancestors(s))}
    for first, last in runs(ctx, outer):
        _lock_run(ctx, wrap, first, last)


def _lock_run(ctx, wrap: dict, first: cst.CSTNode, last: cst.CSTNode) -> None:
    """``with FileLock(<temp>/torch-migrate-download-<module>.<function>.lock):`` around the
    run, preceded, for ``if not exists(...)`` downloads, by the wait for local rank 0's files."""
    ix = ctx.ix
    body = list(ix.block_of(first).body)
    stmts = body[body.index(first) : body.index(last) + 1]
    change = wrap[first]
    where = ".".join(
        a.name.value for a in reversed(list(ix.ancestors(first)))
        if isinstance(a, (cst.FunctionDef, cst.ClassDef))
    )
    name = "torch-migrate-download-{{__name__}}" + (f".{where}" if where else "") + ".lock"
    change.wrap_with(first, last, f'FileLock(os.path.join(tempfile.gettempdir(), f"{name}"))')
    change.imports.update({"os", "tempfile", "FileLock"})
    there = files_there(ix, stmts)
    if there is not None:
        change.insert_before(first, cst.parse_statement(wait_for_files(ix, there)))
        change.imports.add("time")
    how = "local rank 0 first" if there is not None else "the first process fetches"
    inside = [s for s in wrap if any(ix.inside(s, t) for t in stmts)]
    for c in {id(wrap[s]): wrap[s] for s in inside}.values():
        what = "make the folder" if c.message.startswith("make the folder") else "download"
        c.message = (
            f"{what} under a file lock, one process at a time, {how} (module form: "
            "no wrapper or process group reaches a helper module)"
        )


def files_there(ix, stmts: list[cst.CSTNode]) -> str | None:
    """The test that the files are there, when every statement is an ``if`` without ``else``
    whose test asks whether they are missing (``not exists(p)``): its negations, and-ed; or an
    ``if <they exist>: ... else: <download>`` (pytorch/examples gat): its test."""
    parts = []
    for stmt in stmts:
        if not isinstance(stmt, cst.If):
            return None
        test = stmt.test
        if not any(x in ix.code(test) for x in _EXISTS):
            return None
        negated = isinstance(test, cst.UnaryOperation) and isinstance(test.operator, cst.Not)
        if stmt.orelse is not None:
            if negated or not isinstance(stmt.orelse, cst.Else):
                return None
            parts.append(f"({ix.code(test)})")
            continue
        if negated:
            inner = test.expression
            simple = isinstance(inner, (cst.Call, cst.Name, cst.Attribute, cst.Subscript)) or inner.lpar
            parts.append(ix.code(inner) if simple else f"({ix.code(inner)})")
        else:
            parts.append(f"not ({ix.code(test)})")
    return " and ".join(parts)


def wait_for_files(ix, there: str) -> str:
    """The loop other local ranks run before the lock: a minute at most for local rank 0's files."""
    return (
        f"for {_free_loop_name(ix)} in range({_WAIT_SECONDS}):  # local rank 0 downloads first; "
        "the others wait for its files\n"
        f'    if int(os.environ.get("LOCAL_RANK", "0")) == 0 or {there}:\n'
        "        break\n"
        "    time.sleep(1)\n"
    )


def _free_loop_name(ix) -> str:
    """``_`` unless the file reads or binds it (gettext's ``_``): a loop variable is a local."""
    used = {n.value for n in ix.subtree(ix.module, cst.Name)}
    name = "_"
    while name in used:
        name = "_wait" if name == "_" else name + "_"
    return name


def _split(ctx, wrap: dict, first: cst.CSTNode, last: cst.CSTNode):
    """(rank 0 alone?, statements) for the parts of the run ``first``..``last``: each download
    with the statements that use what it fetched is judged as a whole, and neighbours judged
    alike share one block."""
    body = list(ctx.ix.block_of(first).body)
    stmts = body[body.index(first) : body.index(last) + 1]
    groups: list[list[cst.CSTNode]] = []
    for stmt in stmts:
        if groups and wrap[groups[-1][-1]] is wrap[stmt]:
            groups[-1].append(stmt)
        else:
            groups.append([stmt])
    parts: list[tuple[bool, list[cst.CSTNode]]] = []
    for group in groups:
        alone = _rank_zero_alone(ctx, group)
        if parts and parts[-1][0] == alone:
            parts[-1][1].extend(group)
        else:
            parts.append((alone, list(group)))
    return parts


# Read-only methods of a value the block does not bind (``", ".join``, ``cfg.get``).
_READS = frozenset(
    {"format", "join", "strip", "split", "replace", "get", "keys", "values", "items"}
)
_NO_RANK_ZERO_ALONE = (
    cst.Global, cst.Nonlocal, cst.Import, cst.ImportFrom, cst.FunctionDef, cst.ClassDef, cst.Del,
    cst.AugAssign, cst.AnnAssign, cst.NamedExpr, cst.Return, cst.Yield, cst.Await, cst.Break,
    cst.Continue,
)


def _rank_zero_alone(ctx, stmts: list[cst.CSTNode]) -> bool:
    """The statements only write files: rank 0 may run them alone while the others wait.

    They bind only plain names, read nowhere after them; they change no object they did not
    make (an attribute or item store, a method called on an outside value); every call is a
    library call or a method of what they made (no model, no collective); and no call returns
    the data set the script goes on with (``download=True``, ``load_dataset``: every rank needs
    its result, and those read their cache when run again)."""
    from migrator.analysis.flow import binding_of, direct_refs

    ix = ctx.ix
    stores: list[cst.Name] = []
    for stmt in stmts:
        if ix.subtree(stmt, _NO_RANK_ZERO_ALONE):
            return False
        for node in ix.subtree(stmt, (cst.AssignTarget, cst.AsName, cst.For)):
            target = node.target if isinstance(node, (cst.AssignTarget, cst.For)) else node.name
            names = _plain_names(target)
            if names is None:
                return False
            stores.extend(names)
    bound = {n.value for n in stores}
    for stmt in stmts:
        for call in ix.subtree(stmt, cst.Call):
            if _returns_data(ctx, call) or not (
                call_is_safe(ctx, call, bound) or _method_of_new(ctx, call)
            ):
                return False
            root = call.func
            while isinstance(root, cst.Attribute):
                root = root.value
            if (
                isinstance(call.func, cst.Attribute) and isinstance(root, cst.Name)
                and root.value not in bound and ix.call_qname(call) is None
                and call.func.attr.value not in _READS
            ):
                return False  # `paths.append(...)`: a change of an outside object
    for name in stores:
        b = binding_of(ix, name)
        if b is None:
            return False
        for ref in direct_refs(ix, b):
            if not any(ix.inside(ref, s) for s in stmts):
                return False
    return True


def _method_of_new(ctx, call: cst.Call) -> bool:
    """A method of an object a library call just made: ``tarfile.open(p).extractall(d)``."""
    func = call.func
    return (
        isinstance(func, cst.Attribute) and isinstance(func.value, cst.Call)
        and ctx.ix.call_qname(func.value) is not None and call_is_safe(ctx, func.value)
    )


def _plain_names(target: cst.BaseExpression) -> list[cst.Name] | None:
    """The names of ``x`` / ``x, (y, z)``; None for attributes, items, starred targets."""
    if isinstance(target, cst.Name):
        return [target]
    if isinstance(target, (cst.Tuple, cst.List)):
        out: list[cst.Name] = []
        for e in target.elements:
            inner = None if isinstance(e, cst.StarredElement) else _plain_names(e.value)
            if inner is None:
                return None
            out.extend(inner)
        return out
    return None


def _returns_data(ctx, call: cst.Call) -> bool:
    return ctx.ix.call_qname(call) == "datasets.load_dataset" or _is_true(
        arg(call, 1 << 30, "download")
    )


def _plain_qname(q: str | None) -> str | None:
    """``six.moves.urllib.request.urlretrieve`` (py2/3 compatibility aliases) ->
    ``urllib.request.urlretrieve``."""
    if q is not None and q.startswith("six.moves.urllib."):
        return q[len("six.moves.") :]
    return q


def download_calls(ix) -> list[cst.Call]:
    """Calls that fetch or unpack data files every process would write at once: what this
    rule runs on rank 0 first, and what the module form serialises before ``fit``."""
    archives = _archive_names(ix)
    return [c for c in ix.calls if _downloads(ix, c, _plain_qname(ix.call_qname(c)), archives)]


def _downloads(ix, call: cst.Call, q: str | None, archives: set[str]) -> bool:
    """``call`` fetches or unpacks data files that every rank would write at once."""
    if q in _DOWNLOADERS or _is_true(arg(call, 1 << 30, "download")):
        return True
    parent = ix.parent.get(call)
    if q in _FETCHERS:
        return _is_true(arg(call, 1 << 30, "stream")) or (
            isinstance(parent, cst.Attribute) and parent.attr.value == "content"
        )
    if q in _ARCHIVES:  # tarfile.open(p).extractall(d)
        return isinstance(parent, cst.Attribute) and parent.attr.value in _EXTRACT
    func = call.func  # tar.extractall(d), with `tar` an archive of this file
    return (
        isinstance(func, cst.Attribute) and func.attr.value in _EXTRACT
        and isinstance(func.value, cst.Name) and func.value.value in archives
    )


def _archive_names(ix) -> set[str]:
    """Names bound to an opened archive (``with tarfile.open(p) as tar``, ``z = ZipFile(p)``)."""
    names: set[str] = set()
    for call in ix.calls:
        if ix.call_qname(call) not in _ARCHIVES:
            continue
        parent = ix.parent.get(call)
        if isinstance(parent, cst.WithItem) and parent.asname is not None:
            target = parent.asname.name
        elif isinstance(parent, cst.Assign) and len(parent.targets) == 1:
            target = parent.targets[0].target
        else:
            continue
        if isinstance(target, cst.Name):
            names.add(target.value)
    return names


_EXISTS = ("exists", "isdir", "isfile")


def _unit(ctx, stmt: cst.CSTNode, archives: set[str]) -> cst.CSTNode:
    """The statement to guard: the enclosing ``with``/``for`` statements (an archive opened
    around its extraction, a loop over its members), then an ``if not exists(...)`` guard,
    the whole ``if``/``elif``/``else`` when the download is in a later branch (``if
    isfile(p): print("cached") else: download()``): the test reads what the download writes,
    so every rank must evaluate it after rank 0 downloaded, else a rank that sees the files
    skips the branch (and its barrier) that rank 0 waits in."""
    ix = ctx.ix
    while True:
        owner = ix.parent.get(ix.block_of(stmt))
        tests = []
        if isinstance(owner, cst.Else):
            owner = ix.parent.get(owner)  # the `if` (or `elif`) whose `else` this is
        while isinstance(owner, cst.If):
            tests.append(ix.code(owner.test))
            up = ix.parent.get(owner)
            if not (isinstance(up, cst.If) and up.orelse is owner):
                break
            owner = up  # an `elif`: the chain starts at the first `if`
        if not isinstance(owner, (cst.With, cst.For, cst.If)) or unsafe_calls(
            ctx, owner, _bound(ix, owner, deep=True) | archives
        ):
            return stmt  # a training loop, a model call: never on rank 0 alone
        if isinstance(owner, cst.If):
            return owner if any(x in t for t in tests for x in _EXISTS) else stmt
        stmt = owner


def _take_users(ctx, stmt: cst.CSTNode, wrap: dict, change) -> None:
    """The statements right after ``stmt`` that use what it bound (``r = requests.get(...)``,
    then writing ``r``'s chunks to a file) and can run on rank 0 alone join its block."""
    ix = ctx.ix
    body = list(ix.block_of(stmt).body)
    bound = _bound(ix, stmt)
    for nxt in body[body.index(stmt) + 1 :]:
        used = {n.value for n in ix.subtree(nxt, cst.Name)}
        if not bound & used or unsafe_calls(ctx, nxt, bound | _bound(ix, nxt)):
            return
        wrap.setdefault(nxt, change)
        bound |= _bound(ix, nxt)


def _bound(ix, stmt: cst.CSTNode, deep: bool = False) -> set[str]:
    """Plain names ``stmt`` assigns (``x = ...``, ``with ... as f``, ``for x in ...``; with
    ``deep``, every loop target inside it too)."""
    names: set[str] = set()
    if deep:
        for loop in ix.subtree(stmt, cst.For):
            if isinstance(loop.target, cst.Name):
                names.add(loop.target.value)
    for node in ix.subtree(stmt, cst.AssignTarget):
        if isinstance(node.target, cst.Name):
            names.add(node.target.value)
    for node in ix.subtree(stmt, cst.AsName):
        if isinstance(node.name, cst.Name):
            names.add(node.name.value)
    if isinstance(stmt, cst.For) and isinstance(stmt.target, cst.Name):
        names.add(stmt.target.value)
    return names

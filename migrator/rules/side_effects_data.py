"""Side-effect rule for data preparation: downloads and data folders are made by rank 0 first."""

from __future__ import annotations

import libcst as cst

from migrator.rules._util import find_arg as arg
from migrator.rules.base import Rule
from migrator.rules.side_effects_common import (
    expression_statement,
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
    `if not os.path.exists(...)` takes the `if`. Statements a rewrite adds next to them
    (`setup_dataloaders`) go after the block: a collective inside it would deadlock.
    A bare `os.makedirs(d)` gets `exist_ok=True` instead (inside the block the
    other ranks would still fail on the folder rank 0 made). A call that passes `exist_ok`
    itself (or `**kwargs`) is left alone; `exist_ok=False` is reported, not changed: it races
    only when every rank makes the same path, which the migrator cannot tell.

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
    name = "download-rank-zero-first"
    summary = "download data on rank 0 first, inside rank_zero_first"

    def plan(self, ctx) -> None:
        ix = ctx.ix
        wrap: dict[cst.CSTNode, object] = {}
        archives = _archive_names(ctx)
        for call in ix.calls:
            if in_rank_zero_guard(ctx, call):
                continue
            q = ix.call_qname(call)
            if q in _MAKEDIRS:
                self._makedirs(ctx, call, wrap)
            elif _downloads(ctx, call, q, archives):
                stmt = _unit(ctx, ix.statement(call), archives)
                if stmt in wrap:
                    continue
                change = ctx.finding(self.code, call, "download on rank 0 first (rank_zero_first)")
                wrap[stmt] = change
                _take_users(ctx, stmt, wrap, change)
        # The writes of a guarded download are its own (MIG406 leaves them to this block).
        ctx.zero_first = set(wrap)
        for first, last in runs(ctx, wrap):
            wrap[first].wrap_with(first, last, ctx.vocab.rank_zero_first)

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


def _downloads(ctx, call: cst.Call, q: str | None, archives: set[str]) -> bool:
    """``call`` fetches or unpacks data files that every rank would write at once."""
    if q in _DOWNLOADERS or _is_true(arg(call, 1 << 30, "download")):
        return True
    parent = ctx.ix.parent.get(call)
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


def _archive_names(ctx) -> set[str]:
    """Names bound to an opened archive (``with tarfile.open(p) as tar``, ``z = ZipFile(p)``)."""
    names: set[str] = set()
    for call in ctx.ix.calls:
        if ctx.ix.call_qname(call) not in _ARCHIVES:
            continue
        parent = ctx.ix.parent.get(call)
        if isinstance(parent, cst.WithItem) and parent.asname is not None:
            target = parent.asname.name
        elif isinstance(parent, cst.Assign) and len(parent.targets) == 1:
            target = parent.targets[0].target
        else:
            continue
        if isinstance(target, cst.Name):
            names.add(target.value)
    return names


def _unit(ctx, stmt: cst.CSTNode, archives: set[str]) -> cst.CSTNode:
    """The statement to guard: the enclosing ``with``/``for`` statements (an archive opened
    around its extraction, a loop over its members), then an ``if not exists(...)`` guard."""
    ix = ctx.ix
    while True:
        owner = ix.parent.get(ix.block_of(stmt))
        if not isinstance(owner, (cst.With, cst.For, cst.If)) or unsafe_calls(
            ctx, owner, _bound(ix, owner, deep=True) | archives
        ):
            return stmt  # a training loop, a model call: never on rank 0 alone
        if isinstance(owner, cst.If):
            test = ix.code(owner.test)
            return owner if any(x in test for x in ("exists", "isdir", "isfile")) else stmt
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

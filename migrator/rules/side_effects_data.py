"""Side-effect rule for data preparation: downloads and data folders are made by rank 0 first."""

from __future__ import annotations

import libcst as cst

from migrator.rules._util import find_arg as arg
from migrator.rules.base import Rule
from migrator.rules.side_effects_common import expression_statement, in_rank_zero_guard, runs

_DOWNLOADERS = {
    "urllib.request.urlretrieve",
    "torch.hub.download_url_to_file",
    "torchvision.datasets.utils.download_url",
    "torchvision.datasets.utils.download_and_extract_archive",
    "torchvision.datasets.utils.download_file_from_google_drive",
    "datasets.load_dataset",
    "wget.download",
}
_MAKEDIRS = {"os.makedirs", "os.mkdir"}


def _is_true(a: cst.Arg | None) -> bool:
    return a is not None and isinstance(a.value, cst.Name) and a.value.value == "True"


def _is_false(a: cst.Arg) -> bool:
    return isinstance(a.value, cst.Name) and a.value.value == "False"


class DownloadRankZeroFirst(Rule):
    """Dataset downloads and data folders are made by rank 0 first, then read by the others.

    **What**: statements that download (`download=True`, `urlretrieve`, `download_url`,
    `datasets.load_dataset`, ...) and `if not os.path.exists(d): os.makedirs(d)` go inside
    `with rt.rank_zero_first():` (Fabric: `fabric.rank_zero_first()`); consecutive ones share
    one block. A bare `os.makedirs(d)` gets `exist_ok=True` instead (inside the block the
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
        for call in ix.calls:
            if in_rank_zero_guard(ctx, call):
                continue
            q = ix.call_qname(call)
            if q in _MAKEDIRS:
                self._makedirs(ctx, call, wrap)
            elif q in _DOWNLOADERS or _is_true(arg(call, 1 << 30, "download")):
                stmt = ix.statement(call)
                change = ctx.finding(self.code, call, "download on rank 0 first (rank_zero_first)")
                wrap.setdefault(stmt, change)
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

"""Side-effect rules for terminal and file output: progress prints and rank-0 file writes."""

from __future__ import annotations

import libcst as cst

from migrator import anchors_spec as A
from migrator.analysis.writes import opens_for_write, writes_file
from migrator.rules._util import find_arg as arg
from migrator.rules.base import Rule
from migrator.rules.side_effects_common import (
    expression_statement,
    guard_hoisted,
    guard_run,
    hoistable_args,
    in_rank_zero_guard,
    runs,
    unsafe_calls,
)

_STDOUT = {"sys.stdout", "sys.__stdout__"}


class ProgressPrint(Rule):
    """Progress `print`s go through the wrapper, so they appear once, not once per process.

    **What**: every call of the builtin `print` that writes to standard output (no `file=`,
    or `file=sys.stdout`) becomes `rt.print(...)` (Fabric: `fabric.print(...)`) with the same
    arguments. Prints to other files (`sys.stderr`, an open log file) are left alone: warnings
    on stderr are useful from every rank, and log files are a rank-0 write (MIG406).

    **Why**: under N processes every rank runs the script, so each plain `print` appears N
    times, interleaved. The wrapper's print writes on rank 0 only and is not a collective, so
    it is safe anywhere, in any function, even in code that only some ranks reach. On one
    process it is exactly `print`.

    **Before**
    ```python
    print(f"Epoch {epoch} loss {loss.item():.4f}")
    ```
    **After**
    ```python
    rt.print(f"Epoch {epoch} loss {loss.item():.4f}")
    ```
    """

    code = "MIG401"
    anchors = A.Call("print")
    name = "rank-zero-print"
    summary = "print through the wrapper so progress lines appear once"

    def plan(self, ctx) -> None:
        ix = ctx.ix
        for call in ix.calls:
            if ix.call_qname(call) != "builtins.print":
                continue
            target = arg(call, 1 << 30, "file")
            if target is not None and ix.code(target.value).strip() not in _STDOUT:
                continue
            if in_rank_zero_guard(ctx, call):
                continue  # already printed by rank 0 only
            change = ctx.finding(self.code, call, "print on rank 0 only: use the wrapper's print")
            change.replace(call.func, change.expr(ctx.vocab.print))


class RankZeroWrite(Rule):
    """Image, plot, ONNX and result-file writes run on rank 0 only; what they write is computed everywhere.

    **What**: statements that write files (`save_image`, `plt.savefig` / `fig.savefig`,
    `torch.onnx.export`, `np.save*`, `df.to_csv`, `path.write_text(...)`, `with open(path, "w") as f: ...`) go under
    `if rt.is_global_zero:`; consecutive writes share one guard. An argument that may run a
    model or a collective (`save_image(G(z), path)`) is first computed on every rank into a
    variable and only the write is guarded. A `with open(...)` block that itself runs such
    code is reported for a manual split instead of being guarded.

    **Why**: N processes writing the same path race and can leave a torn file. Moving the
    forward pass into the rank-0 branch instead would hang or crash: a wrapped model syncs
    buffers with the other ranks, which never arrive.

    **Before**
    ```python
    save_image(netG(fixed_noise).detach(), "fake.png")
    plt.savefig("loss.png")
    ```
    **After**
    ```python
    to_write = netG(fixed_noise).detach()
    if rt.is_global_zero:
        save_image(to_write, "fake.png")
    if rt.is_global_zero:
        plt.savefig("loss.png")
    ```
    """

    code = "MIG406"
    # save_image, savefig, imsave, np.save*, torch.onnx.export, df.to_csv..., open(.., "w")
    anchors = A.Any(
        A.CallPart("save"),
        A.Custom(
            text=A.words("onnx", "to_csv", "to_json", "to_parquet", "open", "write_text", "write_bytes"),
            code=(
                's.calls("export", "to_csv", "to_json", "to_parquet", "write_text", "write_bytes")'
                ' or (s.calls("open") and s.string(WRITE_MODE))'
            ),
        ),
    )
    name = "rank-zero-write"
    summary = "guard file writes with rank 0, computing their inputs on every rank"

    def plan(self, ctx) -> None:
        plain: dict[cst.CSTNode, object] = {}
        taken: set[str] = set()
        downloads = getattr(ctx, "zero_first", set())  # MIG405's guarded download statements
        for node, stmt in self._writes(ctx):
            if in_rank_zero_guard(ctx, stmt) or any(
                a in downloads for a in (stmt, *ctx.ix.ancestors(stmt))
            ):
                continue
            if isinstance(stmt, cst.With):
                handles = [
                    i.asname.name.value
                    for i in stmt.items
                    if i.asname and isinstance(i.asname.name, cst.Name)
                ]
                if unsafe_calls(ctx, stmt.body, handles):
                    ctx.finding(
                        self.code,
                        node,
                        "this write block also runs model or collective code: "
                        "compute on every rank, then write under `if rank zero:` by hand",
                        fixed=False,
                    )
                    continue
            change = ctx.finding(self.code, node, "write files on rank 0 only")
            if isinstance(node, cst.Call) and ctx.ix.call_qname(node) == "torch.onnx.export":
                self._export_unwrapped(ctx, change, node)
            hoist = hoistable_args(ctx, node) if isinstance(node, cst.Call) else []
            if hoist:
                guard_hoisted(change, stmt, hoist, taken)
            else:
                plain[stmt] = change
        for first, last in runs(ctx, plain):
            guard_run(plain[first], first, last)

    @staticmethod
    def _export_unwrapped(ctx, change, call: cst.Call) -> None:
        """The export traces a forward: run it on the original module, not the wrapper (whose
        forward would wait for the other ranks)."""
        model = call.args[0].value if call.args else None
        if isinstance(model, (cst.Name, cst.Attribute)) and ctx.facts.model_of(model) is not None:
            change.replace(model, change.expr(ctx.vocab.unwrap, model=model))

    @staticmethod
    def _writes(ctx):
        """(reported node, statement) for each write statement, in file order."""
        ix = ctx.ix
        for call in ix.calls:
            if writes_file(ix, call, opens=False):  # an open() is the `with` block's, below
                stmt = expression_statement(ctx, call)
                if stmt is not None:
                    yield call, stmt
        for w in ix.withs:
            for item in w.items:
                if isinstance(item.item, cst.Call) and opens_for_write(ix, item.item):
                    yield item.item, w
                    break

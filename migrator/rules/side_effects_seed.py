"""Side-effect rule for seeds: torch / random / numpy seeding becomes the wrapper's seed_everything."""

from __future__ import annotations

import libcst as cst

from migrator import anchors_spec as A
from migrator.rules.base import Rule
from migrator.rules.side_effects_common import expression_statement

_TORCH_SEED = {"torch.manual_seed", "torch.random.manual_seed"}
# Seeding calls seed_everything(s) performs too, so the same seed there is redundant.
_SUBSUMED = {
    "random.seed",
    "numpy.random.seed",
    "torch.cuda.manual_seed",
    "torch.cuda.manual_seed_all",
}
_OTHER_STREAMS = {"random.seed", "numpy.random.seed"}


class SeedEverything(Rule):
    """`torch.manual_seed(s)` (with `random.seed(s)` / `np.random.seed(s)` beside it) becomes `rt.seed_everything(s)`.

    **What**: a statement `torch.manual_seed(s)` becomes `rt.seed_everything(s)` (Fabric:
    `fabric.seed_everything(s, workers=False)`: by default Fabric reseeds DataLoader workers
    its own way, and their random streams would differ from the original's). Seeding statements next to it with the same argument
    (`random.seed(s)`, `np.random.seed(s)`, `torch.cuda.manual_seed_all(s)`) are removed:
    seed_everything performs them. Nothing changes when the file seeds `random` or numpy
    elsewhere with something else, because re-seeding them would change their streams.

    **Why**: seed_everything seeds every library the same way on every rank, so initial
    weights match across ranks (FSDP and DeepSpeed rely on it) and one process produces
    exactly the numbers of the original. Data drawn from these generators is then the same
    on every rank: the report of the data rules says when data is replicated.

    **Before**
    ```python
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    ```
    **After**
    ```python
    rt.seed_everything(args.seed)
    ```
    """

    code = "MIG409"
    anchors = A.Ident("manual_seed")
    name = "seed-everything"
    summary = "seed with the wrapper's seed_everything"

    def plan(self, ctx) -> None:
        if ctx.vocab.seed_everything is None:
            return  # the target has no seeding call of its own: torch.manual_seed stays
        ix = ctx.ix
        sites = []
        absorbed: set[cst.CSTNode] = set()
        for call in ix.calls:
            stmt = expression_statement(ctx, call)
            if ix.call_qname(call) not in _TORCH_SEED or stmt is None or len(call.args) != 1:
                continue
            seed = ix.code(call.args[0].value)
            neighbours = self._neighbours(ctx, stmt)
            if any(ix.code(c.args[0].value) != seed for c, _ in neighbours):
                continue
            sites.append((call, stmt, neighbours))
            absorbed.update(c for c, _ in neighbours)
        others = [c for c in ix.calls if ix.call_qname(c) in _OTHER_STREAMS and c not in absorbed]
        if others:
            return  # another seed for random/numpy: seed_everything would re-seed that stream
        for call, _stmt, neighbours in sites:
            change = ctx.finding(
                self.code, call, "seed every library with the wrapper's seed_everything"
            )
            change.replace(call, change.expr(ctx.vocab.seed_everything, seed=call.args[0].value))
            for _c, s in neighbours:
                change.remove(s)

    @staticmethod
    def _neighbours(ctx, stmt: cst.CSTNode) -> list[tuple[cst.Call, cst.CSTNode]]:
        """Seeding statements adjacent to ``stmt`` (a run of seed calls): (call, statement)."""
        ix = ctx.ix
        body = list(ix.block_of(stmt).body)
        i = body.index(stmt)
        found = []
        for step in (-1, 1):
            j = i + step
            while 0 <= j < len(body):
                line = body[j]
                small = (
                    line.body[0]
                    if isinstance(line, cst.SimpleStatementLine) and len(line.body) == 1
                    else None
                )
                call = (
                    small.value
                    if isinstance(small, cst.Expr) and isinstance(small.value, cst.Call)
                    else None
                )
                if (
                    call is None
                    or ix.call_qname(call) not in _SUBSUMED | _TORCH_SEED
                    or len(call.args) != 1
                ):
                    break
                if ix.call_qname(call) in _SUBSUMED:
                    found.append((call, line))
                j += step
        return found

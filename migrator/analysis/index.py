"""One read-only pass over the tree: parents, statements, calls, assignments, loops, resolved names."""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator

import libcst as cst
from libcst.metadata import QualifiedNameSource

from migrator.analysis.tree import preorder, resolve_scopes, start_positions

STATEMENT = (cst.SimpleStatementLine, cst.BaseCompoundStatement)
BLOCK = (cst.Module, cst.IndentedBlock)


_BUCKETS = (  # first match wins
    (cst.Call, "calls"),
    ((cst.Assign, cst.AnnAssign, cst.AugAssign), "assigns"),
    ((cst.For, cst.While), "loops"),
    (cst.With, "withs"),
    (cst.FunctionDef, "functions"),
    (cst.ClassDef, "classes"),
    ((cst.Import, cst.ImportFrom), "imports"),
    (cst.If, "ifs"),
)
_BUCKET_OF: dict[type, str | None] = {}


def _bucket(ix: Index, node: cst.CSTNode) -> list | None:
    kind = type(node)
    try:
        name = _BUCKET_OF[kind]
    except KeyError:
        name = _BUCKET_OF[kind] = next((n for k, n in _BUCKETS if isinstance(node, k)), None)
    if name is not None:
        return getattr(ix, name)
    if kind is cst.Attribute and isinstance(node.value, cst.Name) and node.value.value == "self":
        return ix.self_attrs
    return None


class Index:
    """Structural index of one module plus resolved metadata.

    Everything here is read-only; facts (``migrator.analysis.facts``) are derived from it.
    Positions are resolved lazily: only files with findings pay for them.
    """

    def __init__(self, module: cst.Module) -> None:
        self.module = module
        self.calls: list[cst.Call] = []
        self.assigns: list[cst.CSTNode] = []
        self.loops: list[cst.CSTNode] = []
        self.withs: list[cst.With] = []
        self.functions: list[cst.FunctionDef] = []
        self.classes: list[cst.ClassDef] = []
        self.imports: list[cst.CSTNode] = []
        self.ifs: list[cst.If] = []
        self.self_attrs: list[cst.Attribute] = []
        self._qn_cache: dict[cst.CSTNode, object] = {}
        self._pos: dict[cst.CSTNode, tuple[int, int]] = {}
        self._rank_cache: dict[int, tuple[list, list[int]]] = {}
        self.parent, self._end, contexts = preorder(module)
        # Qualified names are asked of the scope on demand (only for the few nodes rules look
        # at) instead of resolving QualifiedNameProvider over the whole tree: same answers,
        # about a third of the analysis time saved.
        self.scopes = resolve_scopes(module, contexts)
        self._order = {n: i for i, n in enumerate(self.parent)}
        for node in self.parent:  # bucket the node kinds the facts are built from, in order
            bucket = _bucket(self, node)
            if bucket is not None:
                bucket.append(node)
        self._call_ranks = [self._order[c] for c in self.calls]  # ascending: pre-order

    # --- names -------------------------------------------------------------------------
    def qnames(self, node: cst.CSTNode) -> set[str]:
        """Qualified names of ``node`` resolved through imports (``nn.Linear`` -> torch.nn.Linear)."""
        return {q.name for q in self._qnames(node)}

    def _qnames(self, node: cst.CSTNode):
        cached = self._qn_cache.get(node)
        if cached is None:
            scope = self.scopes.get(node)
            cached = scope.get_qualified_names_for(node) if scope is not None else set()
            self._qn_cache[node] = cached
        return cached

    def imported_qname(self, node: cst.CSTNode) -> str | None:
        """The qualified name of ``node`` when it comes from an import or a builtin."""
        base = node
        while isinstance(base, cst.Attribute):
            base = base.value
        if not isinstance(base, cst.Name):
            return None  # libcst also names `nn.Linear(2, 2).to` "torch.nn.Linear.to"
        for q in self._qnames(node):
            if q.source is QualifiedNameSource.IMPORT:
                return q.name
            if q.source is QualifiedNameSource.BUILTIN and isinstance(node, cst.Name):
                return q.name  # libcst also labels some attribute chains builtins.None
        return None

    def call_qname(self, call: cst.Call) -> str | None:
        """Imported qualified name of the called function (``optim.Adam(...)`` -> torch.optim.Adam)."""
        return self.imported_qname(call.func)

    # --- structure -------------------------------------------------------------------------
    def code(self, node: cst.CSTNode) -> str:
        return self.module.code_for_node(node)

    def pos(self, node: cst.CSTNode) -> tuple[int, int]:
        """(line, col) of ``node``'s start, both 1-based (as ruff and flake8 print them).

        Positions are computed for asked nodes only; ask for many at once with ``positions``.
        """
        found = self._pos.get(node)
        if found is None:
            self.positions([node])
            found = self._pos[node]
        return found[0], found[1] + 1

    def positions(self, nodes: Iterable[cst.CSTNode]) -> None:
        """Compute the starts of ``nodes`` in one codegen pass (``pos`` then reads them)."""
        todo = [n for n in nodes if n not in self._pos]
        if todo:
            self._pos.update(start_positions(self.module, todo))

    def order(self, node: cst.CSTNode) -> int:
        """Pre-order rank: a smaller rank starts earlier in the file."""
        return self._order.get(node, -1)

    def ancestors(self, node: cst.CSTNode) -> Iterator[cst.CSTNode]:
        while node in self.parent:
            node = self.parent[node]
            yield node

    def inside(self, node: cst.CSTNode, container: cst.CSTNode) -> bool:
        if node is container:
            return True
        end = self._end.get(container)
        rank = self._order.get(node)
        if end is not None and rank is not None:
            # O(1): descendants are the ranks after the container's, up to its last node.
            # Walking ancestors made subtree() O(calls x depth) per call: quadratic files.
            return self.order(container) < rank <= end
        return any(a is container for a in self.ancestors(node))

    def statement(self, node: cst.CSTNode) -> cst.CSTNode:
        """The block-level statement (simple line or compound) that holds ``node``."""
        cur = node
        while not isinstance(cur, STATEMENT):
            cur = self.parent[cur]
        return cur

    def small_statement(self, node: cst.CSTNode) -> cst.CSTNode | None:
        for cur in (node, *self.ancestors(node)):
            if isinstance(cur, cst.BaseSmallStatement):
                return cur
            if isinstance(cur, STATEMENT):
                return None
        return None

    def block_of(self, stmt: cst.CSTNode) -> cst.CSTNode:
        """The Module / IndentedBlock whose body lists ``stmt``."""
        return self.parent[stmt]

    def function_of(self, node: cst.CSTNode) -> cst.FunctionDef | None:
        for a in self.ancestors(node):
            if isinstance(a, (cst.FunctionDef, cst.Lambda)):
                return a if isinstance(a, cst.FunctionDef) else self.function_of(a)
        return None

    def class_of(self, node: cst.CSTNode) -> cst.ClassDef | None:
        for a in self.ancestors(node):
            if isinstance(a, cst.ClassDef):
                return a
        return None

    def loops_around(self, node: cst.CSTNode) -> list[cst.CSTNode]:
        """Enclosing For/While loops of ``node`` inside its function, innermost first."""
        out = []
        for a in self.ancestors(node):
            if isinstance(a, (cst.FunctionDef, cst.ClassDef)) and a is not node:
                break
            if isinstance(a, (cst.For, cst.While)):
                out.append(a)
        return out

    def within(self, node: cst.CSTNode, bucket: list) -> list:
        """Members of ``bucket`` inside ``node`` (itself included): ``bucket`` is a list in source
        order (``calls``, ``assigns``, ``ifs``, ``loops``, or a fact's list built from them).

        A bisect over pre-order ranks; scanning the whole bucket per loop or per call made
        rules quadratic in file size.
        """
        end = self._end.get(node)
        if end is None:
            return [n for n in bucket if self.inside(n, node)]
        cached = self._rank_cache.get(id(bucket))
        if cached is None or cached[0] is not bucket or len(cached[1]) != len(bucket):
            cached = (bucket, [self._order.get(n, -1) for n in bucket])
            self._rank_cache[id(bucket)] = cached  # holds the bucket: its id stays unique
        ranks = cached[1]
        return bucket[bisect_left(ranks, self.order(node)) : bisect_right(ranks, end)]

    def subtree(self, node: cst.CSTNode, kind: type | tuple[type, ...]) -> list[cst.CSTNode]:
        """Nodes of ``kind`` inside ``node`` (``node`` included), in source order."""
        if kind is cst.Call:
            end = self._end.get(node)
            if end is None:
                return [n for n in self.calls if self.inside(n, node)]
            ranks = self._call_ranks
            lo, hi = bisect_left(ranks, self.order(node)), bisect_right(ranks, end)
            return self.calls[lo:hi]
        out, todo = [], [node]
        while todo:
            cur = todo.pop()
            if isinstance(cur, kind):
                out.append(cur)
            todo.extend(reversed(cur.children))
        return out

    def scope_of(self, node: cst.CSTNode):
        return self.scopes.get(node)

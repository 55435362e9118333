"""Whole-tree services for the index, each in as few passes as libcst allows: walk, scopes, positions."""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Iterable, Sequence
from contextlib import contextmanager

import libcst as cst
from libcst._nodes.internal import CodegenState
from libcst.metadata import ExpressionContext, ExpressionContextProvider, ScopeProvider
from libcst.metadata.scope_provider import ScopeVisitor

# --- pre-order walk --------------------------------------------------------------------------
# libcst's visitors rebuild every node they enter (``_visit_and_replace_children``), so a
# read-only visit costs about a parse. The walk below reads the child fields directly, in the
# order libcst visits them: that order is learnt per node type from libcst itself, by letting
# a recording visitor see one node's fields (``on_visit_attribute``) without descending.
_FIELDS: dict[type, tuple[tuple[str, ...], tuple[str, ...]]] = {}  # (visited, other fields)


class _FieldRecorder(cst.CSTVisitor):
    def __init__(self) -> None:
        super().__init__()
        self.fields: list[str] = []

    def on_visit(self, node: cst.CSTNode) -> bool:
        return False

    def on_visit_attribute(self, node: cst.CSTNode, attribute: str) -> None:
        self.fields.append(attribute)

    def on_leave_attribute(self, original_node: cst.CSTNode, attribute: str) -> None:
        pass


def _visited_fields(node: cst.CSTNode) -> tuple[str, ...]:
    """The fields libcst visits on ``node``, in its visiting order (one shallow rebuild)."""
    recorder = _FieldRecorder()
    node._visit_and_replace_children(recorder)
    return tuple(recorder.fields)


def _holds_nodes(value: object) -> bool:
    if isinstance(value, cst.CSTNode):
        return True
    return isinstance(value, (tuple, list)) and any(isinstance(v, cst.CSTNode) for v in value)


def _may_hold_nodes(annotation: object) -> bool:
    """False for annotations such as ``str``, ``bool``, ``Optional[str]``, ``Literal["*"]``."""
    if isinstance(annotation, type):
        return issubclass(annotation, cst.CSTNode)
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return False
    if origin is None:
        return True  # not understood here: looked at per node
    return any(_may_hold_nodes(arg) for arg in typing.get_args(annotation))


def _children(node: cst.CSTNode) -> list[cst.CSTNode]:
    entry = _FIELDS.get(type(node))
    if entry is None:
        fields = _visited_fields(node)
        other = tuple(
            f.name for f in dataclasses.fields(node) if f.name not in fields and _may_hold_nodes(f.type)
        )
        entry = _FIELDS[type(node)] = (fields, other)
    fields, other = entry
    for name in other:  # a field some types visit only for some values (f-string format_spec)
        if _holds_nodes(getattr(node, name)):
            fields = _visited_fields(node)
            break
    out: list[cst.CSTNode] = []
    for name in fields:
        value = getattr(node, name)
        if isinstance(value, cst.CSTNode):
            out.append(value)
        elif isinstance(value, (tuple, list)):
            out.extend(v for v in value if isinstance(v, cst.CSTNode))
    return out


def preorder(module: cst.Module) -> tuple[dict[cst.CSTNode, cst.CSTNode], dict[cst.CSTNode, int]]:
    """Every node's parent, keyed in libcst's visiting (pre-)order (``module`` is no key), and
    the pre-order rank of the last node of each subtree (a subtree is one rank interval)."""
    parent: dict[cst.CSTNode, cst.CSTNode] = {}
    stack = [(child, module) for child in reversed(_children(module))]
    while stack:
        node, up = stack.pop()
        parent[node] = up
        kids = _children(node)
        if kids:
            stack.extend([(kid, node) for kid in reversed(kids)])
    end: dict[cst.CSTNode, int] = {module: len(parent) - 1}
    for rank, node in zip(range(len(parent) - 1, -1, -1), reversed(parent)):
        last = end.setdefault(node, rank)
        up = parent[node]
        if end.get(up, -1) < last:
            end[up] = last
    return parent, end


# --- scopes ----------------------------------------------------------------------------------
_STORE, _LOAD, _DEL = ExpressionContext.STORE, ExpressionContext.LOAD, ExpressionContext.DEL


def _context_children(node: cst.CSTNode, ctx: ExpressionContext) -> list:
    """(child, context) pairs as libcst's ``ExpressionContextVisitor`` descends from ``node``."""
    kind = type(node)
    if kind is cst.Assign:
        return [*((t, _STORE) for t in node.targets), (node.value, ctx)]
    if kind is cst.AnnAssign:
        return [(node.target, _STORE), (node.annotation, ctx), *(((node.value, ctx),) if node.value else ())]
    if kind is cst.AugAssign or kind is cst.NamedExpr:
        return [(node.target, _STORE), (node.value, ctx)]
    if kind is cst.AsName:
        return [(node.name, _STORE)]
    if kind is cst.CompFor:
        inner = ((node.inner_for_in, ctx),) if node.inner_for_in else ()
        return [(node.target, _STORE), (node.iter, ctx), *((i, ctx) for i in node.ifs), *inner]
    if kind is cst.For:
        orelse = ((node.orelse, ctx),) if node.orelse else ()
        return [(node.target, _STORE), (node.iter, ctx), (node.body, ctx), *orelse]
    if kind is cst.Del:
        return [(node.target, _DEL)]
    if kind is cst.Attribute:
        return [(node.value, _LOAD)]  # ``attr`` gets no context
    if kind is cst.Subscript:
        parts = node.slice if isinstance(node.slice, Sequence) else (node.slice,)
        return [(node.value, _LOAD), *((p, _LOAD) for p in parts)]
    if kind is cst.ClassDef:
        rest = (*node.bases, *node.keywords, *node.decorators)
        return [(node.name, _STORE), (node.body, ctx), *((n, ctx) for n in rest)]
    if kind is cst.FunctionDef:
        rest = (*node.decorators, *((node.returns,) if node.returns else ()))
        return [(node.name, _STORE), (node.params, ctx), (node.body, ctx), *((n, ctx) for n in rest)]
    if kind is cst.Param:
        rest = tuple(n for n in (node.annotation, node.default) if n)
        return [(node.name, _STORE), *((n, ctx) for n in rest)]
    return [(child, ctx) for child in _children(node)]


def name_contexts(module: cst.Module) -> dict[cst.CSTNode, ExpressionContext]:
    """``ExpressionContextProvider``'s answers for every ``Name`` (all ``ScopeVisitor`` reads),
    computed over the fields directly instead of by a rebuilding libcst traversal."""
    out: dict[cst.CSTNode, ExpressionContext] = {}
    todo: list = [(module, _LOAD)]
    while todo:
        node, ctx = todo.pop()
        if type(node) is cst.Name:
            out[node] = ctx  # its parentheses hold no names
        else:
            todo.extend(_context_children(node, ctx))
    return out


def resolve_scopes(module: cst.Module) -> dict[cst.CSTNode, object]:
    """``MetadataWrapper(module).resolve(ScopeProvider)`` without the wrapper's extra walks.

    The wrapper runs each batchable provider inside a batched visit of the whole tree whose
    only work is at the ``Module`` node, which then walks the tree again with the provider's
    own visitor: four full traversals (expression contexts, then scopes) where two compute
    everything. Here the two visitors run directly on the same inputs: same scopes, ~40% less
    time. Every libcst traversal rebuilds every node, so each one costs about one parse.
    """
    provider = ScopeProvider()
    provider.metadata = {ExpressionContextProvider: name_contexts(module)}
    visitor = ScopeVisitor(provider)
    module.visit(visitor)
    visitor.infer_accesses()
    return provider._computed


# --- positions -------------------------------------------------------------------------------
_NEWLINE = re.compile(r"\r\n?|\n")


class _StartsState(CodegenState):
    """Codegen that notes where the ``wanted`` nodes start (as token indices), nothing else.

    Same starts as libcst's ``PositionProvider`` (the syntactic start where a node records
    one, hoisted from ``start_node`` where it says so, else where its code begins), but it
    does not track line and column for every token of the file: plain codegen speed.
    """

    def __init__(self, module: cst.Module, wanted: set[cst.CSTNode]) -> None:
        super().__init__(default_indent=module.default_indent, default_newline=module.default_newline)
        self.wanted = wanted
        self.inclusive: dict[cst.CSTNode, int] = {}
        self.syntactic: dict[cst.CSTNode, int | cst.CSTNode] = {}  # token index, or start_node

    def before_codegen(self, node: cst.CSTNode) -> None:
        if node in self.wanted:
            self.inclusive[node] = len(self.tokens)

    @contextmanager
    def record_syntactic_position(self, node, *, start_node=None, end_node=None):
        if node not in self.wanted:
            yield
            return
        start = len(self.tokens)
        if start_node is not None:
            self.wanted.add(start_node)
        try:
            yield
        finally:
            self.syntactic[node] = start if start_node is None else start_node

    def token_index(self, node: cst.CSTNode) -> int:
        start = self.syntactic.get(node)
        if start is None:
            return self.inclusive[node]
        return start if isinstance(start, int) else self.token_index(start)


def start_positions(module: cst.Module, nodes: Iterable[cst.CSTNode]) -> dict[cst.CSTNode, tuple[int, int]]:
    """(line, 0-based column) where each of ``nodes`` starts, as ``PositionProvider`` says.

    One codegen pass (~a fifth of the provider's cost: it updates line and column per token
    and stores a range for every node of the file).
    """
    wanted = set(nodes)
    state = _StartsState(module, set(wanted))
    module._codegen(state)
    tokens = state.tokens
    marks = sorted({min(state.token_index(n), len(tokens)) for n in wanted})
    at: dict[int, tuple[int, int]] = {}
    line, col, i = 1, 0, 0
    for mark in marks:
        for token in tokens[i:mark]:  # per token, as the provider counts (a lone "\r" ends a line)
            if "\n" in token or "\r" in token:
                parts = _NEWLINE.split(token)
                line += len(parts) - 1
                col = len(parts[-1])
            else:
                col += len(token)
        i = mark
        at[mark] = (line, col)
    return {n: at[min(state.token_index(n), len(tokens))] for n in wanted}

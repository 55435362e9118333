"""Whole-tree services for the index, each in as few passes as libcst allows: walk, scopes, positions."""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Iterable, Sequence
from contextlib import contextmanager, nullcontext
from functools import cache

import libcst as cst
from libcst._nodes.base import CSTNode
from libcst._nodes.internal import CodegenState
from libcst.metadata import ExpressionContext, ExpressionContextProvider, ScopeProvider
from libcst.metadata.scope_provider import _ASSIGNMENT_LIKE_NODES, ScopeVisitor

# --- parse -----------------------------------------------------------------------------------
_VALIDATE = CSTNode.__post_init__


def parse_module(source: str) -> cst.Module:
    """``cst.parse_module(source)`` without validating every node the parser builds.

    Each node's constructor runs ``CSTNode.__post_init__`` -> ``_validate()`` (checks such as
    "parentheses balance", "a keyword needs whitespace after it"), which the parser's own
    output passes by construction; it is ~15% of parsing (libcst's own comment there calls it
    a PERF candidate). Nodes built anywhere else, the rules' edits included, are validated
    as usual: the hook is swapped only for the duration of this call (one thread per
    process runs the migrator).
    """
    CSTNode.__post_init__ = _no_validation
    try:
        return cst.parse_module(source)
    finally:
        CSTNode.__post_init__ = _VALIDATE


def _no_validation(self: cst.CSTNode) -> None:
    pass


# --- pre-order walk --------------------------------------------------------------------------
# libcst's visitors rebuild every node they enter (``_visit_and_replace_children``), so a
# read-only visit costs about a parse. The walk below reads the child fields directly, in the
# order libcst visits them: that order is learnt per node type from libcst itself, by letting
# a recording visitor see one node's fields (``on_visit_attribute``) without descending.


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


def _visited(node: cst.CSTNode) -> tuple[str, ...]:
    """The fields libcst visits on ``node``, in order (from the per-type table when it can)."""
    return _entry(node)[0]


def _significant(node: cst.CSTNode) -> tuple[str, ...]:
    """The visited fields of ``node`` whose annotation admits more than formatting nodes."""
    return _entry(node)[1]


def _entry(node: cst.CSTNode) -> tuple[tuple[str, ...], tuple[str, ...]]:
    entry = _FIELDS.get(type(node))
    if entry is None:
        fields = _visited_fields(node)
        other = tuple(
            f.name for f in dataclasses.fields(node) if f.name not in fields and _may_hold_nodes(f.type)
        )
        entry = _FIELDS[type(node)] = (_with_significant(node, fields), other)
    fields, other = entry
    for name in other:  # a field some types visit only for some values (f-string format_spec)
        if _holds_nodes(getattr(node, name)):
            return _with_significant(node, _visited_fields(node))
    return fields


def _with_significant(node: cst.CSTNode, fields: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    types = {f.name: f.type for f in dataclasses.fields(node)}
    return fields, tuple(name for name in fields if not _only_trivia(types[name]))


def _only_trivia(annotation: object) -> bool:
    """True for annotations that admit formatting nodes (``_TRIVIA_TYPES``) and no others:
    ``BaseParenthesizableWhitespace``, ``Sequence[LeftParen]``, ``Union[Comma, MaybeSentinel]``."""
    if isinstance(annotation, type):
        return annotation in (type(None), cst.MaybeSentinel) or _inherits(annotation, _TRIVIA_TYPES)
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return True
    if origin is None:
        return False  # not understood here: entered
    return all(_only_trivia(arg) for arg in typing.get_args(annotation))


_FIELDS: dict[type, tuple[tuple[tuple[str, ...], tuple[str, ...]], tuple[str, ...]]] = {}


# A visited field holds a node, a sequence of nodes, None or MaybeSentinel.DEFAULT: tested by
# exact type, since isinstance against CSTNode (an ABC) costs a Python-level call per test.
_EMPTY = (type(None), cst.MaybeSentinel)


def _children(node: cst.CSTNode) -> list[cst.CSTNode]:
    """``node``'s children in visiting order, formatting-only ones (``_is_trivia``) left out."""
    out: list[cst.CSTNode] = []
    for name in _significant(node):
        value = getattr(node, name)
        kind = type(value)
        if kind is tuple or kind is list:
            out.extend([v for v in value if not _TRIVIA[type(v)]])
        elif kind not in _EMPTY and not _TRIVIA[kind]:
            out.append(value)
    return out


def preorder(module: cst.Module):
    """One walk over the fields: every node's parent, keyed in libcst's visiting (pre-)order
    (``module`` is no key); the pre-order rank of the last node of each subtree (a subtree is
    one rank interval); and each ``Name``'s expression context (see ``name_contexts``).

    Formatting-only subtrees (whitespace, comments, brackets, commas, operators: about two
    thirds of all nodes) are not entered: they hold no name, call or statement, no fact is
    built from them and no edit is keyed by them, so they get no parent and no rank.
    """
    parent: dict[cst.CSTNode, cst.CSTNode] = {}
    contexts: dict[cst.CSTNode, ExpressionContext] = {}
    stack: list = [(module, None, _LOAD)]
    while stack:
        node, up, ctx = stack.pop()
        if up is not None:
            parent[node] = up
        kind = type(node)
        if kind is cst.Name and ctx is not None:
            contexts[node] = ctx
        kids = _children(node)
        if not kids:
            continue
        if ctx is not None and kind in _CONTEXT_SETTERS:
            own = dict(_context_children(node, ctx))  # children it leaves out get no context
            stack.extend([(kid, node, own.get(kid)) for kid in reversed(kids)])
        else:
            stack.extend([(kid, node, ctx) for kid in reversed(kids)])
    end: dict[cst.CSTNode, int] = {module: len(parent) - 1}
    for rank, node in zip(range(len(parent) - 1, -1, -1), reversed(parent)):
        last = end.setdefault(node, rank)
        up = parent[node]
        if end.get(up, -1) < last:
            end[up] = last
    return parent, end, contexts


# --- scopes ----------------------------------------------------------------------------------
_STORE, _LOAD, _DEL = ExpressionContext.STORE, ExpressionContext.LOAD, ExpressionContext.DEL


_CONTEXT_SETTERS = frozenset({
    cst.Assign, cst.AnnAssign, cst.AugAssign, cst.NamedExpr, cst.AsName, cst.CompFor, cst.For,
    cst.Del, cst.Attribute, cst.Subscript, cst.ClassDef, cst.FunctionDef, cst.Param,
})


def _context_children(node: cst.CSTNode, ctx: ExpressionContext) -> list:
    """(child, context) pairs as libcst's ``ExpressionContextVisitor`` descends from a node of
    the types it handles itself (``_CONTEXT_SETTERS``); other nodes pass theirs down."""
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
    raise TypeError(f"no context rule for {kind.__name__}")


def name_contexts(module: cst.Module) -> dict[cst.CSTNode, ExpressionContext]:
    """``ExpressionContextProvider``'s answers for every ``Name`` (all ``ScopeVisitor`` reads),
    computed over the fields by ``preorder`` instead of by a rebuilding libcst traversal."""
    return preorder(module)[2]


def resolve_scopes(module: cst.Module, contexts: dict | None = None) -> dict[cst.CSTNode, object]:
    """``MetadataWrapper(module).resolve(ScopeProvider)``, in one traversal instead of four.

    The wrapper runs each batchable provider inside a batched visit of the whole tree whose
    only work is at the ``Module`` node, which then walks the tree again with the provider's
    own visitor: four full traversals (expression contexts, then scopes), each rebuilding
    every node. Here the expression contexts come from ``name_contexts`` and libcst's
    ``ScopeVisitor`` runs once, through ``_visiting_in_place``: the same scopes.
    """
    provider = ScopeProvider()
    contexts = name_contexts(module) if contexts is None else contexts  # (from ``preorder``)
    provider.metadata = {ExpressionContextProvider: contexts}
    visitor = _ScopeVisitor(provider)
    with _visiting_in_place():
        module.visit(visitor)
    visitor.infer_accesses()
    return provider._computed


_COUNTED: dict[type, bool] = {}


_HOOKS: dict[tuple[str, type], object] = {}


def _hook(visitor: type, prefix: str, node: type):
    """``visit_<Node>`` / ``leave_<Node>`` of ``visitor`` (None), looked up once per type."""
    key = (prefix, node)
    if key not in _HOOKS:
        _HOOKS[key] = getattr(visitor, f"{prefix}_{node.__name__}", None)
    return _HOOKS[key]


class _ScopeVisitor(ScopeVisitor):
    """libcst's ``ScopeVisitor`` with its per-node dispatch answered per node type: libcst
    formats and looks up ``visit_<Node>``/``leave_<Node>`` for every node and tests every
    node against 16 classes in ``on_leave``, several of them ABCs (slow checks)."""

    def on_visit(self, node: cst.CSTNode) -> bool:
        hook = _hook(_ScopeVisitor, "visit", type(node))
        return hook is None or hook(self, node) is not False

    def on_leave(self, original_node: cst.CSTNode) -> None:
        self.provider.set_metadata(original_node, self.scope)
        counted = _COUNTED.get(type(original_node))
        if counted is None:
            counted = _COUNTED[type(original_node)] = _inherits(type(original_node), _ASSIGNMENT_LIKE_NODES)
        if counted:
            self.scope._assignment_count += 1
        hook = _hook(_ScopeVisitor, "leave", type(original_node))
        if hook is not None:
            hook(self, original_node)


_LIBCST_VISIT = cst.CSTNode.visit


def _visit_in_place(node, visitor):
    """``CSTNode.visit`` for read-only visitors: the same callbacks in the same order
    (``on_visit``, per visited field ``on_visit_attribute``, the field's nodes,
    ``on_leave_attribute``, then ``on_leave``), without building a copy of every node."""
    read_only = _READ_ONLY.get(type(visitor))
    if read_only is None:
        read_only = _READ_ONLY[type(visitor)] = isinstance(visitor, cst.CSTVisitor)
    if not read_only:
        return _LIBCST_VISIT(node, visitor)
    if visitor.on_visit(node):
        skip = type(visitor) is _ScopeVisitor  # formatting-only subtrees hold no names
        key = (type(visitor), type(node))
        hooks = _ATTRIBUTE_HOOKS.get(key)
        if hooks is None:
            hooks = _ATTRIBUTE_HOOKS[key] = _has_attribute_hooks(*key)
        for name in _visited(node):
            if hooks:
                visitor.on_visit_attribute(node, name)
            value = getattr(node, name)
            kind = type(value)
            if kind is tuple or kind is list:
                for item in value:
                    if not (skip and _is_trivia(type(item))):
                        item.visit(visitor)
            elif kind not in _EMPTY and not (skip and _is_trivia(kind)):
                value.visit(visitor)
            if hooks:
                visitor.on_leave_attribute(node, name)
    visitor.on_leave(node)
    return node


_READ_ONLY: dict[type, bool] = {}
# Whitespace, comments, brackets, commas and operators: their subtrees hold nothing but more
# of the same, so no name is bound or read there and ScopeVisitor has no hook for them; it
# skips them (their nodes get no scope entry, which nothing asks for), and so does
# ``preorder``. About two thirds of all nodes.
_TRIVIA_TYPES = (
    cst.BaseParenthesizableWhitespace, cst.TrailingWhitespace, cst.Newline,
    cst.EmptyLine, cst.Comment, cst.Comma, cst.Dot, cst.Colon, cst.Semicolon, cst.AssignEqual,
    cst.LeftParen, cst.RightParen, cst.LeftSquareBracket, cst.RightSquareBracket,
    cst.LeftCurlyBrace, cst.RightCurlyBrace, cst.BaseBinaryOp, cst.BaseBooleanOp,
    cst.BaseCompOp, cst.BaseUnaryOp, cst.BaseAugOp,
)


def _inherits(kind: type, bases: tuple[type, ...]) -> bool:
    """``issubclass(kind, bases)`` for libcst's node classes, which inherit and never
    ``register``: an MRO lookup instead of ``ABCMeta.__subclasscheck__``, which walks every
    subclass of an abstract base the first time it meets a class (a third of a small
    file's first-call time)."""
    return any(base in kind.__mro__ for base in bases)


class _TriviaTable(dict):
    """node type -> whether it is formatting only; ``_TRIVIA[kind]`` works out a type once."""

    def __missing__(self, kind: type) -> bool:
        found = self[kind] = _inherits(kind, _TRIVIA_TYPES)
        return found


_TRIVIA = _TriviaTable()


def _is_trivia(kind: type) -> bool:
    return _TRIVIA[kind]


_ATTRIBUTE_HOOKS: dict[tuple[type, type], bool] = {}


def _has_attribute_hooks(visitor: type, node: type) -> bool:
    """Whether per-field callbacks can do anything: an overridden ``on_visit_attribute`` /
    ``on_leave_attribute``, or a ``visit_<Node>_<field>`` / ``leave_<Node>_<field>`` method
    other than the empty ones ``CSTVisitor`` defines for every field."""
    if (
        visitor.on_visit_attribute is not cst.CSTVisitor.on_visit_attribute
        or visitor.on_leave_attribute is not cst.CSTVisitor.on_leave_attribute
    ):
        return True
    return node.__name__ in _field_hook_owners(visitor)


@cache
def _field_hook_owners(visitor: type) -> frozenset[str]:
    """Node type names for which ``visitor`` overrides a ``visit_<Node>_<field>`` or
    ``leave_<Node>_<field>`` method (one ``dir()`` per visitor class: it lists thousands)."""
    owners = set()
    for name in dir(visitor):
        prefix, _, rest = name.partition("_")
        overridden = prefix in ("visit", "leave") and "_" in rest
        if overridden and getattr(visitor, name) is not getattr(cst.CSTVisitor, name, None):
            owners.add(rest.split("_", 1)[0])
    return frozenset(owners)


@contextmanager
def _visiting_in_place():
    """Read-only libcst visits skip the node copies while this block runs (this thread's
    and any other: the callbacks a visitor sees are the same either way)."""
    cst.CSTNode.visit = _visit_in_place
    try:
        yield
    finally:
        cst.CSTNode.visit = _LIBCST_VISIT


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

    def record_syntactic_position(self, node, *, start_node=None, end_node=None):
        # Called around most nodes' code: a shared do-nothing context for the unwanted ones
        # instead of a generator-based context manager per node.
        if node not in self.wanted:
            return _NOTHING
        return _SyntacticStart(self, node, start_node)

    def token_index(self, node: cst.CSTNode) -> int:
        start = self.syntactic.get(node)
        if start is None:
            return self.inclusive[node]
        return start if isinstance(start, int) else self.token_index(start)


_NOTHING = nullcontext()


class _SyntacticStart:
    """Notes where a wanted node's own code starts (or the node it hoists its start from)."""

    def __init__(self, state: _StartsState, node: cst.CSTNode, start_node: cst.CSTNode | None) -> None:
        self.state, self.node, self.start_node = state, node, start_node

    def __enter__(self) -> None:
        self.start = len(self.state.tokens)
        if self.start_node is not None:
            self.state.wanted.add(self.start_node)

    def __exit__(self, *exc: object) -> None:
        self.state.syntactic[self.node] = self.start if self.start_node is None else self.start_node


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

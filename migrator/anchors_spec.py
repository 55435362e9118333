"""The vocabulary of prefilter anchors: what a rule class declares as ``anchors = ...``.

An anchor says what MUST be in a file for the rule to report or change anything (see
``migrator.prefilter`` and ``migrator.codefilter``). Each term knows both of its forms:

- its *text* form, for the text prefilter: regexes searched in the raw source, each with
  plain substring hints (one of which must be in the text before the regex runs);
- its *code* form, for the code prefilter: the source of a predicate over a
  ``codefilter.CodeSummary`` named ``s``.

``python -m migrator.anchors_gen`` reads every rule's ``anchors`` and writes both tables to
``migrator/_anchor_tables.py``, so that deciding which rules run imports no rule module (nor
libcst). This module imports nothing heavy (``ast``, ``re``): the generated tables import the two string
patterns below from it.

Terms (text form / code form):

- ``Call(*names)``: any of ``names`` as a whole word / one of them is called (or imported);
- ``Ident(*names)``: any as a whole word / one of them is used as an identifier;
- ``Part(*parts)``: any substring / an identifier contains one of them;
- ``CallPart(*parts)``: any substring / a called (or imported) identifier contains one;
- ``Str(*parts)``: any substring / a string value contains one of them;
- ``All(*terms)``: every term (each with one text regex) / ``and`` of their predicates;
- ``Any(*terms)``: alternatives / ``or``; a bare term is ``Any`` of itself. Adjacent
  whole-word terms share one text regex (as do adjacent substring terms);
- ``Custom(text=..., code=...)``: the escape hatch, for anchors whose two forms are not the
  same words: ``text`` is a regex (``words(...)``, ``text(...)``, ``method(...)``, a raw
  regex source) or a tuple of them (all needed), ``code`` a predicate's source text (or a
  term, whose code form is used).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

# What may separate two tokens: whitespace, backslash continuations, comments (inside
# brackets). Possessive quantifiers keep the regex linear on long comment runs.
GAP = r"(?:\s|\\\r?\n|#[^\r\n]*+)*+"

# Code-stage string patterns (fullmatch), in scope for the generated predicates:
# a device string ("cuda", "cpu:0", ...): the device facts (analysis.devices) read string
# values with this pattern too. A trailing newline was always accepted (``^...$``).
DEVICE_STRING = re.compile(r"(?:cuda|cpu|mps|xpu)(?::\d+)?\n?")
# An ``open()`` mode that writes; the output rule (MIG406) reads modes with this pattern.
WRITE_MODE = re.compile(r"[rbt+U]*[wax][rwaxbt+U]*")

# Names the code predicates may use besides ``s`` (the generated module imports them).
CODE_NAMES = ("DEVICE_STRING", "WRITE_MODE")


@dataclass(frozen=True)
class Regex:
    """One text-prefilter regex and the plain substrings one of which it needs (() = none)."""

    source: str
    hints: tuple[str, ...] = ()


def words(*names: str) -> Regex:
    """Any of ``names`` as a whole identifier."""
    return Regex(r"\b(?:" + "|".join(re.escape(n) for n in names) + r")\b", names)


def text(*parts: str) -> Regex:
    """Any of ``parts`` anywhere (also inside longer identifiers)."""
    return Regex("|".join(re.escape(p) for p in parts), parts)


def method(name: str) -> Regex:
    """An attribute access ``.name`` (gaps allowed between the dot and the name)."""
    return Regex(rf"\.{GAP}{re.escape(name)}\b", (name,))


# The value of a device string ("cuda", "cpu:0", ...), written plainly or through escapes.
DEVICE_STRING_TEXT = Regex(
    r"\b(?:cuda|cpu|mps|xpu)\b|\\[xuUN0-7\r\n]", ("cuda", "cpu", "mps", "xpu", "\\")
)
# ``x = 0`` (an integer literal, possibly parenthesised) assigned to a name or attribute.
INT_ASSIGN = Regex(r"=(?:[\s(]|\\\r?\n|#[^\r\n]*+)*+\d")


class Term:
    """An anchor term. ``alternatives()``: text alternatives (a Regex, or a tuple of Regex
    all needed); ``predicate()``: the code predicate's source over ``s``."""

    def alternatives(self) -> list:
        raise NotImplementedError

    def predicate(self) -> str:
        raise NotImplementedError


def _q(name: str) -> str:
    return f'"{name}"' if re.fullmatch(r"[\w.]+", name) else repr(name)


def _args(names: tuple[str, ...]) -> str:
    if not names or not all(isinstance(n, str) and n for n in names):
        raise TypeError(f"anchor names must be non-empty strings: {names!r}")
    return ", ".join(_q(n) for n in names)


class _Names(Term):
    """A term over a list of names: one text regex (of ``_text_kind``), one summary call."""

    _text_kind = "words"  # or "text"
    _method = ""

    def __init__(self, *names: str) -> None:
        _args(names)
        self.names = names

    def alternatives(self) -> list:
        return [words(*self.names) if self._text_kind == "words" else text(*self.names)]

    def predicate(self) -> str:
        return f"s.{self._method}({_args(self.names)})"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({_args(self.names)})"


class Call(_Names):
    """A callee's last identifier (``x.backward()``, ``torch.save``): word / called or imported."""

    _method = "calls"


class Ident(_Names):
    """An identifier (a name, attribute, keyword, import part): word / used."""

    _method = "uses"


class Part(_Names):
    """Part of an identifier (``clip_grad_``): substring / an identifier contains it."""

    _text_kind = "text"
    _method = "uses_part"


class CallPart(_Names):
    """Part of a callee's identifier (``save`` in ``save_image``): substring / a call has it."""

    _text_kind = "text"
    _method = "calls_part"


class Str(_Names):
    """Part of a string value (``"cuda"``): substring / a string constant contains it."""

    _text_kind = "text"

    def predicate(self) -> str:
        calls = [f"s.string_part({_q(n)})" for n in self.names]
        return calls[0] if len(calls) == 1 else "(" + " or ".join(calls) + ")"


class Custom(Term):
    """Two forms that do not say the same words: ``text`` a regex (``Regex`` or raw source)
    or a tuple of them (all needed), ``code`` a predicate's source over ``s`` or a term."""

    def __init__(self, *, text, code: str | Term) -> None:
        parts = text if isinstance(text, tuple) else (text,)
        if not parts:
            raise TypeError("Custom needs a text anchor")
        self.text = tuple(p if isinstance(p, Regex) else Regex(p) for p in parts)
        for p in self.text:
            re.compile(p.source)
        if isinstance(code, Term):
            code = code.predicate()
        node = ast.parse(code.strip(), mode="eval").body
        self.code = code.strip()
        # parenthesised where ``or``/``and`` around it could bind into it
        self._wrap = isinstance(node, (ast.BoolOp, ast.IfExp, ast.NamedExpr, ast.Lambda)) and not (
            self.code.startswith("(") and _parses(self.code[1:-1])
        )

    def alternatives(self) -> list:
        return [self.text[0] if len(self.text) == 1 else self.text]

    def predicate(self) -> str:
        return f"({self.code})" if self._wrap else self.code


def _parses(code: str) -> bool:
    try:
        ast.parse(code, mode="eval")
    except SyntaxError:
        return False
    return True


class All(Term):
    """Every one of ``terms`` (each must have a single text regex)."""

    def __init__(self, *terms: Term) -> None:
        if not terms:
            raise TypeError("All needs terms")
        self.terms = terms

    def alternatives(self) -> list:
        parts: list[Regex] = []
        for t in self.terms:
            alts = t.alternatives()
            if len(alts) != 1:
                raise TypeError(f"All: {t!r} has several text alternatives")
            parts += [alts[0]] if isinstance(alts[0], Regex) else list(alts[0])
        return [tuple(parts)]

    def predicate(self) -> str:
        return "(" + " and ".join(t.predicate() for t in self.terms) + ")"


class Any(Term):
    """One of ``terms``."""

    def __init__(self, *terms: Term) -> None:
        if not terms:
            raise TypeError("Any needs terms")
        self.terms = terms

    def alternatives(self) -> list:
        out: list = []
        kinds: list[str | None] = []
        for t in self.terms:
            kind = t._text_kind if isinstance(t, _Names) else None
            for alt in t.alternatives():
                if kind is not None and kinds and kinds[-1] == kind:
                    # adjacent terms of one kind share a regex: one search instead of two
                    prev = out[-1]
                    names = prev.hints + alt.hints
                    out[-1] = words(*names) if kind == "words" else text(*names)
                else:
                    out.append(alt)
                    kinds.append(kind)
        return out

    def predicate(self) -> str:
        calls = [t.predicate() for t in self.terms]
        return calls[0] if len(calls) == 1 else "(" + " or ".join(calls) + ")"


def as_term(anchors) -> Term:
    """A rule's ``anchors`` as one term (a tuple/list is ``Any`` of its members)."""
    if isinstance(anchors, (tuple, list)):
        return Any(*anchors)
    if not isinstance(anchors, Term):
        raise TypeError(f"not an anchor term: {anchors!r}")
    return anchors


# Shared anchors (several rules build on the same facts).
BACKWARD = Call("backward")  # bare backward sites and the wrapper's own backward
LOADER = Ident("DataLoader")
# Models are bindings whose parameters reach a torch.optim optimizer, or modules updated by
# hand in a loop over ``.parameters()`` that reads ``.grad`` (text: anywhere; code: used).
MODELS = Any(
    Ident("optim"),
    Custom(text=(text("parameters"), text("grad")), code='s.uses("parameters") and s.uses("grad")'),
)
# A device string value, written plainly or through escapes.
DEVICE_STRING_VALUE = Custom(text=DEVICE_STRING_TEXT, code="s.string(DEVICE_STRING)")

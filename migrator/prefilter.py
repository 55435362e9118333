"""Text prefilter: which rules could fire on a source text, decided with regexes before any parse.

Each rule has *anchors*: text that MUST be in the file for the rule to report or change
anything. A rule that finds nothing without an anchor is skipped; a file where no enabled
rule has an anchor is not parsed at all. Anchors are necessary conditions, never
heuristics: a file without them provably gives the rule nothing to do. They come from what
each rule's facts are built on (see docs/performance.md, "Prefilter"):

- a qualified name resolved through imports (``torch.optim.Adam``): every dotted part is
  written in the file (in the import or the attribute chain), so the part's word is enough;
- an attribute or method name (``x.backward()``): the identifier is written in the file;
  identifiers cannot be split, and ``\\b`` word boundaries hold around them;
- a string's *value* (``"cuda"``): written as is, or with a backslash escape
  (``"\\x63uda"``), which the device-string anchor also accepts.

Anchors are declared on each rule class (``anchors = ...``, in the vocabulary of
``migrator.anchors_spec``: each term knows its regex here and its predicate in
``migrator.codefilter``). ``python -m migrator.anchors_gen`` writes them, as plain data, to
``migrator/_anchor_tables.py``, which this module reads: deciding needs no rule module (nor
libcst, which they import), and a file no anchor reaches costs a few regex searches. A new
rule's author declares its anchors in the rule's own file and reruns the generator; a stale
table, or a planning rule without anchors, fails a test (tests/migrator/test_anchor_tables.py,
tests/migrator/test_prefilter.py).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import cache

from migrator import _anchor_tables, anchors_spec

_GAP = anchors_spec.GAP

# pattern -> plain substrings one of which it needs: ``in`` (memchr speed) rules most files
# out before the slower regex runs (5 ms -> well under 1 ms per corpus file).
_HINTS: dict[str, tuple[str, ...]] = dict(_anchor_tables.HINTS)


def _hinted(pattern: str, hints: tuple[str, ...]) -> str:
    _HINTS[pattern] = hints
    return pattern


def _registered(regex: anchors_spec.Regex) -> str:
    return _hinted(regex.source, regex.hints) if regex.hints else regex.source


def words(*names: str) -> str:
    """Any of ``names`` as a whole identifier."""
    return _registered(anchors_spec.words(*names))


def text(*parts: str) -> str:
    """Any of ``parts`` anywhere (also inside longer identifiers)."""
    return _registered(anchors_spec.text(*parts))


def method(name: str) -> str:
    """An attribute access ``.name`` (gaps allowed between the dot and the name)."""
    return _registered(anchors_spec.method(name))


# The value of a device string ("cuda", "cpu:0", ...), written plainly or through escapes.
DEVICE_STRING = _registered(anchors_spec.DEVICE_STRING_TEXT)
# ``x = 0`` (an integer literal, possibly parenthesised) assigned to a name or attribute.
INT_ASSIGN = anchors_spec.INT_ASSIGN.source

# code -> anchors (any one alternative suffices; a tuple alternative needs all its parts),
# generated from the rules' ``anchors`` by ``python -m migrator.anchors_gen``.
ANCHORS: dict[str, tuple] = _anchor_tables.ANCHORS


def anchors_of(rule: type) -> tuple | None:
    """The rule's anchors; None: it has none (a test fails for such a planning rule)."""
    return ANCHORS.get(rule.code)


@cache
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _holds(alternative, source: str, seen: dict[str, bool]) -> bool:
    parts = (alternative,) if isinstance(alternative, str) else alternative
    for p in parts:
        if p not in seen:  # several rules share anchors: search each pattern once per text
            hints = _HINTS.get(p)
            seen[p] = (hints is None or any(h in source for h in hints)) and (
                _compiled(p).search(source) is not None
            )
        if not seen[p]:
            return False
    return True


def candidate_rules(source: str, rules: Iterable[type]) -> frozenset[str]:
    """Codes of ``rules`` that may report or change something in ``source``."""
    seen: dict[str, bool] = {}
    out = set()
    for rule in rules:
        alternatives = anchors_of(rule)
        if alternatives is None or any(_holds(a, source, seen) for a in alternatives):
            out.add(rule.code)
    return frozenset(out)


def planning_rules() -> list[type]:
    """Every registered rule that plans edits (input-level MIG0xx rules have no ``plan``)."""
    from migrator.rules.base import all_rules

    return [r for r in all_rules() if hasattr(r, "plan")]


def rules_to_run(source: str, options) -> frozenset[str]:
    """Codes of the enabled rules that may fire on ``source``; empty: nothing to do here.

    Read from ``ANCHORS`` alone (every planning rule is there): no rule module is imported.
    """
    seen: dict[str, bool] = {}
    return frozenset(
        code
        for code, alternatives in ANCHORS.items()
        if options.wants(code) and any(_holds(a, source, seen) for a in alternatives)
    )

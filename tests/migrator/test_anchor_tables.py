"""Anchors live on the rule classes; migrator/_anchor_tables.py is generated from them."""

from __future__ import annotations

import re
import sys

import pytest

from migrator import anchors_gen, codefilter, prefilter
from migrator import anchors_spec as A
from migrator.anchors_gen import REGENERATE, TABLES, problems, render
from tests.conftest import ROOT, run_cmd


def test_generated_tables_are_up_to_date():
    current = TABLES.read_text(encoding="utf-8") if TABLES.exists() else ""
    assert current == render(), f"migrator/_anchor_tables.py is out of date; run: {REGENERATE}"


def test_prefilters_read_the_generated_tables():
    from migrator import _anchor_tables

    assert prefilter.ANCHORS is _anchor_tables.ANCHORS
    assert codefilter.CODE_ANCHORS is _anchor_tables.CODE_ANCHORS
    for code, rule in ((r.code, r) for r in anchors_gen.planning_rules()):
        assert list(prefilter.ANCHORS[code]) == [
            a.source if isinstance(a, A.Regex) else tuple(p.source for p in a)
            for a in A.as_term(rule.anchors).alternatives()
        ], code


def _plans(self, ctx):  # a planning rule's shape, without registering a real Rule
    return None


def test_rule_class_without_anchors_fails_the_check():
    bare = type("NoAnchors", (), {"code": "MIG998", "plan": _plans})
    wrong = problems([bare])
    assert len(wrong) == 1 and "MIG998" in wrong[0] and "anchors" in wrong[0]
    with pytest.raises(ValueError, match="MIG998"):
        render([bare])
    ok = type("Anchored", (), {"code": "MIG997", "plan": _plans, "anchors": A.Call("backward")})
    assert problems([ok]) == []
    assert '"MIG997": lambda s: s.calls("backward"),' in render([ok])


def test_anchors_inherited_from_another_rule_do_not_count():
    parent = type("Parent", (), {"code": "MIG997", "plan": _plans, "anchors": A.Call("backward")})
    child = type("Child", (parent,), {"code": "MIG996"})
    assert [w for w in problems([parent, child]) if "MIG996" in w]
    base = type("_Base", (), {"anchors": A.LOADER})  # an abstract base (no code) may hold them
    assert problems([type("Concrete", (base,), {"code": "MIG995", "plan": _plans})]) == []


def test_a_code_anchor_naming_an_unknown_name_fails_the_check():
    odd = type("Odd", (), {"code": "MIG994", "plan": _plans,
                           "anchors": A.Custom(text=A.words("x"), code="s.string(SOME_PATTERN)")})
    assert any("SOME_PATTERN" in w for w in problems([odd]))


def test_every_planning_rule_declares_its_own_anchors():
    assert problems(anchors_gen.planning_rules()) == []


@pytest.mark.parametrize(
    "term, alternatives, predicate",
    [
        (A.Call("save"), [r"\b(?:save)\b"], 's.calls("save")'),
        (A.Ident("a", "b"), [r"\b(?:a|b)\b"], 's.uses("a", "b")'),
        (A.Part("clip_"), ["clip_"], 's.uses_part("clip_")'),
        (A.CallPart("save"), ["save"], 's.calls_part("save")'),
        (A.Str("cuda", "mps"), ["cuda|mps"], '(s.string_part("cuda") or s.string_part("mps"))'),
        # adjacent whole-word terms share one regex; different kinds do not
        (A.Any(A.Call("a"), A.Ident("b"), A.Part("c")), [r"\b(?:a|b)\b", "c"],
         '(s.calls("a") or s.uses("b") or s.uses_part("c"))'),
        (A.All(A.Call("a"), A.Part("c")), [(r"\b(?:a)\b", "c")], '(s.calls("a") and s.uses_part("c"))'),
        (A.Any(A.Ident("x"), A.All(A.Call("a"), A.Ident("b"))), [r"\b(?:x)\b", (r"\b(?:a)\b", r"\b(?:b)\b")],
         '(s.uses("x") or (s.calls("a") and s.uses("b")))'),
        (A.Custom(text=(A.method("to"), A.INT_ASSIGN), code="s.int_assigned or s.uses('to')"),
         [(A.method("to").source, A.INT_ASSIGN.source)], "(s.int_assigned or s.uses('to'))"),
        (A.Custom(text=A.text("cuda"), code=A.Any(A.Call("cuda"), A.Str("cuda"))), ["cuda"],
         '(s.calls("cuda") or s.string_part("cuda"))'),
    ],
)
def test_each_term_knows_its_text_and_code_forms(term, alternatives, predicate):
    got = [a.source if isinstance(a, A.Regex) else tuple(p.source for p in a) for a in term.alternatives()]
    assert got == alternatives
    assert term.predicate() == predicate
    for alt in got:
        for p in (alt,) if isinstance(alt, str) else alt:
            re.compile(p)


def test_merged_words_keep_every_hint():
    (merged,) = A.Any(A.Call("Runtime", "Fabric"), A.Ident("TrainModule")).alternatives()
    assert merged.hints == ("Runtime", "Fabric", "TrainModule")
    assert re.search(merged.source, "x = TrainModule()") and not re.search(merged.source, "Fabrics")


def test_deciding_imports_no_rule_module_nor_libcst():
    probe = (
        "import sys\n"
        "from migrator.prefilter import rules_to_run\n"
        "from migrator.codefilter import code_rules\n"
        "from migrator.options import Options\n"
        "import ast\n"
        "src = 'import torch\\nloss.backward()\\nprint(1)\\n'\n"
        "codes = rules_to_run(src, Options())\n"
        "assert codes, codes\n"
        "assert code_rules(ast.parse(src), codes) == {'MIG204', 'MIG206', 'MIG303', 'MIG401', 'MIG408'}\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] == 'libcst'"
        " or m.startswith(('migrator.rules', 'migrator.anchors_gen')))\n"
        "print(heavy)\n"
    )
    done = run_cmd([sys.executable, "-c", probe], timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"

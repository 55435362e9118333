"""The generated rule reference is current and every registered rule is documented."""

from __future__ import annotations

import inspect

from migrator.docs import REGENERATE, RULES_MD, explain, render_reference
from migrator.rules import all_rules


def test_rules_md_is_up_to_date():
    current = RULES_MD.read_text(encoding="utf-8") if RULES_MD.exists() else ""
    assert current == render_reference(), f"docs/rules.md is out of date; run: {REGENERATE}"


def test_every_rule_has_name_summary_and_documentation():
    rules = all_rules()
    assert {"MIG001", "MIG002", "MIG003", "MIG004", "MIG009"} <= {r.code for r in rules}
    for rule in rules:
        assert rule.name and rule.summary, rule.code
        assert len(inspect.cleandoc(rule.__doc__ or "")) > 40, f"{rule.code} has no documentation"
        text = explain(rule.code.lower())
        assert text is not None and text.startswith(f"{rule.code} ({rule.name}): {rule.summary}")
        assert f"### {rule.code}" in render_reference()


def test_unknown_code_has_no_explanation():
    assert explain("MIG000") is None

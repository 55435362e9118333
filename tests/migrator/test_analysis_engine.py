"""The pipeline around the rules: prefilter, skip-file, bad input, suppressions, select/ignore, verify."""

from __future__ import annotations

import textwrap

from migrator.engine import migrate_source
from migrator.options import Options
from migrator.results import Status

SCRIPT = textwrap.dedent(
    """\
    import torch

    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = model(torch.ones(1, 2)).sum()
    loss.backward()
    """
)


def codes(result) -> list[str]:
    return [f.code for f in result.findings]


def test_file_without_torch_is_skipped_without_parsing():
    result = migrate_source("def f(:\n", path="x.py")  # would be a syntax error if parsed
    assert result.status is Status.SKIPPED and result.output == "def f(:\n"


def test_skip_file_comment():
    result = migrate_source("# migrate: skip-file\n" + SCRIPT)
    assert result.status is Status.SKIPPED and result.reason == "skip-file comment"


def test_syntax_error_is_bad_input_not_internal_error():
    result = migrate_source("import torch\nprint 'x'\n")
    assert result.status is Status.FAILED and not result.internal_error and "syntax error" in result.reason


def test_migrates_and_reports():
    result = migrate_source(SCRIPT, options=Options(target="fabric"))
    assert result.status is Status.CHANGED
    assert "fabric.backward(loss)" in result.output
    assert "model, optimizer = fabric.setup(model, optimizer)" in result.output
    assert "model(torch.ones(1, 2, device=fabric.device))" in result.output  # input to its device
    assert codes(result) == ["MIG201", "MIG202", "MIG102", "MIG204"]


def test_suppressed_finding_drops_its_edits_only():
    src = SCRIPT.replace("loss.backward()", "loss.backward()  # migrate: ignore[MIG204]")
    result = migrate_source(src)
    assert "loss.backward()  # migrate: ignore[MIG204]" in result.output
    assert "rt.setup(model, optimizer)" in result.output
    assert codes(result) == ["MIG201", "MIG202", "MIG102"]
    assert result.status is Status.CHANGED  # a suppressed backward is the user's choice


def test_deselected_rule_keeps_wrapper_when_others_need_it():
    result = migrate_source(SCRIPT, options=Options(ignore=("MIG201", "MIG202")))
    assert "rt = Runtime()" in result.output and "rt.backward(loss)" in result.output
    assert codes(result) == ["MIG204"]


def test_nothing_to_do_is_unchanged():
    result = migrate_source("import torch\nx = torch.ones(2)\n")
    assert result.status is Status.UNCHANGED and result.findings == ()


def test_migrating_twice_is_a_fixed_point():
    once = migrate_source(SCRIPT, options=Options(target="fabric")).output
    again = migrate_source(once, options=Options(target="fabric"))
    assert again.status is Status.UNCHANGED and again.output == once


def test_verify_failure_is_an_internal_error(monkeypatch):
    from migrator import apply as apply_mod

    def broken(module, edits, *_):
        # leaves a bare backward (and defines what it reads: verify checks undefined names first)
        return apply_mod.cst.parse_module("import torch\nloss = torch.ones(1)\nloss.backward()\n")

    monkeypatch.setattr(apply_mod, "apply_edits", broken)
    result = migrate_source(SCRIPT)
    assert result.status is Status.FAILED and result.internal_error
    assert "bare .backward()" in result.reason and result.output == SCRIPT

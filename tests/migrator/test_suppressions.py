"""Tests for `# migrate: ignore[...]` / `# migrate: skip-file` parsing."""

from __future__ import annotations

from migrator.suppressions import parse


def test_no_directive_suppresses_nothing():
    s = parse("import torch\nloss.backward()\n")
    assert not s.skip_file
    assert not s.suppressed("MIG201", 2)


def test_exact_code_only_that_code_on_that_line():
    s = parse("import torch\nloss.backward()  # migrate: ignore[MIG201]\nloss.backward()\n")
    assert s.suppressed("MIG201", 2)
    assert not s.suppressed("MIG202", 2)
    assert not s.suppressed("MIG201", 3)
    assert not s.suppressed("MIG201", 1)


def test_prefix_and_several_codes_and_case():
    s = parse("x.cuda()  # migrate: ignore[mig1, MIG401]\n")
    assert s.suppressed("MIG101", 1)
    assert s.suppressed("MIG199", 1)
    assert s.suppressed("MIG401", 1)
    assert not s.suppressed("MIG402", 1)
    assert not s.suppressed("MIG201", 1)


def test_bare_ignore_suppresses_everything_on_the_line():
    s = parse("a = 1\nx.cuda()  #migrate:ignore\n")
    assert s.suppressed("MIG101", 2)
    assert s.suppressed("MIG901", 2)
    assert not s.suppressed("MIG101", 1)


def test_comment_in_multiline_statement_covers_all_its_lines():
    src = "model = Net(\n    a,\n    b,\n)  # migrate: ignore[MIG2]\nother()\n"
    s = parse(src)
    for line in (1, 2, 3, 4):
        assert s.suppressed("MIG201", line)
    assert not s.suppressed("MIG201", 5)


def test_directive_inside_string_is_not_a_comment():
    s = parse('x = "# migrate: ignore"\ny = 1  # migrate: skip-file\n')
    assert not s.suppressed("MIG101", 1)
    assert not s.skip_file  # line 2 is code, not the file header


def test_skip_file_in_header_after_docstring_and_license():
    src = '#!/usr/bin/env python\n# Copyright\n"""Doc\nstring."""\n\n# migrate: skip-file\nimport torch\n'
    assert parse(src).skip_file


def test_skip_file_below_first_statement_does_not_count():
    assert not parse("import torch\n# migrate: skip-file\n").skip_file


def test_invalid_entries_are_reported_and_suppress_nothing():
    s = parse("x.cuda()  # migrate: ignore[E501, MIG101]\ny.cuda()  # migrate: ignore[]\n")
    assert s.invalid == ((1, "E501"),)
    assert s.suppressed("MIG101", 1)
    assert not s.suppressed("MIG102", 1)
    assert not s.suppressed("MIG101", 2)


def test_untokenizable_source_falls_back_to_line_scan():
    s = parse("def f(:\n    x.cuda()  # migrate: ignore[MIG101]\n'''unterminated\n")
    assert s.suppressed("MIG101", 2)

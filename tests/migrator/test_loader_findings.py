"""Loader findings read right (issue 11 #13): one line, and no MIG303 on data MIG301 sets up."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrator.engine import migrate_source
from migrator.options import Options
from migrator.targets import VOCABULARIES

SOURCE = (
    Path(__file__).resolve().parents[2] / "fixtures" / "rules" / "MIG303_loader_iterators" / "input.py"
).read_text()


@pytest.mark.parametrize("target", sorted(VOCABULARIES))
def test_inline_multi_line_loader_message_is_one_short_line(target):
    result = migrate_source(SOURCE, path="t.py", options=Options(target=target))
    inline = [f for f in result.findings if f.code == "MIG301" and f.line == 24]
    assert len(inline) == 1 and "\n" not in inline[0].message
    assert "DataLoader(...)" in inline[0].message


def test_mig303_only_where_the_loop_does_not_read_a_loader():
    result = migrate_source(SOURCE, path="t.py", options=Options(target="runtime"))
    assert [f.line for f in result.findings if f.code == "MIG303"] == [11]

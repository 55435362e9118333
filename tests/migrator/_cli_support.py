"""A stand-in engine for CLI plumbing tests: deterministic edits independent of the rules."""

from __future__ import annotations

import pytest

from migrator.cli import main
from migrator.results import FileResult, Finding, Status


def fake_migrate_source(source: str, path: str = "<string>", options=None, *, rewrite: bool = True) -> FileResult:
    """`loss.backward()` -> `rt.backward(loss)` (MIG201); `# HUMAN` -> MIG901; `# BUG` -> crash."""
    try:
        compile(source, path, "exec", dont_inherit=True)
    except SyntaxError as exc:
        return FileResult(path, source, source, Status.FAILED, reason=f"cannot parse: {exc.msg}")
    if "# BUG" in source:
        return FileResult(path, source, source, Status.FAILED, reason="boom", traceback="Traceback: boom",
                          internal_error=True)
    findings = []
    lines = source.split("\n")
    for i, line in enumerate(lines):
        col = line.find("loss.backward()")
        if col >= 0:
            findings.append(Finding(i + 1, col + 1, "MIG201", "call rt.backward(loss)"))
            lines[i] = line.replace("loss.backward()", "rt.backward(loss)")
        if "# HUMAN" in line:
            findings.append(Finding(i + 1, 1, "MIG901", "already distributed", fixed=False))
        if "# BROKEN" in line:
            lines[i] = "(((" + lines[i]
    output = "\n".join(lines)
    status = Status.CHANGED if output != source else Status.UNCHANGED
    return FileResult(path, source, output, status, tuple(findings))


@pytest.fixture
def fake_engine(monkeypatch):
    import migrator.engine

    monkeypatch.setattr(migrator.engine, "migrate_source", fake_migrate_source)


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """Run `migrate ARGS` in-process; returns (exit status, stdout, stderr)."""
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err

"""GitHub Actions workflow commands: findings show up as annotations on the PR diff."""

from __future__ import annotations

from migrator.batch import Outcome
from migrator.report import severity

COMMAND = {"error": "error", "warning": "warning", "note": "notice"}  # severity -> command


def _escape_data(text: str) -> str:
    """GitHub's workflow-command escaping of a message (actions/toolkit ``escapeData``)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    """GitHub's escaping of a property value (``escapeProperty``): data plus ``:`` and ``,``."""
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def annotations(outcome: Outcome) -> list[str]:
    """One ``::error|warning|notice file=...,line=...,col=...,title=MIGnnn::message`` line
    per finding, its command from ``migrator.report.severity``."""
    lines = []
    path = _escape_property(outcome.path)
    for f in outcome.findings:
        props = f"file={path},line={f.line},col={max(f.col, 1)},title={_escape_property(f.code)}"
        command = COMMAND[severity(f.code, f.fixed)]
        lines.append(f"::{command} {props}::{_escape_data(f.message)}")
    if outcome.changed and not outcome.findings:
        lines.append(f"::notice file={path},line=1,title=migrate::file would be migrated")
    return lines

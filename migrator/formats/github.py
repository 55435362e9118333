"""GitHub Actions workflow commands: findings show up as annotations on the PR diff."""

from __future__ import annotations

from migrator.batch import Outcome
from migrator.report import needs_human


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def level(code: str, fixed: bool) -> str:
    """error: must be acted on (fixable, needs a human, bad input); warning: a note."""
    return "error" if fixed or needs_human(code) or code.startswith("MIG0") else "warning"


def annotations(outcome: Outcome) -> list[str]:
    """One `::error file=...,line=...,col=...,title=MIGnnn::message` line per finding."""
    lines = []
    path = _escape_property(outcome.path)
    for f in outcome.findings:
        props = f"file={path},line={f.line},col={max(f.col, 1)},title={_escape_property(f.code)}"
        lines.append(f"::{level(f.code, f.fixed)} {props}::{_escape_data(f.message)}")
    if outcome.changed and not outcome.findings:
        lines.append(f"::error file={path},line=1,title=migrate::file would be migrated")
    return lines

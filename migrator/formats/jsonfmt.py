"""`--format json`: one document per run, schema in docs/json-schema.json (version 2)."""

from __future__ import annotations

import json

from migrator import __version__
from migrator.batch import Outcome
from migrator.report import Report, needs_human, severity
from migrator.results import Status

SCHEMA_VERSION = 2  # 2: `fixed` means applied by this run (1: would be rewritten)


def _rule_name(code: str) -> str | None:
    from migrator.rules import get_rule

    rule = get_rule(code)
    return rule.name if rule else None


def file_entry(o: Outcome, with_diff: bool) -> dict:
    entry = {
        "path": o.path,
        "status": o.status.value,
        "reason": o.reason if o.status in (Status.SKIPPED, Status.FAILED) else None,
        "written": o.written,
        "findings": [
            {
                "code": f.code,
                "rule": _rule_name(f.code),
                "line": f.line,
                "column": f.col,
                "message": f.message,
                "severity": severity(f.code, f.fixed),
                "fixable": f.fixed,
                "fixed": f.fixed and o.written,
                "needs_human": needs_human(f.code),
            }
            for f in o.findings
        ],
    }
    if with_diff:
        entry["diff"] = o.diff or None
    return entry


def render(report: Report, *, target: str, form: str, mode: str, with_diff: bool) -> str:
    """The whole run as a JSON text (stable key order; see docs/json-schema.md)."""
    doc = {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "torch-migrate", "version": __version__},
        "target": target,
        "form": form,
        "mode": mode,
        "files": [file_entry(o, with_diff) for o in report.outcomes],
        "summary": {
            "files": len(report.outcomes),
            "changed": report.count(Status.CHANGED),
            "unchanged": report.count(Status.UNCHANGED),
            "skipped": report.count(Status.SKIPPED),
            "failed": report.count(Status.FAILED),
            "findings": report.findings,
            "needs_human": report.human,
        },
        "exit_code": report.exit_code,
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"

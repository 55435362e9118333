"""`--format sarif`: SARIF 2.1.0 for GitHub code scanning (and any SARIF viewer)."""

from __future__ import annotations

import inspect
import json
import os
from urllib.parse import quote

from migrator import __version__
from migrator.report import Report, severity

SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
HOME = "https://github.com/torch-migrate/torch-migrate"


def _rule_descriptor(code: str) -> dict:
    from migrator.rules import get_rule

    rule = get_rule(code)
    descriptor: dict = {"id": code}
    if rule is None:
        return descriptor
    doc = inspect.cleandoc(rule.__doc__ or "")
    descriptor.update(
        name=rule.name or code,
        shortDescription={"text": rule.summary or rule.name or code},
        fullDescription={"text": doc.split("\n\n")[0] if doc else rule.summary or code},
        help={"text": doc or rule.summary, "markdown": doc or rule.summary},
        helpUri=f"{HOME}/blob/main/docs/rules.md#{code.lower()}",
    )
    return descriptor


def _uri(path: str) -> str:
    if path == "-":
        return "stdin"
    rel = os.path.relpath(path) if os.path.isabs(path) else path
    return quote(rel.replace(os.sep, "/"))


def render(report: Report) -> str:
    """One run, one rule descriptor per code seen, one result per finding."""
    codes = sorted({f.code for o in report.outcomes for f in o.findings})
    index = {code: i for i, code in enumerate(codes)}
    results = []
    for o in report.outcomes:
        for f in o.findings:
            results.append(
                {
                    "ruleId": f.code,
                    "ruleIndex": index[f.code],
                    "level": severity(f.code, f.fixed),
                    "message": {"text": f.message},
                    "locations": [
                        {
                            "physicalLocation": {
                                "artifactLocation": {
                                    "uri": _uri(o.path),
                                    "uriBaseId": "%SRCROOT%",
                                },
                                "region": {
                                    "startLine": max(f.line, 1),
                                    "startColumn": max(f.col, 1),
                                },
                            }
                        }
                    ],
                    "properties": {"fixable": f.fixed},
                }
            )
    doc = {
        "$schema": SCHEMA_URI,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "torch-migrate",
                        "version": __version__,
                        "informationUri": HOME,
                        "rules": [_rule_descriptor(c) for c in codes],
                    }
                },
                "columnKind": "unicodeCodePoints",
                "results": results,
            }
        ],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"

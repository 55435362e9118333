"""--format json / sarif / github: validated against their schemas, escaped correctly."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from _cli_support import cli, fake_engine  # noqa: F401 - fixture used by name

from migrator.batch import Outcome
from migrator.formats.github import _escape_data, _escape_property, annotations
from migrator.report import severity
from migrator.results import Finding, Status
from migrator.rules import get_rule

ROOT = Path(__file__).resolve().parents[2]
JSON_SCHEMA = ROOT / "docs" / "json-schema.json"
SARIF_SCHEMA = ROOT.parent / "shared" / "data" / "sarif-schema-2.1.0.json"


def _name(code: str) -> str | None:
    rule = get_rule(code)
    return rule.name if rule else None


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub dir").mkdir()
    (tmp_path / "sub dir" / "t.py").write_text("import torch\nloss.backward()\n")
    (tmp_path / "human.py").write_text("import torch\nx = 1  # HUMAN\n")
    (tmp_path / "plain.py").write_text("import os\n")
    (tmp_path / "bad.py").write_bytes(b"import torch\n\xff\n")
    return tmp_path


@pytest.mark.usefixtures("project", "fake_engine")
@pytest.mark.parametrize("extra", [["--check"], ["--diff"], []])
def test_json_matches_the_documented_schema(capsys, extra):
    code, out, _ = cli(capsys, "--format", "json", *extra, ".")
    doc = json.loads(out)
    jsonschema.validate(doc, json.loads(JSON_SCHEMA.read_text()))
    assert doc["exit_code"] == code == 2  # bad.py cannot be decoded
    by_path = {f["path"]: f for f in doc["files"]}
    assert by_path["sub dir/t.py"]["status"] == "changed"
    assert by_path["sub dir/t.py"]["findings"][0] == {
        "code": "MIG201", "rule": _name("MIG201"), "line": 2, "column": 1,
        "message": "call rt.backward(loss)", "severity": "note", "fixable": True,
        "fixed": False,  # nothing is written in these modes: fixable, not fixed
        "needs_human": False,
    }
    assert by_path["human.py"]["findings"][0]["needs_human"] is True
    assert by_path["human.py"]["findings"][0]["severity"] == "error"
    assert by_path["plain.py"] == {"path": "plain.py", "status": "skipped",
                                   "reason": "never mentions torch", "written": False,
                                   "findings": [], **({"diff": None} if extra == ["--diff"] else {})}
    assert by_path["bad.py"]["findings"][0]["rule"] == "undecodable"
    if extra == ["--diff"]:
        assert by_path["sub dir/t.py"]["diff"].startswith("--- a/sub dir/t.py\n")
    assert doc["summary"] == {"files": 4, "changed": 1, "unchanged": 1, "skipped": 1,
                              "failed": 1, "findings": 3, "needs_human": 1}


@pytest.mark.usefixtures("project", "fake_engine")
def test_sarif_is_valid_sarif_2_1_0(capsys):
    if not SARIF_SCHEMA.exists():
        pytest.skip(f"official SARIF schema not found at {SARIF_SCHEMA} (shared/ beside the checkout)")
    code, out, _ = cli(capsys, "--check", "--format", "sarif", ".")
    assert code == 2
    doc = json.loads(out)
    jsonschema.validate(doc, json.loads(SARIF_SCHEMA.read_text()))
    run = doc["runs"][0]
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == ["MIG002", "MIG201", "MIG901"]
    results = {(r["ruleId"], r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"])
               for r in run["results"]}
    assert results == {("MIG201", "sub%20dir/t.py"), ("MIG901", "human.py"), ("MIG002", "bad.py")}
    levels = {r["ruleId"]: r["level"] for r in run["results"]}
    assert levels == {"MIG201": "note", "MIG901": "error", "MIG002": "error"}
    mig002 = run["tool"]["driver"]["rules"][0]
    assert mig002["name"] == "undecodable" and "UTF-8" in mig002["help"]["markdown"]


@pytest.mark.usefixtures("project", "fake_engine")
def test_github_annotations(capsys):
    code, out, _ = cli(capsys, "--check", "--format", "github", ".")
    assert code == 2
    assert "::notice file=sub dir/t.py,line=2,col=1,title=MIG201::call rt.backward(loss)" in out
    assert "::error file=human.py,line=2,col=1,title=MIG901::already distributed" in out
    assert "::error file=bad.py,line=2,col=1,title=MIG002::" in out


def test_github_escaping_and_unfixed_findings_are_warnings():
    o = Outcome("a,b:c.py", Status.UNCHANGED,
                (Finding(3, 4, "MIG301", "data 100% replicated", fixed=False),))
    assert annotations(o) == [
        "::warning file=a%2Cb%3Ac.py,line=3,col=4,title=MIG301::data 100%25 replicated"
    ]
    assert _escape_data("a\r\nb%") == "a%0D%0Ab%25"  # GitHub's escapeData
    assert _escape_property("x:y,z\n") == "x%3Ay%2Cz%0A"  # escapeProperty


def test_messages_are_one_line_at_the_source():
    f = Finding(5, 5, "MIG204", "backward through the wrapper: rt.backward(a.sum()\n     + b.sum())")
    assert f.message == "backward through the wrapper: rt.backward(a.sum() + b.sum())"
    assert Finding(1, 1, "MIG201", "keep  two  spaces").message == "keep  two  spaces"


@pytest.mark.parametrize(("code", "fixed", "level"), [
    ("MIG401", True, "note"), ("MIG303", False, "warning"), ("MIG205", False, "warning"),
    ("MIG901", False, "error"), ("MIG001", False, "error"), ("MIG009", False, "error"),
])
def test_severity_from_the_finding_kind(code, fixed, level):
    assert severity(code, fixed) == level


@pytest.mark.usefixtures("fake_engine")
def test_json_fixed_means_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.py").write_text("import torch\nloss.backward()\n")
    for mode, fixed in ((["--check"], False), (["-o", "out.py"], True), (["--write"], True)):
        doc = json.loads(cli(capsys, "--format", "json", *mode, "t.py")[1])
        entry = doc["files"][0]
        assert (entry["written"], entry["findings"][0]["fixed"]) == (fixed, fixed), mode
        assert entry["findings"][0]["fixable"] is True

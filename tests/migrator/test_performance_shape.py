"""Structural speed facts (no clocks): what a check does not do, how often metadata is resolved."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import libcst as cst
from libcst.metadata import MetadataWrapper

from migrator.engine import migrate_source
from migrator.results import Status
from tests.conftest import run_cmd

ROOT = Path(__file__).resolve().parents[2]
TRAIN = (ROOT / "fixtures" / "scripts" / "mnist_cnn.py").read_text()


def _count_resolves(monkeypatch) -> list[str]:
    calls: list[str] = []
    real = MetadataWrapper.resolve

    def counting(self, provider):
        calls.append(provider.__name__)
        return real(self, provider)

    monkeypatch.setattr(MetadataWrapper, "resolve", counting)
    return calls


def _count_parses(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = cst.parse_module

    def counting(source, *a, **k):
        calls.append(len(source))
        return real(source, *a, **k)

    monkeypatch.setattr(cst, "parse_module", counting)
    return calls


def test_clean_file_with_anchors_is_parsed_and_scoped_once(monkeypatch):
    # "print" is an anchor, so this file is analysed; nothing to change -> no verify pass
    src = "import torch\n\n\ndef show(x):\n    return repr(x)  # print is shadowed below\n"
    src += "print = show\nprint(torch.ones(1))\n"
    resolves, parses = _count_resolves(monkeypatch), _count_parses(monkeypatch)
    result = migrate_source(src)
    assert result.status is Status.UNCHANGED and result.findings == ()
    assert len(parses) == 1
    assert resolves == ["ScopeProvider"]  # no positions: nothing to report


def test_changed_file_parses_output_once_for_verification(monkeypatch):
    resolves, parses = _count_resolves(monkeypatch), _count_parses(monkeypatch)
    result = migrate_source(TRAIN)
    assert result.status is Status.CHANGED
    assert len(parses) == 2  # the input, and the output for the fixed-point check
    assert resolves.count("ScopeProvider") == 2
    assert "QualifiedNameProvider" not in resolves  # names are asked of the scope on demand


def test_file_without_anchors_runs_no_rule_and_no_parse(monkeypatch):
    resolves, parses = _count_resolves(monkeypatch), _count_parses(monkeypatch)
    result = migrate_source("import torch\n\nx = torch.zeros(3) + 1\n")
    assert result.status is Status.UNCHANGED
    assert parses == [] and resolves == []


def test_single_file_check_imports_no_codemod_pool_or_torch(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    probe = (
        "import sys, json\n"
        "from migrator.cli import main\n"
        f"code = main(['--check', '-q', {str(script)!r}])\n"
        "print(json.dumps([code, sorted(m for m in sys.modules if m.split('.')[0] in "
        "('torch', 'black', 'jinja2') or m.startswith(('libcst.codemod', 'concurrent')))]))\n"
    )
    done = run_cmd([sys.executable, "-c", probe], timeout=300, cwd=ROOT)
    code, heavy = json.loads(done.stdout.strip().splitlines()[-1])
    assert code == 1  # the training script has findings
    assert heavy == []


def test_ancestor_walks_grow_linearly_with_file_size(monkeypatch):
    """4x the lines -> at most ~4x the ancestor steps: no per-node scan of the whole file
    (``inside``/``subtree``/bucket filters were quadratic before they used rank intervals)."""
    import importlib.util

    from migrator.analysis.index import Index

    spec = importlib.util.spec_from_file_location("bench", ROOT / "benchmarks" / "migrator_speed.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    real = Index.ancestors
    steps = [0]

    def counting(self, node):
        for a in real(self, node):
            steps[0] += 1
            yield a

    monkeypatch.setattr(Index, "ancestors", counting)
    counts = []
    for size in (400, 1600):
        steps[0] = 0
        assert migrate_source(bench.synthetic(size)).status is Status.CHANGED
        counts.append(steps[0])
    assert counts[0] > 0
    assert counts[1] <= 5 * counts[0], counts

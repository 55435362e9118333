"""The prefilters (text, then code) never skip work a rule would do: same results with and without them."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from migrator import codefilter, prefilter
from migrator.anchors_gen import REGENERATE
from migrator.engine import migrate_source
from migrator.options import Options
from migrator.program import Role
from migrator.results import Status
from tests.conftest import prefilters_off

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = sorted((ROOT / "fixtures").rglob("*.py"))
TORCH_SLICE = 24  # corpus files per run: enough variety, affordable on a loaded machine


def _torch_slice() -> list[Path]:
    import importlib.util

    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.origin:
        return []
    files = sorted(Path(spec.origin).parent.rglob("*.py"))
    # files that mention rule anchors the most often fail to be skipped; mix them with others
    return random.Random(4).sample(files, TORCH_SLICE)


def _without_prefilter(source: str, path: str, options: Options):
    with prefilters_off(options):
        return migrate_source(source, path, options)


def _same(path: Path, options: Options) -> None:
    source = path.read_text(encoding="utf-8", errors="replace")
    fast = migrate_source(source, str(path), options)
    full = _without_prefilter(source, str(path), options)
    assert fast.internal_error == full.internal_error, (fast.reason, full.reason)
    assert fast.output == full.output
    assert fast.findings == full.findings
    if full.status is Status.FAILED:
        # bad input (syntax libcst or this Python rejects) is only found by parsing; a file
        # no rule has an anchor in is not parsed (as files that never mention torch)
        assert fast.status in (Status.FAILED, Status.UNCHANGED)
        if fast.status is Status.UNCHANGED:
            assert fast.reason and "prefilter" in fast.reason
    else:
        assert fast.status is full.status


def test_every_planning_rule_has_anchors():
    missing = [r.code for r in prefilter.planning_rules() if prefilter.anchors_of(r) is None]
    assert missing == [], (
        f"declare `anchors` on these rule classes, then run {REGENERATE}: {missing}"
    )


def test_every_planning_rule_has_code_anchors():
    codes = {r.code for r in prefilter.planning_rules()}
    assert codes == set(codefilter.CODE_ANCHORS), f"one code anchor per planning rule; run {REGENERATE}"
    assert codes == set(prefilter.ANCHORS)


def test_every_anchor_regex_compiles_and_names_a_known_rule():
    codes = {r.code for r in prefilter.planning_rules()}
    assert set(prefilter.ANCHORS) <= codes
    for alternatives in prefilter.ANCHORS.values():
        for alt in alternatives:
            for part in (alt,) if isinstance(alt, str) else alt:
                prefilter._compiled(part)


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: str(p.relative_to(ROOT)))
@pytest.mark.parametrize("target", ["runtime", "fabric"])
def test_fixtures_same_with_and_without_prefilter(path, target):
    _same(path, Options(target=target))


@pytest.mark.parametrize("path", _torch_slice(), ids=lambda p: p.name)
def test_torch_corpus_same_with_and_without_prefilter(path):
    _same(path, Options())


def test_selected_rules_only(monkeypatch):
    src = "import torch\nprint(torch.ones(1))\n"
    assert prefilter.rules_to_run(src, Options()) == {"MIG401"}
    assert prefilter.rules_to_run(src, Options(ignore=("MIG4",))) == frozenset()
    assert migrate_source(src, options=Options(ignore=("MIG4",))).status is Status.UNCHANGED


def test_clean_file_is_not_parsed(monkeypatch):
    import libcst

    def boom(*_a, **_k):
        raise AssertionError("parsed a file no rule has an anchor in")

    monkeypatch.setattr(libcst, "parse_module", boom)
    result = migrate_source("import torch\nx = torch.ones(2) * 3\n")
    assert result.status is Status.UNCHANGED and result.findings == ()


@pytest.mark.parametrize(
    "src, code",
    [
        # device strings written with escapes have no "cuda"/"cpu" in the text
        ('import torch\nif torch.ok:\n    dev = "\\x63uda"\nelse:\n    dev = "\\x63pu"\n', "MIG101"),
        # an integer used as a device through .to, with a comment between the dot and the name
        ("import torch\ngpu = 0\nx = (torch.ones(1).  # c\n  to(gpu))\n", "MIG101"),
        # a qualified name through an import alias: the word is in the import
        (
            (
                "import torch\nfrom torch.utils.data import DataLoader as DL\nl = DL([1])\n"
                "for b in l:\n    pass\n"
            ),
            "MIG302",
        ),
        ("import torch\nimport os\nos.makedirs('out')\n", "MIG405"),
        # called under an alias: the code stage knows the import names it
        ("import torch\nfrom torch import save as keep\nm = torch.nn.Linear(1, 1)\nkeep(m.state_dict(), 'm.pt')\n", "MIG402"),
        ("from builtins import print as say\nimport torch\nsay(torch.ones(1))\n", "MIG401"),
        ("import torch\nfrom torch import device as D\ndev = D('cuda')\nx = torch.ones(1).to(dev)\n", "MIG101"),
        ("import torch\nwith open('log.txt', 'a+') as f:\n    f.write(str(torch.ones(1)))\n", "MIG406"),
        ("import torch\nimport torchvision\nd = torchvision.datasets.MNIST('d', download=True)\n", "MIG405"),
    ],
)
def test_unusual_spellings_still_reach_the_rule(src, code):
    script = Options(role=Role())  # a training script's lines, whatever else the file holds
    fast = migrate_source(src, options=script)
    full = _without_prefilter(src, "<string>", script)
    assert code in [f.code for f in full.findings]  # the example really exercises the rule
    assert fast.findings == full.findings and fast.output == full.output


def test_gap_spans_long_comment_runs():
    """``.`` + 200 comment lines full of ``#`` + ``to``: found, and without exponential backtracking."""
    src = "import torch\ngpu = 0\ny = (torch.ones(1)." + ("  # " + "#" * 200 + "\n") * 200 + "  to(gpu))\n"
    assert prefilter.rules_to_run(src, Options()) == {"MIG101"}
    assert prefilter.rules_to_run(src.replace("to(gpu)", "too(gpu)"), Options()) == frozenset()


@pytest.mark.parametrize(
    "src",
    [
        # anchor words only in a docstring, a comment, a log message or a definition
        'import torch\n"""Call loss.backward() then torch.save(m, "cuda:0")."""\nx = torch.ones(1)\n',
        "import torch\n# print(x); torch.save(x, 'x.pt'); x.cuda()\nx = torch.ones(1)\n",
        "import torch\n\n\nclass F(torch.autograd.Function):\n    @staticmethod\n    def backward(ctx, g):\n        return g\n",
        "import torch\nwith open('in.txt') as f:\n    data = f.read()\nx = torch.ones(1)\n",
    ],
)
def test_code_stage_skips_anchor_words_outside_code(monkeypatch, src):
    import libcst

    assert prefilter.rules_to_run(src, Options())  # the text stage cannot tell
    monkeypatch.setattr(libcst, "parse_module", lambda *_a, **_k: pytest.fail("parsed"))
    result = migrate_source(src)
    assert result.status is Status.UNCHANGED and result.reason == "no rule applies (code prefilter)"


def test_code_summary_sees_calls_aliases_and_strings_not_docstrings():
    import ast

    tree = ast.parse(
        'import torch.nn as nn\nfrom torch import save as keep\n"""print(torch.load(p))"""\n'
        "def f(device='cuda:1'):\n    keep(nn.Linear(2, 2).cuda(), 'm.pt')\n"
    )
    s = codefilter.summarise(tree)
    assert s.calls("save") and s.calls("keep") and s.calls("cuda") and s.calls("Linear")
    assert not s.calls("print") and not s.calls("load")
    assert s.uses("nn", "device", "f") and s.strings == {"cuda:1", "m.pt"}
    assert codefilter.code_rules(tree, frozenset({"MIG101", "MIG401", "MIG403", "MIG104"})) == {"MIG101", "MIG104"}

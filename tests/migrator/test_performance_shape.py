"""Structural speed facts (no clocks): what a check does not do, how often metadata is resolved."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import libcst as cst
import pytest
from libcst.metadata import MetadataWrapper
from libcst.metadata.scope_provider import ScopeVisitor

from migrator.engine import migrate_source
from migrator.options import Options
from migrator.program import Role
from migrator.results import Status
from tests.conftest import run_cmd

ROOT = Path(__file__).resolve().parents[2]
TRAIN = (ROOT / "fixtures" / "scripts" / "mnist_cnn.py").read_text()


def _count_resolves(monkeypatch) -> list[str]:
    """Metadata computed: "ScopeProvider" per scope resolution, provider names via the wrapper."""
    calls: list[str] = []
    real = MetadataWrapper.resolve
    real_infer = ScopeVisitor.infer_accesses

    def counting(self, provider):
        calls.append(provider.__name__)
        return real(self, provider)

    def counting_infer(self):
        calls.append("ScopeProvider")
        return real_infer(self)

    monkeypatch.setattr(MetadataWrapper, "resolve", counting)
    monkeypatch.setattr(ScopeVisitor, "infer_accesses", counting_infer)
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


def test_check_plans_only_and_reports_what_the_rewrite_would(monkeypatch):
    """``--check`` (``rewrite=False``): one parse, no apply, no verify; same findings and status."""
    full = migrate_source(TRAIN)
    parses = _count_parses(monkeypatch)
    monkeypatch.setattr("migrator.apply.apply_edits", lambda *_a: pytest.fail("applied edits"))
    monkeypatch.setattr("migrator.verify.verify", lambda *_a: pytest.fail("verified"))
    check = migrate_source(TRAIN, rewrite=False)
    assert len(parses) == 1
    assert check.status is full.status is Status.CHANGED
    assert check.findings == full.findings and check.output == TRAIN


def test_file_without_anchors_runs_no_rule_and_no_parse(monkeypatch):
    resolves, parses = _count_resolves(monkeypatch), _count_parses(monkeypatch)
    result = migrate_source("import torch\n\nx = torch.zeros(3) + 1\n")
    assert result.status is Status.UNCHANGED
    assert parses == [] and resolves == []


def _check_in_fresh_process(script, loaded: str) -> tuple[int, list[str]]:
    """``migrate --check -q script`` in a new interpreter: (exit code, the modules it loaded
    for which the expression ``loaded`` (over ``m``, a module name) is true)."""
    probe = (
        "import sys, json\n"
        "from migrator.cli import main\n"
        f"code = main(['--check', '-q', {str(script)!r}])\n"
        f"print(json.dumps([code, sorted(m for m in sys.modules if {loaded})]))\n"
    )
    done = run_cmd([sys.executable, "-c", probe], timeout=300, cwd=ROOT)
    code, heavy = json.loads(done.stdout.strip().splitlines()[-1])
    return code, heavy


def test_single_file_check_imports_no_codemod_pool_writer_or_torch(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(TRAIN)
    code, heavy = _check_in_fresh_process(
        script, "m.split('.')[0] in ('torch', 'black', 'jinja2', 'tempfile') "
                "or m.startswith(('libcst.codemod', 'concurrent'))")
    assert code == 1  # the training script has findings
    assert heavy == []


def test_single_file_check_without_anchors_loads_no_libcst_rules_or_pathspec(tmp_path):
    script = tmp_path / "tensors.py"
    script.write_text("import torch\n\nx = torch.zeros(3) + 1\n")
    code, heavy = _check_in_fresh_process(
        script, "m.split('.')[0] in ('libcst', 'pathspec', 'torch') or m.startswith('migrator.rules')")
    assert code == 0
    assert heavy == []


def test_exclude_patterns_are_only_compiled_when_one_may_match():
    from migrator.files import DEFAULT_EXCLUDE, _may_match

    assert not _may_match(DEFAULT_EXCLUDE, "/home/me/project/src/train.py")
    for path in ("/p/build/train.py", "/p/x.egg-info/a.py", "/p/.venv/lib/a.py", "/p/node_modules/a.py"):
        assert _may_match(DEFAULT_EXCLUDE, path)
    assert _may_match(["[ab]c/*.py"], "/p/c/x.py")  # bracket expressions are no literal text
    assert _may_match(["scripts/old_*.py  "], "/p/scripts/old_train.py")  # trailing spaces
    assert _may_match(["*"], "/anything")


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
        script = Options(role=Role())  # its functions are a script's, not a helper module's
        assert migrate_source(bench.synthetic(size), options=script).status is Status.CHANGED
        counts.append(steps[0])
    assert counts[0] > 0
    assert counts[1] <= 5 * counts[0], counts


# --- the fast tree services give libcst's own answers ------------------------------------------
def _sample_modules() -> list[cst.Module]:
    """Fixture inputs, a slice of the installed torch sources, and line-ending oddities."""
    import importlib.util
    import random

    paths = sorted((ROOT / "fixtures").rglob("*.py"))
    spec = importlib.util.find_spec("torch")  # located, never imported
    if spec is not None and spec.submodule_search_locations:
        corpus = sorted(Path(spec.submodule_search_locations[0]).rglob("*.py"))
        paths += random.Random(4).sample(corpus, 40)
    texts = [p.read_text(errors="replace") for p in paths]
    texts += ["a = 1\r\nif a:\r\n    b = (1,\r\n  2)\r\n", "x = 1\r\ry = f(2)\rz = 3\n", "from m import *\n"]
    out = []
    for text in texts:
        try:
            out.append(cst.parse_module(text))
        except cst.ParserSyntaxError:
            continue
    return out


def test_preorder_walk_is_libcsts_visiting_order():
    """Same parents, order and subtree intervals as libcst's own visit, formatting-only
    subtrees (whitespace, comments, brackets, commas, operators) left out by both."""
    from migrator.analysis.tree import _is_trivia, preorder

    class Recorder(cst.CSTVisitor):
        def __init__(self):
            super().__init__()
            self.stack, self.parent, self.end, self.skipped = [], {}, {}, 0

        def on_visit(self, node):
            if _is_trivia(type(node)):
                self.skipped += 1
                return False
            if self.stack:
                self.parent[node] = self.stack[-1]
            self.stack.append(node)
            return True

        def on_leave(self, original_node):
            if _is_trivia(type(original_node)):
                return
            self.stack.pop()
            self.end[original_node] = len(self.parent) - 1

    for module in _sample_modules():
        seen = Recorder()
        module.visit(seen)
        parent, end, _ = preorder(module)
        assert list(parent.items()) == list(seen.parent.items())
        assert end == seen.end
        assert seen.skipped > 0 or not module.body  # every statement ends in a newline
    assert not any(_is_trivia(t) for t in (cst.Name, cst.Call, cst.Attribute, cst.Arg, cst.SimpleString))


def test_positions_contexts_and_scopes_match_libcst_providers():
    import random

    from libcst.metadata import ExpressionContextProvider, PositionProvider, ScopeProvider

    from migrator.analysis.tree import name_contexts, resolve_scopes, start_positions

    for module in _sample_modules():
        wrapper = MetadataWrapper(module, unsafe_skip_copy=True)
        contexts = wrapper.resolve(ExpressionContextProvider)
        assert name_contexts(module) == {n: c for n, c in contexts.items() if type(n) is cst.Name}
        positions = wrapper.resolve(PositionProvider)
        nodes = random.Random(5).sample(list(positions), min(300, len(positions)))
        starts = start_positions(module, nodes)
        assert {n: (positions[n].start.line, positions[n].start.column) for n in nodes} == starts
        theirs, ours = wrapper.resolve(ScopeProvider), resolve_scopes(module)
        shapes = {}  # libcst's scope -> ours, one to one, with the same bindings and uses
        for node, scope in ours.items():
            if node not in theirs:  # nodes of string annotations: parsed anew by each run
                continue
            if shapes.setdefault(theirs[node], scope) is not scope:
                raise AssertionError(f"{type(node).__name__} is in another scope")
            if isinstance(node, (cst.Name, cst.Attribute)):
                names = {(q.name, q.source) for q in scope.get_qualified_names_for(node)}
                assert names == {(q.name, q.source) for q in theirs[node].get_qualified_names_for(node)}
        for their, our in shapes.items():
            if their is not None:
                assert _scope_shape(their) == _scope_shape(our)


def _scope_shape(scope) -> tuple:
    assigned = sorted(
        (name, sorted(len(a.references) for a in scope.assignments[name]))
        for name in {a.name for a in scope.assignments}
    )
    accesses = sorted((a.node.value if isinstance(a.node, cst.Name) else "", len(a.referents)) for a in scope.accesses)
    return type(scope).__name__, assigned, accesses, scope._assignment_count


def test_apply_leaves_untouched_subtrees_as_the_same_objects():
    from migrator.analysis import analyse
    from migrator.apply import apply_edits
    from migrator.edits import Edits

    module = cst.parse_module("import torch\n\ndef f(x):\n    return x + 1\n\nprint(f(torch.ones(1)))\n")
    ix = analyse(module).ix
    call = module.body[-1].body[0].value
    edits = Edits(replace={call: cst.parse_expression("rt.print(f(torch.ones(1)))")})
    out = apply_edits(module, edits, ix.parent)
    assert out.code == "import torch\n\ndef f(x):\n    return x + 1\n\nrt.print(f(torch.ones(1)))\n"
    assert out.body[0] is module.body[0] and out.body[1] is module.body[1]  # never entered


def test_mro_lookup_agrees_with_issubclass_for_every_libcst_node_class():
    from libcst.metadata.scope_provider import _ASSIGNMENT_LIKE_NODES

    from migrator.analysis.tree import _TRIVIA_TYPES, _inherits

    def subclasses(kind):
        for sub in kind.__subclasses__():
            yield sub
            yield from subclasses(sub)

    classes = set(subclasses(cst.CSTNode))
    assert len(classes) > 200
    for bases in (_TRIVIA_TYPES, _ASSIGNMENT_LIKE_NODES):
        assert {c for c in classes if _inherits(c, bases)} == {c for c in classes if issubclass(c, bases)}


def test_console_script_flushes_everything_before_its_fast_exit(tmp_path):
    """``migrator.console.entry`` ends with ``os._exit``: every finding line, the summary and
    the exit status must still come out, also when the output is larger than a pipe buffer."""
    for i in range(40):
        (tmp_path / f"train_{i}.py").write_text(TRAIN)
    probe = "from migrator.console import entry; entry()"
    done = run_cmd([sys.executable, "-c", probe, "--check", "-j", "1", str(tmp_path)], timeout=300, cwd=ROOT)
    assert done.returncode == 1
    lines = done.stdout.splitlines()
    assert len(lines) == 40 * len(migrate_source(TRAIN).findings) and len(done.stdout) > 65536
    assert "40 files would be migrated" in done.stderr

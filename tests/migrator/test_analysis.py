"""Unit tests of the analysis: resolved names, value flow, and the training facts built on them."""

from __future__ import annotations

import textwrap

import libcst as cst

from migrator.analysis import analyse
from migrator.analysis.flow import binding_of


def facts(src: str):
    return analyse(cst.parse_module(textwrap.dedent(src)))


def names(f, nodes) -> list[str]:
    return [f.ix.code(n) for n in nodes]


def test_qualified_names_follow_import_aliases_not_spelling():
    f = facts(
        """
        import torch.nn as nn
        from torch import optim as o
        import mylib as torch
        a = nn.Linear(2, 2)
        b = o.SGD(a.parameters(), lr=0.1)
        c = torch.optim.SGD(a.parameters(), lr=0.1)
        """
    )
    q = {f.ix.code(c.func): f.ix.call_qname(c) for c in f.ix.calls}
    assert q["nn.Linear"] == "torch.nn.Linear"
    assert q["o.SGD"] == "torch.optim.SGD"
    assert q["torch.optim.SGD"] == "mylib.optim.SGD"  # a local alias named torch is not torch
    assert [f.ix.code(o.call.func) for o in f.optimizers] == ["o.SGD"]


def test_call_chains_have_no_qualified_name():
    f = facts("import torch.nn as nn\nm = nn.Linear(2, 2).to('cuda')\n")
    to = next(c for c in f.ix.calls if f.ix.code(c.func).endswith(".to"))
    assert f.ix.call_qname(to) is None


def test_flow_through_params_self_attrs_globals_and_class_constructors():
    f = facts(
        """
        import torch
        device = torch.device("cuda")

        class Trainer:
            def __init__(self, dev):
                self.dev = dev

            def step(self, x):
                return x.to(self.dev)

        def helper(x):
            return x.to(device)

        def run(d):
            alias = d
            return Trainer(alias)

        run(device)
        """
    )
    assert len(f.devices) == 1
    refs = names(f, f.device_refs)
    # the global read in helper(), the argument to run(), run's param, the alias, self.dev
    assert refs.count("device") == 2 and "d" in refs and "alias" in refs and "self.dev" in refs


def test_models_group_optimizers_and_gan_models_stay_separate():
    f = facts(
        """
        import torch, itertools
        g = torch.nn.Linear(2, 2)
        d = torch.nn.Linear(2, 1)
        opt_g = torch.optim.Adam(g.parameters())
        opt_d = torch.optim.Adam(d.parameters())
        both = torch.optim.Adam(itertools.chain(g.parameters(), d.parameters()))
        """
    )
    by_model = {f.ix.code(m.expr): names(f, [o.target for o in m.optimizers]) for m in f.models}
    assert by_model == {"g": ["opt_g", "both"], "d": ["opt_d", "both"]}
    assert all(not m.manual for m in f.models)


def test_manual_sgd_model_needs_a_parameter_update():
    f = facts(
        """
        import torch
        model = torch.nn.LSTM(2, 2)
        probe = torch.nn.Linear(2, 2)
        def train():
            for p in model.parameters():
                p.data.add_(p.grad, alpha=-0.1)
            for p in probe.parameters():
                print(p.grad)
        """
    )
    assert [(f.ix.code(m.construction.targets[0].target), m.manual) for m in f.models] == [("model", True)]


def test_loader_evaluation_is_decided_by_the_loops_that_iterate_it():
    f = facts(
        """
        import torch
        from torch.utils.data import DataLoader
        a = DataLoader([1, 2])
        b = DataLoader([1, 2])
        unused_test_loader = DataLoader([1])
        def train(loader, model):
            for x in loader:
                model(x).backward()
        def score(loader):
            n = 0
            for x in loader:
                n += 1
            return n
        train(a, None)
        score(b)
        """
    )
    assert [(f.ix.code(ld.target), ld.evaluation, len(ld.loops)) for ld in f.loaders] == [
        ("a", False, 1),
        ("b", True, 1),
        ("unused_test_loader", True, 0),
    ]


def test_backward_facts_cover_scaled_closure_and_exclude_wrapper_and_autograd():
    f = facts(
        """
        import torch
        from runtime import Runtime
        rt = Runtime()
        scaler = torch.amp.GradScaler()
        def step(loss, opt, y):
            scaler.scale(loss).backward()
            def closure():
                (loss * 2).backward(retain_graph=True)
            rt.backward(loss)
            torch.autograd.backward([y])
            super().backward()
        """
    )
    got = [(f.ix.code(b.loss), b.scaled) for b in f.backwards]
    assert got == [("loss", True), ("(loss * 2)", False)]
    assert f.wrapper.name == "rt" and f.wrapper.target == "runtime"


def test_device_chains_and_usage_based_literals():
    f = facts(
        """
        import torch
        if torch.cuda.is_available():
            dev = torch.device("cuda")
        else:
            dev = torch.device("cpu")
        gpu = 0
        kind = "cuda"
        x = torch.ones(1).cuda(gpu)
        if torch.cuda.is_available():
            backend = "cuda"
        """
    )
    kinds = [(type(d.stmt).__name__, f.ix.code(d.target)) for d in f.devices]
    assert kinds == [("If", "dev"), ("SimpleStatementLine", "gpu")]


def test_binding_identity_for_names_and_self_attributes():
    f = facts(
        """
        class T:
            def a(self):
                self.m = 1
            def b(self):
                return self.m
        x = 1
        def g():
            return x
        """
    )
    stores = [n for n in f.ix.self_attrs]
    assert binding_of(f.ix, stores[0]) == binding_of(f.ix, stores[1])
    loads = [n for n in f.ix.parent if isinstance(n, cst.Name) and n.value == "x"]
    assert binding_of(f.ix, loads[0]) == binding_of(f.ix, loads[1])


def test_positions_are_one_based():
    f = facts("import torch\nif True:\n    y = torch.ones(1)\n")
    call = f.ix.calls[0]
    assert f.ix.pos(call) == (3, 9)

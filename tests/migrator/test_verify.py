"""verify: an output that reads a name the input did not leave undefined is an internal error."""

from __future__ import annotations

import dataclasses
import textwrap

import pytest

from migrator import targets
from migrator.engine import migrate_source
from migrator.options import Options
from migrator.program import Role
from migrator.results import Status
from migrator.verify import undefined_names

SCRIPT = textwrap.dedent(
    """\
    import torch

    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = model(torch.ones(1, 2)).sum()
    loss.backward()
    """
)


def test_undefined_names_follow_python_scoping():
    src = textwrap.dedent(
        """\
        import os, a.b
        x = 1

        def f(p):
            global g
            g = 2
            return [y for y in range(3) if z], p, x, os, a, print, __name__

        class C:
            k = x
            def m(self):
                return k

        def outer():
            v = 1
            def inner():
                return v + u
            return inner

        for i in range(2):
            pass
        print(i, g, C, f, w)
        """
    )
    # `k` in a method does not see the class body; `v` is a closure, `g` is bound by `global`
    assert undefined_names(src) == {"z", "k", "u", "w"}


def test_star_import_names_are_the_inputs_own():
    src = "from torch import *\nx = tensor([1.0])\n"
    assert undefined_names(src) == {"tensor"}  # unknowable: verify compares with the input


@pytest.fixture
def broken_backward(monkeypatch):
    """A vocabulary whose backward reads a name nothing defines (a rule bug, on purpose)."""
    bad = dataclasses.replace(
        targets.RUNTIME, backward="{rt}.backward({args}, hooks=missing_hooks)"
    )
    monkeypatch.setitem(targets.VOCABULARIES, "runtime", bad)


def test_rule_emitting_an_undefined_name_is_an_internal_error(broken_backward):
    result = migrate_source(SCRIPT, path="train.py")
    assert result.status is Status.FAILED and result.internal_error
    assert "reads undefined name(s): missing_hooks (line 10)" in result.reason
    assert result.output == SCRIPT  # nothing broken comes out


def test_cli_exits_123_and_leaves_the_file(broken_backward, tmp_path, capsys):
    from migrator.cli import main

    path = tmp_path / "train.py"
    path.write_text(SCRIPT)
    assert main([str(path), "--write"]) == 123
    assert "missing_hooks" in capsys.readouterr().out
    assert path.read_text() == SCRIPT


def test_inputs_own_undefined_names_are_not_the_migrators():
    # A notebook export reading `display` (an IPython global) and a star import.
    src = SCRIPT + "from helpers import *\ndisplay(loss)\nlog(loss)\n"
    result = migrate_source(src, path="nb.py")
    assert result.status is Status.CHANGED and not result.internal_error, result.reason


def test_a_file_binding_no_torch_gets_the_import_the_template_reads():
    # accelerate's collective exit decision reads `torch`; the file binds only `F`.
    src = textwrap.dedent(
        """\
        import torch.nn.functional as F


        def fit(model, optimizer, x, y, tol):
            loss = F.mse_loss(model(x), y)
            while loss.item() > tol:
                loss = F.mse_loss(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        """
    )
    # a script's function (alone, a file of definitions is a helper module: MIG908)
    result = migrate_source(src, path="fit.py", options=Options(target="accelerate", role=Role()))
    assert result.status is Status.CHANGED, result.reason
    assert result.output.startswith(
        "import torch.nn.functional as F\nimport torch\nfrom accelerate import Accelerator\n"
    )
    assert "accelerator.gather(torch.tensor([loss.item() > tol]" in result.output


BAD_PLACEMENT = textwrap.dedent(
    """\
    from {module} import {cls}

    {rt} = {cls}()
    with {rt}.{first}():
        train_loader = make_loader(download=True)
        train_loader = {rt}.{setup}(train_loader)
    if {rt}.{zero}:
        {rt}.{barrier}()
    """
)


@pytest.mark.parametrize("target", sorted(targets.VOCABULARIES))
def test_a_collective_inside_a_rank_zero_block_is_an_internal_error(target):
    """Rank 0 would wait in the collective, the others in the block's barrier: a deadlock."""
    from migrator.verify import VerifyError, rank_zero_collectives, verify

    v = targets.VOCABULARIES[target]
    bad = BAD_PLACEMENT.format(
        module=v.wrapper_module, cls=v.wrapper_class, rt=v.wrapper_var,
        first=v.rank_zero_first.split(".")[1].split("(")[0],
        setup=v.setup_dataloaders.split(".")[1].split("(")[0],
        zero=v.is_global_zero.split(".")[1], barrier=v.barrier.split(".")[1].split("(")[0],
    )
    assert [line for line, _ in rank_zero_collectives(bad)] == [6, 8]
    with pytest.raises(VerifyError, match="rank-zero block"):
        verify(bad, "x.py", lambda m: ([], []), source="make_loader(download=True)\n")
    # the same calls after the blocks are fine; so is a call the input already had there
    verify(bad, "x.py", lambda m: ([], []), source=bad)


def test_the_set_up_of_a_downloading_loader_goes_after_the_block():
    src = textwrap.dedent(
        """\
        import torch
        from torch.utils.data import DataLoader
        from torchvision import datasets

        model = torch.nn.Linear(2, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        loader = DataLoader(datasets.MNIST(".", download=True), batch_size=2)
        for x, y in loader:
            opt.zero_grad()
            model(x).sum().backward()
            opt.step()
        """
    )
    for target in targets.VOCABULARIES:
        result = migrate_source(src, path="t.py", options=Options(target=target))
        assert result.status is Status.CHANGED, result.traceback
        lines = result.output.splitlines()
        setup = next(i for i, s in enumerate(lines) if s.startswith("loader = "))
        assert "download=True" in lines[setup - 1] and lines[setup - 1].startswith("    ")

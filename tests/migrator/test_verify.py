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

"""The CLI over the real pipeline (no stand-in engine): what a pre-commit user sees."""

from __future__ import annotations

import pytest
from _cli_support import cli


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_real_engine_reports_bare_backward(work, capsys):
    """Integration with the real pipeline: a bare backward on a set-up model is caught."""
    (work / "t.py").write_text(
        "import torch\nfrom runtime import Runtime\nrt = Runtime()\n"
        "model = torch.nn.Linear(2, 1)\nopt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "model, opt = rt.setup(model, opt)\nloss = model(torch.ones(2)).sum()\nloss.backward()\n"
    )
    code, out, _ = cli(capsys, "--check", "t.py")
    assert code == 1 and "t.py:8:" in out and "MIG2" in out
    assert cli(capsys, "--write", "t.py")[0] == 0
    assert "rt.backward(loss)" in (work / "t.py").read_text()
    assert cli(capsys, "--check", "t.py")[0] == 0


def test_lightning_target_alone_runs_the_module_form(work, capsys):
    """`--target lightning` needs no `--form module` (it has no other form)."""
    (work / "t.py").write_text(
        "import torch\nmodel = torch.nn.Linear(2, 1)\n"
        "opt = torch.optim.SGD(model.parameters(), lr=0.1)\nfor step in range(3):\n"
        "    loss = model(torch.ones(2)).sum()\n    opt.zero_grad()\n    loss.backward()\n"
        "    opt.step()\n"
    )
    code, out, err = cli(capsys, "--target", "lightning", "--check", "t.py")
    # (no DataLoader: one training step per pass of the loop)
    assert code == 1 and "Error" not in err and "MIG501 training loop converted to" in out, out

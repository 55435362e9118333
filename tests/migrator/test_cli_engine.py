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

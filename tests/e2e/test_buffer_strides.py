"""MIG213 end to end: a model whose buffer comes from ``pe.unsqueeze(0).transpose(0, 1)``
(word_language_model's PositionalEncoding), migrated to fabric / accelerate, trains on 2 CPU
processes (gloo) under the target's launcher; migrated without MIG213 it stops in DDP's initial
buffer broadcast (pytorch/pytorch#68407): the negative control that shows the rule is needed.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import child_env, run_cmd, torchrun

from migrator.engine import migrate_source
from migrator.options import Options

from ._harness import launch_cmd

SCRIPT = '''\
import torch
import torch.nn as nn


class PositionalEncoding(nn.Module):
    def __init__(self, d_model, max_len=50):
        super().__init__()
        self.lin = nn.Linear(d_model, d_model)
        pe = torch.zeros(max_len, d_model)
        pe[:, 0::2] = 1.0
        pe = pe.unsqueeze(0).transpose(0, 1)
        self.register_buffer("pe", pe)

    def forward(self, x):
        return self.lin(x + self.pe[: x.size(0), :])


torch.manual_seed(0)
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
model = PositionalEncoding(8).to(device)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
for step in range(2):
    optimizer.zero_grad()
    loss = model(torch.ones(5, 3, 8, device=device)).sum()
    loss.backward()
    optimizer.step()
print("trained", float(loss))
'''

ALIASED = "refer to a single memory location"


def _port(tmp_path: Path, target: str, ignore: tuple[str, ...] = ()) -> Path:
    result = migrate_source(SCRIPT, "main.py", Options(target=target, ignore=ignore))
    assert not result.internal_error, result.traceback
    assert ("MIG213" in {f.code for f in result.findings}) is not bool(ignore)
    script = tmp_path / "main.py"
    script.write_text(result.output)
    return script


def _run(target: str, script: Path):
    if target == "fabric":
        return run_cmd(launch_cmd("fabric", script, ()), timeout=240, cwd=script.parent)
    env = child_env(ACCELERATE_USE_CPU="true", DS_ACCELERATOR="cpu")
    return torchrun(script, timeout=240, cwd=script.parent, env=env)


@pytest.mark.parametrize("target", ["fabric", "accelerate"])
def test_port_trains_on_two_processes(tmp_path: Path, target: str) -> None:
    proc = _run(target, _port(tmp_path, target))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "trained" in proc.stdout


def test_without_the_rule_ddp_fails(tmp_path: Path) -> None:
    proc = _run("fabric", _port(tmp_path, "fabric", ignore=("MIG213",)))
    assert proc.returncode != 0 and ALIASED in proc.stderr, proc.stderr[-4000:]


def test_runtime_needs_no_rewrite() -> None:
    result = migrate_source(SCRIPT, "main.py", Options(target="runtime"))
    assert "MIG213" not in {f.code for f in result.findings}
    assert "contiguous_format" not in result.output

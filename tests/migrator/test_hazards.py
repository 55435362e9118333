"""Needs-a-human rules (MIG9xx): the file comes back unchanged with only MIG9xx findings, and the CLI fails."""

from __future__ import annotations

import sys
import textwrap

from migrator.engine import migrate_source
from migrator.options import Options
from migrator.results import Status
from tests.conftest import child_env, run_cmd

FSDP_SCRIPT = textwrap.dedent(
    """
    import torch
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    model = FSDP(torch.nn.Linear(4, 4).cuda())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    print("start")
    loss = model(torch.randn(2, 4)).sum()
    loss.backward()
    torch.save(model.state_dict(), "m.pt")
    """
)


def test_fsdp_script_is_returned_unchanged_with_only_the_hazard():
    for target in ("runtime", "fabric"):
        result = migrate_source(FSDP_SCRIPT, path="t.py", options=Options(target=target))
        assert result.status is Status.UNCHANGED
        assert result.output == FSDP_SCRIPT
        assert [(f.code, f.fixed) for f in result.findings] == [("MIG901", False)]
        assert "FSDP" in result.findings[0].message


def test_ignoring_the_hazard_lets_the_rewrite_happen():
    result = migrate_source(FSDP_SCRIPT, path="t.py", options=Options(ignore=("MIG901",)))
    assert result.status is Status.CHANGED
    assert "rt.backward(loss)" in result.output


def test_layers_in_a_module_list_are_not_a_hazard():
    src = textwrap.dedent(
        """
        import torch
        import torch.nn as nn

        layers = [nn.Linear(4, 4) for _ in range(2)]
        net = nn.Sequential(*layers)
        blocks = nn.ModuleList([nn.Linear(4, 4) for _ in range(2)])
        opts = [torch.optim.SGD(b.parameters(), lr=0.1) for b in blocks]
        """
    )
    result = migrate_source(src, path="t.py", options=Options())
    assert "MIG903" not in {f.code for f in result.findings}


def test_cli_exit_status_says_a_human_is_needed(tmp_path):
    script = tmp_path / "ddp_train.py"
    script.write_text(FSDP_SCRIPT)
    proc = run_cmd([sys.executable, "-m", "migrator", str(script)], cwd=tmp_path, env=child_env(),
                   timeout=120)  # (the console script is on PATH only in an activated venv)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "MIG901" in proc.stdout + proc.stderr
    assert script.read_text() == FSDP_SCRIPT

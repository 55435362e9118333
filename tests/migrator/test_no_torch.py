"""The migrator never imports torch, and a single-file --check stays off heavy imports."""

from __future__ import annotations

import sys

from tests.conftest import child_env, run_cmd

PROBE = """
import sys
from migrator.cli import main
code = main(["--check", "-q", sys.argv[1]])
heavy = sorted(m for m in ("torch", "numpy", "jinja2", "black", "libcst.codemod",
                           "concurrent.futures", "lightning") if m in sys.modules)
print("HEAVY", ",".join(heavy))
print("EXIT", code)
"""


def test_check_on_a_training_script_imports_no_torch(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(
        "import torch\nimport torch.nn as nn\nmodel = nn.Linear(2, 1).cuda()\n"
        "opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "for x in range(3):\n    loss = model(torch.ones(2).cuda()).sum()\n    loss.backward()\n"
        "    opt.step()\ntorch.save(model.state_dict(), 'm.pt')\n"
    )
    done = run_cmd([sys.executable, "-c", PROBE, str(script)], timeout=120, env=child_env())
    assert "Traceback" not in done.stderr, done.stderr
    assert "EXIT " in done.stdout, done.stderr
    assert "HEAVY \n" in done.stdout, done.stdout

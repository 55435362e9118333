"""The process group is torn down at the end of the main path on targets that need it (issue 11 #12)."""

from __future__ import annotations

import textwrap

import pytest

from migrator.engine import migrate_source
from migrator.options import Options

BODY = """\
import sys
import torch

def main():
    model = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(torch.ones(1, 2)).sum().backward()
    opt.step()
    return 0
"""


def _migrate(src: str, target: str) -> str:
    result = migrate_source(src, path="t.py", options=Options(target=target))
    assert not result.internal_error, result.traceback
    again = migrate_source(result.output, path="t.py", options=Options(target=target))
    assert again.output == result.output  # a second migration adds nothing
    return result.output


@pytest.mark.parametrize("target,last", [
    ("fabric", "        torch.distributed.destroy_process_group()"),
    ("accelerate", "    accelerator.end_training()"),
])
def test_after_the_main_call(target, last):
    out = _migrate(BODY + '\nif __name__ == "__main__":\n    main()\n', target)
    assert out.rstrip("\n").splitlines()[-1] == last


def test_top_level_script_ends_with_it():
    src = BODY + "\nmain()\n"
    assert _migrate(src, "accelerate").rstrip().endswith("main()\naccelerator.end_training()")


def test_before_the_exit_after_the_work():
    src = BODY + '\nif __name__ == "__main__":\n    sys.exit(main())\n'
    out = _migrate(src, "accelerate")
    assert out.rstrip().endswith(textwrap.dedent("""\
        exit_code = main()
            accelerator.end_training()
            sys.exit(exit_code)"""))


def test_runtime_tears_down_at_exit_itself():
    out = _migrate(BODY + "\nmain()\n", "runtime")
    assert "destroy_process_group" not in out and out.rstrip().endswith("main()")

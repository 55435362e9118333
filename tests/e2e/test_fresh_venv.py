"""The README's main command, verbatim, on a fresh machine: a new venv without system site
packages, only what the command itself installs (so no numpy, no test extras)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import ROOT, run_cmd  # tests/conftest.py

from ._harness import describe

TIMEOUT = 900  # measured 2-2.5 min on 2 loaded cores, most of it creating the venv and installing torch


def readme_command(marker: str) -> str:
    """The shell command in README.md's ```bash block between ``<!-- marker -->`` comments."""
    block = (ROOT / "README.md").read_text().split(f"<!-- {marker} -->")[1]
    block = block.split(f"<!-- /{marker} -->")[0]
    match = re.search(r"```bash\n(.*?)```", block, re.S)
    assert match, f"no ```bash block between the {marker} markers in README.md"
    return match.group(1).strip()


def copy_checkout(dest: Path) -> None:
    """The working tree as git sees it (tracked and untracked files, nothing ignored)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True, timeout=60,
    ).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def fresh_machine_env() -> dict[str, str]:
    """This environment without the test venv's imports; `python3` is this interpreter
    (the venv the command creates is built from its base, without site packages)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
           and not k.startswith(("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_"))}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


@pytest.mark.timeout(TIMEOUT + 60)
def test_readme_main_command_verbatim_in_a_fresh_venv():
    command = readme_command("main-command")
    with tempfile.TemporaryDirectory(prefix="torch-migrate-fresh-") as tmp:
        checkout = Path(tmp) / "torch-migrate"
        copy_checkout(checkout)
        proc = run_cmd(["bash", "-c", command], timeout=TIMEOUT, cwd=checkout,
                       env=fresh_machine_env())
        assert proc.returncode == 0, describe(proc, limit=8000)
        numpy = run_cmd([str(checkout / ".venv/bin/python"), "-c", "import numpy"], timeout=60)
        assert numpy.returncode != 0, (
            "numpy got installed into the fresh venv: this test no longer checks that the "
            "runtime works without it")
    out = proc.stdout
    tests = re.findall(r"Test set: Average loss: [\d.]+, Accuracy: \d+/(\d+)", out)
    # 2 ranks share one stdout: every line once means rank 1 printed nothing
    assert tests == ["101"], f"expected one test report over all 101 samples:\n{out[-4000:]}"
    assert out.count("Train Epoch: 1 [0/960") == 1 and out.count("Learning rate:") == 1, out

"""The real pre-commit runs our hooks (try-repo) on a temporary repository, without torch."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, child_env, run_cmd

# An already-migrated script into which someone pasted a bare backward: the check must stop
# the commit, and the fix must route it through the file's existing `rt`.
SCRIPT = """\
import torch
from runtime import Runtime

rt = Runtime()
model = torch.nn.Linear(4, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
model, optimizer = rt.setup(model, optimizer)
for step in range(3):
    loss = model(torch.ones(4)).sum()
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
"""


def _env(tmp_path: Path) -> dict[str, str]:
    env = child_env(
        PRE_COMMIT_HOME=str(tmp_path / "pre-commit-home"),  # a fresh hook environment
        GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.com",
        PIP_DISABLE_PIP_VERSION_CHECK="1",
    )
    env.pop("PYTHONPATH", None)  # the hook must use its own installed copy, not this checkout
    return env


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
def test_pre_commit_check_blocks_unported_code_until_fixed(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    env = _env(tmp_path)

    def git(*args: str):
        done = run_cmd(["git", *args], cwd=repo, env=env, timeout=60)
        assert done.returncode == 0, done.stderr
        return done

    def try_repo(hook: str):
        return run_cmd([sys.executable, "-m", "pre_commit", "try-repo", str(ROOT), hook],
                       cwd=repo, env=env, timeout=600)

    git("init", "-q")
    (repo / "train.py").write_text(SCRIPT)
    git("add", "train.py")

    blocked = try_repo("migrate-check")
    output = blocked.stdout + blocked.stderr
    assert blocked.returncode != 0, output
    assert "train.py:10:" in output and "MIG2" in output, output

    # The hook environment installs the distribution's runtime dependencies only, and torch
    # is not among them (it is the optional `runtime` extra): no multi-GB download in hooks.
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in deps if d.lower().startswith(("torch", "lightning", "accelerate"))]

    fixed = try_repo("migrate-fix")
    assert fixed.returncode != 0  # pre-commit fails a hook that modified files
    assert "rt.backward(loss)" in (repo / "train.py").read_text()
    git("add", "train.py")

    passed = try_repo("migrate-check")
    assert passed.returncode == 0, passed.stdout + passed.stderr
    git("commit", "-q", "-m", "ported")

"""Multi-file programs (fixtures/programs/) migrated as one with the CLI and run on 1 and 2 processes."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from conftest import ROOT, child_env, run_cmd  # tests/conftest.py

from ._harness import (
    BIN,
    DIST_TIMEOUT,
    SINGLE_TIMEOUT,
    Run,
    check_ranks_started,
    describe,
    fresh_dir,
    launch_cmd,
    probed_env,
    rank_stdout,
    read_probe,
    writers,
)

PROGRAMS = ROOT / "fixtures" / "programs"
LAUNCHERS = {"runtime": "runtime.launch", "fabric": "fabric"}


def _copy(name: str, label: str) -> Path:
    work = fresh_dir(label)
    shutil.copytree(PROGRAMS / name, work, dirs_exist_ok=True)
    prepare = work / "make_samples.py"
    if prepare.exists():  # the data step, run once on one process (as a user would)
        proc = run_cmd([sys.executable, str(prepare)], timeout=SINGLE_TIMEOUT, cwd=work, env=child_env())
        assert proc.returncode == 0, describe(proc)
    return work


def _python(work: Path, script: str = "train.py") -> str:
    proc = run_cmd([sys.executable, script], timeout=SINGLE_TIMEOUT, cwd=work, env=child_env())
    assert proc.returncode == 0, describe(proc)
    return proc.stdout


@pytest.mark.parametrize(("program", "target"), [
    ("engine_layout", "runtime"), ("engine_layout", "fabric"), ("repository", "runtime"),
])
def test_program_runs_on_one_and_two_processes(program, target):
    original = _python(_copy(program, f"{program}-original"))
    work = _copy(program, f"{program}-{target}")
    migrated = run_cmd([str(BIN / "migrate"), "--write", "--target", target, "."],
                       timeout=SINGLE_TIMEOUT, cwd=work)
    assert migrated.returncode == 0, describe(migrated)
    assert _python(work) == original, "1 process must print exactly what the original printed"
    (work / "model.pt").unlink()
    probe = fresh_dir(f"probe-{program}-{target}")
    proc = run_cmd(launch_cmd(LAUNCHERS[target], work / "train.py", ()),
                   timeout=DIST_TIMEOUT, cwd=work, env=probed_env(probe))
    run = Run(proc, work, probe, read_probe(probe))
    run.check_ok("2-process run")
    check_ranks_started(run, work / "train.py")
    assert rank_stdout(run, "1") == "", "rank 1 printed to stdout"
    lines = proc.stdout.splitlines()
    assert len(lines) == len(original.splitlines()) - _batch_lines(original) // 2, proc.stdout
    assert writers(run).get("model.pt") == {"0"}, writers(run)


def _batch_lines(stdout: str) -> int:
    """Progress lines printed every 4 batches: half as many batches per rank on 2 ranks."""
    return sum(" batch " in line for line in stdout.splitlines())

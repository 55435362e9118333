"""Shared test helpers: subprocesses with hard timeouts and free ports for torchrun."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"
SHARED = ROOT.parent / "shared"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for torchrun --master-port)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(**extra: str) -> dict[str, str]:
    """Environment for child Python processes: one thread each, unbuffered, repo importable."""
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", PYTHONHASHSEED="0")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    env.update(extra)
    return env


def run_cmd(
    cmd: list[str], *, timeout: float = 120, cwd: str | Path | None = None, env: dict | None = None
) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group; on timeout kill the whole group and fail."""
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env or child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        # torch elastic starts its workers in sessions of their own: kill every descendant
        # (found before the launcher dies and they are reparented), not only the group.
        for pid in [*_descendants(proc.pid), proc.pid]:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:  # a survivor still holds the pipes: do not wait on it
            out, err = "", "(output lost: a process survived the kill)"
        pytest.fail(f"timed out after {timeout}s: {' '.join(map(str, cmd))}\n{out}\n{err}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _descendants(root: int) -> list[int]:
    """Every live descendant of ``root`` (Linux /proc), children first."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def torchrun(script: str | Path, *args: str, nproc: int = 2, timeout: float = 180, **kw):
    """Run ``script`` under torchrun on ``nproc`` CPU processes (gloo), with a free port."""
    cmd = [
        sys.executable, "-m", "torch.distributed.run",
        f"--nproc-per-node={nproc}", "--master-addr=127.0.0.1", f"--master-port={free_port()}",
        str(script), *args,
    ]
    return run_cmd(cmd, timeout=timeout, **kw)


@contextmanager
def prefilters_off(options) -> Iterator[None]:
    """``migrate_source`` runs every enabled rule on every file: the text and code
    prefilters decide nothing (to check that what they skip gives the rules nothing)."""
    from migrator import codefilter, prefilter

    every = frozenset(r.code for r in prefilter.planning_rules() if options.wants(r.code))
    saved = prefilter.rules_to_run, codefilter.code_rules
    prefilter.rules_to_run = lambda _source, _options: every
    codefilter.code_rules = lambda _tree, codes: codes
    try:
        yield
    finally:
        prefilter.rules_to_run, codefilter.code_rules = saved

"""Run a command with a deadline; on a hang dump every process's Python stacks and kill the whole tree."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (torch elastic starts workers in their own sessions,
    so killing the launcher's process group, as conftest.run_cmd does, leaves them running)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def run(cmd: list[str], *, timeout: float, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """Run ``cmd``; on timeout dump every descendant's Python stacks (SIGABRT with
    PYTHONFAULTHANDLER set), then kill the launcher and all its descendants; exit status 124."""
    env = dict(env, PYTHONFAULTHANDLER="1")
    proc = subprocess.Popen(
        cmd,
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        tree = descendants(proc.pid)
        for pid in tree or [proc.pid]:  # the workers (or the lone process), one at a time
            _signal([pid], signal.SIGABRT)
            time.sleep(0.5)  # faulthandler writes the stacks
        _signal([proc.pid, *descendants(proc.pid), *tree], signal.SIGKILL)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            out, err = "", ""
        return subprocess.CompletedProcess(
            cmd, 124, out or "", f"timed out after {timeout:.0f}s\n{err or ''}"
        )


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The first exception line in stderr (the root cause), else its last line."""
    if proc.returncode == 124:
        return proc.stderr.splitlines()[0] + hang_site(proc.stderr)
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
    for line in lines:  # torch elastic prefixes a worker's lines with "[rankN]: "
        m = re.match(r"^(?:\[(rank\d+)\]:\s*)?([\w.]*(?:Error|Exception|Interrupt)\b.*)", line)
        if m and "ChildFailedError" not in line:
            return (f"{m.group(1)}: " if m.group(1) else "") + m.group(2)[:200]
    return (lines[-1][:200] if lines else "") or f"exit {proc.returncode}, no stderr"


def keep_log(cwd: Path, proc: subprocess.CompletedProcess) -> None:
    """The run's stdout and stderr beside its folder (``<folder>.stdout`` / ``.stderr``)."""
    cwd.with_name(cwd.name + ".stdout").write_text(proc.stdout)
    cwd.with_name(cwd.name + ".stderr").write_text(proc.stderr)


def hang_site(stderr: str) -> str:
    """Where the first dumped stack stood in the user's code (faulthandler lists innermost first)."""
    for m in re.finditer(r'File "([^"]+)", line (\d+) in (\S+)', stderr):
        path = m.group(1)
        if "site-packages" not in path and "/lib/python3" not in path and "/runtime/" not in path:
            return f", stuck at {Path(path).name}:{m.group(2)} in {m.group(3)}"
    return ""


def failed(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}: {error_line(proc)}"

"""Run the real ``migrate`` CLI in a subprocess, unprivileged enough that chmod 000 means unreadable."""

from __future__ import annotations

import os
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

from ._support import cli_command

# As root, permission bits do not stop reads (CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH). This
# trampoline drops both from the capability bounding set and then execs the command, so the
# exec'd process is root without them: a chmod 000 file is really unreadable to it, while
# everything root owns with ordinary modes (the venv, the repo, pytest's tmp dirs) still is.
_DROP_DAC = (
    "import ctypes, os, sys\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "for cap in (1, 2):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH\n"
    "    libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP; failure is detected by the probe\n"
    "os.execv(sys.argv[1], sys.argv[1:])\n"
)


def unprivileged(cmd: list[str]) -> list[str]:
    """``cmd`` prefixed with the trampoline when running as root, unchanged otherwise."""
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return [sys.executable, "-c", _DROP_DAC, *cmd]
    return cmd


@lru_cache(maxsize=1)
def chmod_000_is_unreadable(probe_dir: str) -> bool:
    """Whether a chmod 000 file really cannot be read by the commands ``run_cli`` starts."""
    probe = Path(probe_dir) / "probe-unreadable.txt"
    probe.write_text("secret")
    probe.chmod(0)
    try:
        code = f"open({str(probe)!r}).read()"
        proc = subprocess.run(unprivileged([sys.executable, "-c", code]), capture_output=True, timeout=60, check=False)
        return proc.returncode != 0 and b"PermissionError" in proc.stderr
    finally:
        probe.chmod(0o600)
        probe.unlink()


def run_cli(args: list[str], *, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """``migrate ARGS`` in ``cwd`` with a hard timeout (process group killed on expiry)."""
    from conftest import child_env, run_cmd  # tests/conftest.py: process-group kill on timeout

    return run_cmd(unprivileged(cli_command() + args), timeout=timeout, cwd=cwd, env=child_env())


def lines_naming(proc: subprocess.CompletedProcess, name: str) -> list[str]:
    """Output lines (stdout and stderr) that mention ``name``."""
    return [line for line in (proc.stdout + proc.stderr).splitlines() if name in line]


def snapshot(path: Path) -> tuple:
    """What must not change about an input: kind, bytes or link target, mode, mtime, inode."""
    st = os.lstat(path)
    if path.is_symlink():
        return ("link", os.readlink(path), st.st_mtime_ns, st.st_ino)
    if path.is_file() and os.access(path, os.R_OK) and st.st_mode & 0o444:
        return ("file", path.read_bytes(), st.st_mode, st.st_mtime_ns, st.st_ino)
    return ("other", st.st_mode, st.st_mtime_ns, st.st_ino, st.st_size)

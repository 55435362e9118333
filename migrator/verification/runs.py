"""Running one script in a fresh copy of its folder, under the verify bootstrap, with a hard timeout
(a hang is stopped after every process dumped its Python stack)."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

_IGNORE = shutil.ignore_patterns(".git", "__pycache__", "*.pyc", ".venv", "venv", ".mypy_cache",
                                 ".pytest_cache", "node_modules", ".tox",
                                 "migrate-verify-*")  # verify's own work folders (a cwd of /tmp)
_CLEAN_ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
              "GROUP_RANK", "TORCHELASTIC_RUN_ID", "LT_CLI_USED", "ACCELERATE_USE_CPU")
LAUNCHERS = ("runtime", "fabric", "accelerate")


@dataclass
class Run:
    """One finished run: command, folder, exit status, output and what the bootstrap recorded."""

    label: str
    cmd: list[str]
    folder: Path
    audit: Path
    returncode: int | None = None  # None: stopped after the timeout (a hang)
    seconds: float = 0.0
    stdout: str = ""
    stderr: str = ""
    records: list[dict] = field(default_factory=list)
    stacks: dict[str, str] = field(default_factory=dict)  # rank -> faulthandler dump
    rank_stdout: dict[str, str] = field(default_factory=dict)

    @property
    def hung(self) -> bool:
        return self.returncode is None

    def of(self, kind: str) -> list[dict]:
        return [r for r in self.records if r["kind"] == kind]

    def to_json(self) -> dict:
        return {"label": self.label, "cmd": self.cmd, "folder": str(self.folder),
                "exit": self.returncode, "hung": self.hung, "seconds": round(self.seconds, 2)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def runtime_root() -> Path | None:
    """The folder holding the bundled ``runtime`` package (found without importing it)."""
    spec = importlib.util.find_spec("runtime")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))).resolve().parent


def copy_folder(src: Path, dest: Path, script_name: str, texts: dict[str, str] | None) -> Path:
    """A copy of ``src`` at ``dest``; ``texts`` (the port: path relative to ``src`` -> text)
    replace those files there. The script's path (``script_name``: relative to ``src``)."""
    shutil.copytree(src, dest, ignore=_IGNORE, symlinks=True)
    for rel, text in (texts or {}).items():
        (dest / rel).write_text(text)
    return dest / script_name


DEFAULT_LAUNCHER = {"runtime": "runtime.launch", "fabric": "fabric", "accelerate": "torchrun"}


def launch_cmd(target: str, script: Path, args: list[str], devices: int, simulate: bool,
               launcher: str | None = None) -> tuple[list[str], dict]:
    """The N-process command line for ``target``'s launcher (or ``launcher``: runtime.launch,
    fabric, torchrun), and the extra environment it needs."""
    if target not in LAUNCHERS:
        raise ValueError(f"unknown target {target!r}; valid: {', '.join(LAUNCHERS)}")
    launcher = launcher or DEFAULT_LAUNCHER[target]
    port, py = str(free_port()), sys.executable
    if launcher == "runtime.launch":
        return [py, "-m", "runtime.launch", "--devices", str(devices), "--master-port", port,
                str(script), "--", *args], {}
    if launcher == "fabric":
        fabric = shutil.which("fabric", path=str(Path(py).parent)) or shutil.which("fabric") or "fabric"
        return [fabric, "run", "--accelerator", "cuda" if simulate else "cpu", "--strategy", "ddp",
                "--devices", str(devices), "--main-port", port, str(script), *args], {}
    if launcher == "torchrun":
        env = {"ACCELERATE_USE_CPU": "true"} if target == "accelerate" and not simulate else {}
        return [py, "-m", "torch.distributed.run", f"--nproc_per_node={devices}",
                "--master_addr=127.0.0.1", f"--master_port={port}", str(script), *args], env
    raise ValueError(f"unknown launcher {launcher!r}; valid: {', '.join(sorted(set(DEFAULT_LAUNCHER.values())))}")


def child_env(audit: Path, folder: Path, *, single: bool, simulate: bool, devices: int,
              extra: dict | None = None, code: Path | None = None) -> dict[str, str]:
    """The environment of a run in ``folder`` (the files it writes are recorded relative to it),
    auditing into ``audit``; ``code``: the script's folder when it is not ``folder`` (the
    simulated devices are reported to the code there)."""
    env = {k: v for k, v in os.environ.items() if k not in _CLEAN_ENV}
    root = runtime_root()
    if root is None:
        raise RuntimeError("the bundled runtime package is not installed: pip install torch-migrate")
    # The child bootstrap is torch-side code: it lives with the runtime (runtime/verify_child/),
    # the migrator process only puts it on the children's path.
    paths = [str(root / "runtime" / "verify_child"), str(root)]
    env.update(OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"), PYTHONUNBUFFERED="1",
               PYTHONDONTWRITEBYTECODE="1", TM_VERIFY_DIR=str(audit), TM_VERIFY_SCRIPT_DIR=str(folder),
               PYTHONPATH=os.pathsep.join(filter(None, [*paths, env.get("PYTHONPATH", "")])))
    if single:
        env["TM_VERIFY_SINGLE"] = "1"
    if simulate and root is not None:
        env["TM_VERIFY_SIMULATE"] = str(root / "runtime" / "simulate.py")
        env["TM_VERIFY_DEVICES"] = str(devices)
    if code is not None:
        env["TM_VERIFY_CODE_DIR"] = str(code)
    env.update(extra or {})
    return env


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            out.append(child)
            todo.append(child)
    return out


def _signal(pids: list[int], sig: int) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except OSError:
            pass


def execute(run: Run, env: dict[str, str], timeout: float) -> Run:
    """Run ``run.cmd`` in ``run.folder``; on timeout dump every process's stack, then kill them all."""
    start = time.monotonic()
    with open(run.audit / "launcher-stdout.txt", "w") as out, open(run.audit / "launcher-stderr.txt", "w") as err:
        proc = subprocess.Popen(run.cmd, cwd=run.folder, env=env, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            run.returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pids = [proc.pid, *_descendants(proc.pid)]
            _signal(pids, signal.SIGUSR1)
            time.sleep(1.0)
            pids = [proc.pid, *_descendants(proc.pid)]
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except OSError:
                pass
            _signal(pids, signal.SIGKILL)
            proc.wait()
            run.returncode = None
    run.seconds = time.monotonic() - start
    run.stdout = (run.audit / "launcher-stdout.txt").read_text(errors="replace")
    run.stderr = (run.audit / "launcher-stderr.txt").read_text(errors="replace")
    _collect(run)
    return run


def _collect(run: Run) -> None:
    for f in sorted(run.audit.glob("audit-*.jsonl")):
        for line in f.read_text(errors="replace").splitlines():
            try:
                run.records.append(json.loads(line))
            except ValueError:
                pass  # a line cut by the kill
    for f in sorted(run.audit.glob("stdout-*.txt")):
        rank = _rank_of(f)
        run.rank_stdout[rank] = run.rank_stdout.get(rank, "") + f.read_text(errors="replace")
    for f in sorted(run.audit.glob("stack-*.txt")):
        rank, text = _rank_of(f), f.read_text(errors="replace")
        if rank != "-" and text.strip():
            run.stacks[rank] = run.stacks.get(rank, "") + text


def _rank_of(f: Path) -> str:
    """``stack-<rank>-<pid>.txt`` -> rank ("-" for a launcher process)."""
    return f.stem.split("-", 1)[1].rsplit("-", 1)[0]

"""Running whole scripts for the e2e tests: original runs (cached), migration, 1- and 2-process runs.

Runs go through `migrate verify`'s machinery (migrator/verification/runs.py: launchers, hard
timeouts with every rank's stack; runtime/verify_child: the audit of writes, per-rank stdout and
device use), not a second one: the 2-process runs run on simulated GPUs (`--simulate-gpus`), and
their tests assert that no rank misused a device."""

from __future__ import annotations

import atexit
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest
from conftest import ROOT, child_env, free_port, run_cmd  # tests/conftest.py

from migrator.verification import runs as verification

from ._specs import SPECS, Spec

PROBE = Path(__file__).resolve().parent / "probe"
BIN = Path(sys.executable).parent
SINGLE_TIMEOUT = 120
DIST_TIMEOUT = 300

_BASE = Path(tempfile.mkdtemp(prefix="torch-migrate-e2e-"))
atexit.register(shutil.rmtree, _BASE, True)


def fresh_dir(label: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"{label}-", dir=_BASE))


def files_in(directory: Path) -> set[str]:
    """Relative paths of every file under ``directory``."""
    return {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}


def describe(proc: subprocess.CompletedProcess, limit: int = 4000) -> str:
    text = (
        f"$ {' '.join(map(str, proc.args))}\nexit {proc.returncode}\n"
        f"--- stdout (tail) ---\n{proc.stdout[-limit:]}\n--- stderr (tail) ---\n{proc.stderr[-limit:]}"
    )
    # `migrate run` names a log with every rank's traceback; CI keeps no /tmp: show it here.
    found = re.search(r"launcher's log: (\S+)", proc.stderr or "")
    if found and Path(found.group(1)).is_file():
        log = Path(found.group(1)).read_text(errors="replace")
        text += f"\n--- {found.group(1)} (tail) ---\n{log[-limit:]}"
    return text


@dataclass
class Run:
    """One finished run: its process, working directory and what was recorded: by the verify
    bootstrap (``audit``: runs made here) or by the legacy probe (``probe_dir``: runs other e2e
    tests start themselves with ``probed_env``)."""

    proc: subprocess.CompletedProcess
    cwd: Path
    probe_dir: Path | None = None
    records: list[dict] = field(default_factory=list)
    audit: verification.Run | None = None

    def check_ok(self, what: str) -> None:
        if self.proc.returncode != 0:
            pytest.fail(f"{what} exited {self.proc.returncode}\n{describe(self.proc)}")

    def check_same_stdout(self, expected: Run) -> None:
        """Fail with a unified diff unless this run printed exactly what ``expected`` printed."""
        if self.proc.stdout == expected.proc.stdout:
            return
        diff = "".join(
            difflib.unified_diff(
                expected.proc.stdout.splitlines(True),
                self.proc.stdout.splitlines(True),
                "original",
                "migrated",
                n=1,
            )
        )
        pytest.fail(
            f"1-process stdout differs from the original:\n{diff[:4000]}"
            f"\n--- stderr ---\n{self.proc.stderr[-2000:]}"
        )


def execute(
    cmd: list[str], cwd: Path, label: str, timeout: float, *, devices: int = 1,
    simulate: bool = False, extra: dict | None = None, code: Path | None = None,
) -> Run:
    """``cmd`` in ``cwd`` under the verify bootstrap (migrator.verification.runs.execute); a hang
    is killed after every process dumped its stack (in stderr)."""
    audit = fresh_dir(f"audit-{label}")
    env = verification.child_env(audit, cwd, single=devices == 1, simulate=simulate, devices=devices,
                                 extra={"PYTHONHASHSEED": "0", **(extra or {})}, code=code)
    done = verification.execute(verification.Run(label, cmd, cwd, audit), env, timeout)
    stdout = done.stdout if devices == 1 else done.rank_stdout.get("0", "") + done.stdout
    stderr = done.stderr
    if done.hung:
        stderr += f"\n--- hang: killed after {timeout}s; stacks ---\n" + "\n".join(
            f"rank {rank}:\n{stack}" for rank, stack in sorted(done.stacks.items()))
    proc = subprocess.CompletedProcess(cmd, -9 if done.hung else done.returncode, stdout, stderr)
    return Run(proc, cwd, records=done.records, audit=done)


def run_single(
    script: Path, args: tuple[str, ...], label: str, inputs: dict[str, Path] | None = None,
    *, simulate: bool = False,
) -> Run:
    """``python script args`` in a fresh working directory holding copies of ``inputs``
    (``simulate``: on 1 simulated GPU)."""
    cwd = fresh_dir(label)
    for rel, src in (inputs or {}).items():
        shutil.copy(src, cwd / rel)
    return execute([sys.executable, str(script), *args], cwd, label, SINGLE_TIMEOUT,
                   simulate=simulate, code=script.parent)


@cache
def original_train(name: str) -> Run:
    """The original script's training run (the reference for every comparison); cached per process."""
    spec = SPECS[name]
    run = run_single(spec.path, spec.train_args, f"orig-{name}")
    run.check_ok(f"original {name}.py {' '.join(spec.train_args)}")
    return run


@cache
def original_eval(name: str) -> Run:
    """The original script evaluating the checkpoint its own training run wrote."""
    spec = SPECS[name]
    run = run_single(spec.path, spec.eval_args, f"orig-eval-{name}", eval_inputs(spec))
    run.check_ok(f"original {name}.py {' '.join(spec.eval_args)}")
    return run


def eval_inputs(spec: Spec) -> dict[str, Path]:
    return {spec.eval_input: original_train(spec.name).cwd / spec.eval_input}


# ---------------------------------------------------------------- migration


@dataclass(frozen=True)
class Migration:
    path: Path | None  # the migrated script, None when migration failed
    error: str = ""
    how: str = ""


def _cli_available() -> bool:
    return (ROOT / "migrator" / "cli.py").exists() and (BIN / "migrate").exists()


@cache
def migrate(name: str, target: str) -> Migration:
    """Migrate ``fixtures/scripts/<name>.py`` to ``target`` via the CLI when it exists, else ``migrate_source``."""
    spec = SPECS[name]
    out = fresh_dir(f"migrated-{name}-{target}") / f"{name}.py"
    if _cli_available():
        cmd = [str(BIN / "migrate"), str(spec.path), "-o", str(out), "--target", target]
        proc = run_cmd(cmd, timeout=SINGLE_TIMEOUT, env=child_env())
        if proc.returncode != 0 or not out.exists():
            return Migration(
                None, f"`migrate -o` failed (no output or nonzero exit)\n{describe(proc)}", "cli"
            )
        return Migration(out, how="cli")
    from migrator.engine import migrate_source
    from migrator.options import Options
    from migrator.results import Status

    result = migrate_source(spec.path.read_text(), str(spec.path), Options(target=target))
    if result.status is Status.FAILED:
        return Migration(
            None, f"migrate_source FAILED: {result.reason}\n{result.traceback or ''}", "api"
        )
    out.write_text(result.output)
    return Migration(out, how="migrate_source (no migrator/cli.py yet)")


def require_migrated(name: str, target: str) -> Path:
    m = migrate(name, target)
    if m.path is None:
        pytest.fail(f"migrating {name}.py to --target {target} failed ({m.how}):\n{m.error}")
    return m.path


# ---------------------------------------------------------------- distributed runs


# ---- legacy probe (tests/e2e/probe): for tests that start their own processes with probed_env


def probed_env(probe_dir: Path) -> dict[str, str]:
    env = child_env(E2E_PROBE_DIR=str(probe_dir))
    env["PYTHONPATH"] = os.pathsep.join([str(PROBE), env["PYTHONPATH"]])
    return env


def launch_cmd(launcher: str, script: Path, args: tuple[str, ...]) -> list[str]:
    """The 2-process CPU command line for ``launcher`` (``runtime.launch`` / ``fabric``; torchrun
    has a helper), for tests that start their own processes; run_distributed uses verify's."""
    port = str(free_port())
    if launcher == "runtime.launch":
        return [
            sys.executable,
            "-m",
            "runtime.launch",
            "--devices",
            "2",
            "--master-port",
            port,
            str(script),
            "--",
            *args,
        ]
    if launcher == "fabric":
        return [
            str(BIN / "fabric"),
            "run",
            "--accelerator",
            "cpu",
            "--strategy",
            "ddp",
            "--devices",
            "2",
            "--main-port",
            port,
            str(script),
            *args,
        ]
    raise ValueError(f"unknown launcher {launcher!r}")


def read_probe(probe_dir: Path) -> list[dict]:
    """Every record the probe wrote in ``probe_dir`` (see probe/sitecustomize.py)."""
    return [
        json.loads(line)
        for f in sorted(probe_dir.glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]



# The target whose launcher each e2e launcher name stands for (its environment: accelerate's).
_LAUNCHER_TARGET = {"runtime.launch": "runtime", "fabric": "fabric", "torchrun": "accelerate"}


def run_distributed(
    launcher: str,
    script: Path,
    args: tuple[str, ...],
    label: str,
    inputs: dict[str, Path] | None = None,
    *,
    simulate: bool = False,
) -> Run:
    """Run ``script`` on 2 CPU processes (gloo) under ``launcher`` (runtime.launch, fabric,
    torchrun) through `migrate verify`'s launchers and bootstrap: ranks' writes and stdout
    recorded; ``simulate``: on 2 simulated GPUs, as `migrate verify --simulate-gpus` (device use
    recorded, see check_devices)."""
    cwd = fresh_dir(label)
    for rel, src in (inputs or {}).items():
        shutil.copy(src, cwd / rel)
    target = _LAUNCHER_TARGET[launcher]
    cmd, extra = verification.launch_cmd(target, script, list(args), 2, simulate, launcher)
    return execute(cmd, cwd, label, DIST_TIMEOUT, devices=2, simulate=simulate, extra=extra,
                   code=script.parent)


def check_devices(run: Run) -> None:
    """No rank misused a simulated GPU (another rank's device, devices mixed in one op, .numpy()
    of a CUDA tensor): docs/verify.md, `--simulate-gpus`."""
    bad = [r for r in run.records if r["kind"] == "placement" and not r.get("ok", True)]
    if bad:
        lines = "\n".join(f"rank {r['rank']} at {r['site']}: {r['message']}" for r in bad[:10])
        pytest.fail(f"{len(bad)} device misuse(s) on 2 simulated GPUs:\n{lines}")


def check_ranks_started(run: Run, script: Path) -> None:
    """Both rank 0 and rank 1 ran ``script`` (a launcher that silently ran one copy fails here)."""
    def ran(argv: list[str]) -> str | None:  # `migrate run` workers start runtime/launch_worker.py SCRIPT
        return argv[1] if len(argv) > 1 and argv[0].endswith("launch_worker.py") else (argv or [None])[0]

    ranks = {
        r["rank"]
        for r in run.records
        if r["kind"] == "start" and ran(r["argv"]) and Path(ran(r["argv"])).resolve() == script.resolve()
    }
    if not {"0", "1"} <= ranks:
        pytest.fail(
            f"expected ranks 0 and 1 to run {script.name}, saw ranks {sorted(ranks)}\n{describe(run.proc)}"
        )


def rank_stdout(run: Run, rank: str) -> str:
    if run.audit is not None:
        return run.audit.rank_stdout.get(rank, "")
    return "".join(p.read_text() for p in sorted(run.probe_dir.glob(f"stdout-rank{rank}-*.txt")))


def writers(run: Run) -> dict[str, set[str]]:
    """Relative path (inside the run's cwd) -> ranks of the processes that wrote it."""
    out: dict[str, set[str]] = {}
    cwd = str(run.cwd.resolve())
    for r in run.records:
        if r["kind"] != "write":
            continue
        if run.audit is not None:  # verify's records: relative to the run's folder already
            out.setdefault(r["path"], set()).add(r["rank"])
        elif (r["path"] + os.sep).startswith(cwd + os.sep):
            out.setdefault(os.path.relpath(r["path"], cwd), set()).add(r["rank"])
    return out


# ---------------------------------------------------------------- output comparison

_NUMBER = re.compile(r"(-?\d+(?:\.\d+)?(?:e[-+]?\d+)?)")


def reports_match(expected: str, actual: str) -> str | None:
    """None when ``actual`` reports the same numbers as ``expected``, else the first difference.

    Integers (sample counts, correct predictions) must be equal; a printed decimal may differ by
    one unit in its last printed digit, because a sum reduced across 2 ranks adds the same
    terms in another order (a last-bit float difference can flip the final rounding).
    """
    exp_lines, act_lines = expected.splitlines(), actual.splitlines()
    if len(exp_lines) != len(act_lines):
        return f"{len(act_lines)} lines instead of {len(exp_lines)}:\n{actual}\n--- expected ---\n{expected}"
    for e_line, a_line in zip(exp_lines, act_lines):
        e_parts, a_parts = _NUMBER.split(e_line), _NUMBER.split(a_line)
        if len(e_parts) != len(a_parts):
            return f"line differs:\n  expected {e_line!r}\n  actual   {a_line!r}"
        for i, (e, a) in enumerate(zip(e_parts, a_parts)):
            if i % 2 == 0 or e == a:
                if e != a:
                    return f"line differs:\n  expected {e_line!r}\n  actual   {a_line!r}"
                continue
            if "." not in e or "." not in a:
                return f"number {a} instead of {e}:\n  expected {e_line!r}\n  actual   {a_line!r}"
            unit = 10.0 ** -len(e.split(".")[1].split("e")[0])
            if abs(float(e) - float(a)) > unit * 1.001:
                return f"number {a} instead of {e}:\n  expected {e_line!r}\n  actual   {a_line!r}"
    return None

"""The verify pipeline: copy, migrate, run the original / the port on 1 process / the port on N
processes, then check. No torch here: runs are child processes."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from migrator.verification import checks
from migrator.verification.checks import Check
from migrator.verification.runs import Run, child_env, copy_folder, execute, launch_cmd


@dataclass(frozen=True)
class Request:
    script: Path
    target: str = "runtime"
    form: str = "wrapper"
    migrated: Path | None = None
    devices: int = 2
    simulate_gpus: bool = False
    timeout: float = 300.0
    keep: bool = False
    script_args: tuple[str, ...] = ()


@dataclass
class Report:
    request: Request
    checks: list[Check] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)
    workdir: Path | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    def to_json(self) -> dict:
        r = self.request
        return {"script": str(r.script), "target": r.target, "devices": r.devices,
                "simulate_gpus": r.simulate_gpus, "passed": self.passed,
                "seconds": round(self.seconds, 2),
                "workdir": str(self.workdir) if self.request.keep and self.workdir else None,
                "checks": [c.to_json() for c in self.checks], "runs": [x.to_json() for x in self.runs]}


Progress = Callable[[str, Run | None], None]


def _migrate(req: Request) -> tuple[str | None, str]:
    """The port's text (None on failure) and a message."""
    if req.migrated is not None:
        return req.migrated.read_text(), f"checking {req.migrated}"
    from migrator.engine import migrate_source
    from migrator.options import Options
    from migrator.results import Status

    result = migrate_source(req.script.read_text(), str(req.script), Options(target=req.target, form=req.form))
    if result.status is Status.FAILED:
        return None, (result.reason or "failed") + ("\n" + result.traceback if result.traceback else "")
    if result.status is Status.SKIPPED:
        return None, f"skipped: {result.reason}"
    refusals = [f for f in result.findings if f.code.startswith("MIG9")]
    if refusals and result.status is Status.UNCHANGED:  # needs a human: running the untouched script on N processes proves nothing
        lines = [f"{req.script.name}:{f.line}:{f.col}: {f.code} {f.message}" for f in refusals]
        return None, f"refused ({len(refusals)} MIG9xx finding(s)): {lines[0]}\n" + "\n".join(lines)
    return result.output, f"migrated to --target {req.target} ({result.status.value})"


def verify(req: Request, progress: Progress | None = None) -> Report:
    started = time.monotonic()
    report = Report(req)
    work = Path(tempfile.mkdtemp(prefix="migrate-verify-"))
    report.workdir = work
    try:
        _verify(req, report, work, progress or (lambda _msg, _run: None))
    finally:
        report.seconds = time.monotonic() - started
        if not req.keep:
            shutil.rmtree(work, ignore_errors=True)
    return report


def _one(req: Request, work: Path, label: str, text: str | None, devices: int,
         progress: Progress) -> Run:
    folder, audit = work / label, work / f"{label}.audit"
    audit.mkdir()
    script = copy_folder(req.script.parent, folder, req.script.name, text)
    args = list(req.script_args)
    if devices == 1:
        cmd, extra = [sys.executable, str(script), *args], {}
    else:
        cmd, extra = launch_cmd(req.target, script, args, devices, req.simulate_gpus)
    run = Run(label, cmd, folder, audit)
    env = child_env(audit, folder, single=devices == 1, simulate=req.simulate_gpus, devices=devices,
                    extra=extra)
    progress(label, None)
    execute(run, env, req.timeout)
    progress(label, run)
    return run


def _verify(req: Request, report: Report, work: Path, progress: Progress) -> None:
    add = report.checks.append
    text, message = _migrate(req)
    if req.migrated is None:
        first, *rest = message.splitlines() or [""]
        add(Check("migrate", text is not None, first, "\n".join(rest) if text is None else ""))
    original = _one(req, work, "original", None, 1, progress)
    report.runs.append(original)
    add(checks.exited("original exits 0 on 1 process", original, req.timeout))
    if req.simulate_gpus:
        add(checks.placement("placement: original on 1 simulated GPU", original))
    if text is None:
        return
    single = _one(req, work, "port-1", text, 1, progress)
    report.runs.append(single)
    add(checks.exited("port exits 0 on 1 process", single, req.timeout))
    add(checks.same_stdout("1-process stdout same as original", original.stdout, single.stdout))
    add(checks.same_files("1-process files same as original", original, single))
    if req.simulate_gpus:
        add(checks.placement("placement: port on 1 simulated GPU", single))
    many = _one(req, work, f"port-{req.devices}", text, req.devices, progress)
    report.runs.append(many)
    n = f"{req.devices} processes"
    add(checks.exited(f"port exits 0 on {n} ({req.target} launcher)", many, req.timeout))
    add(checks.rank_silent(f"{n}: ranks > 0 print nothing", many))
    add(checks.files_once(f"{n}: every file written once, by rank 0", many, single))
    add(checks.checkpoints_load(f"{n}: checkpoints load", many, original))
    if many.returncode == 0:
        add(checks.ranks_in_sync(f"{n}: parameters identical on all ranks", many))
    if req.simulate_gpus:
        add(checks.placement(f"placement: port on {req.devices} simulated GPUs", many))

"""The verify pipeline: copy, migrate, run the original / the port on 1 process / the port on N
processes, then check. No torch here: runs are child processes."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

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
    # The user's working directory: when SCRIPT lies under it (and it is not / or the home
    # folder), each run gets a copy of it and starts there, SCRIPT at its place inside; otherwise
    # a copy of SCRIPT's folder, started there.
    cwd: Path | None = None


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


def _migrate(req: Request) -> tuple[dict[str, str] | None, str]:
    """The port: {path relative to the script's folder: migrated text} (None on failure), and a
    message."""
    if req.migrated is not None:
        return {req.script.name: req.migrated.read_text()}, f"checking {req.migrated}"
    from migrator.verification.program import migrate_program

    return migrate_program(req.script, req.target, req.form)


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


def layout(req: Request) -> tuple[Path, str]:
    """The folder each run copies and starts in, and SCRIPT's path inside it (posix)."""
    cwd = req.cwd.resolve() if req.cwd is not None else None
    if cwd is not None and cwd not in (Path(cwd.anchor), Path.home().resolve()):
        try:
            return cwd, req.script.relative_to(cwd).as_posix()
        except ValueError:
            pass
    return req.script.parent, req.script.name


def _one(req: Request, work: Path, label: str, texts: dict[str, str] | None, devices: int,
         progress: Progress, modules: dict | None = None) -> Run:
    folder, audit = work / label, work / f"{label}.audit"
    audit.mkdir()
    root, rel = layout(req)
    where = PurePosixPath(rel).parent  # texts are relative to SCRIPT's folder
    texts = {(where / name).as_posix(): text for name, text in texts.items()} if texts else texts
    script = copy_folder(root, folder, rel, texts)
    args = list(req.script_args)
    if devices == 1:
        cmd, extra = [sys.executable, str(script), *args], {}
    else:
        cmd, extra = launch_cmd(req.target, script, args, devices, req.simulate_gpus)
    run = Run(label, cmd, folder, audit)
    if modules:  # the classes the original's checkpoints came from: the port's load into them
        extra = {**extra, "TM_VERIFY_MODULES": json.dumps(modules), "TM_VERIFY_STAMP": checks.STAMP.pattern}
    env = child_env(audit, folder, single=devices == 1, simulate=req.simulate_gpus, devices=devices,
                    extra=extra, code=script.parent if script.parent != folder else None)
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
    modules = checks.modules_saved(original)
    single = _one(req, work, "port-1", text, 1, progress, modules)
    report.runs.append(single)
    add(checks.exited("port exits 0 on 1 process", single, req.timeout))
    stdout = checks.same_stdout("1-process stdout same as original", original.stdout, single.stdout)
    files = checks.same_files("1-process files same as original", original, single)
    if not (stdout.passed and files.passed) and original.returncode == 0 and single.returncode == 0:
        # Is the original itself stable? Run it again (only now: parity that holds costs nothing).
        again = _one(req, work, "original-again", None, 1, progress)
        report.runs.append(again)
        if again.returncode == 0:
            stdout = checks.same_stdout(stdout.name, original.stdout, single.stdout, again.stdout)
            files = checks.same_files(files.name, original, single, again)
    add(stdout)
    add(files)
    if req.simulate_gpus:
        add(checks.placement("placement: port on 1 simulated GPU", single))
    many = _one(req, work, f"port-{req.devices}", text, req.devices, progress, modules)
    report.runs.append(many)
    n = f"{req.devices} processes"
    add(checks.exited(f"port exits 0 on {n} ({req.target} launcher)", many, req.timeout))
    add(checks.rank_silent(f"{n}: ranks > 0 print nothing", many))
    add(checks.files_once(f"{n}: every file written once, by rank 0", many, single))
    add(checks.checkpoints_load(f"{n}: checkpoints load into the original's model", many, original))
    add(checks.metrics_equal(f"{n}: rank 0 prints the 1-process metrics", single, many, req.devices))
    if many.returncode == 0:
        add(checks.ranks_in_sync(f"{n}: parameters identical on all ranks", many))
    if req.simulate_gpus:
        add(checks.placement(f"placement: port on {req.devices} simulated GPUs", many))

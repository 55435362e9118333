"""Run one bed script: the original, its migration, the port on 1 process and on 2 processes; judge each check.

The launch commands, environment and probe are the e2e tests' own (tests/conftest.py,
tests/e2e/_harness.py and its probe, which records each rank's file writes and moves rank > 0
stdout into a file), imported rather than copied; only their pytest-style failures are turned into
values here. Processes run through procs.run, not conftest.run_cmd, whose kill on timeout misses
torch elastic's workers (each in its own session) and then waits on their pipes forever.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# tests/ (the e2e harness) goes first, and the project root right after it: tests/migrator is a
# folder without __init__.py, and with the project installed editable (a meta-path finder, not
# a path entry) `import migrator` would otherwise resolve to that namespace folder
sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]

import pytest  # noqa: E402 - the harness reports its failed checks as pytest failures
from conftest import child_env, free_port  # noqa: E402
from e2e._harness import (  # noqa: E402
    PROBE,
    Run,
    check_ranks_started,
    files_in,
    launch_cmd,
    rank_stdout,
    read_probe,
    reports_match,
    writers,
)

from .bed import DISTRIBUTED, NOT_RUNNABLE, Spec  # noqa: E402
from .procs import error_line, failed, keep_log, run  # noqa: E402
from .program import program_files  # noqa: E402
from .results import (  # noqa: E402
    FAIL,
    PASS,
    SKIP,
    Check,
    Result,
    first_difference,
    normalise,
)

SHIMS = Path(__file__).resolve().parent / "shims"
CKPT_SIG = Path(__file__).resolve().parent / "ckpt_sig.py"
TARGETS = ("runtime", "fabric", "accelerate")
# the module form (issue 12): a port counts only when the loop was converted (MIG501); a file
# that falls back to the wrapper form is measured by the wrapper rows already
MODULE_TARGETS = ("runtime-module", "lightning")
MIGRATE_ARGS = {
    "runtime-module": ("--target", "runtime", "--form", "module"),
    "lightning": ("--target", "lightning"),
}
LAUNCHERS = {
    "runtime": "migrate run --devices 2",
    "fabric": "fabric run --accelerator cpu --devices 2",
    "accelerate": "ACCELERATE_USE_CPU=true torchrun --nproc-per-node 2",
    "runtime-module": "migrate run --devices 2",
    "lightning": "PL_TRAINER_DEVICES=2 PL_TRAINER_ACCELERATOR=cpu torchrun --nproc-per-node 2",
}
# what the module form's Trainer writes itself (resumable checkpoints, logs): not the script's
TRAINER_FILES = ("checkpoints/", "lightning_logs/", "logs/", "tensorboard/")
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".ckpt", ".tar", ".bin", ".model")

# ---------------------------------------------------------------- processes


def run_env(spec: Spec, probe_dir: Path | None = None, code: Path | None = None) -> dict[str, str]:
    """child_env plus the shims (and the probe, and torch-migrate's exported ``code``) first on
    PYTHONPATH, and the spec's variables."""
    env = child_env(DS_ACCELERATOR="cpu", **spec.env)  # else DeepSpeed (imported by
    # accelerate) logs "Setting accelerator to cpu" on stdout in every process, as in the e2e tests
    extra = [str(SHIMS)] + ([str(PROBE)] if probe_dir else []) + ([str(code)] if code else [])
    env["PYTHONPATH"] = os.pathsep.join([*extra, env["PYTHONPATH"]])
    if probe_dir:
        env["E2E_PROBE_DIR"] = str(probe_dir)
    return env


def new_files(cwd: Path, before: set[str]) -> set[str]:
    """Files created by the run (timestamps in names normalised, __pycache__ left out)."""
    return {normalise(f) for f in files_in(cwd) - before if "__pycache__" not in f.split("/")}


# ---------------------------------------------------------------- one bed script


class Bed:
    """Runs bed scripts in fresh copies under ``work`` from the exported sources ``sources``."""

    def __init__(
        self, sources: dict[str, Path], work: Path, timeout: float = 180, code: Path | None = None
    ) -> None:
        """``code``: an exported torch-migrate (sources.snapshot) to use instead of the install."""
        self.sources, self.work, self.timeout, self.code = sources, work, timeout, code

    def copy(
        self, spec: Spec, label: str, port: dict[str, str] | None = None
    ) -> tuple[Path, set[str]]:
        """A fresh copy of the spec's folder, ``port``'s files written over theirs, set up."""
        dest = self.work / slug(spec.name) / label
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(self.sources[spec.repo] / spec.folder, dest, symlinks=True)
        for rel, text in (port or {}).items():
            (dest / rel).write_text(text)
        if spec.setup:
            spec.setup(dest)
        return dest, files_in(dest)

    def original(self, spec: Spec) -> tuple[Result, dict]:
        """Run the original once; the dict keeps its stdout and files for the comparisons."""
        res = Result(spec.name, "original", spec.kind)
        if spec.kind in (DISTRIBUTED, NOT_RUNNABLE):
            return res, {}
        cwd, before = self.copy(spec, "original")
        proc = run(
            [sys.executable, spec.script, *spec.args],
            timeout=self.timeout,
            cwd=cwd,
            env=run_env(spec, code=self.code),
        )
        keep_log(cwd, proc)
        res.parity = Check(PASS) if proc.returncode == 0 else Check(FAIL, failed(proc))
        res.log = "" if proc.returncode == 0 else proc.stderr[-3000:]
        return res, {"proc": proc, "cwd": cwd, "files": new_files(cwd, before)}

    def deterministic(self, spec: Spec, orig: dict) -> bool:
        """Whether a second run of the original prints what the first printed (asked once)."""
        if "again" not in orig:
            cwd, _ = self.copy(spec, "original-again")
            orig["again"] = run(
                [sys.executable, spec.script, *spec.args],
                timeout=self.timeout,
                cwd=cwd,
                env=run_env(spec, code=self.code),
            )
        return first_difference(orig["proc"].stdout, orig["again"].stdout) is None

    def migrate(self, spec: Spec, target: str, res: Result) -> dict[str, str] | None:
        """Migrate a fresh copy as a user would: the script and the sibling modules it imports,
        named together (one program, docs/programs.md), rewritten in place. The ported files'
        texts by path, or None when there is nothing to run."""
        cwd, _ = self.copy(spec, f"{target}-migrate")
        files = program_files(cwd, spec.script)
        proc = run(
            [
                sys.executable,
                "-m",
                "migrator",
                *files,
                *MIGRATE_ARGS.get(target, ("--target", target)),
                "--write",
                "--format",
                "json",
            ],
            timeout=self.timeout,
            cwd=cwd,
            env=run_env(spec, code=self.code),
        )
        keep_log(cwd, proc)
        try:
            report = json.loads(proc.stdout)
        except json.JSONDecodeError:
            res.migrate = Check(FAIL, failed(proc))
            return None
        findings = [f for file in report["files"] for f in file.get("findings", [])]
        res.findings = len(findings)
        res.codes = sorted({f["code"] for f in findings if f["code"].startswith("MIG9")})
        entry = next((f for f in report["files"] if f["path"] == spec.script), None)
        entry = entry or (report["files"][0] if report["files"] else {})
        status = entry.get("status", "?")
        failed_files = [f["path"] for f in report["files"] if f.get("status") == "failed"]
        own = entry.get("findings", [])  # the script's own: its helpers have no loop to convert
        fell_back = [f for f in own if f["code"].startswith("MIG50") and f["code"] != "MIG501"]
        if target in MODULE_TARGETS and not res.codes and spec.kind not in (DISTRIBUTED, NOT_RUNNABLE) and (
            fell_back or not any(f["code"] == "MIG501" for f in own)
        ):
            why = fell_back[0] if fell_back else {"code": "", "message": "no training loop converted"}
            text = why["message"].split(": ", 1)[-1].split("; migrated in the wrapper form")[0]
            res.migrate = Check(FAIL, f"fell back ({why['code']}): {text}".strip())
            return None
        if res.codes:
            refused = f"refused ({', '.join(res.codes)})"
            res.migrate = Check(PASS if spec.kind == DISTRIBUTED else FAIL, refused)
            return None
        if spec.kind == DISTRIBUTED:
            res.migrate = Check(FAIL, f"ported ({status}) without a MIG9xx refusal")
        elif proc.returncode != 0 or failed_files:
            bad = next((f for f in report["files"] if f.get("status") == "failed"), entry)
            reason = bad.get("reason") or ""
            where = f" ({bad['path']})" if bad.get("path", spec.script) != spec.script else ""
            said = f"exit {proc.returncode}, {bad.get('status', status)}{where}: {reason}"
            res.migrate = Check(FAIL, said.strip())
            return None
        else:
            helpers = [
                f["path"]
                for f in report["files"]
                if f["path"] != spec.script and f.get("status") == "changed"
            ]
            res.migrate = Check(PASS, status + (f" (+ {', '.join(helpers)})" if helpers else ""))
        return {rel: (cwd / rel).read_text() for rel in files}

    def one_process(
        self, spec: Spec, target: str, port: dict[str, str], orig: dict, res: Result
    ) -> dict:
        cwd, before = self.copy(spec, f"{target}-1proc", port)
        proc = run(
            [sys.executable, spec.script, *spec.args],
            timeout=self.timeout,
            cwd=cwd,
            env=run_env(spec, code=self.code),
        )
        keep_log(cwd, proc)
        files = new_files(cwd, before)
        if target in MODULE_TARGETS:
            files = {f for f in files if not f.startswith(TRAINER_FILES)}
        if proc.returncode != 0:
            res.parity, res.log = Check(FAIL, failed(proc)), proc.stderr[-3000:]
        elif not orig or orig["proc"].returncode != 0:
            res.parity = Check(SKIP, "the original fails here; the port exits 0")
        elif diff := first_difference(orig["proc"].stdout, proc.stdout):
            if self.deterministic(spec, orig):
                res.parity = Check(FAIL, f"stdout differs, {diff}")
            else:
                res.parity = Check(
                    SKIP, "two runs of the original print different numbers (unseeded)"
                )
        elif files != orig["files"]:
            res.parity = Check(FAIL, file_diff(orig["files"], files, "original"))
        else:
            res.parity = Check(PASS)
        return {"proc": proc, "cwd": cwd, "files": files}

    def two_processes(
        self, spec: Spec, target: str, port: dict[str, str], one: dict, orig: dict, res: Result
    ) -> None:
        cwd, before = self.copy(spec, f"{target}-2proc", port)
        probe = self.work / slug(spec.name) / f"{target}-probe"
        shutil.rmtree(probe, ignore_errors=True)
        probe.mkdir(parents=True)
        env = run_env(spec, probe, self.code)
        script, timeout = cwd / spec.script, self.timeout
        # accelerate and Lightning run under torchrun (conftest.torchrun's command line);
        # Lightning's devices must equal the process count
        under_torchrun = {
            "accelerate": {"ACCELERATE_USE_CPU": "true"},
            "lightning": {"PL_TRAINER_DEVICES": "2", "PL_TRAINER_ACCELERATOR": "cpu"},
        }
        if target in under_torchrun:
            env.update(under_torchrun[target])
            cmd = [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--nproc-per-node=2",
                "--master-addr=127.0.0.1",
                f"--master-port={free_port()}",
                str(script),
                *spec.args,
            ]
        else:
            cmd = launch_cmd(
                "fabric" if target == "fabric" else "runtime.launch", script, spec.args
            )
        proc = run(cmd, timeout=timeout, cwd=cwd, env=env)
        keep_log(cwd, proc)
        ran = Run(proc, cwd, probe, read_probe(probe))
        try:
            check_ranks_started(ran, script)
            started = True
        except pytest.fail.Exception:
            started = False
        if proc.returncode != 0:
            res.complete = Check(FAIL, failed(proc))
            res.log = res.log or proc.stderr[-3000:]
        elif not started:
            res.complete = Check(FAIL, "exit 0 but ranks 0 and 1 did not both run the script")
        else:
            res.complete = Check(PASS)
        if started:
            said = rank_stdout(ran, "1")
            first = said.strip().splitlines()[0][:100] if said.strip() else ""
            res.silent = Check(FAIL, f"rank 1 printed {first!r}") if said else Check(PASS)
        if res.complete.status == PASS:
            res.files = self.files_once(
                ran, before, one if one["proc"].returncode == 0 else orig, spec,
                own=target in MODULE_TARGETS,
            )
            ref = one["proc"].stdout if one["proc"].returncode == 0 else None
            if ref is not None:
                diff = reports_match(normalise(ref), normalise(proc.stdout))
                res.same_numbers = (
                    Check(PASS) if diff is None else Check(FAIL, diff.splitlines()[0])
                )

    def files_once(
        self, ran: Run, before: set[str], ref: dict, spec: Spec, own: bool = False
    ) -> Check:
        """Same files as the 1-process run, each written by rank 0 only, checkpoints alike
        (``own``: the module form's Trainer files are not compared, only their writers)."""
        if not ref:
            return Check(SKIP, "no 1-process run to compare with")
        found = new_files(ran.cwd, before)
        if own:
            found = {f for f in found if not f.startswith(TRAINER_FILES)}
        if found != ref["files"]:
            return Check(FAIL, file_diff(ref["files"], found, "1 process"))
        foreign = {
            normalise(rel): sorted(ranks)
            for rel, ranks in writers(ran).items()
            if ranks != {"0"} and rel in files_in(ran.cwd) - before
        }
        if foreign:
            rel, ranks = next(iter(sorted(foreign.items())))
            return Check(
                FAIL,
                f"{rel} written by ranks {','.join(ranks)}"
                + (f" (+{len(foreign) - 1} more)" if len(foreign) > 1 else ""),
            )
        mine = {normalise(f): f for f in files_in(ran.cwd) - before}
        theirs = {normalise(f): f for f in files_in(ref["cwd"])}
        ckpts = sorted(n for n in found if n.endswith(CHECKPOINT_SUFFIXES))
        if ckpts:
            a = signatures(ran.cwd, [mine[n] for n in ckpts], spec, self.code)
            b = signatures(ref["cwd"], [theirs[n] for n in ckpts], spec, self.code)
            for n in ckpts:
                sa, sb = a.get(mine[n]), b.get(theirs[n])
                if isinstance(sa, str) and sa.startswith("error"):
                    return Check(FAIL, f"{n} does not load: {sa}")
                if sa != sb:
                    return Check(FAIL, f"{n} differs in structure from the 1-process file")
        return Check(PASS, f"{len(found)} files, {len(ckpts)} checkpoints")

    def script_result(self, spec: Spec, targets: tuple[str, ...], progress) -> list[Result]:
        """The original and every target for one spec; ``progress(result)`` after each."""
        start = time.monotonic()
        orig_res, orig = self.original(spec)
        orig_res.seconds = time.monotonic() - start
        progress(orig_res)
        results = [orig_res]
        for target in targets:
            start = time.monotonic()
            res = Result(spec.name, target, spec.kind)
            port = self.migrate(spec, target, res)
            if port is not None and spec.kind not in (DISTRIBUTED, NOT_RUNNABLE):
                one = self.one_process(spec, target, port, orig, res)
                self.two_processes(spec, target, port, one, orig, res)
            res.seconds = time.monotonic() - start
            progress(res)
            results.append(res)
        return results


def file_diff(expected: set[str], found: set[str], what: str) -> str:
    missing, extra = sorted(expected - found), sorted(found - expected)
    parts = ([f"missing {missing[:3]}"] if missing else []) + (
        [f"extra {extra[:3]}"] if extra else []
    )
    return f"files differ from the {what} run: " + ", ".join(parts)


def signatures(cwd: Path, files: list[str], spec: Spec, code: Path | None) -> dict:
    """ckpt_sig.py's structures of ``files``, loaded with the script's folder importable."""
    env = run_env(spec, code=code)
    script_dir = (cwd / spec.script).parent
    env["PYTHONPATH"] = os.pathsep.join([str(script_dir), str(cwd), env["PYTHONPATH"]])
    proc = run([sys.executable, str(CKPT_SIG), *files], timeout=120, cwd=cwd, env=env)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return {f: f"error: {error_line(proc)}" for f in files}


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")

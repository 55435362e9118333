"""The `migrate PATH...` run as a plain function: config, discovery, batch, report, output."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from migrator.report import Report

PROGRESS_MIN_FILES = 20  # below this a progress counter only flickers


class UsageError(Exception):
    """A bad command line or configuration: printed as one line, exit status 2."""


@dataclass(frozen=True)
class Request:
    """Everything the command line asked for (after click parsed it)."""

    paths: tuple[str, ...]
    target: str | None = None
    form: str | None = None
    check: bool = False
    diff: bool = False
    write: bool = False
    output: str | None = None
    fmt: str = "text"
    select: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    extend_exclude: tuple[str, ...] = ()
    force_exclude: bool = False
    config: str | None = None
    stdin_filename: str | None = None
    jobs: int | None = None
    quiet: int = 0  # 1: -q (report only), 2: -qq / --silent (nothing but code)
    verbose: bool = False


def _validate(req: Request) -> None:
    if not req.paths:
        raise UsageError("no paths given (try 'migrate train.py' or 'migrate --help')")
    if req.check and req.write:
        raise UsageError("--check reports and --write rewrites: use one of them")
    if req.output and (req.write or req.check):
        raise UsageError("-o/--output cannot be combined with --write or --check")
    if req.diff and req.write:
        raise UsageError("--diff prints a patch and writes nothing: drop --diff or --write")
    if req.diff and req.fmt in ("github", "sarif"):
        raise UsageError(f"--diff cannot be combined with --format {req.fmt} (use text or json)")
    if "-" in req.paths and len(req.paths) > 1:
        raise UsageError("'-' (stdin) cannot be combined with other paths")


def _out_paths(req: Request, cands: list) -> tuple[tuple[str, str], ...]:
    """Where ``-o`` puts each input: the file itself, or the mirrored tree under a directory."""
    if not req.output:
        return ()
    out = Path(req.output)
    several = len(req.paths) > 1 or any(os.path.isdir(p) for p in req.paths)
    if not several and not out.is_dir():
        return tuple((c.display, str(out)) for c in cands[:1])
    if out.exists() and not out.is_dir():
        raise UsageError(f"-o {req.output}: several inputs need a directory, not a file")
    from migrator.config import common_base

    base = common_base(list(req.paths))
    return tuple(
        (c.display, str(out / os.path.relpath(c.path, base))) for c in cands if not c.is_stdin
    )


def execute(req: Request) -> int:
    """Run the migration the request describes; returns the exit status."""
    from migrator.batch import Job, run
    from migrator.config import (
        ConfigError,
        discover_config,
        exclude_patterns,
        resolve_options,
    )
    from migrator.files import Candidate, discover
    from migrator.output import Terminal

    _validate(req)
    default_mode = not (req.check or req.write or req.output or req.diff)
    show_diff = req.diff or (default_mode and req.fmt == "text")
    keep_output = req.write and "-" in req.paths  # `migrate --write -`: the code on stdout
    term = Terminal(req.fmt, show_diff=show_diff and req.fmt == "text",  # json: in the document
                    code_on_stdout=keep_output, quiet=req.quiet, verbose=req.verbose)
    try:
        config = discover_config(list(req.paths), Path(req.config) if req.config else None)
        options = resolve_options(
            config, target=req.target, form=req.form, select=req.select, ignore=req.ignore
        )
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    for warning in config.warnings:
        term.warning(warning)
    root = config.root or Path.cwd()
    excludes = exclude_patterns(config, req.exclude, req.extend_exclude)
    force = req.force_exclude or bool(config.force_exclude)
    cands = list(discover(req.paths, root=root, exclude=excludes, force_exclude=force))
    if not cands:  # black and ruff: say so, exit 0 (nothing to do is not a failure)
        forced = " (--force-exclude applies the excludes to them)" if force else ""
        term.warning(f"no Python files found in {' '.join(req.paths)}{forced}; nothing to do")
    if req.stdin_filename and cands and cands[0].is_stdin:
        cands[0] = Candidate(cands[0].path, "-", True)
    job = Job(
        options=options,
        write=req.write,
        diff=show_diff or (req.fmt == "json" and req.diff),
        keep_output=keep_output,
        out_paths=_out_paths(req, cands),
    )
    report = Report(check=req.check, write=req.write or bool(req.output))
    progress = term.progress if len(cands) >= PROGRESS_MIN_FILES else None
    stdin = _read_stdin() if "-" in req.paths else None
    for outcome in run(cands, job, jobs=req.jobs, on_progress=progress, stdin=stdin):
        if req.stdin_filename and outcome.path == "-":
            from dataclasses import replace

            outcome = replace(outcome, path=req.stdin_filename)
        report.add(outcome)
        term.file(outcome)
        if job.keep_output:  # `migrate --write -`: the result (or the input as it was) to stdout
            if outcome.output is not None:
                term.stdout_text(outcome.output)
            else:
                term.stdout_bytes(stdin or b"")
    term.finish(report, document=_document(req, report, options))
    return report.exit_code


def _document(req: Request, report: Report, options) -> str | None:
    if req.fmt == "json":
        from migrator.formats.jsonfmt import render

        mode = "check" if req.check else "write" if req.write else "output" if req.output else "diff"
        return render(report, target=options.target, form=options.form, mode=mode,
                      with_diff=req.diff)
    if req.fmt == "sarif":
        from migrator.formats.sarif import render as sarif

        return sarif(report)
    return None


def _read_stdin() -> bytes:
    import sys

    return sys.stdin.buffer.read()

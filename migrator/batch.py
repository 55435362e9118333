"""Run the migration over many inputs: read, migrate, verify, write; in parallel when it pays."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from migrator.fileio import Decoded, InputError, Skip, decode, read_bytes, write_atomic, write_new
from migrator.files import Candidate
from migrator.options import Options
from migrator.program import Role
from migrator.results import Finding, Status

# Below this many files a process pool costs more (start-up, pickling) than it saves.
MIN_FILES_FOR_POOL = 4


@dataclass(frozen=True)
class Job:
    """What to do with every input (one value, sent to worker processes)."""

    options: Options = field(default_factory=Options)
    write: bool = False  # rewrite in place
    diff: bool = False  # compute a unified diff
    keep_output: bool = False  # return the migrated text (stdin, -o)
    out_paths: tuple[tuple[str, str], ...] = ()  # display path -> -o destination
    prefilter: bool = True  # skip files that never mention torch


@dataclass(frozen=True)
class Outcome:
    """What happened to one input; small and picklable (no source text unless asked)."""

    path: str
    status: Status
    findings: tuple[Finding, ...] = ()
    reason: str | None = None
    traceback: str | None = None
    internal_error: bool = False
    diff: str = ""
    output: str | None = None
    written: bool = False
    explicit: bool = True
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def changed(self) -> bool:
        return self.status is Status.CHANGED


def _failed(path: str, err: InputError, explicit: bool = True) -> Outcome:
    finding = Finding(err.line, err.col, err.code, err.message, fixed=False)
    return Outcome(path, Status.FAILED, (finding,), reason=err.message, explicit=explicit)


def prepare(cand: Candidate, job: Job, stdin: bytes | None = None) -> Outcome | Decoded:
    """Read and decode one input in the parent: cheap, and it keeps skipped files off the pool."""
    if cand.error:
        return _failed(cand.display, InputError("MIG003", cand.error))
    try:
        if cand.is_stdin:
            data, stat = (stdin if stdin is not None else sys.stdin.buffer.read()), None
        else:
            data, stat = read_bytes(cand.path)
        return decode(data, stat, prefilter=job.prefilter)
    except Skip as skip:
        return Outcome(cand.display, Status.SKIPPED, reason=skip.reason, explicit=cand.explicit)
    except InputError as err:
        return _failed(cand.display, err, cand.explicit)


def migrate_one(cand: Candidate, decoded: Decoded, job: Job, role: Role | None = None) -> Outcome:
    """Migrate one decoded input and carry out the job's writes; never raises."""
    try:
        return _migrate(cand, decoded, job, role)
    except Exception:  # noqa: BLE001 - one file's bug must not stop the run: report it as MIG009
        import traceback

        tb = traceback.format_exc()
        return _internal(cand.display, "internal error: " + tb.strip().splitlines()[-1], tb)


def _internal(path: str, message: str, tb: str | None) -> Outcome:
    finding = Finding(1, 1, "MIG009", message, fixed=False)
    return Outcome(path, Status.FAILED, (finding,), message, tb, internal_error=True)


def _migrate(cand: Candidate, decoded: Decoded, job: Job, role: Role | None) -> Outcome:
    from migrator import suppressions
    from migrator.engine import migrate_source

    text = decoded.text
    supp = suppressions.parse(text)
    if supp.skip_file:
        return Outcome(cand.display, Status.SKIPPED, reason="'# migrate: skip-file' comment")
    rewrite = job.write or job.diff or job.keep_output or bool(job.out_paths)
    options = job.options if role is None else replace(job.options, role=role)
    result = _without_gc(migrate_source, text, cand.display, options, rewrite=rewrite)
    if result.status is Status.FAILED:
        if result.internal_error:
            reason = result.reason or "the pipeline failed"
            if not reason.startswith("internal error"):
                reason = f"internal error: {reason}"
            return _internal(cand.display, reason, result.traceback)
        return _bad_source(cand.display, text, result)
    findings = [
        f for f in result.findings
        if job.options.wants(f.code) and not supp.suppressed(f.code, f.line)
    ]
    findings += [
        Finding(line, 1, "MIG004", f"'{entry}' in '# migrate: ignore[...]' is not a MIG code "
                "or prefix; write e.g. ignore[MIG201] or ignore[MIG2]", fixed=False)
        for line, entry in supp.invalid
        if job.options.wants("MIG004")
    ]
    output = result.output
    changed = output != text if rewrite else result.changed
    outcome = Outcome(
        cand.display,
        Status.CHANGED if changed else Status.UNCHANGED,
        tuple(sorted(findings)),
        reason=result.reason,
        explicit=cand.explicit,
        extra=result.extra,
    )
    if changed and (job.write or job.out_paths):
        problem = _unsafe(output, cand.display)
        if problem:  # belt and braces: the engine verifies too; never write a broken file
            return _internal(cand.display, problem, None)
    if job.diff and changed:
        from migrator.formats.diff import unified_diff

        outcome = replace(outcome, diff=unified_diff(text, output, _diff_path(cand.display)))
    if job.keep_output:
        outcome = replace(outcome, output=output)
    try:
        if job.write and changed and not cand.is_stdin:
            write_atomic(cand.path, output, decoded)
            outcome = replace(outcome, written=True)
        destination = dict(job.out_paths).get(cand.display)
        if destination:
            write_new(Path(destination), output, decoded.encoding)
            outcome = replace(outcome, written=True)
    except InputError as err:
        return _failed(cand.display, err, cand.explicit)
    return outcome


def _without_gc(func: Callable, *args: object, **kwargs: object):
    """Call ``func`` with the cyclic GC paused.

    libcst builds hundreds of thousands of small objects per file; each young-generation
    overflow triggers collections whose full passes walk every live node, so parse time per
    line grew with file size. The CST holds almost no reference cycles, so pausing the
    collector for one file costs little memory; collecting afterwards frees what cycles
    there are. See docs/internals.md, "Performance notes".
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return func(*args, **kwargs)
    finally:
        if was_enabled:
            gc.enable()


def _unsafe(output: str, path: str) -> str | None:
    try:
        compile(output, path, "exec", dont_inherit=True)
    except (SyntaxError, ValueError) as exc:
        return f"internal error: migrated output does not compile ({exc}); file not written"
    return None


def _bad_source(path: str, text: str, result) -> Outcome:
    """A parse failure: one MIG001 line with CPython's position and reason."""
    line, col, message = 1, 1, result.reason or "cannot parse"
    try:
        compile(text, path, "exec", flags=0x400, dont_inherit=True)  # ast.PyCF_ONLY_AST
    except SyntaxError as exc:
        line, col = exc.lineno or 1, exc.offset or 1
        message = f"syntax error: {exc.msg}"
        hint = _python2_hint(exc.msg)
        if hint:
            message += f" ({hint})"
    except ValueError as exc:  # e.g. NUL bytes slipped through a codec
        message = f"cannot parse: {exc}"
    finding = Finding(line, col, "MIG001", message, fixed=False)
    return Outcome(path, Status.FAILED, (finding,), reason=message)


def _python2_hint(msg: str) -> str | None:
    markers = (
        "Missing parentheses in call to 'print'",
        "Missing parentheses in call to 'exec'",
        "multiple exception types must be parenthesized",
        "leading zeros in decimal integer literals",
    )
    if any(m in msg for m in markers):
        return "this looks like Python 2 code; port it to Python 3 first"
    return None


def _diff_path(display: str) -> str:
    if display == "-":
        return "stdin"
    rel = os.path.relpath(display) if os.path.isabs(display) else display
    return Path(rel).as_posix()


def run(
    cands: Sequence[Candidate],
    job: Job,
    *,
    jobs: int | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    stdin: bytes | None = None,
) -> Iterator[Outcome]:
    """Outcomes for ``cands`` in input order; files that need migrating go to a pool if many."""
    todo: list[tuple[int, Candidate, Decoded]] = []
    ready: dict[int, Outcome] = {}
    for i, cand in enumerate(cands):
        prepared = prepare(cand, job, stdin)
        if isinstance(prepared, Outcome):
            ready[i] = prepared
        else:
            todo.append((i, cand, prepared))
    total, done = len(cands), len(ready)
    todo = _with_roles(todo, job)
    workers = min(jobs or os.cpu_count() or 1, len(todo))
    if workers > 1 and len(todo) >= MIN_FILES_FOR_POOL:
        results = _pooled(todo, job, workers)
    else:
        results = ((i, migrate_one(c, d, job, r)) for i, c, d, r in todo)
    next_index = 0
    for i, outcome in results:
        ready[i] = outcome
        done += 1
        if on_progress:
            on_progress(done, total)
        while next_index in ready:
            yield ready.pop(next_index)
            next_index += 1
    while next_index in ready:
        yield ready.pop(next_index)
        next_index += 1


def _with_roles(todo: list, job: Job) -> list:
    """(index, candidate, decoded, role) per file. Several files are one program: helper
    modules borrow the entry script's wrapper (``migrator.program``)."""
    if len(todo) < 2 or job.options.form == "module":
        return [(*item, None) for item in todo]
    from migrator.engine import wrapper_needs
    from migrator.program import resolve

    def needs(path: str, source: str) -> dict[str, set[str]]:
        return _without_gc(wrapper_needs, source, path, job.options)

    roles = resolve({c.display: d.text for _, c, d in todo}, needs)
    return [(i, c, d, roles.get(c.display)) for i, c, d in todo]


def _work(item: tuple[int, Candidate, Decoded], job: Job) -> tuple[int, Outcome]:
    i, cand, decoded, role = item
    return i, migrate_one(cand, decoded, job, role)


def _pooled(todo: list, job: Job, workers: int) -> Iterator[tuple[int, Outcome]]:
    from concurrent.futures import ProcessPoolExecutor
    from functools import partial

    chunk = max(1, min(16, len(todo) // (workers * 8)))
    with ProcessPoolExecutor(max_workers=workers, initializer=_exit_with_parent) as pool:
        yield from pool.map(partial(_work, job=job), todo, chunksize=chunk)


def _exit_with_parent() -> None:
    """Pool worker start-up: exit once the CLI process is gone.

    A SIGKILLed parent leaves its workers blocked on the task queue forever (orphans that
    never exit); writes are atomic, so leaving mid-task loses nothing.
    """
    import threading
    import time

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()

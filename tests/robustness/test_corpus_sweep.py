"""Sweep every target over every .py file of the installed torch package: nothing breaks."""

from __future__ import annotations

import concurrent.futures as cf
import importlib.util
import multiprocessing
import os
import signal
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from migrator.results import Status

from ._support import check_output, require_target, target_params

WORKERS = 2
# Per (file, target) limit in CPU seconds of the worker (CPU, not wall: CI runs other tests
# beside the sweep, and contention must not turn a slow file into a "hang"). The largest torch
# file (common_methods_invocations.py, 27,820 lines) takes ~55 CPU-s today; an endless loop
# burns CPU and is caught; a worker stuck without CPU is caught by the stall watchdog below.
FILE_LIMIT_S = 180
# Files go to workers in chunks of about this many bytes (a big file alone), so that no
# chunk holds several slow files and the stall watchdog below stays tight.
CHUNK_BYTES = 200_000


class FileTimeout(BaseException):
    """Raised by the alarm inside a worker; BaseException so the engine's handlers let it pass."""


@dataclass
class FileRecord:
    """What one worker learnt about one file, for every target."""

    path: str
    lines: int
    seconds: dict[str, float] = field(default_factory=dict)
    statuses: dict[str, str] = field(default_factory=dict)
    problems: dict[str, list[str]] = field(default_factory=dict)


def corpus_files() -> list[Path]:
    """Every .py file of the installed torch package, found without importing torch."""
    spec = importlib.util.find_spec("torch")
    assert spec is not None and spec.origin, "torch is not installed: the corpus sweep needs its sources"
    root = Path(spec.origin).parent
    return sorted(root.rglob("*.py"))


def _on_alarm(signum, frame):
    raise FileTimeout()


def _sweep_chunk(paths: list[str], targets: list[str]) -> list[FileRecord]:
    """Worker: migrate each file for each target and check every invariant."""
    signal.signal(signal.SIGPROF, _on_alarm)
    records = []
    for path in paths:
        raw = Path(path).read_bytes()
        source = raw.decode("utf-8")
        record = FileRecord(path=path, lines=raw.count(b"\n"))
        valid = _compiles(source, path)
        for target in targets:
            started = time.perf_counter()
            signal.setitimer(signal.ITIMER_PROF, FILE_LIMIT_S)
            try:
                result, problems = check_output(source, path, target)
                if result.status is Status.FAILED and not result.internal_error and valid:
                    problems.append(f"FAILED as bad input, but the file is valid Python: {result.reason}")
                if result.status is Status.UNCHANGED and not valid:
                    problems.append(
                        "UNCHANGED for a file this Python cannot compile (so the output does not"
                        " compile either): expected FAILED with a reason"
                    )
                record.statuses[target] = result.status.value
            except FileTimeout:
                problems = [f"took more than {FILE_LIMIT_S} CPU-s (pathological input or a hang)"]
                record.statuses[target] = "timeout"
            except Exception:  # noqa: BLE001 - an escaping exception is itself the failure
                problems = ["exception escaped migrate_source:\n" + traceback.format_exc()[-3000:]]
                record.statuses[target] = "raised"
            finally:
                signal.setitimer(signal.ITIMER_PROF, 0)
            record.seconds[target] = time.perf_counter() - started
            if problems:
                record.problems[target] = problems
        records.append(record)
    return records


def _compiles(source: str, path: str) -> bool:
    """Whether this Python compiles the text (torch ships a few files for newer Pythons)."""
    try:
        compile(source, path, "exec", dont_inherit=True)
    except SyntaxError:
        return False
    return True


def _kill_workers() -> None:
    """Kill the pool's worker processes (our own children) so a hang cannot outlive the test."""
    for child in multiprocessing.active_children():
        os.kill(child.pid, signal.SIGKILL)


def _chunks(files: list[Path]) -> list[list[str]]:
    """Biggest files first (the tail stays short), grouped up to ``CHUNK_BYTES`` per chunk."""
    chunks: list[list[str]] = []
    size = CHUNK_BYTES
    for path in sorted(files, key=lambda p: p.stat().st_size, reverse=True):
        n = path.stat().st_size
        if size + n > CHUNK_BYTES or len(chunks[-1]) >= 16:
            chunks.append([])
            size = 0
        chunks[-1].append(str(path))
        size += n
    return chunks


def run_sweep(files: list[Path], targets: list[str]) -> tuple[list[FileRecord], float]:
    """Run the sweep on ``WORKERS`` processes, biggest files first so the tail stays short."""
    chunks = _chunks(files)
    # Chunks are small (one big file, or a few small ones), so one normally finishes within a
    # file's limit; none finishing for this long means a worker is stuck where the alarm
    # cannot reach it (native code): kill the pool and name the files in flight.
    stall_limit = 2 * FILE_LIMIT_S * len(targets) + 60
    started = time.perf_counter()
    records: list[FileRecord] = []
    ctx = multiprocessing.get_context("fork" if hasattr(os, "fork") else "spawn")
    pool = cf.ProcessPoolExecutor(max_workers=WORKERS, mp_context=ctx)
    finished = False
    try:
        pending = {pool.submit(_sweep_chunk, chunk, targets): chunk for chunk in chunks}
        while pending:
            done, _ = cf.wait(pending, timeout=stall_limit, return_when=cf.FIRST_COMPLETED)
            if not done:
                running = [c for f, c in pending.items() if f.running()]
                pytest.fail(f"no progress for {stall_limit}s; chunks in flight: {running}")
            for future in done:
                records += future.result()
                del pending[future]
        finished = True
    finally:
        if not finished:  # failed, or pytest-timeout fired: no worker may outlive the test
            _kill_workers()
        pool.shutdown(wait=finished, cancel_futures=True)
    return records, time.perf_counter() - started


# The whole corpus x every target costs ~3.5 CPU-minutes per target at today's engine speed
# (docs/performance.md): all three are ~5 minutes of a 2-core CI run, too much beside the rest
# of the suite. By default each target sweeps its own deterministic share: file i goes to
# target i % STRIDE when that is the target's index, so with STRIDE == number of targets every
# file of the corpus is swept once per CI run, through exactly one target, the same files on
# every run. TORCH_MIGRATE_FULL_SWEEP=1 sweeps every file for every target (the release check).
FULL_SWEEP = os.environ.get("TORCH_MIGRATE_FULL_SWEEP") == "1"
STRIDE = 3


def selected_files(files: list[Path], target: str) -> list[Path]:
    """The files ``target`` sweeps: all of them under FULL_SWEEP, else its share."""
    if FULL_SWEEP:
        return files
    offset = target_params().index(target) % STRIDE
    return [f for i, f in enumerate(files) if i % STRIDE == offset]


@pytest.mark.parametrize("target", target_params())
def test_corpus_sweep(target: str, capsys) -> None:
    """Zero internal errors; outputs compile and are fixed points; untouched files byte-identical."""
    require_target(target)
    corpus = corpus_files()
    assert len(corpus) > 1000, f"only {len(corpus)} torch sources found: not the real corpus"
    files = selected_files(corpus, target)
    assert files, f"no corpus files selected for {target}"
    records, wall = run_sweep(files, [target])
    failures = [(r.path, p) for r in records for p in r.problems.get(target, [])]
    statuses = Counter(r.statuses[target] for r in records)
    busy = sum(r.seconds[target] for r in records)
    slowest = max(records, key=lambda r: r.seconds[target])
    with capsys.disabled():
        print(
            f"\n[corpus sweep] target={target}: {len(records)} of {len(corpus)} torch files"
            f"{'' if FULL_SWEEP else ' (CI share; TORCH_MIGRATE_FULL_SWEEP=1 sweeps all)'}, "
            f"{sum(r.lines for r in records):,} lines in {wall:.1f} s wall on {WORKERS} processes "
            f"({busy:.1f} s of worker time in migrate_source and the checks); "
            f"statuses {dict(statuses)}; slowest {slowest.seconds[target]:.1f} s "
            f"({Path(slowest.path).name}, {slowest.lines} lines)"
        )
    if failures:
        shown = "\n\n".join(f"{path}:\n{problem}" for path, problem in failures[:5])
        pytest.fail(f"{len(failures)} problems over {len(records)} files for target {target}; first:\n{shown}")

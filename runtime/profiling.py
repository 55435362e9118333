"""Trainer profilers: per-hook wall times ("simple") or a torch.profiler trace ("pytorch")."""

from __future__ import annotations

import contextlib
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class Profiler:
    """No-op profiler: the trainer wraps every hook in ``profile(name)``."""

    @contextlib.contextmanager
    def profile(self, name: str) -> Iterator[None]:
        """Time the block under ``name``."""
        yield

    def start(self) -> None:
        """Called when ``fit`` starts."""

    def step(self) -> None:
        """Called after every training batch."""

    def summary(self) -> str:
        """Human-readable report ("" when there is nothing to say)."""
        return ""

    def stop(self, is_global_zero: bool) -> str:
        """End profiling; rank 0 returns the summary (also written under ``dirpath``)."""
        return ""


class SimpleProfiler(Profiler):
    """Wall time per hook (``training_step``, ``backward``, ``optimizer_step``, ...).

    The summary lists, per name, the call count, mean and total seconds and the share of
    the whole ``fit``; rank 0 writes it to ``<dirpath>/simple.txt``.
    """

    def __init__(self, dirpath: str | os.PathLike | None = None) -> None:
        self.dirpath = Path(dirpath) if dirpath is not None else None
        self.durations: dict[str, list[float]] = defaultdict(list)
        self._start = time.perf_counter()

    @contextlib.contextmanager
    def profile(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.durations[name].append(time.perf_counter() - t0)

    def start(self) -> None:
        self._start = time.perf_counter()

    def summary(self) -> str:
        total = max(time.perf_counter() - self._start, 1e-9)
        rows = sorted(self.durations.items(), key=lambda kv: -sum(kv[1]))
        lines = [f"{'hook':<28}{'calls':>8}{'mean s':>12}{'total s':>12}{'% of fit':>10}"]
        for name, times in rows:
            s = sum(times)
            lines.append(f"{name:<28}{len(times):>8}{s / len(times):>12.6f}{s:>12.4f}"
                         f"{100 * s / total:>10.1f}")
        lines.append(f"{'fit total':<28}{'':>8}{'':>12}{total:>12.4f}{100.0:>10.1f}")
        return "\n".join(lines)

    def stop(self, is_global_zero: bool) -> str:
        if not is_global_zero:
            return ""
        text = self.summary()
        if self.dirpath is not None:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            (self.dirpath / "simple.txt").write_text(text + "\n")
        return text


class PyTorchProfiler(Profiler):
    """``torch.profiler`` over the training batches; Chrome traces in ``dirpath``.

    Records ``wait`` skipped, ``warmup`` warm-up and ``active`` recorded batches (once);
    each hook appears as a ``record_function`` range in the trace. Every process writes its
    own trace file; rank 0 also writes ``<dirpath>/key_averages.txt``.
    """

    def __init__(self, dirpath: str | os.PathLike, wait: int = 1, warmup: int = 1,
                 active: int = 3) -> None:
        import torch

        self.dirpath = Path(dirpath)
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self._torch = torch
        self._prof = torch.profiler.profile(
            activities=activities,
            schedule=torch.profiler.schedule(wait=wait, warmup=warmup, active=active, repeat=1),
            on_trace_ready=self._write_trace,
            record_shapes=False,
        )
        self._running = False

    def _write_trace(self, prof: Any) -> None:
        self.dirpath.mkdir(parents=True, exist_ok=True)
        rank = os.environ.get("RANK", "0")
        prof.export_chrome_trace(str(self.dirpath / f"trace_rank{rank}_{os.getpid()}.json"))

    @contextlib.contextmanager
    def profile(self, name: str) -> Iterator[None]:
        if not self._running:
            yield
            return
        with self._torch.profiler.record_function(name):
            yield

    def start(self) -> None:
        self._prof.start()
        self._running = True

    def step(self) -> None:
        if self._running:
            self._prof.step()

    def stop(self, is_global_zero: bool) -> str:
        if not self._running:
            return ""
        self._running = False
        self._prof.stop()
        if not is_global_zero:
            return ""
        try:
            text = self._prof.key_averages().table(sort_by="cpu_time_total", row_limit=20)
        except (AssertionError, RuntimeError):  # nothing recorded (fewer batches than wait+warmup)
            text = ""
        if text:
            self.dirpath.mkdir(parents=True, exist_ok=True)
            (self.dirpath / "key_averages.txt").write_text(text + "\n")
        return text


def make_profiler(profiler: str | Profiler | None, root: str | os.PathLike) -> Profiler:
    """``None`` -> no-op, ``"simple"``, ``"pytorch"`` (traces to ``<root>/profiler``), or as is."""
    if profiler is None:
        return Profiler()
    if isinstance(profiler, Profiler):
        return profiler
    dirpath = Path(root) / "profiler"
    if profiler == "simple":
        return SimpleProfiler(dirpath)
    if profiler == "pytorch":
        return PyTorchProfiler(dirpath)
    raise ValueError(f"profiler={profiler!r}: use None, 'simple', 'pytorch' or a Profiler")

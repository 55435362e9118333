"""Migrator speed: corpus throughput, single-file latency, time per kloc; TorchFix side by side.

Usage: python benchmarks/migrator_speed.py [--files N] [--jobs 2] [--repeat 5] [--kloc-repeat 3]
       [--sizes 1000,3000,10000,30000] [--skip-corpus] [--torchfix PATH]

The migrator's modules are byte-compiled first, as an installed package's are. Shared
machines are noisy: every number is a median of repeated runs, and CPU time
(user+sys, children included) is printed next to wall time. TorchFix runs side by side when
a ``torchfix`` executable is on PATH; otherwise the ratios use the baseline measured in the
issue (TorchFix 0.7: 600-700 s for the 2,285 torch files with 2 processes, ~510 ms for one
file) and say so (TorchFix 0.7 pins libcst 1.5: install it in its own venv and pass
``--torchfix /path/to/venv/bin/torchfix``). Results go to stdout as a markdown table (docs/performance.md).
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SNIPPET = '''
class Net{i}(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(32, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def train{i}(model, device, loader, optimizer, epoch):
    model.train()
    for batch_idx, (data, target) in enumerate(loader):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.cross_entropy(output, target)
        loss.backward()
        optimizer.step()
        if batch_idx % 10 == 0:
            print(f"epoch {{epoch}} batch {{batch_idx}} loss {{loss.item():.4f}}")
'''
HEADER = "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n"
# TorchFix 0.7 as measured in the issue (2-core machine, 2 processes), used when it is absent.
TORCHFIX_FILES_PER_S = 2285 / 650
TORCHFIX_LATENCY_S = 0.510


def synthetic(lines: int) -> str:
    """Realistic training code (model classes + training loops) of about ``lines`` lines."""
    parts, i, n = [HEADER], 0, HEADER.count("\n")
    while n < lines:
        part = SNIPPET.format(i=i)
        parts.append(part)
        n += part.count("\n")
        i += 1
    return "".join(parts)


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd: list[str], timeout: float = 3600) -> tuple[float, float, int]:
    """(wall s, CPU s of the child and its workers, exit status)."""
    cpu0, t0 = child_cpu(), time.perf_counter()
    done = subprocess.run(
        cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, timeout=timeout
    )
    return time.perf_counter() - t0, child_cpu() - cpu0, done.returncode


def median_run(cmd: list[str], repeat: int) -> tuple[float, float, int]:
    runs = [timed(cmd) for _ in range(repeat)]
    return (
        statistics.median(r[0] for r in runs),
        statistics.median(r[1] for r in runs),
        runs[-1][2],
    )


def torch_files(n: int | None) -> tuple[Path, list[Path]]:
    import importlib.util

    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.origin:
        sys.exit("torch is not installed: the corpus is the installed torch package's sources")
    src = Path(spec.origin).parent
    files = sorted(src.rglob("*.py"))
    if n:
        files = random.Random(0).sample(files, min(n, len(files)))
    return src, files


def corpus_copy(src: Path, files: list[Path]) -> Path:
    # A copy outside any git repository: a venv is usually .gitignored, which discovery honours.
    dest = Path(tempfile.mkdtemp(prefix="migrate-corpus-"))
    for f in files:
        target = dest / f.relative_to(src.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)
    return dest


def prefilter_stats(files: list[Path]) -> tuple[int, int, int, float]:
    """(files mentioning torch, files some rule's text anchors reach, files some rule's code
    anchors reach (what libcst parses), CPU s of both prefilters, reads included)."""
    from migrator.codefilter import code_rules
    from migrator.engine import python_ast
    from migrator.options import Options
    from migrator.prefilter import rules_to_run

    mention = reach = parsed = 0
    t0 = time.process_time()
    for f in files:
        text = f.read_text(encoding="utf-8", errors="replace")
        if "torch" in text:
            mention += 1
            codes = rules_to_run(text, Options())
            reach += bool(codes)
            tree = python_ast(text, str(f))[0] if codes else None
            parsed += tree is not None and bool(code_rules(tree, codes))
    return mention, reach, parsed, time.process_time() - t0


def per_kloc(sizes: list[int], repeat: int) -> list[tuple[int, float, float, float, float]]:
    """Per size: CPU ms per 1,000 lines for libcst's parse (GC on, off), the whole migration
    (rewrite + verify, as ``--write`` / a diff) and ``--check``'s plan-only run (both GC off, as
    the CLI runs them); medians of ``repeat``."""
    import libcst

    from migrator.engine import migrate_source
    from migrator.options import Options

    rows = []
    for size in sizes:
        text = synthetic(size)
        kloc = text.count("\n") / 1000
        row: list[float] = [size]
        for func, collect in (
            (lambda t=text: libcst.parse_module(t), True),
            (lambda t=text: libcst.parse_module(t), False),
            (lambda t=text: migrate_source(t, "s.py", Options()), False),
            (lambda t=text: migrate_source(t, "s.py", Options(), rewrite=False), False),
        ):
            times = []
            for _ in range(repeat):
                gc.collect()
                if not collect:
                    gc.disable()
                t0 = time.process_time()
                func()
                times.append(time.process_time() - t0)
                gc.enable()
            row.append(statistics.median(times) / kloc * 1000)
        rows.append(tuple(row))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=None, help="sample N corpus files (default: all)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--skip-corpus", action="store_true")
    ap.add_argument("--sizes", default="1000,3000,10000,30000")
    ap.add_argument("--repeat", type=int, default=5, help="latency runs (median)")
    ap.add_argument("--kloc-repeat", type=int, default=3, help="runs per size (median)")
    ap.add_argument(
        "--torchfix", default=shutil.which("torchfix"),
        help="TorchFix executable to run side by side (default: torchfix on PATH). TorchFix 0.7 "
        "pins libcst 1.5, so give it its own venv: python -m venv /tmp/tf && /tmp/tf/bin/pip "
        "install torchfix, then --torchfix /tmp/tf/bin/torchfix",
    )
    ap.add_argument(
        "--migrate", default=None,
        help="migrate executable to time (default: the console script beside this Python). An "
        "editable install adds a meta-path finder to every start-up (~10 ms); to time what a "
        "pre-commit hook runs: python -m venv /tmp/rel && /tmp/rel/bin/pip install . && "
        "--migrate /tmp/rel/bin/migrate",
    )
    args = ap.parse_args()
    script = Path(args.migrate or Path(sys.executable).parent / "migrate")
    migrate = [str(script)] if script.exists() else [sys.executable, "-m", "migrator.cli"]
    # Byte-compile the migrator as pip does when it installs a package (the pre-commit hook's
    # environment included): with PYTHONDONTWRITEBYTECODE set and an editable install, every
    # run would otherwise compile its ~50 modules from source (~50 ms per invocation).
    package = Path(__file__).resolve().parents[1] / "migrator"
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True)
    torchfix = args.torchfix
    source = "measured side by side" if torchfix else "not installed: issue baseline"
    rows: list[tuple[str, str]] = []

    with tempfile.TemporaryDirectory() as tmp:
        one = Path(tmp) / "train.py"
        one.write_text(synthetic(200))
        clean = Path(tmp) / "tensors.py"  # mentions torch, reaches no rule's anchors
        clean.write_text("import torch\n\nx = torch.zeros(3) + 1\n")
        lat = {}
        for name, cmd in [
            ("python -c pass", [sys.executable, "-c", "pass"]),
            ("python -c 'import libcst'", [sys.executable, "-c", "import libcst"]),
            ("migrate --check (200-line script)", [*migrate, "--check", "-q", str(one)]),
            ("migrate --check (file no rule anchor reaches)", [*migrate, "--check", "-q", str(clean)]),
            *([("torchfix (200-line script)", [torchfix, str(one)])] if torchfix else []),
        ]:
            lat[name] = median_run(cmd, args.repeat)
            rows.append((name, f"{lat[name][0] * 1000:.0f} ms wall, {lat[name][1] * 1000:.0f} ms CPU"))
        ours = lat["migrate --check (200-line script)"]
        theirs = lat["torchfix (200-line script)"][0] if torchfix else TORCHFIX_LATENCY_S
        rows.append(("latency ratio torchfix / migrate (wall)", f"{theirs / ours[0]:.2f}x ({source})"))

    kl = per_kloc([int(s) for s in args.sizes.split(",")], args.kloc_repeat)
    for size, parse_gc, parse_nogc, mig, check in kl:
        value = (
            f"migrate (write) {mig:.0f} ms, --check {check:.0f} ms; libcst parse {parse_gc:.0f} ms "
            f"(GC on), {parse_nogc:.0f} ms (GC off)"
        )
        rows.append((f"per 1,000 lines at {size:,} lines (CPU)", value))
    first, last = kl[0], kl[-1]
    growth = (
        f"migrate (write) {last[3] / first[3]:.2f}x, --check {last[4] / first[4]:.2f}x; "
        f"parse {last[1] / first[1]:.2f}x (GC on), {last[2] / first[2]:.2f}x (GC off)"
    )
    rows.append((f"growth {first[0]:,} -> {last[0]:,} lines", growth))

    if not args.skip_corpus:
        src, files = torch_files(args.files)
        mention, reach, parsed, pre_cpu = prefilter_stats(files)
        value = f"{len(files)} / {mention} / {reach} / {parsed} (both prefilters {pre_cpu:.1f} s CPU)"
        rows.append(("corpus: files / mention torch / reach text anchors / reach code anchors (parsed)", value))
        root = corpus_copy(src, files)
        try:
            wall, cpu, rc = timed([*migrate, "--check", "-q", "-j", str(args.jobs),
                                   "--exclude", "__pycache__", str(root)])
            value = (
                f"{wall:.1f} s wall ({len(files) / wall:.1f} files/s), {cpu:.1f} s CPU "
                f"({len(files) / cpu:.1f} files per CPU-s), exit {rc}"
            )
            rows.append((f"migrate --check over the corpus, -j {args.jobs}", value))
            if torchfix:
                twall, tcpu, _ = timed([torchfix, "--jobs", str(args.jobs), str(root)])
                tf_rate = len(files) / twall
                rows.append(("torchfix over the corpus", f"{twall:.1f} s wall, {tcpu:.1f} s CPU"))
            else:
                tf_rate = TORCHFIX_FILES_PER_S
            rows.append(("throughput ratio migrate / torchfix (wall)",
                         f"{len(files) / wall / tf_rate:.1f}x ({source})"))
        finally:
            shutil.rmtree(root, ignore_errors=True)

    print("| measurement | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()

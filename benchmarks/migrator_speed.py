"""Migrator speed: corpus throughput, single-file latency, time per kloc; TorchFix side by side.

Usage: python benchmarks/migrator_speed.py [--files N] [--jobs 2] [--torchfix] [--skip-corpus]

Wall times on a shared machine are noisy; CPU time (user+sys of the child processes) is
printed next to them and is what the ratios use when --cpu is given.
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


def synthetic(lines: int) -> str:
    parts, i = [HEADER], 0
    while sum(p.count("\n") for p in parts) < lines:
        parts.append(SNIPPET.format(i=i))
        i += 1
    return "".join(parts)


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd: list[str], **kw) -> tuple[float, float, int]:
    cpu0, t0 = child_cpu(), time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False, **kw)
    return time.perf_counter() - t0, child_cpu() - cpu0, done.returncode


def corpus(n: int | None) -> tuple[Path, int]:
    import importlib.util

    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.origin:
        sys.exit("torch is not installed: the corpus is the installed torch package's sources")
    src = Path(spec.origin).parent
    files = sorted(src.rglob("*.py"))
    if n:
        files = random.Random(0).sample(files, min(n, len(files)))
    # A copy outside any git repository: a venv is usually .gitignored, which discovery honours.
    dest = Path(tempfile.mkdtemp(prefix="migrate-corpus-"))
    for f in files:
        target = dest / f.relative_to(src.parent)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)
    return dest, len(files)


def per_kloc(sizes: list[int], repeat: int) -> list[tuple[int, float, float, float, float]]:
    import libcst

    from migrator.engine import migrate_source
    from migrator.options import Options

    rows = []
    for size in sizes:
        text = synthetic(size)
        kloc = text.count("\n") / 1000
        row = [size]
        for func in (lambda: libcst.parse_module(text), lambda: migrate_source(text, "s.py", Options())):
            for collect in (True, False):
                best = float("inf")
                for _ in range(repeat):
                    gc.collect()
                    if not collect:
                        gc.disable()
                    t0 = time.perf_counter()
                    func()
                    best = min(best, time.perf_counter() - t0)
                    gc.enable()
                row.append(best / kloc * 1000)
        rows.append(tuple(row))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=None, help="sample N corpus files (default: all)")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--torchfix", action="store_true", help="also run TorchFix when installed")
    ap.add_argument("--skip-corpus", action="store_true")
    ap.add_argument("--sizes", default="1000,3000,10000,30000")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    migrate = [sys.executable, "-m", "migrator.cli"]
    torchfix = shutil.which("torchfix") if args.torchfix else None
    results = {}

    print("== single-file --check latency (process wall, median of 7) ==")
    with tempfile.TemporaryDirectory() as tmp:
        one = Path(tmp) / "train.py"
        one.write_text(synthetic(200))
        for name, cmd in [
            ("python -c pass", [sys.executable, "-c", "pass"]),
            ("migrate --check", [*migrate, "--check", "-q", str(one)]),
            *([("torchfix", [torchfix, str(one)])] if torchfix else []),
        ]:
            walls = [timed(cmd)[0] for _ in range(7)]
            results[name] = statistics.median(walls)
            print(f"{name:20s} {results[name] * 1000:8.0f} ms")
    if "torchfix" in results:
        print(f"ratio torchfix / migrate: {results['torchfix'] / results['migrate --check']:.2f}x")

    print("\n== time per 1,000 lines (best of %d), ms ==" % args.repeat)
    print(f"{'lines':>7} {'cst gc':>8} {'cst nogc':>9} {'migrate gc':>11} {'migrate nogc':>13}")
    rows = per_kloc([int(s) for s in args.sizes.split(",")], args.repeat)
    for size, a, b, c, d in rows:
        print(f"{size:7d} {a:8.1f} {b:9.1f} {c:11.1f} {d:13.1f}")
    print(f"growth {rows[0][0]}->{rows[-1][0]} lines: parse gc {rows[-1][1] / rows[0][1]:.2f}x, "
          f"parse nogc {rows[-1][2] / rows[0][2]:.2f}x, migrate nogc {rows[-1][4] / rows[0][4]:.2f}x")

    if args.skip_corpus:
        return
    root, n = corpus(args.files)
    try:
        print(f"\n== --check over {n} files of the installed torch package, {args.jobs} processes ==")
        wall, cpu, rc = timed([*migrate, "--check", "-q", "-j", str(args.jobs),
                               "--exclude", "__pycache__", str(root)])
        print(f"migrate   {wall:8.1f} s wall {cpu:8.1f} s cpu  {n / wall:8.1f} files/s  (exit {rc})")
        if torchfix:
            twall, tcpu, trc = timed([torchfix, "--jobs", str(args.jobs), str(root)])
            print(f"torchfix  {twall:8.1f} s wall {tcpu:8.1f} s cpu  {n / twall:8.1f} files/s  (exit {trc})")
            print(f"throughput ratio migrate/torchfix: {twall / wall:.1f}x wall, {tcpu / cpu:.1f}x cpu")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()

"""Overhead of the bundled runtime against raw DDP, Lightning Fabric and HF Accelerate.

The same training loop (an MLP, AdamW, 2 CPU processes on gloo, OMP_NUM_THREADS=1) runs in
fresh torchrun launches interleaved A B C D A B C D ...; each launch reports its median step
time, peak RSS and the time from process start to the end of its first step. The table shows
medians over launches and the paired ratio (variant / raw DDP, per repetition, then median).

    python benchmarks/runtime_overhead.py --reps 5 --steps 40
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = ["raw", "runtime", "fabric", "accelerate"]
CONFIGS = {"fp32": (1, "fp32"), "accum2": (2, "fp32"), "bf16": (1, "bf16")}
WIDTH, DEPTH, BATCH, WARMUP = 512, 4, 32, 5


def _seconds_since_process_start() -> float:
    """Wall time since this process was created (Linux /proc), imports included."""
    with open("/proc/self/stat") as f:
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


# -- worker: one launch = one variant, one config --------------------------------------------
def worker(variant: str, config: str, steps: int, out: Path) -> None:
    import torch

    accumulate, precision = CONFIGS[config]
    torch.manual_seed(0)
    layers = [m for _ in range(DEPTH) for m in (torch.nn.Linear(WIDTH, WIDTH), torch.nn.ReLU())]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(WIDTH, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(1)
    data = [(torch.randn(BATCH, WIDTH, generator=g), torch.randn(BATCH, 1, generator=g))
            for _ in range(8)]
    mse = torch.nn.functional.mse_loss
    step = _loop(variant, accumulate, precision, model, opt, mse)
    times, first = [], None
    for i in range(WARMUP + steps):
        t0 = time.perf_counter()
        for micro in range(accumulate):
            x, y = data[(i * accumulate + micro) % len(data)]
            step(x, y, micro == accumulate - 1)
        times.append(time.perf_counter() - t0)
        if first is None:
            first = _seconds_since_process_start()
    rank = int(os.environ["RANK"])
    result = {"step": statistics.median(times[WARMUP:]), "first_step": first,
              "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    (out / f"rank{rank}.json").write_text(json.dumps(result))


def _loop(variant, accumulate, precision, model, opt, mse):
    """Set up ``variant`` and return ``step(x, y, boundary)`` for one micro-batch."""
    import contextlib

    import torch

    bf16 = precision == "bf16"
    if variant == "raw":
        import torch.distributed as dist
        from torch.nn.parallel import DistributedDataParallel

        dist.init_process_group("gloo")
        ddp = DistributedDataParallel(model)

        def step(x, y, boundary):
            sync = contextlib.nullcontext() if boundary else ddp.no_sync()
            with sync:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    out = ddp(x)
                (mse(out.float(), y) / accumulate).backward()
            if boundary:
                opt.step()
                opt.zero_grad()
        return step
    if variant == "runtime":
        from runtime import Runtime

        rt = Runtime(strategy="ddp", precision="bf16-mixed" if bf16 else "32-true",
                     accumulate_grad_batches=accumulate)
        wrapped, wopt = rt.setup(model, opt)

        def step(x, y, boundary):
            wopt.zero_grad()
            rt.backward(mse(wrapped(x), y))
            wopt.step()
        return step
    if variant == "fabric":
        from lightning.fabric import Fabric

        fabric = Fabric(accelerator="cpu", devices=2, strategy="ddp",
                        precision="bf16-mixed" if bf16 else "32-true")
        fabric.launch()
        wrapped, wopt = fabric.setup(model, opt)

        def step(x, y, boundary):
            with fabric.no_backward_sync(wrapped, enabled=not boundary):
                fabric.backward(mse(wrapped(x), y) / accumulate)
            if boundary:
                wopt.step()
                wopt.zero_grad()
        return step
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True, mixed_precision="bf16" if bf16 else "no",
                              gradient_accumulation_steps=accumulate)
    wrapped, wopt = accelerator.prepare(model, opt)

    def step(x, y, boundary):
        with accelerator.accumulate(wrapped):
            accelerator.backward(mse(wrapped(x), y))
            wopt.step()
            wopt.zero_grad()
    return step


# -- driver ------------------------------------------------------------------------------------
def _launch(variant: str, config: str, steps: int, port: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2",
               "--master-addr=127.0.0.1", f"--master-port={port}", __file__, "--worker",
               variant, "--config", config, "--steps", str(steps), "--out", tmp]
        subprocess.run(cmd, env=env, check=True, timeout=600, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        ranks = [json.loads((Path(tmp) / f"rank{r}.json").read_text()) for r in (0, 1)]
    return {k: statistics.mean(r[k] for r in ranks) for k in ranks[0]}


def import_overhead(module: str, reps: int) -> float:
    """Median extra seconds of ``import module`` after ``import torch`` (fresh processes)."""
    code = (f"import time; import torch; t = time.perf_counter(); import {module}; "
            "print(time.perf_counter() - t)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return statistics.median(float(subprocess.run([sys.executable, "-c", code], env=env,
                                                  capture_output=True, text=True, check=True,
                                                  timeout=300).stdout) for _ in range(reps))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--configs", default=",".join(CONFIGS))
    p.add_argument("--worker"), p.add_argument("--config"), p.add_argument("--out")
    args = p.parse_args()
    if args.worker:
        return worker(args.worker, args.config, args.steps, Path(args.out))
    variants = [v for v in VARIANTS if v in ("raw", "runtime") or importlib.util.find_spec(
        "lightning" if v == "fabric" else v)]
    runs: dict = {(v, c): [] for v in variants for c in args.configs.split(",")}
    port = 29700
    for rep in range(args.reps):
        for config in args.configs.split(","):
            for variant in variants:  # interleaved: A B C D, A B C D, ...
                port += 1
                runs[variant, config].append(_launch(variant, config, args.steps, port))
        print(f"repetition {rep + 1}/{args.reps} done", file=sys.stderr)
    modules = {"runtime": "runtime", "fabric": "lightning.fabric", "accelerate": "accelerate"}
    print("| variant | config | median step (ms) | paired ratio vs raw | peak RSS (MiB) | "
          "extra RSS vs raw (MiB) | start to first step (s) | extra vs raw (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for config in args.configs.split(","):
        raw = runs["raw", config]
        for variant in variants:
            cur = runs[variant, config]
            ratio = statistics.median(c["step"] / r["step"] for c, r in zip(cur, raw))
            med = {k: statistics.median(c[k] for c in cur) for k in cur[0]}
            base = {k: statistics.median(c[k] for c in raw) for k in raw[0]}
            print(f"| {variant} | {config} | {med['step'] * 1e3:.2f} | {ratio:.3f} | "
                  f"{med['rss_mib']:.0f} | {med['rss_mib'] - base['rss_mib']:+.1f} | "
                  f"{med['first_step']:.2f} | {med['first_step'] - base['first_step']:+.2f} |")
    print()
    for variant in variants[1:]:
        extra = import_overhead(modules[variant], reps=5)
        print(f"import {modules[variant]} after import torch: {extra * 1e3:.0f} ms")


if __name__ == "__main__":
    main()

"""`migrate run`: start a script on N processes (torch.distributed.run) with runtime settings."""

from __future__ import annotations

import argparse
import os
import socket
import sys

from runtime.environment import (
    ACCELERATOR_VAR,
    ACCUMULATE_VAR,
    DEEPSPEED_CONFIG_VAR,
    PRECISION_VAR,
    STRATEGY_VAR,
    TIMEOUT_VAR,
)
from runtime.registry import PRECISIONS, STRATEGIES

USAGE_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="migrate run",
        description="Run a migrated training script on N processes per node. Arguments after "
                    "the script (or after `--`) are passed to the script.",
    )
    p.add_argument("--devices", default="1",
                   help="processes per node: an integer, or 'auto' (all GPUs, else 1)")
    p.add_argument("--strategy", default=None, help="auto, single, ddp, fsdp or deepspeed")
    p.add_argument("--precision", default=None,
                   help="32-true, 16-mixed, bf16-mixed or bf16-true")
    p.add_argument("--accumulate", type=int, default=None, metavar="K",
                   help="accumulate gradients over K batches per optimizer step")
    p.add_argument("--accelerator", default=None, choices=["auto", "cpu", "cuda"])
    p.add_argument("--deepspeed-config", default=None, help="DeepSpeed JSON config to pass through")
    p.add_argument("--nnodes", type=int, default=1)
    p.add_argument("--node-rank", type=int, default=0)
    p.add_argument("--master-addr", default="127.0.0.1")
    p.add_argument("--master-port", type=int, default=None,
                   help="rendezvous port (default: a free port when --nnodes is 1, else 29500)")
    p.add_argument("--max-restarts", type=int, default=0,
                   help="restart all processes this many times after a failure")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds a collective may wait before the job fails (default 1800)")
    p.add_argument("script", help="the training script")
    p.add_argument("script_args", nargs=argparse.REMAINDER, help="arguments for the script")
    return p


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _available_devices(accelerator: str | None) -> tuple[int, str]:
    import torch

    if accelerator != "cpu" and torch.cuda.is_available():
        return torch.cuda.device_count(), "CUDA devices"
    return os.cpu_count() or 1, "CPU cores"


def _check(args: argparse.Namespace) -> tuple[int, dict[str, str]]:
    """Validate the options; return (processes per node, environment for the workers)."""
    if args.strategy is not None:
        STRATEGIES.get(args.strategy)
    if args.precision is not None:
        PRECISIONS.get(args.precision)
    if args.accumulate is not None and args.accumulate < 1:
        raise ValueError(f"--accumulate {args.accumulate}: expected an integer >= 1")
    available, what = _available_devices(args.accelerator)
    if args.devices == "auto":
        devices = available if what == "CUDA devices" else 1
    elif args.devices.isdigit() and int(args.devices) > 0:
        devices = int(args.devices)
    else:
        raise ValueError(f"--devices {args.devices!r}: expected a positive integer or 'auto'")
    if devices > available:
        raise ValueError(f"--devices {devices} but this machine has {available} {what}; "
                         f"use --devices {available} or fewer")
    if not 0 <= args.node_rank < args.nnodes:
        raise ValueError(f"--node-rank {args.node_rank} must be in [0, --nnodes {args.nnodes})")
    if not os.path.isfile(args.script):
        raise ValueError(f"script {args.script!r} not found")
    env = {STRATEGY_VAR: args.strategy, PRECISION_VAR: args.precision,
           ACCUMULATE_VAR: args.accumulate, ACCELERATOR_VAR: args.accelerator,
           TIMEOUT_VAR: args.timeout, DEEPSPEED_CONFIG_VAR: args.deepspeed_config}
    return devices, {k: str(v) for k, v in env.items() if v is not None}


def torchrun_args(args: argparse.Namespace, devices: int) -> list[str]:
    """The ``torch.distributed.run`` command line for these options."""
    port = args.master_port or (_free_port() if args.nnodes == 1 else 29500)
    script_args = args.script_args[1:] if args.script_args[:1] == ["--"] else args.script_args
    return [
        f"--nproc-per-node={devices}", f"--nnodes={args.nnodes}", f"--node-rank={args.node_rank}",
        f"--master-addr={args.master_addr}", f"--master-port={port}",
        f"--max-restarts={args.max_restarts}", args.script, *script_args,
    ]


def main(argv: list[str] | None = None) -> int:
    """Launch; returns the exit status (0 ok, 1 a process failed, 2 bad options)."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        devices, env = _check(args)
    except ValueError as exc:
        print(f"migrate run: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    os.environ.update(env)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default, without its warning
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    try:
        run(get_args_parser().parse_args(torchrun_args(args, devices)))
    except ChildFailedError as exc:
        codes = [f.exitcode for f in exc.failures.values()]
        print(f"migrate run: {len(codes)} process(es) failed (exit codes {codes})",
              file=sys.stderr)
        return next((c for c in codes if 0 < c < 256), 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

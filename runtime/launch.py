"""`migrate run`: start a script on N processes (torch.distributed.run) with runtime settings."""

from __future__ import annotations

import argparse
import os
import signal
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
LOG_NAME = "migrate-run.log"


def build_parser() -> argparse.ArgumentParser:
    """The options; torchrun's spellings (``--nproc-per-node``, ``--master_port``, ...) too."""
    p = argparse.ArgumentParser(
        prog="migrate run",
        description="Run a migrated training script on N processes per node. Arguments after "
                    "the script (or after `--`) are passed to the script. torchrun's option "
                    "names are accepted as aliases.",
    )
    p.add_argument("--devices", "--nproc-per-node", "--nproc_per_node", default="1",
                   help="processes per node: an integer, or 'auto' (all GPUs, else 1)")
    p.add_argument("--strategy", default=None, help="auto, single, ddp, fsdp or deepspeed")
    p.add_argument("--precision", default=None,
                   help="32-true, 16-mixed, bf16-mixed or bf16-true")
    p.add_argument("--accumulate", type=int, default=None, metavar="K",
                   help="accumulate gradients over K batches per optimizer step")
    p.add_argument("--accelerator", default=None, choices=["auto", "cpu", "cuda"])
    p.add_argument("--deepspeed-config", default=None, help="DeepSpeed JSON config to pass through")
    p.add_argument("--nnodes", default="1",
                   help="number of nodes: N, or MIN:MAX with an elastic (c10d) rendezvous")
    p.add_argument("--node-rank", "--node_rank", type=int, default=0)
    p.add_argument("--master-addr", "--master_addr", default="127.0.0.1")
    p.add_argument("--master-port", "--master_port", type=int, default=None,
                   help="rendezvous port (default: a free port when --nnodes is 1, else 29500)")
    p.add_argument("--standalone", action="store_true",
                   help="single node, rendezvous on a free local port (torchrun's --standalone)")
    p.add_argument("--rdzv-backend", "--rdzv_backend", default="static",
                   help="rendezvous backend: static (--master-addr/--master-port) or c10d")
    p.add_argument("--rdzv-endpoint", "--rdzv_endpoint", default="",
                   help="HOST[:PORT] of the c10d rendezvous")
    p.add_argument("--rdzv-id", "--rdzv_id", default="none", help="job id shared by the nodes")
    p.add_argument("--rdzv-conf", "--rdzv_conf", default="", help="KEY=VALUE,... for the backend")
    p.add_argument("--max-restarts", "--max_restarts", type=int, default=0,
                   help="restart all processes this many times after a failure")
    p.add_argument("--monitor-interval", "--monitor_interval", type=float, default=0.1,
                   help="seconds between checks of the processes' state")
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


def parse_nnodes(raw: str) -> tuple[int, int]:
    """``"N"`` or torchrun's ``"MIN:MAX"`` as (min, max); ValueError echoing ``raw`` otherwise."""
    parts = raw.split(":")
    if len(parts) in (1, 2) and all(p.strip().isdigit() for p in parts):
        low, high = int(parts[0]), int(parts[-1])
        if 1 <= low <= high:
            return low, high
    raise ValueError(f"--nnodes {raw!r}: expected a number of nodes >= 1 (--nnodes 2) "
                     "or torchrun's MIN:MAX with 1 <= MIN <= MAX (--nnodes 1:4)")


def _check(args: argparse.Namespace) -> tuple[int, dict[str, str]]:
    """Validate the options; return (processes per node, environment for the workers)."""
    if args.strategy is not None:
        STRATEGIES.get(args.strategy)
    if args.precision is not None:
        PRECISIONS.get(args.precision)
    if args.accumulate is not None and args.accumulate < 1:
        raise ValueError(f"--accumulate {args.accumulate}: expected an integer >= 1")
    low, high = parse_nnodes(args.nnodes)
    if args.standalone and high > 1:
        raise ValueError(f"--standalone runs one node, but --nnodes is {args.nnodes!r}: "
                         "drop one of them")
    if low != high and args.rdzv_backend == "static" and not args.standalone:
        raise ValueError(f"--nnodes {args.nnodes!r} (elastic) needs a c10d rendezvous: add "
                         "--rdzv-backend c10d --rdzv-endpoint HOST:PORT")
    if args.rdzv_backend != "static" and not args.rdzv_endpoint and not args.standalone:
        raise ValueError(f"--rdzv-backend {args.rdzv_backend} needs --rdzv-endpoint HOST[:PORT]")
    if args.max_restarts < 0:
        raise ValueError(f"--max-restarts {args.max_restarts}: expected an integer >= 0")
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
    if not 0 <= args.node_rank < high:
        raise ValueError(f"--node-rank {args.node_rank} must be in [0, --nnodes {args.nnodes})")
    if not os.path.isfile(args.script):
        raise ValueError(f"script {args.script!r} not found")
    env = {STRATEGY_VAR: args.strategy, PRECISION_VAR: args.precision,
           ACCUMULATE_VAR: args.accumulate, ACCELERATOR_VAR: args.accelerator,
           TIMEOUT_VAR: args.timeout, DEEPSPEED_CONFIG_VAR: args.deepspeed_config}
    return devices, {k: str(v) for k, v in env.items() if v is not None}


def torchrun_args(args: argparse.Namespace, devices: int) -> list[str]:
    """The ``torch.distributed.run`` command line for these options.

    Each process runs ``runtime/launch_worker.py SCRIPT ARGS``, which runs the script as
    ``python SCRIPT ARGS`` would and records a crash for the launcher to report.
    """
    from runtime import launch_worker

    script_args = args.script_args[1:] if args.script_args[:1] == ["--"] else args.script_args
    low, high = parse_nnodes(args.nnodes)
    if args.standalone:
        rendezvous = ["--standalone"]
    elif args.rdzv_backend != "static":
        rendezvous = [f"--rdzv-backend={args.rdzv_backend}",
                      f"--rdzv-endpoint={args.rdzv_endpoint}", f"--rdzv-id={args.rdzv_id}"]
        rendezvous += [f"--rdzv-conf={args.rdzv_conf}"] if args.rdzv_conf else []
    else:
        port = args.master_port or (_free_port() if high == 1 else 29500)
        rendezvous = [f"--node-rank={args.node_rank}", f"--master-addr={args.master_addr}",
                      f"--master-port={port}"]
    nnodes = str(low) if low == high else f"{low}:{high}"
    return [
        f"--nproc-per-node={devices}", f"--nnodes={nnodes}", *rendezvous,
        f"--max-restarts={args.max_restarts}", f"--monitor-interval={args.monitor_interval}",
        launch_worker.__file__, args.script, *script_args,
    ]


def main(argv: list[str] | None = None) -> int:
    """Launch; returns the exit status: 0 ok, the first failing process's status (a signal N
    gives 128 + N), 2 bad options, 130 / 143 interrupted by SIGINT / SIGTERM."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        devices, env = _check(args)
    except ValueError as exc:
        print(f"migrate run: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    import shutil
    import tempfile

    from runtime.launch_worker import FAILURE_DIR_VAR

    log_dir = tempfile.mkdtemp(prefix="migrate-run-")
    env[FAILURE_DIR_VAR] = log_dir
    os.environ.update(env)
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # torchrun's default, without its warning
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    handler = _log_to_file(os.path.join(log_dir, LOG_NAME))
    keep_log = False
    try:
        try:
            run(get_args_parser().parse_args(torchrun_args(args, devices)))
        except ChildFailedError as exc:
            keep_log = True
            return _report_failure(exc, log_dir)
        except SignalException as exc:
            name = signal.Signals(exc.sigval).name
            print(f"migrate run: interrupted by {name}; every process was stopped",
                  file=sys.stderr)
            return 128 + int(exc.sigval)
        return 0
    finally:
        _restore_signals()
        handler.close()
        if not keep_log:
            shutil.rmtree(log_dir, ignore_errors=True)


def _log_to_file(path: str):
    """torch.distributed's own log lines (agent warnings, 'Sending process ... SIGTERM') go to
    the run's log file instead of the terminal; a failure prints where it is."""
    import logging

    handler = logging.FileHandler(path, encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    top = logging.getLogger("torch.distributed")
    top.addHandler(handler)
    top.propagate = False
    # torch's logging set-up gives torch.distributed (and some children) a stderr handler.
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if isinstance(logger, logging.Logger) and name.startswith("torch.distributed"):
            for stream in [h for h in logger.handlers if type(h) is logging.StreamHandler]:
                logger.removeHandler(stream)
                if handler not in logger.handlers:
                    logger.addHandler(handler)
    return handler


def _restore_signals() -> None:
    """The agent's handlers raise an exception on SIGINT/SIGTERM; once it is done, the
    defaults apply again (a late Ctrl-C is a plain interruption)."""
    defaults = ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL))
    for sig, default in defaults:
        try:
            signal.signal(sig, default)
        except ValueError:  # not the main thread: nothing was registered here either
            pass


def _status(exit_code: int) -> int:
    return 128 - exit_code if exit_code < 0 else min(exit_code, 255) or 1


def _describe(exit_code: int) -> str:
    if exit_code < 0:
        try:
            return f"killed by {signal.Signals(-exit_code).name} (exit code {exit_code})"
        except ValueError:
            pass
    return f"exit code {exit_code}"


def _report_failure(exc, log_dir: str) -> int:
    """The first failing rank's traceback once, on stderr; every failure into the log file."""
    import json

    records: dict[int, dict] = {}
    attempts = sorted(
        (name for name in os.listdir(log_dir) if name.startswith("failure-attempt")),
        key=lambda n: int(n.split("attempt")[1].split("-")[0]),
    )
    last = attempts[-1].split("-rank")[0] if attempts else None
    for name in attempts:
        if name.startswith(f"{last}-rank"):
            with open(os.path.join(log_dir, name), encoding="utf-8") as fh:
                record = json.load(fh)
            records[record["rank"]] = record
    failures = exc.failures  # global rank -> ProcessFailure
    order = sorted(failures, key=lambda r: (r not in records, records.get(r, {}).get("time", 0), r))
    def code_of(rank: int) -> int:  # what the script exited with, before the agent's SIGTERM
        return records[rank]["exit_code"] if rank in records else failures[rank].exitcode

    first = order[0]
    code = code_of(first)
    text = records.get(first, {}).get("text", "").rstrip("\n")
    log_path = os.path.join(log_dir, LOG_NAME)
    with open(log_path, "a", encoding="utf-8") as log:
        for rank in order:
            log.write(f"\n=== rank {rank} ({_describe(code_of(rank))}) ===\n")
            log.write(records.get(rank, {}).get("text", "") or "(no traceback recorded)\n")
    head = f"migrate run: rank {first} failed first ({_describe(code)})"
    if "\n" in text:  # a traceback: once, under the line that names the rank
        print(f"{head}:\n{text}", file=sys.stderr)
    else:  # a SystemExit message (already printed by that rank) or nothing recorded
        print(f"{head}: {text}" if text else head, file=sys.stderr)
    if len(order) == 1:
        tail = "1 process failed; its traceback and the launcher's log"
    else:
        others = ", ".join(f"rank {r}, {_describe(code_of(r))}" for r in order[1:])
        tail = (f"{len(order)} processes failed (then {others}); "
                "every traceback and the launcher's log")
    print(f"migrate run: {tail}: {log_path}", file=sys.stderr)
    return _status(code)


if __name__ == "__main__":
    sys.exit(main())

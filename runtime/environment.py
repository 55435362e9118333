"""Read the process's distributed environment (torchrun, SLURM, the launcher's choices) once."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

# Variables the launcher (`migrate run`) sets; they override the Runtime constructor's defaults.
STRATEGY_VAR = "TORCH_MIGRATE_STRATEGY"
PRECISION_VAR = "TORCH_MIGRATE_PRECISION"
ACCUMULATE_VAR = "TORCH_MIGRATE_ACCUMULATE"
ACCELERATOR_VAR = "TORCH_MIGRATE_ACCELERATOR"
TIMEOUT_VAR = "TORCH_MIGRATE_TIMEOUT"
DEEPSPEED_CONFIG_VAR = "TORCH_MIGRATE_DEEPSPEED_CONFIG"


@dataclass(frozen=True)
class Environment:
    """Where this process sits in the job, plus the launcher's overrides (None = not set)."""

    global_rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    local_world_size: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    launcher: str = "none"  # "none", "torchrun" or "slurm"
    restart_count: int = 0
    agent_store: bool = False  # torchrun's agent hosts the rendezvous store
    strategy: str | None = None
    precision: str | None = None
    accumulate: int | None = None
    accelerator: str | None = None
    timeout: float | None = None
    deepspeed_config: str | None = None

    @property
    def distributed(self) -> bool:
        """True when a launcher started this process as part of a (possibly 1-process) group."""
        return self.launcher != "none"


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    value = environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from None


def _first_slurm_host(nodelist: str) -> str:
    """First host of a SLURM node list such as ``gpu[03-05,07],cpu1`` (-> ``gpu03``)."""
    match = re.match(r"([^,\[]+)(\[([^\]]+)\])?", nodelist.strip())
    if not match:
        return "127.0.0.1"
    prefix, _, ranges = match.groups()
    if not ranges:
        return prefix
    return prefix + ranges.split(",")[0].split("-")[0]


def _accumulate(environ: Mapping[str, str]) -> int | None:
    value = environ.get(ACCUMULATE_VAR)
    if value in (None, ""):
        return None
    if not value.isdigit() or int(value) < 1:
        raise ValueError(f"{ACCUMULATE_VAR}={value!r}: expected a positive integer such as 1 or 4")
    return int(value)


def read_environment(environ: Mapping[str, str] | None = None) -> Environment:
    """Build the `Environment` from ``environ`` (default ``os.environ``); the only env reader."""
    env = os.environ if environ is None else environ
    overrides = {
        "strategy": env.get(STRATEGY_VAR) or None,
        "precision": env.get(PRECISION_VAR) or None,
        "accumulate": _accumulate(env),
        "accelerator": env.get(ACCELERATOR_VAR) or None,
        "timeout": float(env[TIMEOUT_VAR]) if env.get(TIMEOUT_VAR) else None,
        "deepspeed_config": env.get(DEEPSPEED_CONFIG_VAR) or None,
    }
    if "RANK" in env and "WORLD_SIZE" in env:  # torchrun, `migrate run`, or a hand-made env
        world = _int(env, "WORLD_SIZE", 1)
        return Environment(
            global_rank=_int(env, "RANK", 0),
            local_rank=_int(env, "LOCAL_RANK", 0),
            world_size=world,
            local_world_size=_int(env, "LOCAL_WORLD_SIZE", world),
            node_rank=_int(env, "GROUP_RANK", _int(env, "NODE_RANK", 0)),
            master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
            master_port=_int(env, "MASTER_PORT", 29500),
            launcher="torchrun",
            restart_count=_int(env, "TORCHELASTIC_RESTART_COUNT", 0),
            agent_store=env.get("TORCHELASTIC_USE_AGENT_STORE") == "True",
            **overrides,
        )
    # SLURM: only an `srun` job step with several tasks is a distributed launch; an
    # interactive allocation (salloc + python) has SLURM_NTASKS but no SLURM_STEP_ID.
    if _int(env, "SLURM_NTASKS", 1) > 1 and "SLURM_PROCID" in env and "SLURM_STEP_ID" in env:
        world = _int(env, "SLURM_NTASKS", 1)
        nodes = max(1, _int(env, "SLURM_NNODES", 1))
        return Environment(
            global_rank=_int(env, "SLURM_PROCID", 0),
            local_rank=_int(env, "SLURM_LOCALID", 0),
            world_size=world,
            local_world_size=max(1, world // nodes),
            node_rank=_int(env, "SLURM_NODEID", 0),
            master_addr=env.get("MASTER_ADDR") or _first_slurm_host(env.get("SLURM_NODELIST", "")),
            # A job-specific port so two jobs sharing a node do not collide.
            master_port=_int(env, "MASTER_PORT", 15000 + _int(env, "SLURM_JOB_ID", 0) % 5000),
            launcher="slurm",
            **overrides,
        )
    return Environment(**overrides)

"""Environment parsing (torchrun, SLURM, launcher overrides) and configuration errors."""

from __future__ import annotations

import sys

import pytest
import torch

from runtime import Runtime
from runtime.accelerator import Accelerator, select_accelerator
from runtime.environment import Environment, read_environment
from runtime.precision import Precision
from runtime.strategies.deepspeed import import_deepspeed
from runtime.strategies.fsdp import FSDPStrategy


def test_plain_process_is_not_distributed():
    env = read_environment({})
    assert (env.global_rank, env.world_size, env.launcher, env.distributed) == (0, 1, "none", False)


def test_torchrun_variables_and_launcher_overrides():
    env = read_environment({
        "RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2",
        "GROUP_RANK": "1", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "1234",
        "TORCHELASTIC_RESTART_COUNT": "2", "TORCH_MIGRATE_STRATEGY": "fsdp",
        "TORCH_MIGRATE_PRECISION": "bf16-mixed", "TORCH_MIGRATE_ACCUMULATE": "4",
    })
    assert (env.global_rank, env.local_rank, env.world_size, env.node_rank) == (3, 1, 4, 1)
    assert (env.master_addr, env.master_port, env.restart_count) == ("10.0.0.1", 1234, 2)
    assert (env.strategy, env.precision, env.accumulate) == ("fsdp", "bf16-mixed", 4)


def test_slurm_job_step():
    env = read_environment({
        "SLURM_NTASKS": "8", "SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NODEID": "1",
        "SLURM_NNODES": "2", "SLURM_STEP_ID": "0", "SLURM_NODELIST": "gpu[03-05,07]",
        "SLURM_JOB_ID": "4242",
    })
    assert (env.launcher, env.global_rank, env.local_rank, env.world_size) == ("slurm", 5, 1, 8)
    assert (env.local_world_size, env.master_addr, env.master_port) == (4, "gpu03", 15000 + 4242)
    # An interactive allocation (no job step) is a plain single process.
    assert read_environment({"SLURM_NTASKS": "8", "SLURM_PROCID": "0"}).launcher == "none"


def test_bad_accumulate_variable_names_the_value():
    with pytest.raises(ValueError, match=r"TORCH_MIGRATE_ACCUMULATE='two': expected a positive"):
        read_environment({"TORCH_MIGRATE_ACCUMULATE": "two"})


def test_environment_overrides_constructor(monkeypatch):
    monkeypatch.setenv("TORCH_MIGRATE_PRECISION", "bf16-mixed")
    monkeypatch.setenv("TORCH_MIGRATE_ACCUMULATE", "3")
    rt = Runtime(precision="32-true", accumulate_grad_batches=1)
    assert rt.strategy.precision.name == "bf16-mixed" and rt.strategy.accumulate == 3


def test_unknown_strategy_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown strategy 'dpp'; valid strategy names: auto, "):
        Runtime(strategy="dpp")


def test_world_size_mismatch_for_single(monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match=r"strategy 'single' runs one process but WORLD_SIZE=2"):
        Runtime(strategy="single")


def test_fsdp_without_process_group_names_the_launcher():
    with pytest.raises(RuntimeError, match=r"migrate run --devices 2 --strategy fsdp"):
        Runtime(strategy="fsdp")


def test_fsdp_on_a_model_without_parameters():
    strategy = FSDPStrategy(Environment(), Accelerator(), Precision())
    with pytest.raises(ValueError, match=r"ReLU has no parameters to shard.*\.to\(rt\.device\)"):
        strategy.setup_module(torch.nn.ReLU())


def test_missing_deepspeed_gives_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # import now raises ImportError
    with pytest.raises(ImportError, match=r"^strategy 'deepspeed' needs the deepspeed package: "
                                          r"pip install deepspeed$"):
        import_deepspeed()


def test_unknown_accelerator_and_strategy_options():
    with pytest.raises(ValueError, match=r"unknown accelerator 'tpu'; valid accelerators: auto"):
        select_accelerator("tpu", Environment())
    with pytest.raises(TypeError, match=r"strategy 'single' takes no option\(s\) stage"):
        Runtime(strategy="single", stage=3)


def test_is_global_zero_before_any_runtime_reads_the_launcher(monkeypatch):
    import runtime

    for name in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "WORLD_SIZE", "SLURM_NTASKS"):
        monkeypatch.delenv(name, raising=False)
    assert runtime.is_global_zero()  # one process, no launcher
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert not runtime.is_global_zero()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert runtime.is_global_zero()

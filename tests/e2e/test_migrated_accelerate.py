"""Each whole script migrated to --target accelerate (real accelerate 1.15): 1-process parity, 2-process runs, LR sequence, traps."""

from __future__ import annotations

import ast
import re
import sys

import pytest
from conftest import child_env, run_cmd, torchrun

from ._harness import (
    DIST_TIMEOUT,
    SINGLE_TIMEOUT,
    check_devices,
    check_ranks_started,
    files_in,
    original_train,
    rank_stdout,
    require_migrated,
    run_distributed,
    run_single,
    writers,
)
from ._specs import SPECS

NAMES = sorted(SPECS)
# A line reporting the learning rate alone (once per epoch); per-step LRs printed beside the
# step's loss follow the optimizer steps, of which each of N processes does 1/N.
_LR = re.compile(r"^\s*(learning rate|lr)\b", re.IGNORECASE)


@pytest.fixture(autouse=True)
def _accelerate_on_cpu(monkeypatch):
    # Accelerate only starts gloo on CPUs when told to (`accelerate launch --cpu` would start ONE
    # process whatever --num_processes says): torchrun + ACCELERATE_USE_CPU is its multi-CPU mode
    # (the trap scripts below). The migrated scripts' 2-process runs go through the harness on
    # simulated GPUs instead (Accelerate's CUDA path, gloo underneath): it drops the variable.
    monkeypatch.setenv("ACCELERATE_USE_CPU", "true")
    # accelerate probes the installed deepspeed, which prints a "Setting accelerator to CPU"
    # warning to stdout on a machine without GPU unless told the accelerator.
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")


def _lr_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if _LR.search(line)]


def test_migrated_sources_speak_accelerate():
    for name in NAMES:
        tree = ast.parse(require_migrated(name, "accelerate").read_text())
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)]
        bare = [
            ast.unparse(c)
            for c in calls
            if isinstance(c.func, ast.Attribute) and c.func.attr == "backward" and not c.args
        ]
        assert not bare, f"{name}: bare backward left: {bare}"
        imports = [
            n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "accelerate"
        ]
        assert imports, f"{name}: never imports accelerate"
        # Trap 1: a prepared per-epoch scheduler steps once per process; never prepare one.
        for c in calls:
            if isinstance(c.func, ast.Attribute) and c.func.attr == "prepare":
                names = {ast.unparse(a) for a in c.args}
                assert not any("sched" in n for n in names), (
                    f"{name}: scheduler prepared: {ast.unparse(c)}"
                )


@pytest.mark.parametrize("name", NAMES)
def test_single_process_prints_exactly_the_original(name):
    spec = SPECS[name]
    expected = original_train(name)
    out = require_migrated(name, "accelerate")
    run = run_single(out, spec.train_args, f"acc-one-{name}")
    run.check_ok(f"migrated {name}.py (accelerate) on 1 process")
    run.check_same_stdout(expected)
    assert files_in(run.cwd) == files_in(expected.cwd)
    for rel, check in spec.files.items():
        check(run.cwd / rel)


@pytest.mark.parametrize("name", NAMES)
def test_two_processes_train_print_once_save_once(name):
    spec = SPECS[name]
    out = require_migrated(name, "accelerate")
    run = run_distributed("torchrun", out, spec.train_args, f"acc-two-{name}", simulate=True)
    run.check_ok(f"migrated {name}.py (accelerate) on 2 processes")
    check_ranks_started(run, out)
    check_devices(run)
    assert rank_stdout(run, "1") == "", "rank 1 printed"
    assert run.proc.stdout.strip(), "rank 0 printed nothing"
    foreign = {rel: sorted(r) for rel, r in writers(run).items() if r != {"0"}}
    assert not foreign, f"files written by other ranks than 0: {foreign}"
    assert files_in(run.cwd) == files_in(original_train(name).cwd)
    for rel, check in spec.files.items():
        check(run.cwd / rel)  # loads into the original script's model: no `module.` prefixes
    # Trap 1 at run time: the per-epoch LR sequence of the 1-process run, on 2 processes.
    assert _lr_lines(run.proc.stdout) == _lr_lines(original_train(name).proc.stdout)


def test_lr_sequence_is_checked_on_a_script_that_prints_it():
    assert any(_lr_lines(original_train(n).proc.stdout) for n in NAMES), "no script prints its LR"


_PREPARED_SCHEDULER = """
import torch
from accelerate import Accelerator
acc = Accelerator()
model = torch.nn.Linear(2, 1)
opt = torch.optim.SGD(model.parameters(), lr=1.0)
sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
model, opt, sched = acc.prepare(model, opt, sched)
opt.step(); sched.step()
acc.print(f"lr {sched.get_last_lr()[0]}")
"""


def test_trap_prepared_per_epoch_scheduler_decays_n_times_too_fast(tmp_path):
    """The fact the accelerate vocabulary avoids (schedulers stay out of prepare), on accelerate 1.15."""
    script = tmp_path / "sched.py"
    script.write_text(_PREPARED_SCHEDULER)
    proc = torchrun(script, timeout=DIST_TIMEOUT, cwd=tmp_path, env=child_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "lr 0.25"  # one epoch on 2 processes; 1 process gives 0.5


_LBFGS = """
import torch
from accelerate import Accelerator
acc = Accelerator()
model = torch.nn.Linear(1, 1)
opt = torch.optim.LBFGS(model.parameters())
model, opt = acc.prepare(model, opt)
x = torch.ones(4, 1)
def closure():
    opt.zero_grad()
    loss = model(x).pow(2).mean()
    acc.backward(loss)
    return loss
print(type(opt.step(closure)).__name__, type(opt.optimizer.step(closure)).__name__)
"""


def test_trap_prepared_lbfgs_step_returns_none_and_the_migration_avoids_it(tmp_path):
    script = tmp_path / "lbfgs.py"
    script.write_text(_LBFGS)
    proc = run_cmd(
        [sys.executable, str(script)], timeout=SINGLE_TIMEOUT, cwd=tmp_path, env=child_env()
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["NoneType", "Tensor"]
    migrated = require_migrated("lbfgs_fit", "accelerate").read_text()
    assert "loss = optimizer.optimizer.step(closure)" in migrated

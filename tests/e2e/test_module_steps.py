"""--form module on loops without a DataLoader (one training step per pass of the loop), end to end.

Each fixtures/module/steps_* script is migrated (MIG501 required, not a fallback) and run: on 1
process its stdout is exactly the original's; on 2 CPU processes (gloo, under torchrun) it
finishes, rank 1 prints nothing, every file is written by rank 0 only, and what rank 0
prints is still exactly the original's (every process runs every pass on the same data).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
from conftest import FIXTURES, torchrun  # tests/conftest.py

from ._harness import DIST_TIMEOUT, Run, fresh_dir, probed_env, rank_stdout, read_probe, run_distributed, run_single, writers

TARGETS = ("runtime", "lightning")
# script -> (arguments, files it writes)
STEPS = {
    "steps_full_batch": (("--epochs", "30"), ()),  # a helper prints every 10 epochs
    "steps_episodes": ((), ()),  # count(1) with a break once solved; nonlocal running reward
    "steps_lbfgs": (("--steps", "3"), ("prediction0.pt", "prediction1.pt", "prediction2.pt")),
    "steps_manual_update": ((), ()),  # no optimizer: configure_optimizers returns None
    # train() holding the batch loop, called per epoch: one fit per call; the best model
    # written by rank 0 (a barrier after it) and read back by every process after training
    "steps_per_epoch_fit": (("--epochs", "3"), ("model.pt",)),
    "steps_per_epoch_fit-optimizer": (("--epochs", "2", "--use-optimizer"), ("model.pt",)),
    "lstm_lm": (("--epochs", "2"), ("model.pt",)),  # fixtures/scripts: word_language_model's shape
    "reinforce": (("--epochs", "300"), ("policy.pt",)),  # fixtures/scripts: episodes, the backward in finish_episode()
    "lbfgs_fit": (("--epochs", "10"), ("curve_net.pt",)),  # fixtures/scripts: LBFGS closure, a save after the loop
}
CASES = [pytest.param(n, t, id=f"{n}-{t}") for n in STEPS for t in TARGETS]


def _path(name: str) -> Path:
    folder = FIXTURES / "module" / name.split("-")[0]
    return folder / "input.py" if folder.exists() else FIXTURES / "scripts" / f"{name}.py"


@cache
def migrated(name: str, target: str) -> Path:
    from migrator.engine import migrate_source
    from migrator.options import Options

    if "-" in name:
        return migrated(name.split("-")[0], target)
    path = _path(name)
    result = migrate_source(path.read_text(), str(path), Options(target=target, form="module"))
    assert "MIG501" in {f.code for f in result.findings}, (result.reason, result.findings)
    out = fresh_dir(f"steps-{name}-{target}") / f"{name}.py"
    out.write_text(result.output)
    return out


@cache
def original(name: str) -> Run:
    run = run_single(_path(name), STEPS[name][0], f"steps-orig-{name}")
    run.check_ok(f"original {name}")
    assert run.proc.stdout.strip(), "the original printed nothing"
    return run


@pytest.mark.parametrize(("name", "target"), CASES)
def test_one_process_prints_what_the_original_printed(name: str, target: str) -> None:
    run = run_single(migrated(name, target), STEPS[name][0], f"steps1-{name}-{target}")
    run.check_ok(f"{name} ({target}) on 1 process")
    run.check_same_stdout(original(name))
    for rel in STEPS[name][1]:
        assert (run.cwd / rel).exists(), rel
    assert not (run.cwd / "checkpoints").exists()  # the loop's state is the script's: no checkpoint


@pytest.mark.parametrize(("name", "target"), CASES)
def test_two_processes_finish_print_once_write_once(name: str, target: str) -> None:
    script, args = migrated(name, target), STEPS[name][0]
    label = f"steps2-{name}-{target}"
    if target == "runtime":
        run = run_distributed("torchrun", script, args, label)
    else:
        cwd, probe_dir = fresh_dir(label), fresh_dir(f"probe-{label}")
        env = probed_env(probe_dir)
        env["PL_TRAINER_DEVICES"] = "2"  # Lightning under torchrun needs devices == --nproc-per-node
        proc = torchrun(script, *args, timeout=DIST_TIMEOUT, cwd=cwd, env=env)
        run = Run(proc, cwd, probe_dir, read_probe(probe_dir))
    run.check_ok(f"{name} ({target}) on 2 processes")
    assert rank_stdout(run, "1") == ""
    run.check_same_stdout(original(name))  # the same passes on every process: rank 0 prints the original's lines
    written = writers(run)
    assert {p: r for p, r in written.items() if r != {"0"}} == {}
    for rel in STEPS[name][1]:
        assert written.get(rel) == {"0"}, (rel, sorted(written))

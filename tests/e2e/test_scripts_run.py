"""The original scripts themselves: they run, are deterministic, write the files the specs name, and those load back."""

from __future__ import annotations

import pytest

from ._harness import files_in, original_eval, original_train, run_single
from ._specs import SCRIPTS, SPECS

NAMES = sorted(SPECS)


def test_every_script_has_a_spec():
    on_disk = {p.stem for p in SCRIPTS.glob("*.py")}
    assert on_disk == set(SPECS), (
        f"scripts without a spec: {on_disk - set(SPECS)}; specs without a script: {set(SPECS) - on_disk}"
    )


@pytest.mark.parametrize("name", NAMES)
def test_original_runs_deterministically(name):
    spec = SPECS[name]
    first = original_train(name)
    second = run_single(spec.path, spec.train_args, f"orig2-{name}")
    second.check_ok(f"second run of {name}.py")
    assert first.proc.stdout.strip(), f"{name}.py printed nothing"
    assert second.proc.stdout == first.proc.stdout, (
        "two runs with the same arguments printed different output"
    )
    assert files_in(first.cwd) == set(spec.files), (
        "the files the training run writes differ from the spec"
    )
    assert files_in(second.cwd) == files_in(first.cwd)


@pytest.mark.parametrize("name", NAMES)
def test_original_files_load_into_original_model(name):
    run = original_train(name)
    for rel, check in SPECS[name].files.items():
        check(run.cwd / rel)


@pytest.mark.parametrize("name", [n for n in NAMES if SPECS[n].eval_args])
def test_original_fixed_model_evaluation(name):
    # The evaluation of the trained checkpoint reproduces the training run's last evaluation
    # numbers; this makes the fixed-model path a meaningful reference for the 2-process check.
    out = original_eval(name).proc.stdout
    metric_lines = [line.strip() for line in out.splitlines() if any(c.isdigit() for c in line)]
    assert metric_lines, f"the evaluation run printed no numbers:\n{out}"
    train_out = original_train(name).proc.stdout
    assert any(metric_lines[-1] in line for line in train_out.splitlines()), (
        f"evaluation line {metric_lines[-1]!r} does not appear in the training run's output"
    )

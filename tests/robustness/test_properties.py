"""Property tests: random compositions of supported patterns migrate to valid, stable, backward-free code."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

from migrator.results import Status

from ._scripts import Spec, render, specs
from ._support import bare_backward_lines, check_output, describe, require_target, target_params

# Rich scripts take a few hundred ms each through the whole pipeline (twice); 60 examples per
# target keeps this file near a minute per target on a loaded 2-core machine.
PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def check_script(spec: Spec, target: str) -> None:
    """Every invariant of one migrated script; raises AssertionError naming the script."""
    source = render(spec)
    compile(source, "train.py", "exec", dont_inherit=True)  # the generator itself must be right
    result, problems = check_output(source, "train.py", target)
    context = f"target={target}\n{spec}\n--- script ---\n{source}"
    assert not problems, "\n".join(problems) + "\n" + context
    assert result.status is not Status.FAILED, f"a valid training script FAILED: {describe(result)}\n{context}"
    if result.status is Status.CHANGED:
        bare = bare_backward_lines(result.output)
        assert not bare, f"bare .backward() left on lines {bare}\n--- output ---\n{result.output}\n{context}"
    else:
        # Every generated script trains with .backward(): leaving it alone is right only with a
        # finding that tells the user why (MIG9xx: needs a human).
        declined = [f for f in result.findings if f.code.startswith("MIG9")]
        assert declined, f"training script left {result.status.value} with no MIG9xx finding saying why\n{describe(result)}\n{context}"


MARKERS = (
    "GradScaler", "autocast", "LBFGS", "closure", "accum_steps", "clip_grad_norm_", "clip_grad_value_",
    "netG", "DataLoader", "class Trainer", "def train(", "no_cuda", "mps", "cuda:0", "args.gpu",
    ".cuda()", "torch.save", "torch.load", "manual_seed", "DataParallel", "correct +=", "break",
    "StepLR", "accelerator", "device=device", "__main__",
)


def test_generator_covers_every_pattern() -> None:
    """The strategy really produces each pattern the properties are about (guards the generator)."""
    seen: set[str] = set()

    @settings(max_examples=300, deadline=None, derandomize=True, database=None)
    @given(specs)
    def collect(spec: Spec) -> None:
        source = render(spec)
        compile(source, "train.py", "exec", dont_inherit=True)
        seen.update(marker for marker in MARKERS if marker in source)

    collect()
    assert seen == set(MARKERS), f"patterns never generated: {sorted(set(MARKERS) - seen)}"


def _property(target: str):
    @PROPERTY_SETTINGS
    @given(spec=specs)
    def run(spec: Spec) -> None:
        check_script(spec, target)

    return run


@pytest.mark.parametrize("target", target_params())
def test_random_scripts_migrate_cleanly(target: str) -> None:
    """Outputs parse, compile, are idempotent and keep no bare backward, for each target."""
    require_target(target)
    _property(target)()

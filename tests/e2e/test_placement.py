"""GPU placement patterns (issue 11 #8-#11): each script in fixtures/placement/, migrated to every
wrapper target, passes `migrate verify --simulate-gpus` (every process believes it owns CUDA
devices, and every device a tensor lands on is checked); the naive port of a pattern, without
its placement fix, is caught by the placement check (negative control).

Add a script to fixtures/placement/ together with its row in SPECS (a script without a row
fails ``test_every_placement_script_has_a_spec``). Keep each run to a few seconds of training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import FIXTURES

from migrator.engine import migrate_source
from migrator.options import Options
from migrator.verification.pipeline import Request, verify

PLACEMENT = FIXTURES / "placement"
TARGETS = ("runtime", "fabric", "accelerate")


@dataclass(frozen=True)
class Spec:
    args: tuple[str, ...] = ()  # script arguments: short runs
    targets: tuple[str, ...] = TARGETS


SPECS: dict[str, Spec] = {
    # trainer class handed an int GPU id: model.to(gpu_id), source.to(self.gpu_id), [GPU{gpu_id}]
    "int_device_trainer.py": Spec(("--epochs", "2")),
    # `if args.eval_only: test(model, ...); return` before the optimizer (and the setup) exists
    "eval_before_setup.py": Spec(("--eval-only",)),
    # an RL policy fed CPU tensors made from observations
    "cpu_input_policy.py": Spec(("--episodes", "6")),
    # a whole model and a state dict saved from the GPU by rank 0, read back on every rank
    "whole_model_load.py": Spec(),
    # never chose a device: tensors made in forward, read by an LBFGS closure, returned by helpers
    "cpu_only_sequence.py": Spec(("--steps", "2")),
}


def _scripts() -> list[str]:
    return sorted(p.name for p in PLACEMENT.glob("*.py"))


def _cases():
    for name in _scripts():
        spec = SPECS.get(name)
        for target in spec.targets if spec is not None else ():
            yield pytest.param(name, target, id=f"{Path(name).stem}-{target}")


def _failed(report) -> list[str]:
    return [f"{c.name}: {c.evidence}\n{c.details}" for c in report.checks if not c.passed]


def test_every_placement_script_has_a_spec() -> None:
    assert _scripts(), PLACEMENT
    assert sorted(SPECS) == _scripts(), "each fixtures/placement/ script needs its row in SPECS"


@pytest.mark.parametrize("name,target", list(_cases()))
def test_port_passes_verify_on_simulated_gpus(name: str, target: str) -> None:
    report = verify(Request(PLACEMENT / name, target=target, simulate_gpus=True, timeout=150,
                            script_args=SPECS[name].args))
    assert report.passed, _failed(report)
    placement = [c for c in report.checks if c.name.startswith("placement:")]
    assert len(placement) == 3 and all(c.passed and c.applies for c in placement), placement
    two = next(c for c in placement if "2 simulated GPUs" in c.name)
    assert "rank 1→cuda:1" in two.evidence, two.evidence


def test_naive_port_feeding_cpu_tensors_is_caught(tmp_path: Path) -> None:
    """The port without the input move (what the migrator wrote before issue 11 #11): the
    policy sits on each process's GPU and the observation tensor stays on the CPU."""
    script = PLACEMENT / "cpu_input_policy.py"
    port = migrate_source(script.read_text(), path=str(script), options=Options(target="runtime")).output
    fixed = "probs = policy(state.to(rt.device))"
    assert fixed in port
    naive = tmp_path / "naive.py"
    naive.write_text(port.replace(fixed, "probs = policy(state)"))
    report = verify(Request(script, migrated=naive, simulate_gpus=True, timeout=150,
                            script_args=SPECS[script.name].args))
    failed = {c.name: c.details for c in report.checks if not c.passed}
    assert set(failed) == {"placement: port on 1 simulated GPU", "placement: port on 2 simulated GPUs"}, failed
    assert "mixes a CPU tensor and a tensor on cuda:1" in failed["placement: port on 2 simulated GPUs"]


def test_naive_port_loading_onto_gpu_0_is_caught(tmp_path: Path) -> None:
    """The port without the map_location (what the migrator wrote before issue 11 #9): rank 0
    pickles the model from cuda:0 and every rank's torch.load restores it onto cuda:0."""
    script = PLACEMENT / "whole_model_load.py"
    port = migrate_source(script.read_text(), path=str(script), options=Options(target="runtime")).output
    fixed = ', map_location={"cuda:0": str(rt.device)}'
    assert f"torch.load(f, weights_only=False{fixed})" in port
    naive = tmp_path / "naive.py"
    naive.write_text(port.replace(fixed, ""))
    report = verify(Request(script, migrated=naive, simulate_gpus=True, timeout=150))
    failed = {c.name: c.details for c in report.checks if not c.passed}
    assert set(failed) == {"placement: port on 2 simulated GPUs"}, failed
    assert "local rank 1 uses cuda:0 (torch.load" in failed["placement: port on 2 simulated GPUs"]

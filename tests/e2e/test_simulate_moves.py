"""The simulated GPUs (runtime/simulate.py) under a model moved back to the CPU.

``model.cpu()`` (or ``.to("cpu")``) after ``.to("cuda")`` runs torch's Module._apply, which asks
``torch._has_compatible_shallow_copy_type(param, moved)`` and then sets ``param.data = moved``.
The query is no computation: on a GPU it answers for a CUDA parameter and its CPU copy without
complaint. The simulation reported it as "mixes a CPU tensor and a tensor on cuda:0"
(fast_neural_style saves its model after ``transformer.eval().cpu()``), and the parameter
kept its CUDA tag after ``.data`` was set. A real misuse (a CUDA model fed a CPU tensor) must
still be reported.
"""

from __future__ import annotations

import sys
import textwrap

from conftest import ROOT, child_env, run_cmd

_CHILD = textwrap.dedent(
    """
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("_tm_sim", sys.argv[1])
    sim = importlib.util.module_from_spec(spec); sys.modules[spec.name] = sim
    spec.loader.exec_module(sim)
    import torch
    bad = []
    sim.install(0, 2, ".", lambda kind, **f: bad.append(f["message"]) if not f.get("ok", True) else None)

    model = torch.nn.Linear(2, 2).to("cuda")
    weight = model.weight
    assert sim.logical(weight) == "cuda:0", sim.logical(weight)
    model(torch.ones(1, 2, device="cuda"))
    model.eval().cpu()
    assert model.weight is weight  # torch keeps the Parameter (param.data = moved), as on a GPU
    assert sim.logical(model.weight) == "cpu", sim.logical(model.weight)
    model(torch.ones(1, 2))
    model.to("cuda")
    model.to("cpu")
    print("clean", bad)
    assert bad == [], bad

    model.to("cuda")
    model(torch.ones(1, 2))  # a CPU input into a model on cuda:0: still caught
    print("caught", bad)
    assert len(bad) == 1 and "mixes a CPU tensor and a tensor on cuda:0" in bad[0], bad
    """
)


def test_model_moved_back_to_the_cpu_is_no_violation(tmp_path) -> None:
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    proc = run_cmd([sys.executable, str(script), str(ROOT / "runtime" / "simulate.py")],
                   timeout=120, cwd=tmp_path, env=child_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "clean []" in proc.stdout and "caught" in proc.stdout

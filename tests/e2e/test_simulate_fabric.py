"""The simulated GPUs (runtime/simulate.py) under what Lightning Fabric does on a "CUDA" run.

Fabric's ``setup_dataloaders`` on more than one process rebuilds the user's DataLoader with a
DistributedSampler, reading the ``__init__`` arguments back from the loader's attributes by
``DataLoader.__init__``'s signature. The simulation patches that ``__init__`` (pin_memory is
dropped: tensors stay on the CPU); a patch that showed Fabric a bare ``(*args, **kwargs)`` made
the rebuilt loader lose ``batch_size`` (batches of 1: BatchNorm raised "Expected more than 1
value per channel" on 2 processes of mnist_rnn, siamese_network, ...), which no real GPU does.

Each case runs in a child process: ``install`` patches torch for the whole process.
"""

from __future__ import annotations

import sys
import textwrap

import pytest
from conftest import ROOT, child_env, run_cmd

pytest.importorskip("lightning.fabric")

_CHILD = textwrap.dedent(
    """
    import importlib.util, inspect, sys
    spec = importlib.util.spec_from_file_location("_tm_sim", sys.argv[1])
    sim = importlib.util.module_from_spec(spec); sys.modules[spec.name] = sim
    spec.loader.exec_module(sim)
    import torch
    from torch.utils.data import DataLoader, DistributedSampler, TensorDataset
    before = inspect.signature(DataLoader.__init__)
    sim.install(0, 2, ".", lambda *a, **k: None)
    assert inspect.signature(DataLoader.__init__) == before, inspect.signature(DataLoader.__init__)

    from lightning.fabric.utilities.data import _update_dataloader
    data = TensorDataset(torch.arange(64.0))
    loader = DataLoader(data, batch_size=16, shuffle=True, drop_last=True, pin_memory=True)
    assert loader.pin_memory is False  # still simulated: no pinned host memory without CUDA
    # what Fabric.setup_dataloaders does on 2 processes (rank 0 of 2)
    rebuilt = _update_dataloader(loader, DistributedSampler(data, num_replicas=2, rank=0))
    sizes = [len(b[0]) for b in rebuilt]
    print("batch_size", rebuilt.batch_size, "drop_last", rebuilt.drop_last, "sizes", sizes)
    assert rebuilt.batch_size == 16 and rebuilt.drop_last, (rebuilt.batch_size, rebuilt.drop_last)
    assert sizes == [16, 16], sizes
    assert rebuilt.pin_memory is False
    """
)


def test_fabric_rebuilt_loader_keeps_its_arguments(tmp_path) -> None:
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    proc = run_cmd([sys.executable, str(script), str(ROOT / "runtime" / "simulate.py")],
                   timeout=120, cwd=tmp_path, env=child_env())
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "batch_size 16 drop_last True sizes [16, 16]" in proc.stdout

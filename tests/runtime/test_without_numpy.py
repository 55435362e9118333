"""The runtime needs no numpy (neither the project nor the CPU torch wheel installs it):
object collectives, loaders, training and checkpoints on 2 gloo ranks with numpy blocked."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import torchrun

WORKERS = Path(__file__).parent / "workers"


def test_main_path_runs_on_two_ranks_without_numpy(tmp_path):
    proc = torchrun(WORKERS / "no_numpy.py", str(tmp_path), timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    results = [json.loads((tmp_path / f"no_numpy_rank{r}.json").read_text()) for r in (0, 1)]
    for rank, result in enumerate(results):
        assert result["numpy_blocked"] is True, "the worker did not block numpy"
        assert result["broadcast"] == 0  # rank 0's object on every rank
        assert result["gathered"] == [{"rank": 0}, {"rank": 1}]
        assert result["eval_seen"] == list(range(11))
        assert result["step"] == 1
        assert "need numpy: pip install numpy" in result["sharded"], rank

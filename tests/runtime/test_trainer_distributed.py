"""runtime.Trainer on 2 CPU processes (gloo, torchrun): ddp, fsdp, deepspeed, resume, stop."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, run_cmd, torchrun

WORKER = ROOT / "tests" / "runtime" / "trainer_workers" / "fit.py"


def _run(*args: str, nproc: int = 2, timeout: float = 300) -> str:
    if nproc == 1:
        proc = run_cmd([sys.executable, str(WORKER), *args], timeout=timeout)
    else:
        proc = torchrun(WORKER, *args, nproc=nproc, timeout=timeout)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _done(out: str) -> dict[str, float]:
    lines = [line for line in out.splitlines() if line.startswith("DONE ")]
    assert len(lines) == 1, out  # printed by rank 0 only
    return {k: float(v) for k, v in re.findall(r"(\w+)=([\d.e+-]+)", lines[0])}


def test_ddp_fit_completes_prints_once_and_writes_once(tmp_path):
    out = _run("fit", "--root", str(tmp_path), "--epochs", "2")
    done = _done(out)
    assert done["epoch"] == 2 and done["step"] == 12  # 48 samples / 2 ranks / batch 4, 2 epochs
    assert sorted(re.findall(r"RANK (\d) STOPPED_AT 2", out)) == ["0", "1"]
    assert [p.name for p in (tmp_path / "logs").iterdir()] == ["version_0"]
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["epoch=1-step=12.ckpt", "last.ckpt"]


def test_ddp_resume_reaches_the_uninterrupted_result(tmp_path):
    _run("fit", "--root", str(tmp_path / "a"), "--epochs", "4", "--out", str(tmp_path / "a.pt"))
    _run("fit", "--root", str(tmp_path / "b"), "--epochs", "2")
    out = _run("fit", "--root", str(tmp_path / "b"), "--epochs", "4", "--resume",
               "--out", str(tmp_path / "b.pt"))
    a, b = torch.load(tmp_path / "a.pt"), torch.load(tmp_path / "b.pt")
    assert a["step"] == b["step"] == 24
    for name, value in a["params"].items():
        assert torch.equal(value, b["params"][name]), name
    rows = (tmp_path / "b" / "logs" / "version_1" / "metrics.csv").read_text().splitlines()
    assert rows[1].split(",")[:2] == ["2", "13"]  # the resumed log continues at epoch 2, step 13
    assert _done(out)["step"] == 24


def test_validation_metrics_match_between_1_and_2_processes(tmp_path):
    def metrics(out: str) -> dict[str, float]:
        (line,) = [x for x in out.splitlines() if x.startswith("VALIDATE ")]
        return json.loads(line.removeprefix("VALIDATE "))

    one = metrics(_run("validate", "--root", str(tmp_path / "1"), nproc=1))
    two = metrics(_run("validate", "--root", str(tmp_path / "2")))
    assert one.keys() == two.keys() == {"val_loss", "val_sq_sum"}
    for key in one:  # the same 22 samples; per-batch float32 rounding differs by shard
        assert two[key] == pytest.approx(one[key], rel=1e-6)


def test_early_stopping_stops_every_rank_together(tmp_path):
    out = _run("early", "--root", str(tmp_path), "--epochs", "8")
    assert sorted(re.findall(r"RANK (\d) STOPPED_AT 5", out)) == ["0", "1"]
    assert _done(out)["epoch"] == 5


def test_manual_optimization_gan_keeps_ranks_in_sync(tmp_path):
    out = _run("gan", "--root", str(tmp_path), "--epochs", "2")
    assert re.findall(r"^GAN .*$", out, re.MULTILINE) == ["GAN step=8 same_on_ranks=True"]


ACCUMULATE_CLIP = ["fit", "--epochs", "2", "--accumulate", "2", "--clip", "1.0"]


@pytest.fixture(scope="module")
def ddp_accumulate_clip(tmp_path_factory) -> dict[str, float]:
    """The ddp run the sharded strategies are compared with (run once)."""
    return _done(_run(*ACCUMULATE_CLIP, "--root", str(tmp_path_factory.mktemp("ddp"))))


@pytest.mark.parametrize("strategy", ["fsdp", "deepspeed"])
def test_sharded_strategies_train_like_ddp(tmp_path, strategy, ddp_accumulate_clip):
    if strategy == "deepspeed":
        pytest.importorskip("deepspeed", reason="deepspeed is an optional dependency")
    ddp = ddp_accumulate_clip
    out = _run(*ACCUMULATE_CLIP, "--strategy", strategy, "--root", str(tmp_path), timeout=500)
    sharded = _done(out)
    assert sharded["step"] == ddp["step"] == 6  # 12 batches per rank / accumulate 2
    # same data, accumulation and clipping: the same model up to float reduction order
    assert sharded["val_loss"] == pytest.approx(ddp["val_loss"], rel=1e-4)
    assert Path(tmp_path / "checkpoints" / "last.ckpt").exists()

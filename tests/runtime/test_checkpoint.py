"""Checkpoints: atomic writes under SIGKILL, safe loading, prefixes, crash/resume exactness."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from runtime import Runtime
from runtime.checkpoint import atomic_save, strip_prefixes
from tests.conftest import child_env, run_cmd

WORKERS = Path(__file__).parent / "workers"
LAUNCH = [sys.executable, "-m", "runtime.launch"]


class Pickled:
    """Not a tensor type: a weights-only load must refuse it."""

    def __init__(self) -> None:
        self.value = 3


def test_sigkill_during_save_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "ckpt.pt"
    proc = subprocess.Popen([sys.executable, str(WORKERS / "save_killed.py"), str(path)],
                            env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        line = proc.stdout.readline()  # blocks until v2 is half-way through its save
        assert line.strip() == "inside save", proc.stderr.read()
        leftovers = [p.name for p in tmp_path.iterdir() if p.name != "ckpt.pt"]
        assert leftovers, "v2 should be sitting in a temporary file"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=60)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["version"] == 1
    assert torch.equal(ckpt["model"]["weight"], torch.ones(64, 64))


def test_atomic_save_failure_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    atomic_save({"v": 1}, path)

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        atomic_save({"v": 2}, path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.pt"]
    assert torch.load(path, weights_only=True) == {"v": 1}


def test_load_refuses_pickled_code_unless_opted_in(tmp_path):
    rt = Runtime()
    torch.save({"obj": Pickled()}, tmp_path / "unsafe.pt")
    with pytest.raises(Exception, match=r"weights_only=False") as info:
        rt.load(tmp_path / "unsafe.pt")
    assert "unsafe.pt" in str(info.value)
    assert rt.load(tmp_path / "unsafe.pt", weights_only=False)["obj"].value == 3


def test_save_unwraps_and_load_restores_in_place_returning_the_rest(tmp_path):
    rt = Runtime()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model, opt = rt.setup(model, opt)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    rt.backward(model(torch.randn(2, 3)).sum())
    opt.step()
    sched.step()
    rt.save(tmp_path / "c.pt", {"model": model, "optimizer": opt, "sched": sched, "epoch": 7,
                                "note": "hi"})
    raw = torch.load(tmp_path / "c.pt", weights_only=True)
    assert list(raw["model"]) == ["0.weight", "0.bias", "1.weight", "1.bias"]

    fresh = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    fresh_opt = torch.optim.AdamW(fresh.parameters(), lr=0.1)
    fresh_sched = torch.optim.lr_scheduler.StepLR(fresh_opt, step_size=1, gamma=0.5)
    state = {"model": fresh, "optimizer": fresh_opt, "sched": fresh_sched, "epoch": 0}
    rest = rt.load(tmp_path / "c.pt", state)
    assert rest == {"note": "hi"}
    assert state["epoch"] == 7
    assert fresh_sched.get_last_lr() == [0.05]
    assert fresh_opt.state_dict()["state"][0]["step"] == 1
    for a, b in zip(fresh.parameters(), rt.unwrap(model).parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("prefix", ["module.", "_orig_mod.", "module._orig_mod."])
def test_prefixed_state_dicts_load_into_the_wrapped_model(tmp_path, prefix):
    rt = Runtime()
    src = torch.nn.Linear(2, 2)
    torch.save({prefix + k: v for k, v in src.state_dict().items()}, tmp_path / "raw.pt")
    model = rt.setup(torch.nn.Linear(2, 2))
    rt.load(tmp_path / "raw.pt", model)
    assert torch.equal(model.weight, src.weight)
    assert strip_prefixes({"module.a": 1, "b": 2}) == {"module.a": 1, "b": 2}  # not shared


def test_resume_returns_false_without_checkpoint(tmp_path):
    assert Runtime().resume(tmp_path / "none.ckpt", {"step": 0}) is False


# -- crash and resume under the launcher (2 processes) -------------------------------------
def _train(out: Path, tag: str, *extra: str, launcher: tuple[str, ...] = ()):
    return run_cmd([*LAUNCH, "--devices", "2", *launcher, str(WORKERS / "resume_train.py"),
                    str(out), tag, "6", *extra], timeout=240)


def _final(out: Path, tag: str) -> dict:
    return torch.load(out / f"final_{tag}_rank0.pt", weights_only=True)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("resume")
    proc = _train(out, "ref")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def test_sigkill_on_one_rank_then_restart_reproduces_uninterrupted_run(uninterrupted):
    out = uninterrupted
    start = time.monotonic()
    crashed = _train(out, "crash", "--crash-at", "3")
    elapsed = time.monotonic() - start
    assert crashed.returncode != 0
    assert "exit codes [-9" in crashed.stderr or "-9" in crashed.stderr
    assert not (out / "final_crash_rank0.pt").exists()
    last = torch.load(out / "crash.ckpt", weights_only=True)
    assert last["step"] == 3  # the last complete checkpoint is intact
    print(f"launcher exited {crashed.returncode} {elapsed:.1f}s after start (SIGKILL on rank 1)")

    resumed = _train(out, "crash")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed at step 3" in resumed.stdout
    ref, got = _final(out, "ref"), _final(out, "crash")
    for key in ref:
        assert torch.equal(ref[key], got[key]), key


def test_max_restarts_with_resume_helper_continues_by_itself(uninterrupted, tmp_path):
    out = uninterrupted
    # One restart is needed for the deliberate crash; the second absorbs a rare gloo abort of
    # a restarted worker ("terminate called without an active exception"), seen once in CI
    # under load and not reproduced in ~40 local runs; a real job restarts through it too.
    proc = _train(out, "auto", "--crash-at", "2", "--crash-once", str(tmp_path / "crashed"),
                  launcher=("--max-restarts", "2"))
    assert proc.returncode == 0, proc.stdout[-1500:] + proc.stderr[-3000:]
    assert (tmp_path / "crashed").exists()  # it really crashed once
    assert "resumed at step 2" in proc.stdout
    ref, got = _final(out, "ref"), _final(out, "auto")
    for key in ref:
        assert torch.equal(ref[key], got[key]), key

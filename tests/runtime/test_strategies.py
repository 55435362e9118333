"""DDP, FSDP and DeepSpeed ZeRO-2 on 2 gloo processes reach the 1-process parameters."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from runtime.checkpoint import consolidate
from tests.conftest import child_env, torchrun

WORKERS = Path(__file__).parent / "workers"
_spec = importlib.util.spec_from_file_location("rt_common", WORKERS / "common.py")
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

# The worker and the reference sum the same numbers in a different order; AdamW's first step
# divides by |grad|, so one near-zero gradient entry moves by a few 1e-5: far below LR=0.05.
ATOL = 1e-4


def _launch(tmp_path: Path, sections: str) -> dict:
    torch.save({"model": common.make_model().state_dict(), "note": "single"},
               tmp_path / "single_ckpt.pt")
    proc = torchrun(WORKERS / "train_equivalence.py", str(tmp_path), sections, timeout=300,
                    env=child_env(DS_ACCELERATOR="cpu"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    results = [json.loads((tmp_path / f"results_{sections.replace(',', '_')}_rank{r}.json")
                          .read_text()) for r in (0, 1)]
    assert results[0] == results[1]
    return results[0]


@pytest.fixture(scope="module")
def ddp_fsdp(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("ddp_fsdp")
    return out, _launch(out, "ddp,fsdp,data")


@pytest.fixture(scope="module")
def deepspeed_run(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("deepspeed")
    return out, _launch(out, "deepspeed")


def _assert_matches_reference(out: Path, name: str, accumulate: int) -> None:
    ref = common.reference_params(world=2, accumulate=accumulate)
    for rank in (0, 1):
        got = torch.load(out / f"{name}_acc{accumulate}_rank{rank}.pt", weights_only=True)
        assert got.keys() == ref.keys()
        for key in ref:
            torch.testing.assert_close(got[key], ref[key], rtol=0, atol=ATOL, msg=key)
    # Sanity: the runs really trained (parameters moved by many tolerances).
    init = common.make_model().state_dict()
    assert max((ref[k] - init[k]).abs().max() for k in ref) > 100 * ATOL


@pytest.mark.parametrize("accumulate", [1, 2])
def test_ddp_matches_one_process_with_double_batch(ddp_fsdp, accumulate):
    _assert_matches_reference(ddp_fsdp[0], "ddp", accumulate)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_fsdp_matches_one_process_with_double_batch(ddp_fsdp, accumulate):
    _assert_matches_reference(ddp_fsdp[0], "fsdp", accumulate)


@pytest.mark.parametrize("accumulate", [1, 2])
def test_deepspeed_zero2_matches_one_process(deepspeed_run, accumulate):
    _assert_matches_reference(deepspeed_run[0], "deepspeed", accumulate)
    assert deepspeed_run[1][f"deepspeed_acc{accumulate}"]["micro_steps"] == 3 * accumulate


@pytest.mark.parametrize("strategy", ["ddp", "fsdp", "deepspeed"])
def test_scheduler_on_set_up_optimizer_drives_the_real_step(ddp_fsdp, deepspeed_run, strategy):
    # StepLR(optimizer) after rt.setup: under deepspeed the engine steps its ZeRO optimizer,
    # yet the wrapper must be a torch Optimizer and its LR must reach that step.
    results = (deepspeed_run if strategy == "deepspeed" else ddp_fsdp)[1]
    assert results[f"lrs_{strategy}"] == {
        "is_sgd": True, "applied": [0.1, 0.05, 0.025], "last_lr": [0.0125]}


def test_deepspeed_checkpoint_directory_roundtrip(deepspeed_run):
    out, results = deepspeed_run
    assert results["deepspeed_roundtrip"] is True
    assert (out / "ds_ckpt" / "latest").is_file()


def test_deepspeed_guard_rejects_bare_backward(deepspeed_run):
    assert "replace `loss.backward()` with `rt.backward(loss)`" in deepspeed_run[1]["bare_backward"]


def test_ddp_accumulation_all_reduces_once_per_optimizer_step(ddp_fsdp):
    results = ddp_fsdp[1]
    assert results["ddp_acc1"] == {"micro_steps": 3, "allreduces": 3}
    assert results["ddp_acc2"] == {"micro_steps": 6, "allreduces": 3}


def test_ddp_checkpoint_loads_into_plain_single_process_model(ddp_fsdp):
    out = ddp_fsdp[0]
    ckpt = torch.load(out / "ddp_ckpt.pt", weights_only=True)
    assert ckpt["step"] == 3
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in ckpt["model"])
    plain = common.Net()
    plain.load_state_dict(ckpt["model"])  # strict: same keys as the original module
    trained = torch.load(out / "ddp_acc1_rank0.pt", weights_only=True)
    for key, value in plain.state_dict().items():
        assert torch.equal(value, trained[key]), key
    opt = torch.optim.AdamW(plain.parameters(), lr=common.LR)
    opt.load_state_dict(ckpt["optimizer"])
    assert opt.state_dict()["state"][0]["step"] == 3


def test_single_process_checkpoint_loads_under_ddp(ddp_fsdp):
    assert ddp_fsdp[1]["single_into_ddp"] is True


def test_fsdp_sharded_save_load_roundtrip(ddp_fsdp):
    out, results = ddp_fsdp
    assert (out / "fsdp_ckpt" / ".metadata").is_file()
    assert results["fsdp_roundtrip"] is True
    assert results["ddp_into_fsdp"] is True


def test_fsdp_checkpoint_consolidates_into_one_full_file(ddp_fsdp, tmp_path):
    out = ddp_fsdp[0]
    consolidate(out / "fsdp_ckpt", tmp_path / "full.pt")
    full = torch.load(tmp_path / "full.pt", weights_only=True)
    assert full["step"] == 3
    plain = common.Net()
    plain.load_state_dict(full["model"])
    trained = torch.load(out / "fsdp_acc1_rank0.pt", weights_only=True)
    for key, value in plain.state_dict().items():
        assert torch.equal(value, trained[key]), key


def test_training_loaders_shard_disjointly_and_reshuffle_each_epoch(ddp_fsdp):
    for strategy in ("ddp", "fsdp"):
        data = ddp_fsdp[1][f"data_{strategy}"]
        assert data["epoch0_disjoint_cover"] and data["epoch1_disjoint_cover"]
        assert data["reshuffled"]
        assert data["drop_last_len"] == 2  # 11 samples, 2 ranks, batch 2: 5 per rank, 2 batches


def test_ddp_evaluation_counts_every_sample_once(ddp_fsdp):
    data = ddp_fsdp[1]["data_ddp"]
    assert (data["eval_sum"], data["eval_count"]) == (55, 11)  # per-rank sums + all_reduce
    assert data["eval_gathered"] == list(range(11))
    assert data["eval_batches"] == [2, 2]


def test_fsdp_evaluation_pads_for_the_collective_forward_and_gather_drops_it(ddp_fsdp):
    data = ddp_fsdp[1]["data_fsdp"]
    assert data["eval_batches"] == [2, 2]  # same number of forwards on every rank
    assert data["eval_count"] == 12  # one padded duplicate in plain sums ...
    assert data["eval_gathered"] == list(range(11))  # ... which gather_for_metrics drops

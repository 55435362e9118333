"""Worker: train with each strategy/accumulation on 2 ranks; write params and checks to OUT."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import LR, make_model, rank_batches
from data_checks import check_data

from runtime import Runtime


def full_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    sd = model.state_dict()
    return {k: (v.full_tensor() if hasattr(v, "full_tensor") else v).detach().clone()
            for k, v in sd.items()}


def train(strategy: str, accumulate: int, out: Path, results: dict) -> tuple:
    rt = Runtime(strategy=strategy, accumulate_grad_batches=accumulate)
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=LR)
    model, opt = rt.setup(model, opt)
    syncs = []
    if strategy == "ddp":  # count gradient all-reduces with a DDP communication hook
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        def counting_hook(state, bucket):
            syncs.append(1)
            return allreduce_hook(state, bucket)

        model._forward_module.register_comm_hook(None, counting_hook)
    steps = 0
    for x, y in rank_batches(rt.global_rank, rt.world_size, accumulate):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        rt.backward(loss)
        opt.step()
        steps += 1
    name = f"{strategy}_acc{accumulate}"
    torch.save(full_params(model), out / f"{name}_rank{rt.global_rank}.pt")
    results[name] = {"micro_steps": steps, "allreduces": len(syncs)}
    return rt, model, opt


def scheduled_lrs(strategy: str) -> dict:
    """SGD with a StepLR created from the set-up optimizer (the usual order): the LR each
    step really applied, read back from the change of the parameters."""
    rt = Runtime(strategy=strategy)
    model = torch.nn.Linear(4, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    model, opt = rt.setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    x, applied = torch.ones(2, 4), []
    for _ in range(3):
        before = full_params(model)["weight"]
        opt.zero_grad()
        rt.backward(model(x).sum())  # d/dw = 2 in every entry, on every rank
        opt.step()
        sched.step()
        applied.append(round(float((before - full_params(model)["weight"]).mean()) / 2, 6))
    return {"is_sgd": isinstance(opt, torch.optim.SGD), "applied": applied,
            "last_lr": [round(lr, 6) for lr in sched.get_last_lr()]}


def ddp_checkpoints(out: Path, results: dict) -> None:
    rt, model, opt = train("ddp", 1, out, results)
    rt.save(out / "ddp_ckpt.pt", {"model": model, "optimizer": opt, "step": 3})
    # The other way round: a checkpoint written by one plain process loads under DDP.
    fresh = rt.setup(make_model())
    left = rt.load(out / "single_ckpt.pt", {"model": fresh})
    single = torch.load(out / "single_ckpt.pt", weights_only=True)["model"]
    results["single_into_ddp"] = all(torch.equal(fresh.state_dict()[k], v)
                                     for k, v in single.items()) and left == {"note": "single"}


def fsdp_checkpoints(out: Path, results: dict) -> None:
    rt, model, opt = train("fsdp", 1, out, results)
    before = full_params(model)
    state = {"model": model, "optimizer": opt, "step": 3}
    rt.save(out / "fsdp_ckpt", state)
    exp_avg = next(iter(opt.state.values()))["exp_avg"].full_tensor().clone()
    with torch.no_grad():  # ruin the parameters and the optimizer state, then restore
        for p in model.parameters():
            p.mul_(0.0)
        next(iter(opt.state.values()))["exp_avg"].mul_(0.0)
    state["step"] = -1
    rt.load(out / "fsdp_ckpt", state)
    after = full_params(model)
    results["fsdp_roundtrip"] = (all(torch.equal(before[k], after[k]) for k in before)
                                 and state["step"] == 3 and torch.equal(
        next(iter(opt.state.values()))["exp_avg"].full_tensor(), exp_avg))
    # A full file written by DDP loads into an FSDP model (broadcast, then sharded).
    rt.load(out / "ddp_ckpt.pt", {"model": model}, strict=False)
    ddp = torch.load(out / "ddp_ckpt.pt", weights_only=True)["model"]
    results["ddp_into_fsdp"] = all(torch.equal(full_params(model)[k], v) for k, v in ddp.items())


def main() -> None:
    out, sections = Path(sys.argv[1]), sys.argv[2].split(",")
    results: dict = {}
    for section in sections:
        if section == "ddp":
            ddp_checkpoints(out, results)
            train("ddp", 2, out, results)
            results["lrs_ddp"] = scheduled_lrs("ddp")
        elif section == "fsdp":
            fsdp_checkpoints(out, results)
            train("fsdp", 2, out, results)
            results["lrs_fsdp"] = scheduled_lrs("fsdp")
        elif section == "data":
            results["data_ddp"] = check_data("ddp")
            results["data_fsdp"] = check_data("fsdp")
        elif section == "deepspeed":
            train("deepspeed", 1, out, results)
            results["lrs_deepspeed"] = scheduled_lrs("deepspeed")
            rt, model, opt = train("deepspeed", 2, out, results)
            state = {"model": model, "optimizer": opt, "step": 6}
            rt.save(out / "ds_ckpt", state)
            before = full_params(model)
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(0.0)
            state["step"] = -1
            rt.load(out / "ds_ckpt", state)
            results["deepspeed_roundtrip"] = state["step"] == 6 and all(
                torch.equal(before[k], v) for k, v in full_params(model).items())
            loss = model(torch.ones(2, 8)).sum()
            try:
                loss.backward()
                results["bare_backward"] = "no error"
            except RuntimeError as exc:
                results["bare_backward"] = str(exc)
    rank = torch.distributed.get_rank()
    (out / f"results_{'_'.join(sections)}_rank{rank}.json").write_text(json.dumps(results))


if __name__ == "__main__":
    main()

"""Worker: the runtime's main path on 2 ranks with numpy unimportable (the CPU torch wheel
does not install it); writes what it saw to OUT/no_numpy_rank{R}.json."""

from __future__ import annotations

import sys

sys.modules["numpy"] = None  # before torch: torch then reports "Numpy is not available"

import json  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from torch.utils.data import DataLoader, TensorDataset  # noqa: E402

from runtime import Runtime  # noqa: E402


def main() -> None:
    out = Path(sys.argv[1])
    rt = Runtime(strategy="ddp")
    rt.seed_everything(0)
    try:
        torch.zeros(1).numpy()
        blocked = False
    except RuntimeError:
        blocked = True
    ds = TensorDataset(torch.arange(11.0).unsqueeze(1), torch.arange(11))
    # a DataLoader worker process too: its seeding must not need numpy either
    train = rt.setup_dataloaders(DataLoader(ds, batch_size=2, shuffle=True, num_workers=1))
    test = rt.setup_dataloaders(DataLoader(ds, batch_size=2), evaluation=True)
    model = torch.nn.Linear(1, 1)
    model, opt = rt.setup(model, torch.optim.SGD(model.parameters(), lr=0.01))
    for x, _ in train:
        opt.zero_grad()
        rt.backward(model(x).pow(2).mean())
        opt.step()
    seen = torch.cat([rt.gather_for_metrics(y) for _, y in test]).tolist()
    rt.save(out / "ckpt.pt", {"model": model, "optimizer": opt, "step": 1})
    state = {"model": model, "optimizer": opt, "step": 0}
    rt.load(out / "ckpt.pt", state)
    fsdp = Runtime(strategy="fsdp")
    try:  # torch.distributed.checkpoint needs numpy: the same clear error on every rank
        fsdp.save(out / "sharded", {"model": fsdp.setup(torch.nn.Linear(2, 2))})
        sharded = "saved"
    except ImportError as exc:
        sharded = str(exc)
    result = {
        "numpy_blocked": blocked,
        "broadcast": rt.broadcast({"from": rt.global_rank, "big": "x" * 100_000})["from"],
        "gathered": rt.all_gather({"rank": rt.global_rank}),
        "eval_seen": sorted(seen),
        "step": state["step"],
        "sharded": sharded,
    }
    (out / f"no_numpy_rank{rt.global_rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()

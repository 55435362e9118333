"""Worker: deterministic training that checkpoints every step and resumes from the last one.

usage: resume_train.py OUT TAG STEPS [--crash-at K] [--crash-once MARKER]
Rank 1 SIGKILLs itself at step K (only the first time when MARKER is given).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import LR, dataset, make_model

from runtime import Runtime


def main() -> None:
    out, tag, steps, opts = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    crash_at = int(opts[opts.index("--crash-at") + 1]) if "--crash-at" in opts else -1
    marker = Path(opts[opts.index("--crash-once") + 1]) if "--crash-once" in opts else None
    rt = Runtime()
    model = make_model()
    model, opt = rt.setup(model, torch.optim.AdamW(model.parameters(), lr=LR))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    state = {"model": model, "optimizer": opt, "scheduler": sched, "step": 0}
    ckpt = out / f"{tag}.ckpt"
    if rt.resume(ckpt, state):
        rt.print(f"resumed at step {state['step']}")
    x, y = dataset(steps * 8)
    for step in range(state["step"], steps):
        if step == crash_at and rt.global_rank == 1 and (marker is None or not marker.exists()):
            if marker is not None:
                marker.touch()
            os.kill(os.getpid(), signal.SIGKILL)
        lo = step * 8 + rt.global_rank * 4
        opt.zero_grad()
        rt.backward(torch.nn.functional.mse_loss(model(x[lo:lo + 4]), y[lo:lo + 4]))
        opt.step()
        sched.step()
        state["step"] = step + 1
        rt.save(ckpt, state)
    torch.save(model.state_dict(), out / f"final_{tag}_rank{rt.global_rank}.pt")
    rt.print(f"done {tag}")


if __name__ == "__main__":
    main()

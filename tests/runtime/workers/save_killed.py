"""Worker: write checkpoint v1, then hang inside the write of v2 until the test SIGKILLs us."""

from __future__ import annotations

import os
import sys
import time

import torch

from runtime import Runtime

path = sys.argv[1]
rt = Runtime()
model = rt.setup(torch.nn.Linear(64, 64))
with torch.no_grad():
    model.weight.fill_(1.0)
rt.save(path, {"model": model, "version": 1})

real_fsync = os.fsync


def slow_fsync(fd: int) -> None:
    # The temporary file of v2 is fully written but not yet renamed: die here.
    print("inside save", flush=True)
    time.sleep(600)


os.fsync = slow_fsync
with torch.no_grad():
    model.weight.fill_(2.0)
rt.save(path, {"model": model, "version": 2})

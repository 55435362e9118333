"""Rank 0 works on after rank 1 has finished; each rank records when it destroyed its group."""

import json
import sys
import time
from pathlib import Path

import torch.distributed as dist

out = Path(sys.argv[1])

_destroy = dist.destroy_process_group


def _recorded_destroy(*args, **kwargs):
    (out / f"destroy_rank{rank}.json").write_text(json.dumps({"at": time.time()}))
    return _destroy(*args, **kwargs)


dist.destroy_process_group = _recorded_destroy

from runtime import Runtime  # noqa: E402

rt = Runtime()
rank = rt.global_rank
rt.barrier()
if rank == 0:
    time.sleep(3)  # rank 0 still busy (a slow final write) while rank 1 is already at exit
    (out / "rank0_done.json").write_text(json.dumps({"done": time.time()}))
rt.print("finished")

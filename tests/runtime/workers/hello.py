"""Worker: report what the launcher set up; ``--fail-rank R`` makes rank R crash at start."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from runtime import Runtime

rt = Runtime()
args = sys.argv[1:]
if "--fail-rank" in args and rt.global_rank == int(args[args.index("--fail-rank") + 1]):
    raise SystemExit(f"rank {rt.global_rank} fails on purpose")
rt.barrier()  # the other ranks wait here for the failed one: the launcher must end them
rt.print("hello from the runtime", "args=" + " ".join(args))
out = Path(args[0])
info = {
    "rank": rt.global_rank, "world": rt.world_size, "strategy": rt.strategy.name,
    "precision": rt.strategy.precision.name, "accumulate": rt.strategy.accumulate,
    "rank_sum": rt.all_reduce(rt.global_rank + 1),
}
(out / f"hello_rank{rt.global_rank}.json").write_text(json.dumps(info))

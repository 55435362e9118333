"""Python numbers reduced across 2 ranks: types agree on every rank, even when mixed."""

import json
import sys
from pathlib import Path

from runtime import Runtime

rt = Runtime()
r = rt.global_rank
mixed = 0 if r == 0 else 2.5  # an empty shard's accumulator stays the int 0
results = {
    "mixed_sum": rt.all_reduce(mixed),
    "int_sum": rt.all_reduce(r + 1),
    "int_max": rt.all_reduce(r + 1, op="max"),
    "float_min": rt.all_reduce(r + 0.5, op="min"),
    "int_mean": rt.all_reduce(r + 1, op="mean"),
}
Path(sys.argv[1], f"numbers_rank{r}.json").write_text(
    json.dumps({k: [v, type(v).__name__] for k, v in results.items()}))

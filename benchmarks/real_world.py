"""Real-world scoreboard: public single-process training scripts, before and after migration, on 1 and 2 processes.

Usage: python benchmarks/real_world.py --examples PATH --lightning PATH [--only NAME,...]
       [--targets runtime,fabric,accelerate] [--jobs 2] [--timeout 180] [--md docs/real-world.md]
       [--json FILE] [--keep DIR] [--at HEAD|REV|worktree]

PATH is a work tree or a bare git directory of pytorch/examples / Lightning-AI/pytorch-lightning.
For each script of the bed (benchmarks/real_world/bed.py) the original runs once, then per target
the script is migrated with the sibling modules it imports, as one program (`migrate --target T
-w main.py data.py ...`), the port run on 1 process (stdout and files must
equal the original's) and on 2 CPU processes under the target's launcher (exit 0, rank 1 silent,
files written once by rank 0, checkpoints alike). Progress goes to stdout; the markdown table to
--md (docs/real-world.md) and the raw results to --json. Fake data only (benchmarks/real_world/shims).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from real_world.bed import BED  # noqa: E402 - the package beside this script
from real_world.report import render  # noqa: E402
from real_world.runner import MODULE_TARGETS, ROOT, TARGETS, Bed  # noqa: E402
from real_world.sources import Checkout, snapshot  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--examples", required=True, help="pytorch/examples: work tree or bare git dir")
    p.add_argument(
        "--lightning", required=True, help="pytorch-lightning: work tree or bare git dir"
    )
    p.add_argument("--only", default="", help="comma-separated script names (substring match)")
    p.add_argument(
        "--targets",
        default=",".join(TARGETS + MODULE_TARGETS),
        help="comma-separated targets: the wrapper form's runtime, fabric, accelerate; the module "
        "form's runtime-module (--form module) and lightning",
    )
    p.add_argument("--jobs", type=int, default=2, help="scripts run at the same time (max 2 here)")
    p.add_argument("--timeout", type=float, default=180, help="seconds each run may take")
    p.add_argument(
        "--md",
        default="",
        help="markdown output (default: docs/real-world.md for a whole run; a narrowed run "
        "(--only, --targets) writes to a temporary file, so it never replaces the scoreboard)",
    )
    p.add_argument("--json", default="", help="raw results as JSON (not committed)")
    p.add_argument(
        "--at",
        default="HEAD",
        help="torch-migrate commit to measure (exported, so edits to the work tree during the run "
        "do not leak in); 'worktree' uses the installed work tree as it is",
    )
    p.add_argument("--keep", default="", help="keep every run's folder under this directory")
    args = p.parse_args(argv)
    args.targets = tuple(t for t in args.targets.split(",") if t)
    unknown = sorted(set(args.targets) - set(TARGETS) - set(MODULE_TARGETS))
    if unknown:
        p.error(f"unknown target(s) {unknown}; choose from {', '.join(TARGETS + MODULE_TARGETS)}")
    return args


def git_state() -> tuple[str, bool]:
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    dirty = subprocess.run(
        [
            "git",
            "-C",
            str(ROOT),
            "status",
            "--porcelain",
            "--untracked-files=no",
            "migrator",
            "runtime",
            "templates",
        ],
        capture_output=True,
        text=True,
    ).stdout.strip()
    return head or "unknown", bool(dirty)


def line(res) -> str:
    if res.target == "original":
        return f"original {res.parity.status}" + (
            f" ({res.parity.reason})" if res.parity.reason else ""
        )
    cells = " ".join(f"{name}={getattr(res, name).status}" for name in res.CHECKS)
    if res.codes:
        cells += f" ({', '.join(res.codes)})"
    fail = res.first_failure()
    return f"{res.target}: {cells}" + (f" -- {fail[:150]}" if fail else "")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()]
    specs = [s for s in BED if not names or any(n in s.name for n in names)]
    if not specs:
        raise SystemExit(f"--only {args.only!r} matches none of: {', '.join(s.name for s in BED)}")
    checkouts = {"examples": Checkout(args.examples), "lightning": Checkout(args.lightning)}
    work = Path(args.keep or tempfile.mkdtemp(prefix="torch-migrate-real-world-"))
    sources = {repo: work / "src" / repo for repo in checkouts}
    for spec in specs:
        dest = sources[spec.repo] / spec.folder
        if not dest.exists():
            checkouts[spec.repo].export(spec.folder, dest)
    for repo, c in checkouts.items():
        if c.missing:
            print(f"{repo}: {len(c.missing)} files absent from the mirror: {c.missing[:3]}")
    if args.at == "worktree":
        code, (head, dirty) = None, git_state()
    else:
        code = work / "torch-migrate"
        shutil.rmtree(code, ignore_errors=True)
        head, dirty = snapshot(ROOT, args.at, code)[:12], False
    bed = Bed(sources, work / "runs", timeout=args.timeout, code=code)
    lock, done, total = threading.Lock(), [0], len(specs) * (1 + len(args.targets))
    started = time.monotonic()

    def progress(res) -> None:
        with lock:
            done[0] += 1
            print(
                f"[{done[0]:3d}/{total}] {res.script} {line(res)} ({res.seconds:.0f} s)", flush=True
            )

    with ThreadPoolExecutor(max(1, min(args.jobs, 2))) as pool:
        per_spec = list(pool.map(lambda s: bed.script_result(s, args.targets, progress), specs))
    data = {
        "commit": head,
        "dirty": dirty,
        "jobs": args.jobs,
        "targets": list(args.targets),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "seconds": time.monotonic() - started,
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} CPUs",
        "sources": {repo: c.commit() for repo, c in checkouts.items()},
        "results": [
            dict(r.to_json(), first_failure=r.first_failure())
            for results in per_spec
            for r in results
        ],
    }
    if args.json:
        Path(args.json).write_text(json.dumps(data, indent=1))
    if not args.md:
        whole = not names and set(args.targets) == set(TARGETS + MODULE_TARGETS)
        args.md = str(ROOT / "docs" / "real-world.md") if whole else tempfile.mkstemp(
            prefix="real-world-", suffix=".md")[1]
    Path(args.md).write_text(render(data, specs))
    kept = f"; runs kept in {work}" if args.keep else ""
    also = f" and {args.json}" if args.json else ""
    print(f"wrote {args.md}{also} in {data['seconds'] / 60:.1f} min{kept}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

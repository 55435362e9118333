"""Overhead of `migrate verify` over the three runs it makes, done by hand, timed side by side.

Usage: python benchmarks/verify_overhead.py [--script fixtures/scripts/mnist_cnn.py]
       [--repeat 3] [--simulate-gpus] [-- SCRIPT_ARGS]   (default args: --epochs 1)

By hand: `migrate SCRIPT -o port.py`, then `python SCRIPT ARGS`, `python port.py ARGS` and
`python -m runtime.launch --devices 2 port.py -- ARGS`, each in a fresh copy of the folder.
Verify: `migrate verify SCRIPT -- ARGS` (same runs, plus copies, bootstrap, audit and checks).
Rounds alternate hand / verify; medians are compared. The issue's budget: overhead < 2 s + 10 %.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def _timed(cmd: list[str], cwd: Path) -> float:
    start = time.monotonic()
    subprocess.run(cmd, cwd=cwd, env=_env(), check=True, timeout=900,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.monotonic() - start


def _port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def by_hand(script: Path, args: list[str], work: Path) -> dict[str, float]:
    """The three runs (and the migration) a user would do without verify."""
    copies = [work / n for n in ("orig", "one", "many")]
    for c in copies:
        shutil.copytree(script.parent, c, ignore=shutil.ignore_patterns("__pycache__"))
    port = copies[1] / script.name
    times = {"migrate": _timed([str(BIN / "migrate"), str(script), "-o", str(port)], work)}
    shutil.copy(port, copies[2] / script.name)
    times["original"] = _timed([sys.executable, script.name, *args], copies[0])
    times["port 1 process"] = _timed([sys.executable, script.name, *args], copies[1])
    times["port 2 processes"] = _timed([sys.executable, "-m", "runtime.launch", "--devices", "2",
                                        "--master-port", _port(), script.name, "--", *args], copies[2])
    return times


def verify(script: Path, args: list[str], simulate: bool) -> float:
    cmd = [str(BIN / "migrate"), "verify", str(script), "--timeout", "600",
           *(["--simulate-gpus"] if simulate else []), "--", *args]
    return _timed(cmd, ROOT)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--script", default=str(ROOT / "fixtures" / "scripts" / "mnist_cnn.py"))
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--simulate-gpus", action="store_true")
    p.add_argument("script_args", nargs="*", default=["--epochs", "1"])
    a = p.parse_args(argv)
    script = Path(a.script).resolve()
    hand_runs, hand_all, verifies = [], [], []
    for i in range(a.repeat):
        with tempfile.TemporaryDirectory(prefix="verify-overhead-") as tmp:
            t = by_hand(script, a.script_args, Path(tmp))
        hand_runs.append(sum(v for k, v in t.items() if k != "migrate"))
        hand_all.append(sum(t.values()))
        verifies.append(verify(script, a.script_args, a.simulate_gpus))
        print(f"round {i + 1}: by hand {hand_runs[-1]:.2f}s (+ migrate {t['migrate']:.2f}s), "
              f"verify {verifies[-1]:.2f}s  [{', '.join(f'{k} {v:.2f}s' for k, v in t.items())}]")
    runs, everything, ver = (statistics.median(x) for x in (hand_runs, hand_all, verifies))
    budget = 2.0 + 0.10 * runs
    print(f"\nscript {script.name} {' '.join(a.script_args)}"
          f"{' --simulate-gpus' if a.simulate_gpus else ''}; medians of {a.repeat} rounds")
    print(f"three runs by hand:          {runs:7.2f}s")
    print(f"three runs + migrate, hand:  {everything:7.2f}s")
    print(f"migrate verify:              {ver:7.2f}s")
    print(f"overhead vs the three runs:  {ver - runs:+7.2f}s  ratio {ver / runs:.3f}  "
          f"(budget 2 s + 10 % = {budget:.2f}s: {'within' if ver - runs <= budget else 'OVER'})")
    print(f"overhead vs runs + migrate:  {ver - everything:+7.2f}s  ratio {ver / everything:.3f}")


if __name__ == "__main__":
    main()

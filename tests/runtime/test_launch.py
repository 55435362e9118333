"""The launcher (`python -m runtime.launch`, `migrate run`): ranks, env overrides, failures,
multi-node on one machine, bad options."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import child_env, free_port, run_cmd

WORKERS = Path(__file__).parent / "workers"
LAUNCH = [sys.executable, "-m", "runtime.launch"]


def _hello(tmp_path: Path, rank: int) -> dict:
    return json.loads((tmp_path / f"hello_rank{rank}.json").read_text())


def test_runs_script_on_two_ranks_prints_once_and_forwards_args(tmp_path):
    proc = run_cmd([*LAUNCH, "--devices", "2", str(WORKERS / "hello.py"), "--",
                    str(tmp_path), "--epochs", "1"], timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("hello from the runtime") == 1
    assert f"args={tmp_path} --epochs 1" in proc.stdout
    infos = [_hello(tmp_path, r) for r in (0, 1)]
    assert [i["world"] for i in infos] == [2, 2]
    assert {i["strategy"] for i in infos} == {"ddp"}  # "auto" under a launcher
    assert [i["rank_sum"] for i in infos] == [3, 3]


def test_launcher_choices_override_the_constructor(tmp_path):
    proc = run_cmd([*LAUNCH, "--devices", "2", "--strategy", "fsdp", "--precision", "bf16-mixed",
                    "--accumulate", "3", str(WORKERS / "hello.py"), str(tmp_path)], timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = _hello(tmp_path, 1)
    assert (info["strategy"], info["precision"], info["accumulate"]) == ("fsdp", "bf16-mixed", 3)


def test_failing_rank_makes_launcher_exit_nonzero_promptly(tmp_path):
    start = time.monotonic()
    proc = run_cmd([*LAUNCH, "--devices", "2", str(WORKERS / "hello.py"), str(tmp_path),
                    "--fail-rank", "1"], timeout=120)  # the timeout is the "no hang" check
    assert proc.returncode != 0
    assert "rank 1 fails on purpose" in proc.stderr
    assert "process(es) failed" in proc.stderr
    assert not (tmp_path / "hello_rank0.json").exists()  # rank 0 never got past the barrier
    print(f"failed launch ended after {time.monotonic() - start:.1f}s")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--strategy", "ddpp"], "unknown strategy 'ddpp'; valid strategy names: auto, ddp"),
        (["--precision", "fp8"], "unknown precision 'fp8'; valid precision names: 32-true"),
        (["--devices", "4096"], "--devices 4096 but this machine has"),
        (["--accumulate", "0"], "--accumulate 0: expected an integer >= 1"),
        (["--nnodes", "2", "--node-rank", "2"], "--node-rank 2 must be in [0, --nnodes 2)"),
    ],
)
def test_bad_options_exit_2_with_one_clear_line(tmp_path, args, expected):
    proc = run_cmd([*LAUNCH, *args, str(WORKERS / "hello.py"), str(tmp_path)], timeout=60)
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr


def _popen(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def test_two_launchers_as_two_nodes_on_one_machine_train_together(tmp_path):
    port = str(free_port())
    procs = [
        _popen([*LAUNCH, "--devices", "1", "--nnodes", "2", "--node-rank", str(node),
                "--master-addr", "127.0.0.1", "--master-port", port,
                str(WORKERS / "resume_train.py"), str(tmp_path), "nodes", "4"])
        for node in (0, 1)
    ]
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=240))
    except subprocess.TimeoutExpired:
        pytest.fail("multi-node launch did not finish within 240 s")
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outputs]
    assert "done nodes" in outputs[0][0] and "done nodes" not in outputs[1][0]
    rank0 = torch.load(tmp_path / "final_nodes_rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "final_nodes_rank1.pt", weights_only=True)
    init = torch.load(tmp_path / "nodes.ckpt", weights_only=True)["step"]
    assert init == 4
    for key in rank0:
        assert torch.equal(rank0[key], rank1[key]), key


def test_migrate_run_console_script(tmp_path):
    exe = shutil.which("migrate", path=os.path.dirname(sys.executable) + os.pathsep
                       + os.environ.get("PATH", ""))
    assert exe, "the `migrate` console script is not installed (pip install -e .)"
    proc = run_cmd([exe, "run", "--devices", "2", str(WORKERS / "hello.py"), "--",
                    str(tmp_path)], timeout=180)
    assert proc.returncode == 0, (
        "`migrate run` failed: the CLI must forward `migrate run ARGS` to "
        f"runtime.launch.main(ARGS)\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    assert proc.stdout.count("hello from the runtime") == 1
    assert _hello(tmp_path, 1)["world"] == 2

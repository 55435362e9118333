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
    assert proc.returncode == 1
    assert "migrate run: rank 1 failed first (exit code 1): rank 1 fails on purpose" in proc.stderr
    assert "2 processes failed (then rank 0, exit code 1)" in proc.stderr
    assert not (tmp_path / "hello_rank0.json").exists()  # rank 0 never got past the barrier
    print(f"failed launch ended after {time.monotonic() - start:.1f}s")


BOOM = """import sys
from runtime import Runtime

rt = Runtime()
if rt.global_rank == 1:
    def deep():
        raise ValueError("boom on rank 1")
    deep()
rt.barrier()  # rank 0 fails here too, once rank 1 is gone
"""


def test_first_failing_rank_traceback_once_the_rest_in_a_log_file(tmp_path):
    script = tmp_path / "boom.py"
    script.write_text(BOOM)
    proc = run_cmd([*LAUNCH, "--devices", "2", str(script)], timeout=120)
    assert proc.returncode == 1
    err = proc.stderr
    assert err.count("Traceback (most recent call last)") == 1, err
    assert "migrate run: rank 1 failed first (exit code 1):\nTraceback" in err
    assert f'File "{script}", line 7, in deep' in err and "ValueError: boom on rank 1" in err
    assert "[rank0]" not in err and "[rank1]" not in err and "runpy" not in err
    assert "torch/distributed/elastic" not in err  # the agent's log lines go to the log file
    log = Path(err.rsplit("launcher's log: ", 1)[1].strip())
    text = log.read_text()
    assert "=== rank 1 (exit code 1) ===" in text and "=== rank 0 (exit code 1) ===" in text
    assert "Connection closed by peer" in text or "rt.barrier()" in text  # rank 0's failure
    shutil.rmtree(log.parent)


def test_torchrun_spellings_are_aliases(tmp_path):
    from runtime.launch import build_parser

    args = build_parser().parse_args([
        "--nproc_per_node", "2", "--node_rank", "1", "--nnodes", "2", "--master_addr", "10.0.0.1",
        "--master_port", "1234", "--max_restarts", "3", "--rdzv_backend", "c10d",
        "--rdzv_endpoint", "h:29400", "--rdzv_id", "job", "--standalone", "train.py", "--", "-x"])
    assert (args.devices, args.node_rank, args.master_addr, args.master_port) == ("2", 1, "10.0.0.1", 1234)
    assert (args.max_restarts, args.rdzv_backend, args.rdzv_endpoint, args.rdzv_id) == (3, "c10d", "h:29400", "job")
    assert args.standalone and args.script_args[-1] == "-x"
    assert build_parser().parse_args(["--nproc-per-node", "4", "t.py"]).devices == "4"
    port = str(free_port())
    proc = run_cmd([*LAUNCH, "--nproc_per_node", "2", "--master_port", port, "--max_restarts", "0",
                    str(WORKERS / "hello.py"), str(tmp_path)], timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _hello(tmp_path, 1)["world"] == 2


SLEEPER = """import os, sys, time
from pathlib import Path
from runtime import Runtime

rt = Runtime()
Path(sys.argv[1], f"pid{rt.global_rank}").write_text(str(os.getpid()))
time.sleep(300)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state  # a zombie has exited


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_interrupted_run_stops_every_worker_and_exits_128_plus_signal(tmp_path, sig, status):
    script = tmp_path / "sleeper.py"
    script.write_text(SLEEPER)
    proc = _popen([sys.executable, "-m", "migrator", "run", "--devices", "2", str(script), str(tmp_path)])
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"pid{r}").exists() for r in (0, 1)):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate(timeout=10)
            time.sleep(0.2)
        time.sleep(0.3)  # both pid files are written whole
        pids = [int((tmp_path / f"pid{r}").read_text()) for r in (0, 1)]
        proc.send_signal(sig)  # the launcher only: it must stop the workers itself
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == status, err
    assert f"migrate run: interrupted by {sig.name}; every process was stopped" in err
    assert "Traceback" not in err + out and "internal error" not in err
    assert not [p for p in pids if _alive(p)]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--strategy", "ddpp"], "unknown strategy 'ddpp'; valid strategy names: auto, ddp"),
        (["--precision", "fp8"], "unknown precision 'fp8'; valid precision names: 32-true"),
        (["--devices", "4096"], "--devices 4096 but this machine has"),
        (["--accumulate", "0"], "--accumulate 0: expected an integer >= 1"),
        (["--nnodes", "2", "--node-rank", "2"], "--node-rank 2 must be in [0, --nnodes 2)"),
        (["--nnodes", "0"], "--nnodes '0': expected a number of nodes >= 1 (--nnodes 2) or "
                            "torchrun's MIN:MAX with 1 <= MIN <= MAX (--nnodes 1:4)"),
        (["--nnodes", "3:1"], "--nnodes '3:1': expected a number of nodes >= 1"),
        (["--nnodes", "two"], "--nnodes 'two': expected a number of nodes >= 1"),
        (["--nnodes", "1:2"], "--nnodes '1:2' (elastic) needs a c10d rendezvous: add --rdzv-backend c10d"),
        (["--standalone", "--nnodes", "2"], "--standalone runs one node, but --nnodes is '2'"),
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


def test_ranks_tear_the_process_group_down_together(tmp_path):
    # A rank that destroys its gloo group while a peer still works can make the peer abort
    # after all its output (SIGABRT, "terminate called without an active exception"): the
    # runtime's exit waits for every rank before tearing down.
    proc = run_cmd([*LAUNCH, "--devices", "2", str(WORKERS / "exit_together.py"), str(tmp_path)],
                   timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("finished") == 1
    done = json.loads((tmp_path / "rank0_done.json").read_text())["done"]
    rank1_destroy = json.loads((tmp_path / "destroy_rank1.json").read_text())["at"]
    assert rank1_destroy >= done, "rank 1 tore its group down while rank 0 was still working"


def test_ddp_takes_buffers_with_odd_strides(tmp_path):
    # pytorch/examples word_language_model's Transformer: DDP's state broadcast failed on
    # every rank on a positional-encoding buffer built with unsqueeze(0).transpose(0, 1)
    proc = run_cmd([*LAUNCH, "--devices", "2", str(WORKERS / "odd_strides.py")], timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout == "ok (4, 4, 1)\n"


def test_python_numbers_reduce_to_one_type_on_every_rank(tmp_path):
    proc = run_cmd([*LAUNCH, "--devices", "2", str(WORKERS / "reduce_numbers.py"), str(tmp_path)],
                   timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = {"mixed_sum": [2.5, "float"], "int_sum": [3, "int"], "int_max": [2, "int"],
                "float_min": [0.5, "float"], "int_mean": [1.5, "float"]}
    for rank in (0, 1):
        assert json.loads((tmp_path / f"numbers_rank{rank}.json").read_text()) == expected

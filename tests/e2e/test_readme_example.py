"""The README's main command: migrate the bundled mnist example with the CLI and run it with `migrate run` on 2 CPU processes."""

from __future__ import annotations

import re

from conftest import ROOT, free_port, run_cmd  # tests/conftest.py

from ._harness import (
    BIN,
    DIST_TIMEOUT,
    SINGLE_TIMEOUT,
    Run,
    check_ranks_started,
    describe,
    fresh_dir,
    probed_env,
    rank_stdout,
    read_probe,
)


def test_readme_main_command_shape():
    readme = (ROOT / "README.md").read_text()
    block = readme.split("<!-- main-command -->")[1].split("<!-- /main-command -->")[0]
    assert (
        "migrate fixtures/scripts/mnist_cnn.py -o" in block and "migrate run --devices 2" in block
    ), block


def test_readme_example_migrates_and_runs_on_two_processes():
    work = fresh_dir("readme")
    out = work / "mnist_cnn_migrated.py"
    migrated = run_cmd(
        [str(BIN / "migrate"), str(ROOT / "fixtures/scripts/mnist_cnn.py"), "-o", str(out)],
        timeout=SINGLE_TIMEOUT,
        cwd=work,
    )
    assert migrated.returncode == 0 and out.exists(), describe(migrated)
    probe = fresh_dir("readme-probe")
    # --master-port only so that concurrent CI jobs do not collide on the default port.
    cmd = [
        str(BIN / "migrate"),
        "run",
        "--devices",
        "2",
        "--master-port",
        str(free_port()),
        str(out),
        "--",
        "--epochs",
        "1",
    ]
    proc = run_cmd(cmd, timeout=DIST_TIMEOUT, cwd=work, env=probed_env(probe))
    assert proc.returncode == 0, describe(proc)
    run = Run(proc, work, probe, read_probe(probe))
    check_ranks_started(run, out)
    assert rank_stdout(run, "1") == "", "rank 1 printed to stdout"
    tests = re.findall(r"Test set: Average loss: [\d.]+, Accuracy: (\d+)/(\d+)", proc.stdout)
    assert len(tests) == 1 and tests[0][1] == "101", (
        f"expected one test report over all 101 samples:\n{proc.stdout}"
    )

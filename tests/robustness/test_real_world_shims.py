"""The real-world scoreboard's own machinery, without the external checkouts: fake packages, output comparison, hang kill, export."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

from conftest import ROOT, child_env

sys.path.insert(0, str(ROOT / "benchmarks"))

from real_world.bed import BED, Spec  # noqa: E402
from real_world.procs import run  # noqa: E402
from real_world.results import FAIL, PASS, Check, Result, first_difference, normalise  # noqa: E402
from real_world.runner import run_env  # noqa: E402
from real_world.sources import Checkout  # noqa: E402

TINY = textwrap.dedent(
    """
    import os, sys, tarfile
    import torch
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms
    from torchvision.utils import save_image
    import gymnasium as gym
    import requests

    t = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    train = datasets.MNIST("../data", train=True, download=True, transform=t)
    x, y = next(iter(DataLoader(train, batch_size=16)))
    print(len(train), tuple(x.shape), x.dtype, y.dtype, round(float(x.sum()), 3))
    save_image(x, "grid.png")
    env = gym.make("CartPole-v1")
    state, _ = env.reset(seed=1)
    print(env.step(0)[0].shape, env.spec.reward_threshold)
    with requests.get("https://example.org/cora.tgz", stream=True) as r:
        with tarfile.open(fileobj=r.raw, mode="r:gz") as tar:
            print(sorted(m.name for m in tar.getmembers()))
    print(sorted(os.listdir(".")))
    """
)


def test_a_tiny_script_runs_on_the_fakes_and_downloads_nothing(tmp_path):
    (tmp_path / "tiny.py").write_text(TINY)
    spec = Spec("tiny", "examples", "", "tiny.py", env={"RW_GYM_REWARD_THRESHOLD": "15"})
    runs = [
        subprocess.run(
            [sys.executable, "tiny.py"],
            cwd=tmp_path,
            env=run_env(spec),
            text=True,
            capture_output=True,
            timeout=120,
        )
        for _ in range(2)
    ]
    assert runs[0].returncode == 0, runs[0].stderr[-3000:]
    lines = runs[0].stdout.splitlines()
    assert lines[0].startswith("64 (16, 1, 28, 28) torch.float32 torch.int64 ")
    assert lines[1] == "(4,) 15.0"
    assert "cora/cora.content" in lines[2]
    assert lines[3] == "['grid.png', 'tiny.py']"  # download=True wrote nothing
    assert not (tmp_path.parent / "data").exists()
    assert runs[1].stdout == runs[0].stdout, "the fakes are not deterministic"


def test_the_shims_are_not_visible_without_the_scoreboard_environment():
    proc = subprocess.run(
        [sys.executable, "-c", "import torchvision"],
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0


def test_timings_are_normalised_and_nothing_else():
    a = "Epoch: 0001 (0.0123s) loss 2.3000\n| time:  1.52s | ms/batch 12.34 |\nSat Dec  6 00:11:02 2025\tEpoch 1"
    b = "Epoch: 0001 (0.0456s) loss 2.3000\n| time: 10.01s | ms/batch  3.00 |\nSun Dec  7 01:00:00 2025\tEpoch 1"
    assert normalise(a) == normalise(b)
    assert first_difference(a, b) is None
    stamped = "outputs-torch/20250101-120000/fake-0000.png"
    assert normalise(stamped) == "outputs-torch/<TIMESTAMP>/fake-0000.png"
    assert normalise("64 samples, loss 2.5") == "64 samples, loss 2.5"


def test_a_differing_pair_names_the_first_differing_line():
    original = "Train Epoch: 1 [0/64]\tLoss: 2.299976\n\nTest set: Average loss: 2.3393\n"
    port = "Train Epoch: 1 [0/64]\tLoss: 2.299976\n\nTest set: Average loss: 1.1697\n"
    assert first_difference(original, port) == (
        "line 3: expected 'Test set: Average loss: 2.3393', got 'Test set: Average loss: 1.1697'"
    )
    assert first_difference(original, original.rstrip("\n") + "\nextra\n") == "4 lines instead of 3"


def test_the_first_failing_check_is_the_rows_reason():
    res = Result(
        "x",
        "fabric",
        "run",
        migrate=Check(PASS, "changed"),
        parity=Check(PASS),
        complete=Check(FAIL, "exit 1: RuntimeError: boom"),
        silent=Check(FAIL, "rank 1 printed 'a'"),
    )
    assert res.first_failure() == "complete: exit 1: RuntimeError: boom"
    assert Result("y", "runtime", "run", migrate=Check(PASS)).first_failure() == ""


def test_a_hang_is_killed_with_workers_in_their_own_sessions(tmp_path):
    # torch elastic starts workers with start_new_session=True: a process-group kill misses them.
    code = (
        "import subprocess, sys, time\n"
        "w = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],"
        " start_new_session=True)\n"
        "open('worker.pid', 'w').write(str(w.pid))\n"
        "print('started', flush=True); time.sleep(600)\n"
    )
    start = time.monotonic()
    proc = run([sys.executable, "-c", code], timeout=3, cwd=tmp_path, env=child_env())
    assert proc.returncode == 124 and "timed out" in proc.stderr
    assert "started" in proc.stdout
    assert time.monotonic() - start < 30
    worker = Path(f"/proc/{(tmp_path / 'worker.pid').read_text()}/stat")
    assert not worker.exists() or worker.read_text().split(") ")[1].startswith("Z")


def test_export_from_a_bare_repository(tmp_path):
    work = tmp_path / "work"
    (work / "demo" / "sub").mkdir(parents=True)
    (work / "demo" / "main.py").write_text("print('hi')\n")
    (work / "demo" / "sub" / "data.txt").write_text("x\n")
    (work / "other.py").write_text("")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(work)]
    for args in (["init", "-q"], ["add", "."], ["commit", "-qm", "demo"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(tmp_path / "bare")], check=True)
    for source in (tmp_path / "bare", work):
        checkout, dest = Checkout(source), tmp_path / f"out-{source.name}"
        checkout.export("demo", dest)
        assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == [
            "main.py",
            "sub/data.txt",
        ]
        assert len(checkout.commit()) == 40


def test_every_bed_entry_is_well_formed():
    names = [s.name for s in BED]
    assert len(names) == len(set(names))
    assert all(s.repo in ("examples", "lightning") and s.script.endswith(".py") for s in BED)

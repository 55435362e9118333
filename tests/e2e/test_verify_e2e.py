"""`migrate verify` end to end: a bundled script passes every check (simulated GPUs included), and
sabotaged ports are caught by the check meant for each sabotage (negative controls)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import FIXTURES, ROOT, child_env

from migrator.verification.pipeline import Request, verify

ORIGINAL = '''\
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

torch.manual_seed(0)
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
x = torch.randn(64, 4)
y = (x.sum(1) > 0).long()
loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
test_loader = DataLoader(TensorDataset(x, y), batch_size=16)
model = nn.Linear(4, 2).to(device)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
model.eval()
with torch.no_grad():
    total = sum(F.cross_entropy(model(xb.to(device)), yb.to(device), reduction="sum").item()
                for xb, yb in test_loader)
print(f"before training: eval loss sum {total:.4f}")
model.train()
for epoch in range(2):
    for xb, yb in loader:
        xb, yb = xb.to(device), yb.to(device)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        optimizer.step()
    print(f"epoch {epoch} done")
torch.save(model.state_dict(), "model.pt")
'''

# A correct runtime port of ORIGINAL, written by hand so the sabotage below is stable.
PORT = '''\
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
from runtime import Runtime

rt = Runtime()

rt.seed_everything(0)
device = rt.device
x = torch.randn(64, 4)
y = (x.sum(1) > 0).long()
loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
loader = rt.setup_dataloaders(loader)
test_loader = rt.setup_dataloaders(DataLoader(TensorDataset(x, y), batch_size=16))
model = nn.Linear(4, 2)
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
model, optimizer = rt.setup(model, optimizer)
model.eval()
with torch.no_grad():
    total = sum(F.cross_entropy(model(xb), yb, reduction="sum").item()
                for xb, yb in test_loader)
total = rt.all_reduce(total)
rt.print(f"before training: eval loss sum {total:.4f}")
model.train()
for epoch in range(2):
    for xb, yb in loader:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(xb), yb)
        rt.backward(loss)
        optimizer.step()
    rt.print(f"epoch {epoch} done")
rt.save("model.pt", model.state_dict())
'''


def _verify(tmp_path: Path, port: str, **kw) -> dict[str, object]:
    (tmp_path / "train.py").write_text(ORIGINAL)
    (tmp_path / "port.py").write_text(port)
    kw.setdefault("timeout", 120)
    report = verify(Request(tmp_path / "train.py", migrated=tmp_path / "port.py", **kw))
    return {c.name: c for c in report.checks}


def _failed(checks: dict) -> dict[str, str]:
    return {name: c.evidence for name, c in checks.items() if not c.passed}


def test_bundled_mnist_passes_every_check_on_simulated_gpus() -> None:
    cmd = [sys.executable, "-m", "migrator", "verify", str(FIXTURES / "scripts" / "mnist_cnn.py"),
           "--simulate-gpus", "--format", "json", "--timeout", "150", "--",
           "--epochs", "1", "--save-model"]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=400, cwd=ROOT, env=child_env())
    report = json.loads(proc.stdout)
    failed = [c for c in report["checks"] if not c["passed"]]
    assert proc.returncode == 0 and not failed, (failed, proc.stderr[-3000:])
    names = {c["name"] for c in report["checks"]}
    assert {"placement: port on 2 simulated GPUs", "2 processes: parameters identical on all ranks",
            "1-process stdout same as original"} <= names
    placed = next(c for c in report["checks"] if c["name"] == "placement: port on 2 simulated GPUs")
    assert "rank 1→cuda:1" in placed["evidence"]
    assert all(not Path(r["folder"]).exists() for r in report["runs"])  # no --keep: removed


def test_program_helper_that_prints_and_steps_is_migrated_with_the_script() -> None:
    """engine.py's train_one_epoch prints on every rank unless it borrows the entry's wrapper:
    verify migrates the program (a port of train.py alone fails 'ranks > 0 print nothing')."""
    report = verify(Request(FIXTURES / "programs" / "engine_layout" / "train.py", timeout=150,
                            script_args=("--epochs", "1")))
    checks = {c.name: c for c in report.checks}
    assert report.passed, _failed(checks)
    assert checks["migrate"].evidence == "migrated to --target runtime (changed, with engine.py)"
    assert checks["2 processes: ranks > 0 print nothing"].evidence == "ranks 1 printed nothing"


def test_sabotaged_port_print_save_every_rank_and_no_setup_are_each_caught(tmp_path: Path) -> None:
    port = (PORT.replace('rt.print(f"epoch', 'print(f"epoch')
            .replace('rt.save("model.pt", model.state_dict())', 'torch.save(model.state_dict(), "model.pt")')
            .replace("model, optimizer = rt.setup(model, optimizer)\n", "")
            .replace("rt.backward(loss)", "loss.backward()")
            .replace("total = rt.all_reduce(total)\n", ""))
    failed = _failed(_verify(tmp_path, port))
    metrics = failed["2 processes: rank 0 prints the 1-process metrics"]
    assert metrics.startswith("rank 0 printed 'before training: eval loss sum "), metrics
    assert "rank 1 printed 2 line(s), first: 'epoch 0 done'" in failed["2 processes: ranks > 0 print nothing"]
    assert "model.pt written by ranks 0, 1" in failed["2 processes: every file written once, by rank 0"]
    assert "differs between rank 0 and rank 1" in failed["2 processes: parameters identical on all ranks"]
    assert "port exits 0 on 2 processes (runtime launcher)" not in failed


def test_batches_on_cuda_0_fail_placement_on_rank_1(tmp_path: Path) -> None:
    port = PORT.replace("    for xb, yb in loader:\n",
                        '    for xb, yb in loader:\n        xb, yb = xb.to("cuda:0"), yb.to("cuda:0")\n')
    checks = _verify(tmp_path, port, simulate_gpus=True)
    failed = _failed(checks)
    assert set(failed) == {"placement: port on 2 simulated GPUs"}, failed
    # every other check passed, the two that need an identical model / the original's class included
    metrics = checks["2 processes: rank 0 prints the 1-process metrics"]
    assert metrics.status == "pass" and metrics.evidence.startswith("1 eval-mode line(s)"), metrics
    loads = checks["2 processes: checkpoints load into the original's model"].evidence
    assert "model.pt into torch.nn.modules.linear.Linear" in loads, loads
    evidence = failed["placement: port on 2 simulated GPUs"]
    assert evidence.startswith("rank 1 at train.py:28: local rank 1 uses cuda:0 (Tensor.to)"), evidence


def test_checkpoint_of_the_ddp_wrapped_model_does_not_load_into_the_original(tmp_path: Path) -> None:
    port = (PORT.replace("model, optimizer = rt.setup(model, optimizer)\n",
                         "model, optimizer = rt.setup(model, optimizer)\n"
                         "ddp = torch.nn.parallel.DistributedDataParallel(rt.unwrap(model)) "
                         "if rt.world_size > 1 else model\n")
            .replace('rt.save("model.pt", model.state_dict())', 'rt.save("model.pt", ddp.state_dict())'))
    failed = _failed(_verify(tmp_path, port))
    assert set(failed) == {"2 processes: checkpoints load into the original's model"}, failed
    evidence = failed["2 processes: checkpoints load into the original's model"]
    assert evidence.startswith("model.pt: keys carry the wrapper prefix 'module.'"), evidence


def test_hang_reports_every_rank_stack(tmp_path: Path) -> None:
    port = "import os, time\n" + PORT.replace(
        "for epoch in range(2):\n",
        'for epoch in range(2):\n    if epoch == 0 and os.environ.get("RANK") == "1":\n        time.sleep(600)\n')
    check = _verify(tmp_path, port, timeout=25)["port exits 0 on 2 processes (runtime launcher)"]
    assert not check.passed and check.evidence.startswith("hang: still running after 25s"), check.evidence
    assert "rank 0:" in check.details and "rank 1:" in check.details, check.details
    assert 'train.py", line 29' in check.details.split("rank 1:")[1], check.details


SIMULATED = '''\
import torch
x = torch.randn(3).to("cuda")          # line 2: bare "cuda" is cuda:0 until set_device: rank 1 violates
torch.cuda.set_device(1)
y = torch.randn(3).cuda()              # line 4: now cuda:1, fine
z = torch.arange(3, device=y.device)   # line 5: follows y (x.device is logical for the script)
print(y.device, z.device, y.is_cuda, torch.cuda.device_count())
w = y + torch.ones(3)                  # line 7: a CPU tensor mixed into a cuda op
y.numpy()                              # line 8: .numpy() of a cuda tensor
'''


def test_simulated_cuda_records_each_misuse_with_its_call_site(tmp_path: Path) -> None:
    from migrator.verification.runs import Run, execute
    from migrator.verification.runs import child_env as verify_env

    (tmp_path / "sim.py").write_text(SIMULATED)
    audit = tmp_path / "audit"
    audit.mkdir()
    env = verify_env(audit, tmp_path, single=True, simulate=True, devices=2,
                     extra={"LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    run = execute(Run("sim", [sys.executable, "sim.py"], tmp_path, audit), env, 60)
    assert run.returncode == 0, run.stderr
    assert run.stdout == "cuda:1 cuda:1 True 2\n"
    found = {(r["site"], r["message"].split(" (")[0]) for r in run.of("placement")}
    assert found == {
        ("sim.py:2", "local rank 1 uses cuda:0"),
        ("sim.py:7", "add mixes a CPU tensor and a tensor on cuda:1"),
        ("sim.py:8", ".numpy() of a tensor on cuda:1"),
    }, found


LSTM_SIM = '''import torch
lstm = torch.nn.LSTM(4, 3).to("cuda")
x = torch.randn(5, 2, 4).to("cuda")
out, _ = lstm(x)                      # torch makes the zero state from x.device: no misuse
cell = torch.nn.LSTMCell(4, 3).to("cuda")
h = torch.zeros(2, 3)                 # the script's own CPU state, fed to a cuda cell
cell(x[0], (h, h))                    # line 7
print(torch.accelerator.current_accelerator(), out.device)
'''


def test_simulation_tells_torch_internal_state_from_the_script_own_cpu_tensors(tmp_path: Path) -> None:
    from migrator.verification.runs import Run, execute
    from migrator.verification.runs import child_env as verify_env

    (tmp_path / "lstm.py").write_text(LSTM_SIM)
    audit = tmp_path / "audit"
    audit.mkdir()
    env = verify_env(audit, tmp_path, single=True, simulate=True, devices=1)
    run = execute(Run("lstm", [sys.executable, "lstm.py"], tmp_path, audit), env, 60)
    assert run.returncode == 0, run.stderr
    # torch.accelerator.current_accelerator() names no index on a real GPU either
    assert run.stdout == "cuda cuda:0\n"
    found = {(r["site"], r["message"].split(" (")[0]) for r in run.of("placement")}
    assert found == {("lstm.py:7", "lstm_cell mixes a CPU tensor and a tensor on cuda:0")}, found

"""MIG407 on reported numbers: epoch sums and per-batch means over sharded loaders are summed
across ranks (issue 11 item 5), python numbers keep their type, and what cannot be summed exactly
stays rank-local with a finding. The last test runs a port on 1 and 2 real gloo processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import ROOT, child_env

from migrator.engine import migrate_source
from migrator.options import Options

TRAIN_SUMS = ROOT / "fixtures" / "rules" / "MIG407_train_sums" / "input.py"

HEAD = """\
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset
"""

MAIN = """
def main():
    data = TensorDataset(torch.randn(12, 4), torch.randint(0, 3, (12,)))
    train_loader = DataLoader(data, batch_size=3)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    train(model, train_loader, optimizer)


if __name__ == "__main__":
    main()
"""


def _port(body: str, target: str = "runtime"):
    source = HEAD + "\n\n" + textwrap.dedent(body) + "\n" + MAIN
    result = migrate_source(source, path="train.py", options=Options(target=target))
    assert not result.internal_error, result.traceback
    again = migrate_source(result.output, path="again.py", options=Options(target=target))
    assert again.output == result.output  # a fixed point
    return result


def _mig407(result) -> list[tuple[bool, str]]:
    return [(f.fixed, f.message) for f in result.findings if f.code == "MIG407"]


TRAIN = """
def train(model, train_loader, optimizer):
    epoch_loss = 0
    for data, target in train_loader:
        optimizer.zero_grad()
        loss = F.cross_entropy(model(data), target)
        loss.backward()
        optimizer.step()
        epoch_loss += loss.item()
    print("mean batch loss {:.4f}".format(epoch_loss / len(train_loader)))
"""


def test_a_mean_of_batch_losses_sums_the_losses_and_the_batches():
    out = _port(TRAIN).output
    lines = [line.strip() for line in out.splitlines()]
    reduce_at = lines.index('epoch_loss = rt.all_reduce(epoch_loss, op="sum")')
    assert lines[reduce_at - 1] == "optimizer.step()" or lines[reduce_at - 1].startswith("epoch_loss +=")
    assert 'epoch_loss / rt.all_reduce(len(train_loader), op="sum")' in out


@pytest.mark.parametrize("target,call", [("fabric", "fabric.all_reduce("), ("accelerate", "accelerator.reduce(")])
def test_python_numbers_stay_python_numbers_on_fabric_and_accelerate(target, call):
    out = _port(TRAIN, target).output
    assert f"epoch_loss = type(epoch_loss)({call}torch.tensor(epoch_loss, dtype=torch.float64" in out
    assert f"epoch_loss / int({call}torch.tensor(len(train_loader), dtype=torch.float64" in out


def test_a_tensor_sum_is_reduced_on_the_runtime_and_reported_elsewhere():
    body = TRAIN.replace("epoch_loss += loss.item()", "epoch_loss += loss.detach()")
    assert 'epoch_loss = rt.all_reduce(epoch_loss, op="sum")' in _port(body).output
    fab = _port(body, "fabric")
    assert "all_reduce" not in fab.output
    [(fixed, message)] = _mig407(fab)
    assert not fixed and "may hold a tensor" in message


def test_a_division_by_the_batches_in_a_branch_is_not_reduced():
    body = TRAIN.replace(
        '    print("mean batch loss {:.4f}".format(epoch_loss / len(train_loader)))',
        "    if epoch_loss > 1:\n"
        '        print("mean batch loss {:.4f}".format(epoch_loss / len(train_loader)))',
    )
    result = _port(body)
    assert "all_reduce" not in result.output
    [(fixed, message)] = _mig407(result)
    assert not fixed and "not reached by every rank alike" in message


def test_a_count_of_loop_steps_is_left_rank_local_with_a_finding():
    body = TRAIN.replace("for data, target in train_loader:", "for i, (data, target) in enumerate(train_loader):")
    body = body.replace("epoch_loss / len(train_loader)", "epoch_loss / (i + 1)")
    result = _port(body)
    assert "all_reduce" not in result.output
    [(fixed, message)] = _mig407(result)
    assert not fixed and "rank 0's share" in message


def test_a_running_average_printed_inside_the_loop_is_rank_zeros_log():
    body = TRAIN.replace(
        "        epoch_loss += loss.item()\n",
        "        epoch_loss += loss.item()\n"
        '        print("running {:.4f}".format(epoch_loss / 10))\n'
        "        epoch_loss = 0\n",
    ).replace('    print("mean batch loss {:.4f}".format(epoch_loss / len(train_loader)))\n', "")
    result = _port(body)
    assert "all_reduce" not in result.output and not _mig407(result)


def test_a_loop_that_may_return_is_not_followed_by_a_collective():
    body = TRAIN.replace("        optimizer.step()\n", "        optimizer.step()\n        if loss.item() > 9:\n            return\n")
    result = _port(body)
    assert "all_reduce" not in result.output
    [(fixed, message)] = _mig407(result)
    assert not fixed and "return" in message


def _run(cmd: list[str], cwd: Path) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_two_processes_print_the_one_process_numbers(tmp_path: Path):
    """Runtime port of the fixture with lr 0 (the model does not move, so every number is a
    statistic of the same data): 1 process prints the original's bytes, 2 processes the same
    summary lines. Without the reduction rank 0 prints its 6 samples and its own mean."""
    source = TRAIN_SUMS.read_text()
    port = tmp_path / "port.py"
    port.write_text(migrate_source(source, path="train.py", options=Options(target="runtime")).output)
    original = tmp_path / "original.py"
    original.write_text(source)
    args = ["--lr", "0", "--epochs", "1"]
    expected = _run([sys.executable, str(original), *args], tmp_path)
    assert _run([sys.executable, str(port), *args], tmp_path) == expected
    two = _run([sys.executable, "-m", "migrator", "run", "--devices", "2", str(port), "--", *args], tmp_path)
    summaries = [line for line in expected.splitlines() if line.startswith("epoch")]
    assert "over 12 samples" in summaries[0]
    assert [line for line in two.splitlines() if line.startswith("epoch")] == summaries


UNSEEDED = ROOT / "fixtures" / "rules" / "MIG408_unseeded_exit" / "input.py"


@pytest.mark.parametrize("target", ["runtime", "fabric", "accelerate"])
def test_an_unseeded_threshold_loop_shares_rank_zeros_seed(target):
    source = UNSEEDED.read_text()
    out = migrate_source(source, path="train.py", options=Options(target=target)).output
    lines = out.splitlines()
    wrapper = next(i for i, line in enumerate(lines) if line.endswith(("Runtime()", "Fabric()", "Accelerator()")))
    assert "torch.initial_seed() % 2**32" in lines[wrapper + 1]
    assert lines[wrapper + 1].index("initial_seed") > 0
    assert out.index("initial_seed") < out.index("torch.randn(3, 1)")  # before the first draw
    again = migrate_source(out, path="again.py", options=Options(target=target)).output
    assert again == out


def test_seeded_scripts_and_scripts_without_draws_keep_their_randomness():
    source = UNSEEDED.read_text()
    seeded = source.replace("true_w = torch.randn", "torch.manual_seed(3)\ntrue_w = torch.randn")
    no_draws = source.replace("torch.randn(3, 1) * 2", "torch.ones(3, 1)").replace(
        "x = torch.randn(n, 3)", "x = torch.linspace(-1, 1, n * 3).view(n, 3)")
    for text in (seeded, no_draws):
        out = migrate_source(text, path="train.py", options=Options(target="runtime")).output
        assert "initial_seed" not in out and "rt.reduce_boolean_decision(" in out


def test_an_unseeded_threshold_loop_ends_on_two_processes(tmp_path: Path):
    """Each rank drew its own random target: the averaged model fit neither and the collective
    exit never came (a hang). With rank 0's seed both ranks stop together; rank 1 is silent."""
    port = tmp_path / "port.py"
    port.write_text(migrate_source(UNSEEDED.read_text(), path="train.py", options=Options(target="runtime")).output)
    proc = subprocess.run([sys.executable, "-m", "migrator", "run", "--devices", "2", str(port)], cwd=tmp_path,
                          env=child_env(), capture_output=True, text=True, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert len(lines) == 2 and lines[0].startswith("stopped after") and lines[1] == "largest weight error 0.00"

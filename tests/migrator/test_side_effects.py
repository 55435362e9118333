"""Edge cases of the side-effect rules (MIG401-409) beyond the fixtures: what must stay untouched."""

from __future__ import annotations

import textwrap

import pytest

from migrator.engine import migrate_source
from migrator.options import Options
from migrator.program import Role
from migrator.results import Status


def migrate(src: str, target: str = "runtime"):
    # Snippets are parts of a training script (Role()), even when they hold only definitions,
    # which alone would make them a helper module (tests/migrator/test_program.py).
    options = Options(target=target, role=Role())
    result = migrate_source(textwrap.dedent(src), path="t.py", options=options)
    assert not result.internal_error, result.traceback
    again = migrate_source(result.output, path="t.py", options=options)
    assert again.output == result.output, "not a fixed point"
    return result


def codes(result) -> list[str]:
    return sorted(f.code for f in result.findings)


def test_print_shadowed_by_a_local_function_is_not_the_builtin():
    src = """
    import torch

    def print(*args):
        pass

    print("hello", torch.ones(1))
    """
    result = migrate(src)
    assert result.status is Status.UNCHANGED and codes(result) == []


def test_print_already_under_a_rank_zero_guard_stays():
    src = """
    import torch
    from runtime import Runtime

    rt = Runtime()
    if rt.is_global_zero:
        print("once", torch.ones(1))
    """
    assert migrate(src).status is Status.UNCHANGED


def test_save_with_extra_arguments_or_to_a_handle_is_left_alone():
    src = """
    import torch

    def dump(model):
        torch.save(model.state_dict(), "a.pt", pickle_protocol=4)
        with open("b.pt", "wb") as handle:
            torch.save(model.state_dict(), handle)
    """
    result = migrate(src)
    assert "torch.save(model.state_dict(), handle)" in result.output
    assert 'torch.save(model.state_dict(), "a.pt", pickle_protocol=4)' in result.output
    assert "MIG402" not in codes(result)


def test_load_mapped_to_a_device_is_left_to_the_device_rules():
    src = """
    import torch

    def restore(model, device):
        model.load_state_dict(torch.load("a.pt", map_location=device))
    """
    result = migrate(src)
    assert "MIG403" not in codes(result)
    assert "torch.load(" in result.output


def test_unsafe_load_is_reported_with_its_risk():
    src = """
    import torch

    def restore(path):
        return torch.load(path, weights_only=False)
    """
    result = migrate(src, "fabric")
    (finding,) = [f for f in result.findings if f.code == "MIG403"]
    assert "arbitrary code" in finding.message
    # a whole pickle is no checkpoint of set-up objects: the script's own load stays, reported
    assert not finding.fixed and "torch.load(path, weights_only=False)" in result.output
    restore = migrate(src.replace("return torch.load(path, weights_only=False)",
                                  "model.load_state_dict(torch.load(path, weights_only=False))"), "fabric")
    (finding,) = [f for f in restore.findings if f.code == "MIG403"]
    assert finding.fixed and "arbitrary code" in finding.message
    assert "model.load_state_dict(fabric.load(path, weights_only=False))" in restore.output


def test_data_loads_keep_the_scripts_own_torch_load():
    # issue 11 #4: a pickled array loaded with rt.load (weights_only=True) raised UnpicklingError
    src = """
    import torch

    data = torch.load("traindata.pt")
    model = torch.nn.Linear(3, 1)
    model.load_state_dict(torch.load("init.pt"))
    ckpt = torch.load("ckpt.pt")
    model.load_state_dict(ckpt["model"])
    """
    out = migrate(src).output
    assert 'data = torch.load("traindata.pt")' in out
    assert 'model.load_state_dict(rt.load("init.pt"))' in out
    assert 'ckpt = rt.load("ckpt.pt")' in out


def test_download_inside_existing_rank_zero_first_and_os_mkdir_stay():
    src = """
    import os
    from runtime import Runtime
    from torchvision import datasets

    rt = Runtime()
    with rt.rank_zero_first():
        train_set = datasets.MNIST("data", download=True)
    try:
        os.makedirs("out")
    except FileExistsError:
        pass
    """
    result = migrate(src)
    assert result.status is Status.UNCHANGED and codes(result) == []


def test_write_block_that_runs_a_model_is_reported_not_guarded():
    src = """
    import torch

    def dump_predictions(model, inputs):
        with open("pred.txt", "w") as f:
            for x in inputs:
                f.write(str(model(x)))
    """
    result = migrate(src)
    (finding,) = [f for f in result.findings if f.code == "MIG406"]
    assert not finding.fixed
    assert "is_global_zero" not in result.output


@pytest.mark.parametrize(
    "target,expected", [("runtime", "rt.is_global_zero"), ("fabric", "fabric.is_global_zero")]
)
def test_image_write_keeps_the_forward_pass_on_every_rank(target, expected):
    src = """
    import torch
    from torchvision.utils import save_image

    def sample(netG, noise):
        save_image(netG(noise), "fake.png")
    """
    out = migrate(src, target).output
    forward = out.index("to_write = netG(noise)")
    guard = out.index(f"if {expected}:")
    assert forward < guard
    assert 'save_image(to_write, "fake.png")' in out[guard:]


def test_tensor_accumulators_are_reduced_and_per_batch_means_count_the_batches():
    src = """
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    def evaluate(model):
        loader = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=2)
        total_loss = 0.0
        mean_of_means = 0.0
        with torch.no_grad():
            for (x,) in loader:
                total_loss += model(x).sum()
                mean_of_means += model(x).mean().item()
        return total_loss / len(loader.dataset), mean_of_means / len(loader)
    """
    out = migrate(src).output
    assert 'total_loss = rt.all_reduce(total_loss, op="sum")' in out
    # a mean of per-batch means: the batch values and the number of batches of every rank
    assert 'mean_of_means = rt.all_reduce(mean_of_means, op="sum")' in out
    assert 'mean_of_means / rt.all_reduce(len(loader), op="sum")' in out
    fabric = migrate(src, "fabric").output
    assert "all_reduce" not in fabric  # fabric evaluates the whole set on every rank


def test_loop_without_training_keeps_its_exit():
    src = """
    import torch

    def search(values, limit):
        best = 0.0
        for v in values:
            best = max(best, float(torch.tensor(v)))
            if best > limit:
                break
        return best
    """
    assert "MIG408" not in codes(migrate(src))


def test_wall_clock_budget_exit_is_decided_collectively():
    src = """
    import time
    import torch

    def train(model, optimizer, x, budget):
        start = time.time()
        for step in range(1000):
            optimizer.zero_grad()
            model(x).sum().backward()
            optimizer.step()
            if time.time() - start > budget:
                break
    """
    out = migrate(src).output
    assert "if rt.reduce_boolean_decision(time.time() - start > budget, all=True):" in out


def test_seed_is_left_when_random_is_seeded_differently_elsewhere():
    src = """
    import random
    import torch

    random.seed(123)
    data = random.sample(range(100), 10)
    torch.manual_seed(0)
    """
    result = migrate(src)
    assert "MIG409" not in codes(result)
    assert "torch.manual_seed(0)" in result.output


def test_accumulators_initialised_together_in_a_tuple_are_each_reduced():
    src = """
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    def evaluate(model):
        loader = DataLoader(TensorDataset(torch.randn(8, 2)), batch_size=2)
        loss_sum, correct, total = 0.0, 0, 0
        for (x,) in loader:
            loss_sum += model(x).sum().item()
            correct += (model(x) > 0).sum().item()
            total += x.size(0)
        return loss_sum / total, correct / total
    """
    out = migrate(src).output
    for name in ("loss_sum", "correct", "total"):
        assert f'{name} = rt.all_reduce({name}, op="sum")' in out
    assert out.index("total = rt.all_reduce") < out.index("return loss_sum / total")


@pytest.mark.parametrize(
    "target,unwrapped", [("runtime", "rt.unwrap(model)"), ("fabric", "model.module")]
)
def test_onnx_export_traces_the_unwrapped_module_on_rank_zero(target, unwrapped):
    src = """
    import torch

    model = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(8, 4)
    for _ in range(2):
        optimizer.zero_grad()
        model(x).sum().backward()
        optimizer.step()
    torch.onnx.export(model, x, "model.onnx")
    """
    out = migrate(src, target).output
    assert f'    torch.onnx.export({unwrapped}, x, "model.onnx")' in out
    assert out.index("is_global_zero:") < out.index("torch.onnx.export(")


_FSTRING_MEAN = '''import torch
from torch.utils.data import DataLoader, TensorDataset
model = torch.nn.Linear(2, 1)
opt = torch.optim.SGD(model.parameters(), lr=0.1)
train_loader = DataLoader(TensorDataset(torch.randn(8, 2), torch.randn(8, 1)), batch_size=2)
for epoch in range(2):
    total = 0.0
    for x, y in train_loader:
        loss = ((model(x) - y) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += loss.item()
    print(f"epoch {epoch} loss {total / len(train_loader):.4f}")
    print(f'epoch {epoch} again {total / len(train_loader):.4f}')
'''


@pytest.mark.parametrize("target", ["runtime", "fabric", "accelerate"])
def test_batch_count_summed_inside_an_fstring_keeps_its_quotes_valid(target: str) -> None:
    """MIG407's `len(loader)` -> all_reduce(..., op="sum") inside f"...": before Python 3.12 an
    f-string expression cannot hold the f-string's own quote (it was an internal error)."""
    from migrator.engine import migrate_source
    from migrator.options import Options

    result = migrate_source(_FSTRING_MEAN, "t.py", Options(target=target))
    assert not result.internal_error, result.traceback
    compile(result.output, "t.py", "exec")
    lines = [ln for ln in result.output.splitlines() if "epoch {epoch}" in ln]
    assert len(lines) == 2
    for line in lines:
        quote = line.split("(", 1)[1].lstrip("f")[0]
        summed = line[line.index("{total"):line.rindex("}")]
        assert "len(train_loader)" in summed and "len(train_loader)" != summed[len("{total / "):], line
        assert quote not in summed, line  # the f-string's own quote cannot appear inside it

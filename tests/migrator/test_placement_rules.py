"""GPU placement in the wrapper form (issue 11 #8, #10, #11), rule by rule: printed devices keep
their text, integer GPU ids are device selections, a model used before setup keeps its move,
and CPU tensors fed to the set-up model follow it to the device."""

from __future__ import annotations

import textwrap

import pytest

from migrator.engine import migrate_source
from migrator.options import Options
from migrator.results import Status
from migrator.targets import VOCABULARIES

TARGETS = tuple(VOCABULARIES)


# a training script: files that train nothing are left alone (migrator.program)
TRAINING = """
net = torch.nn.Linear(1, 1)
opt = torch.optim.SGD(net.parameters(), lr=0.1)
def train(x):
    opt.zero_grad()
    loss = net(x).sum()
    loss.backward()
    opt.step()
for x in [torch.ones(1, 1)]:
    train(x)
"""

def _port(source: str, target: str = "runtime", train: bool = False, **kw):
    options = Options(target=target, **kw)
    source = textwrap.dedent(source) + (TRAINING if train else "")
    result = migrate_source(source, path="train.py", options=options)
    assert not result.internal_error, result.traceback
    assert result.status is Status.CHANGED, result.reason
    compile(result.output, "port.py", "exec")
    again = migrate_source(result.output, path="train.py", options=options)
    assert again.output == result.output  # a fixed point
    return result


def _codes(result, code: str) -> list[str]:
    return [f.message for f in result.findings if f.code == code]


TRAINER = """\
import torch

class Trainer:
    def __init__(self, model, gpu_id):
        self.gpu_id = gpu_id
        self.model = model.to(gpu_id)
        self.opt = torch.optim.SGD(self.model.parameters(), lr=0.1)

    def step(self, x):
        print(f"[GPU{self.gpu_id}] step")
        self.model(x.to(self.gpu_id)).sum().backward()
        self.opt.step()

device = DEVICE
Trainer(torch.nn.Linear(2, 1), device).step(torch.ones(1, 2))
"""


# --- printed devices (notebook_style.py, ddp-tutorial single_gpu.py) ---------------------------
@pytest.mark.parametrize("target", TARGETS)
def test_device_chosen_without_index_prints_its_type(target: str) -> None:
    port = _port("""\
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
        print(f"Using {device} device")
        print("device:", device, "{}".format(device), "%s" % device, str(device))
        torch.ones(1).to(device)
        """, target, train=True).output
    dev = VOCABULARIES[target].device.format(rt=VOCABULARIES[target].wrapper_var)
    assert f"device = {dev}\n" in port
    assert 'print(f"Using {device.type} device")' in port
    assert 'print("device:", device.type, "{}".format(device.type), "%s" % device.type, str(device.type))' in port


def test_torch_device_without_index_prints_its_type_and_repr_is_left() -> None:
    port = _port("""\
        import torch
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        print(f"{device} / {device!r}")
        torch.ones(1).to(device)
        """, train=True).output
    assert 'rt.print(f"{device.type} / {device!r}")' in port


def test_device_with_index_prints_as_it_is() -> None:
    port = _port("""\
        import torch
        device = "cuda:0"
        print(f"Using {device}")
        torch.ones(1).to(device)
        """, train=True).output
    assert "device = rt.device\n" in port and 'rt.print(f"Using {device}")' in port


@pytest.mark.parametrize("target", TARGETS)
def test_integer_gpu_id_through_self_prints_the_local_rank(target: str) -> None:
    vocab = VOCABULARIES[target]
    rank = vocab.local_rank.format(rt=vocab.wrapper_var)
    port = _port(TRAINER.replace("DEVICE", "0"), target).output
    assert f"device = {vocab.device.format(rt=vocab.wrapper_var)}\n" in port
    assert f'print(f"[GPU{{{rank}}}] step")' in port


def test_integer_or_cpu_choice_is_a_device_selection() -> None:
    result = _port(TRAINER.replace("DEVICE", '0 if torch.cuda.is_available() else "cpu"'))
    assert "device = rt.device\n" in result.output
    assert """print(f"[GPU{(rt.local_rank if self.gpu_id.type == 'cuda' else self.gpu_id.type)}] step")""" in result.output
    assert any("printed devices print what they printed" in m for m in _codes(result, "MIG101"))


def test_printed_parameter_that_also_receives_a_string_is_left() -> None:
    port = _port("""\
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"
        def run(where):
            print(f"running on {where}")
            return torch.ones(1).to(where)
        run(device)
        run("cpu")
        """, train=True).output
    assert 'print(f"running on {where}")' in port


def test_printed_device_follows_the_suppression_of_its_selection() -> None:
    port = _port("""\
        import torch
        device = "cuda" if torch.cuda.is_available() else "cpu"  # migrate: ignore[MIG101]
        print(f"Using {device} device")
        torch.ones(1).to(device)
        """, train=True).output
    assert '{device} device' in port and "device.type" not in port


# --- CPU tensors fed to the set-up model (reinforce.py, actor_critic.py) -------------------------
POLICY = """\
import numpy as np
import torch

policy = torch.nn.Linear(4, 2)
optimizer = torch.optim.Adam(policy.parameters(), lr=1e-2)

def act(obs):
    state = torch.tensor(obs, dtype=torch.float32).unsqueeze(0)
    return policy(state)

def value(obs):
    x = torch.from_numpy(obs).float()
    x = x[None]
    return policy(x)

for _ in range(2):
    loss = act([0.0] * 4).sum() + value(np.ones(4, dtype=np.float32)).sum() + policy(torch.zeros(1, 4)).sum()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
"""


@pytest.mark.parametrize("target", TARGETS)
def test_cpu_tensors_fed_to_the_set_up_model_move_to_its_device(target: str) -> None:
    vocab = VOCABULARIES[target]
    dev = vocab.device.format(rt=vocab.wrapper_var)
    result = _port(POLICY, target)
    assert f"return policy(state.to({dev}))" in result.output
    assert f"return policy(x.to({dev}))" in result.output  # through from_numpy and x[None]
    assert f"policy(torch.zeros(1, 4, device={dev}))" in result.output
    assert len(_codes(result, "MIG102")) == 3


def test_inputs_already_on_the_device_or_of_unknown_origin_are_left() -> None:
    port = _port("""\
        import torch
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model = torch.nn.Linear(4, 2)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        def step(batch):
            x = torch.ones(1, 4).to(device)
            y = torch.ones(1, 4, device=device)
            z = torch.ones(1, 4)
            z = batch
            return model(x) + model(y) + model(z) + model(batch)
        for _ in range(2):
            optimizer.zero_grad()
            loss = step(torch.ones(1, 4).to(device)).sum()
            loss.backward()
            optimizer.step()
        """).output
    assert "return model(x) + model(y) + model(z) + model(batch)" in port


def test_model_called_before_setup_keeps_its_inputs() -> None:
    """Before setup the model is where the script put it (here: the CPU)."""
    port = _port("""\
        import torch
        model = torch.nn.Linear(4, 2)
        warm = model(torch.zeros(1, 4))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(2):
            optimizer.zero_grad()
            loss = model(torch.zeros(1, 4)).sum()
            loss.backward()
            optimizer.step()
        """).output
    assert "warm = model(torch.zeros(1, 4))\n" in port
    assert "loss = model(torch.zeros(1, 4, device=rt.device)).sum()" in port


def test_input_move_needs_the_setup() -> None:
    """Without the setup (MIG202 ignored) the model stays on the CPU: its inputs too."""
    result = _port(POLICY, ignore=("MIG202",))
    assert "policy(state)" in result.output and "rt.device" not in result.output
    assert not _codes(result, "MIG102")


def test_input_inside_a_rewritten_backward_is_moved_with_it() -> None:
    # MIG204 rebuilds the backward from the loss as MIG102 left it (it was reported "by hand")
    result = _port("""\
        import torch
        model = torch.nn.Linear(2, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(2):
            model(torch.ones(1, 2)).sum().backward()
            optimizer.step()
        """)
    assert "rt.backward(model(torch.ones(1, 2, device=rt.device)).sum())" in result.output
    moved = [f for f in result.findings if f.code == "MIG102"]
    assert len(moved) == 1 and moved[0].fixed


# --- a model used before its setup keeps its move (evaluate-only paths) --------------------------
EVAL_FIRST = """\
import torch

def test(model, device):
    return model(torch.ones(2, 3, device=device)).sum().item()

def main(eval_only):
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = torch.nn.Linear(3, 1).MOVE
    USE
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(2):
        optimizer.zero_grad()
        loss = model(torch.ones(2, 3, device=device)).sum()
        loss.backward()
        optimizer.step()

main(False)
"""


@pytest.mark.parametrize("use", [
    "if eval_only:\n        print(test(model, device))\n        return",
    "print(model(torch.ones(1, 3, device=device)))",
    "summary = model.forward(torch.ones(1, 3, device=device))",
])
def test_model_used_before_setup_keeps_its_move(use: str) -> None:
    result = _port(EVAL_FIRST.replace("MOVE", "to(device)").replace("USE", use))
    assert "model = torch.nn.Linear(3, 1).to(device)\n" in result.output
    assert not [f for f in result.findings if f.code == "MIG102" and "remove the move" in f.message]


def test_kept_cuda_move_goes_to_the_wrappers_device() -> None:
    use = "if eval_only:\n        print(test(model, device))\n        return"
    port = _port(EVAL_FIRST.replace("MOVE", "cuda()").replace("USE", use)).output
    assert "model = torch.nn.Linear(3, 1).to(rt.device)\n" in port


@pytest.mark.parametrize("use", [
    "print(model)",
    "model.apply(lambda m: None)",
    "model.train()",
    "model.load_state_dict(model.state_dict())",
])
def test_harmless_uses_before_setup_still_drop_the_move(use: str) -> None:
    result = _port(EVAL_FIRST.replace("MOVE", "to(device)").replace("USE", use))
    assert "model = torch.nn.Linear(3, 1)\n" in result.output


def test_a_dataparallel_wrap_between_move_and_setup_is_no_use_and_stays_a_fixed_point():
    # Lightning's examples/fabric/dcgan/train_torch.py: the first pass kept the move (the wrap
    # looked like a use) and removed the wrap; the second then removed the move (exit 123)
    from migrator.engine import migrate_source
    from migrator.options import Options

    src = (
        "import torch\nimport torch.nn as nn\n\n"
        'device = torch.device("cuda" if torch.cuda.is_available() else "cpu")\n'
        "net = nn.Linear(2, 1).to(device)\n"
        "if torch.cuda.device_count() > 1:\n    net = nn.DataParallel(net)\n"
        "opt = torch.optim.SGD(net.parameters(), lr=0.1)\n"
        "for _ in range(2):\n    opt.zero_grad()\n"
        "    net(torch.ones(1, 2, device=device)).sum().backward()\n    opt.step()\n"
    )
    for target in ("runtime", "fabric", "accelerate"):
        result = migrate_source(src, path="t.py", options=Options(target=target))
        assert not result.internal_error, result.traceback
        assert "net = nn.Linear(2, 1)\n" in result.output and "DataParallel" not in result.output


def test_a_printed_device_two_selections_reach_is_rewritten_once():
    # pytorch/examples language_translation: DEVICE chosen at the top and again in main(),
    # printed once: both selections rewrote the same name (internal error: replaced twice)
    from migrator.engine import migrate_source
    from migrator.options import Options

    src = (
        "import torch\n\n"
        'DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")\n\n\n'
        "def main():\n"
        '    print(f"Using device: {DEVICE}")\n'
        "    model = torch.nn.Linear(2, 1).to(DEVICE)\n"
        "    opt = torch.optim.SGD(model.parameters(), lr=0.1)\n"
        "    model(torch.ones(1, 2, device=DEVICE)).sum().backward()\n    opt.step()\n\n\n"
        'if __name__ == "__main__":\n'
        '    DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")\n'
        "    main()\n"
    )
    for target in ("runtime", "fabric", "accelerate"):
        result = migrate_source(src, path="t.py", options=Options(target=target))
        assert not result.internal_error, result.traceback
        assert 'print(f"Using device: {DEVICE.type}")' in result.output


def test_model_output_reaches_numpy_through_the_cpu() -> None:
    result = _port("""\
        import torch
        model = torch.nn.Linear(2, 1)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(2):
            optimizer.zero_grad()
            out = model(torch.ones(1, 2))
            out.sum().backward()
            optimizer.step()
            curve = out.detach().numpy()
            kept = out.detach().cpu().numpy()
            data = torch.ones(3).numpy()
        """)
    assert "curve = out.detach().cpu().numpy()" in result.output
    assert "kept = out.detach().cpu().numpy()" in result.output  # already on the CPU: untouched
    assert "data = torch.ones(3).numpy()" in result.output  # not the model's output
    numpy = [f for f in result.findings if "numpy" in f.message]
    assert len(numpy) == 1 and numpy[0].fixed, numpy

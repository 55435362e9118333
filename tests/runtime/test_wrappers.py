"""Wrapped module/optimizer behave like the originals; accumulation gates step/zero_grad."""

from __future__ import annotations

import pickle

import torch

from runtime import Runtime


class VAE(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 2)
        self.dec = torch.nn.Linear(2, 4)
        self.temperature = 1.0

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.dec(z) * self.temperature

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.fc1(x))


def test_wrapped_module_reaches_the_original():
    rt = Runtime()
    vae = VAE()
    model = rt.setup(vae)
    assert model.fc1 is vae.fc1 and model.module is vae and rt.unwrap(model) is vae
    assert model.decode(torch.zeros(1, 2)).shape == (1, 4)
    model.temperature = 2.0  # script attributes land on the user's module
    assert vae.temperature == 2.0
    assert list(model.state_dict()) == list(vae.state_dict())
    model.load_state_dict({"module." + k: v for k, v in VAE().state_dict().items()})
    model.mark_forward_method("decode")
    assert torch.equal(model.decode(torch.ones(1, 2)), vae.decode(torch.ones(1, 2)))
    assert "forward" not in vae.__dict__  # the temporary forward swap was undone
    model.eval()
    assert not vae.training
    pickle.dumps(rt.unwrap(model))


def test_wrapped_optimizer_keeps_type_state_and_closure_result():
    rt = Runtime()
    torch.manual_seed(0)
    lin = torch.nn.Linear(3, 1)
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    model, opt = rt.setup(lin, torch.optim.LBFGS(lin.parameters(), lr=0.5))
    assert isinstance(opt, torch.optim.LBFGS)
    assert opt.param_groups is rt.unwrap(opt).param_groups

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        rt.backward(loss)
        return loss

    first = opt.step(closure)
    assert isinstance(first, torch.Tensor) and first.item() > 0
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    opt.step(closure)
    sched.step()
    assert opt.param_groups[0]["lr"] == 0.25


def test_accumulation_steps_on_boundaries_and_matches_the_concatenated_batch():
    rt = Runtime(accumulate_grad_batches=2)
    torch.manual_seed(0)
    lin, ref = torch.nn.Linear(3, 1), torch.nn.Linear(3, 1)
    ref.load_state_dict(lin.state_dict())
    model, opt = rt.setup(lin, torch.optim.SGD(lin.parameters(), lr=0.1))
    ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    w0 = lin.weight.detach().clone()
    for i in range(2):  # two micro-batches of 4 = one step on 8
        opt.zero_grad()
        rt.backward(torch.nn.functional.mse_loss(model(x[4 * i:4 * i + 4]), y[4 * i:4 * i + 4]))
        opt.step()
        if i == 0:
            assert torch.equal(lin.weight, w0) and lin.weight.grad is not None
    torch.nn.functional.mse_loss(ref(x), y).backward()
    ref_opt.step()
    torch.testing.assert_close(lin.weight, ref.weight)
    opt.zero_grad()  # after a boundary, zero_grad acts again
    assert lin.weight.grad is None


def test_single_process_calls_are_no_ops():
    rt = Runtime()
    assert (rt.world_size, rt.global_rank, rt.is_global_zero) == (1, 0, True)
    assert rt.all_reduce(3) == 3 and isinstance(rt.all_reduce(3), int)
    assert rt.all_reduce(2.5, op="mean") == 2.5
    t = torch.tensor([1.0, 2.0])
    assert rt.all_reduce(t) is t
    assert rt.all_gather(t).shape == (1, 2)
    assert rt.broadcast({"a": 1}) == {"a": 1}
    assert rt.reduce_boolean_decision(True) is True
    with rt.rank_zero_first():
        pass
    rt.barrier()


def test_seed_everything_matches_manual_seed():
    Runtime().seed_everything(123)
    a = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(a, torch.rand(3))

"""Precision plugins: autocast inside the wrapped forward, fp32 master weights, GradScaler
skip-on-inf, bf16-true, and the bare-backward guard."""

from __future__ import annotations

import pytest
import torch

from runtime import Runtime


class Probe(torch.nn.Module):
    """Records the dtype its first layer computed in."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self.seen: list[torch.dtype] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.lin(x)
        self.seen.append(y.dtype)
        return y


def test_bf16_mixed_runs_forward_in_bf16_and_keeps_fp32_parameters():
    rt = Runtime(precision="bf16-mixed")
    probe = Probe()
    model, opt = rt.setup(probe, torch.optim.SGD(probe.parameters(), lr=0.1))
    out = model(torch.randn(2, 4))
    assert probe.seen == [torch.bfloat16]
    assert out.dtype == torch.float32  # outputs back in fp32 for the loss outside the model
    rt.backward(out.sum())
    opt.step()
    assert all(p.dtype == torch.float32 for p in probe.parameters())
    assert all(p.grad.dtype == torch.float32 for p in probe.parameters())


def test_bf16_true_casts_parameters_and_inputs():
    rt = Runtime(precision="bf16-true")
    probe = Probe()
    model = rt.setup(probe)
    out = model(torch.randn(2, 4))  # fp32 input cast on the way in
    assert probe.lin.weight.dtype == torch.bfloat16
    assert out.dtype == torch.bfloat16


def test_16_mixed_skips_a_step_with_inf_gradients_and_lowers_the_scale():
    rt = Runtime(precision="16-mixed")
    probe = Probe()
    model, opt = rt.setup(probe, torch.optim.AdamW(probe.parameters(), lr=0.1))
    before = [p.detach().clone() for p in probe.parameters()]
    scale = rt.strategy.precision.scaler.get_scale()
    out = model(torch.randn(2, 4))
    assert probe.seen == [torch.float16]
    rt.backward(out.sum() * float("inf"))
    opt.step()
    assert all(torch.equal(a, b) for a, b in zip(before, probe.parameters()))
    assert rt.strategy.precision.scaler.get_scale() < scale
    assert not opt.state  # AdamW never stepped
    opt.zero_grad()
    rt.backward(model(torch.randn(2, 4)).mean())  # a finite step goes through
    opt.step()
    assert not all(torch.equal(a, b) for a, b in zip(before, probe.parameters()))


def test_16_mixed_clip_unscales_before_measuring_the_norm():
    rt = Runtime(precision="16-mixed")
    lin = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    model, opt = rt.setup(lin, torch.optim.SGD(lin.parameters(), lr=0.1))
    rt.backward(model(torch.ones(1, 3)).sum() / 4)  # scaled gradients stay below fp16's max
    norm = rt.clip_gradients(model, opt, max_norm=100.0)
    # d(w.x / 4)/dw = x / 4: true norm sqrt(3) / 4, not that times the 65536 loss scale
    assert norm.item() == pytest.approx(3 ** 0.5 / 4, rel=1e-3)
    opt.step()
    torch.testing.assert_close(lin.weight, torch.full((1, 3), 0.975))


@pytest.mark.parametrize("precision", ["16-mixed"])
def test_bare_backward_raises_naming_the_replacement(precision):
    rt = Runtime(precision=precision)
    model = rt.setup(torch.nn.Linear(2, 1))
    loss = model(torch.randn(3, 2)).sum()
    with pytest.raises(RuntimeError, match=r"replace `loss.backward\(\)` with `rt.backward\(loss\)`"):
        loss.backward()


def test_bare_backward_is_allowed_in_full_precision():
    rt = Runtime()
    lin = torch.nn.Linear(2, 1)
    model = rt.setup(lin)
    model(torch.randn(3, 2)).sum().backward()
    assert lin.weight.grad is not None


def test_unknown_precision_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown precision 'fp16'; valid precision names: "
                                         r"32-true, bf16-mixed, 16-mixed, bf16-true"):
        Runtime(precision="fp16")

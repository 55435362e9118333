"""A buffer with an odd stride on a size-1 dimension (word_language_model's positional encoding) under DDP."""

import torch
from runtime import Runtime

class PositionalModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(4, 4)
        self.register_buffer("pe", torch.zeros(1, 50, 4).transpose(0, 1))  # word_language_model's shape
    def forward(self, x):
        return self.lin(x) + self.pe[: x.size(0), 0]

rt = Runtime()
model = PositionalModel()
pe = model.pe
opt = torch.optim.SGD(model.parameters(), lr=0.1)
model, opt = rt.setup(model, opt)
loss = model(torch.randn(3, 4)).sum()
rt.backward(loss)
opt.step()
assert rt.unwrap(model).pe is pe
rt.print("ok", tuple(pe.stride()))

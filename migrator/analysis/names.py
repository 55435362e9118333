"""Qualified names of the torch APIs the analysis recognises (resolved through imports, not spelling)."""

from __future__ import annotations

LOADERS = {"torch.utils.data.DataLoader", "torch.utils.data.dataloader.DataLoader"}
DATA_PARALLEL = {
    "torch.nn.DataParallel",
    "torch.nn.parallel.DataParallel",
    "torch.nn.parallel.data_parallel.DataParallel",
}
# The functional form: data_parallel(module, inputs, device_ids) inside a forward.
DATA_PARALLEL_FN = {"torch.nn.parallel.data_parallel", "torch.nn.parallel.data_parallel.data_parallel"}
AUTOCAST = {
    "torch.autocast": None,
    "torch.amp.autocast": None,
    "torch.cuda.amp.autocast": "cuda",
    "torch.cpu.amp.autocast": "cpu",
    "torch.amp.autocast_mode.autocast": None,
}
GRAD_SCALER = {
    "torch.cuda.amp.GradScaler",
    "torch.amp.GradScaler",
    "torch.GradScaler",
    "torch.amp.grad_scaler.GradScaler",
    "torch.cuda.amp.grad_scaler.GradScaler",
}
CLIP = {
    "torch.nn.utils.clip_grad_norm_": "max_norm",
    "torch.nn.utils.clip_grad.clip_grad_norm_": "max_norm",
    "torch.nn.utils.clip_grad_norm": "max_norm",
    "torch.nn.utils.clip_grad_value_": "clip_val",
    "torch.nn.utils.clip_grad.clip_grad_value_": "clip_val",
}
NN_MODULE = "torch.nn.Module"
DEVICE_CTOR = "torch.device"
ACCELERATOR = {"torch.accelerator.current_accelerator"}
SET_DEVICE = {"torch.cuda.set_device"}
PARAM_METHODS = {"parameters", "named_parameters"}
MOVE_METHODS = {"to", "cuda", "cpu"}


def is_optimizer(q: str | None) -> bool:
    """``torch.optim.Adam`` and friends (not schedulers or SWA helpers)."""
    if not q or not q.startswith("torch.optim."):
        return False
    last = q.rsplit(".", 1)[-1]
    return "lr_scheduler" not in q and "swa_utils" not in q and last[:1].isupper()


def is_scheduler(q: str | None) -> bool:
    return bool(q) and q.startswith("torch.optim.lr_scheduler.")


def is_module_ctor(q: str | None) -> bool:
    """Library classes that build an ``nn.Module`` with parameters (losses excluded)."""
    if not q:
        return False
    last = q.rsplit(".", 1)[-1]
    if q.startswith("torch.nn.") and not q.startswith("torch.nn.functional"):
        return last[:1].isupper() and not last.endswith("Loss") and q not in DATA_PARALLEL
    return q.startswith(("torchvision.models.", "timm."))

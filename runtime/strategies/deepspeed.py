"""The DeepSpeed strategy: ZeRO stage 1/2/3 through ``deepspeed.initialize``."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch

from runtime.precision import cast_floats
from runtime.registry import STRATEGIES
from runtime.strategies.base import Strategy

INSTALL_HINT = "strategy 'deepspeed' needs the deepspeed package: pip install deepspeed"


def import_deepspeed() -> Any:
    """Import deepspeed lazily (it is slow to import and optional)."""
    # On a CPU-only machine DeepSpeed must be told so before its first import.
    if not torch.cuda.is_available():
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    try:
        import deepspeed
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return deepspeed


def load_config(config: dict | str | os.PathLike | None) -> dict:
    """The pass-through DeepSpeed config: a dict, a JSON file path, or nothing."""
    if config is None:
        return {}
    if isinstance(config, dict):
        return json.loads(json.dumps(config))  # deep copy; we fill in defaults
    with open(config) as f:
        return json.load(f)


@STRATEGIES.register("deepspeed")
class DeepSpeedStrategy(Strategy):
    """ZeRO data parallelism. Options: ``stage`` (1, 2, 3), ``offload_optimizer``,
    ``offload_parameters``, ``gradient_clipping``, ``micro_batch_size`` and ``config``
    (dict or JSON path, passed through; its values win over the options)."""

    name = "deepspeed"
    handles_accumulation = True
    requires_backward_call = True

    def __init__(self, *args, stage: int = 2, offload_optimizer: bool = False,
                 offload_parameters: bool = False, gradient_clipping: float | None = None,
                 micro_batch_size: int = 1, config: dict | str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if stage not in (1, 2, 3):
            raise ValueError(f"unknown DeepSpeed ZeRO stage {stage!r}; valid stages: 1, 2, 3")
        self.config = self._build_config(load_config(config or self.env.deepspeed_config), stage,
                                         offload_optimizer, offload_parameters,
                                         gradient_clipping, micro_batch_size)
        self.collective_forward = self.config["zero_optimization"].get("stage", 0) == 3
        self.engine: Any = None

    def _build_config(self, cfg: dict, stage: int, offload_optimizer: bool,
                      offload_parameters: bool, clipping: float | None, micro: int) -> dict:
        zero = cfg.setdefault("zero_optimization", {})
        zero.setdefault("stage", stage)
        if offload_optimizer:
            zero.setdefault("offload_optimizer", {"device": "cpu"})
        if offload_parameters:
            zero.setdefault("offload_param", {"device": "cpu"})
        cfg.setdefault("train_micro_batch_size_per_gpu", micro)
        cfg.setdefault("gradient_accumulation_steps", self.accumulate)
        cfg.setdefault("zero_allow_untested_optimizer", True)  # plain torch optimizers
        # DeepSpeed clips to 1.0 unless told otherwise; the script's own clipping decides.
        cfg.setdefault("gradient_clipping", 0.0 if clipping is None else clipping)
        name = self.precision.name
        if name == "16-mixed":
            if self.root_device.type == "cpu":
                raise ValueError("precision '16-mixed' with strategy 'deepspeed' needs CUDA; "
                                 "use 'bf16-mixed' on CPU")
            cfg.setdefault("fp16", {"enabled": True})
        elif name in ("bf16-mixed", "bf16-true"):
            cfg.setdefault("bf16", {"enabled": True})
        return cfg

    def setup_environment(self) -> None:
        super().setup_environment()
        import_deepspeed()  # fail early, with the install command

    def setup_module_and_optimizers(self, module: torch.nn.Module,
                                    optimizers: Sequence[torch.optim.Optimizer]) -> tuple:
        if len(optimizers) > 1:
            raise ValueError(f"strategy 'deepspeed' takes one optimizer per model, got "
                             f"{len(optimizers)}; set up each model with its own optimizer")
        deepspeed = import_deepspeed()
        # DeepSpeed prints ("... shm_comm_op built successfully") on every rank: keep the
        # stdout of ranks > 0 silent, as the script's own prints are.
        quiet = self.env.global_rank > 0
        with contextlib.redirect_stdout(sys.stderr) if quiet else contextlib.nullcontext():
            engine, optimizer, _, _ = deepspeed.initialize(
                model=module, optimizer=optimizers[0] if optimizers else None,
                config=self.config, dist_init_required=False,
                model_parameters=[p for p in module.parameters() if p.requires_grad],
            )
        self.engine = engine
        return engine, [optimizer] if optimizers else []

    def setup_module(self, module: torch.nn.Module) -> torch.nn.Module:
        return self.setup_module_and_optimizers(module, [])[0]

    def convert_input(self, data: Any) -> Any:
        dtype = {"bf16-mixed": torch.bfloat16, "bf16-true": torch.bfloat16}.get(
            self.precision.name)
        return data if dtype is None else cast_floats(data, dtype)

    def backward(self, tensor: torch.Tensor, module: torch.nn.Module | None, *args: Any,
                 **kwargs: Any) -> None:
        # The engine scales the loss for fp16 and divides it by the accumulation steps.
        self.engine.backward(tensor, *args, **kwargs)

    def optimizer_step(self, optimizer: torch.optim.Optimizer, closure: Callable | None = None,
                       **kwargs: Any) -> Any:
        if closure is not None:
            raise ValueError("strategy 'deepspeed' cannot step an optimizer with a closure")
        # Called every micro-step: the engine only updates on accumulation boundaries.
        return self.engine.step()

    def zero_grad(self, optimizer: torch.optim.Optimizer, set_to_none: bool = True) -> None:
        """The engine clears gradients after each boundary step itself."""

    def clip_gradients_norm(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                            max_norm: float, norm_type: float = 2.0) -> torch.Tensor:
        configured = self.config.get("gradient_clipping")
        if configured != max_norm:
            raise ValueError(
                f"DeepSpeed clips inside its step: pass gradient_clipping={max_norm} "
                f"(Runtime(strategy='deepspeed', gradient_clipping={max_norm}) or the config), "
                f"currently {configured!r}"
            )
        norm = self.engine.get_global_grad_norm()
        return torch.tensor(float("nan") if norm is None else float(norm))

    def clip_gradients_value(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                             clip_val: float) -> None:
        raise ValueError("strategy 'deepspeed' supports only norm clipping: use "
                         "rt.clip_gradients(model, optimizer, max_norm=...)")

    def forward_context(self):
        # The engine holds the weights in the training dtype already: no autocast.
        return contextlib.nullcontext()

    def convert_output(self, data: Any) -> Any:
        return data

    def module_state_dict(self, module: torch.nn.Module) -> dict:
        if self.config["zero_optimization"].get("stage") == 3:
            return self.engine._zero3_consolidated_16bit_state_dict()
        return module.state_dict()

    def optimizer_state_dict(self, optimizer: torch.optim.Optimizer) -> dict:
        raise ValueError("ZeRO partitions the optimizer state across ranks, so it cannot go "
                         "into one file: rt.save(path, {'model': model, 'optimizer': opt, ...}) "
                         "writes a DeepSpeed checkpoint directory instead")

    def save_checkpoint(self, path: str, state: Any) -> None:
        from runtime import checkpoint

        if isinstance(state, dict) and checkpoint.holds_modules(state):
            checkpoint.save_deepspeed(path, state, self)
        else:
            checkpoint.save_full(path, checkpoint.to_saveable(state, self), self)

    def load_checkpoint(self, path: str, state: Any, weights_only: bool) -> Any:
        from runtime import checkpoint

        if checkpoint.is_sharded(path):
            return checkpoint.load_deepspeed(path, state, self)
        return checkpoint.load_full(path, state, weights_only, self)

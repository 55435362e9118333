"""torch-migrate's bundled training runtime (torch only): strategies, precision, checkpoints."""

from runtime.facade import Runtime

# The module form (Trainer, callbacks, loggers) loads on first use: `import runtime` stays cheap.
_LAZY = {
    "TrainModule": "runtime.module",
    "Trainer": "runtime.trainer",
    "Callback": "runtime.callbacks",
    "ModelCheckpoint": "runtime.callbacks",
    "EarlyStopping": "runtime.callbacks",
    "LearningRateMonitor": "runtime.callbacks",
    "CSVLogger": "runtime.loggers",
    "TensorBoardLogger": "runtime.loggers",
}


def is_global_zero() -> bool:
    """Whether this process is rank 0 of its job, before any Runtime or Trainer exists: read
    from the launcher's environment (torchrun / `migrate run` / SLURM; 1 process: True)."""
    from runtime.environment import read_environment

    return read_environment().global_rank == 0


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'runtime' has no attribute {name!r}")


__all__ = [
    "CSVLogger",
    "Callback",
    "EarlyStopping",
    "LearningRateMonitor",
    "ModelCheckpoint",
    "Runtime",
    "TensorBoardLogger",
    "TrainModule",
    "Trainer",
    "is_global_zero",
]

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
]

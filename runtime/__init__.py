"""torch-migrate's bundled training runtime (torch only): strategies, precision, checkpoints."""

from runtime.facade import Runtime

__all__ = ["Runtime"]

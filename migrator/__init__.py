"""torch-migrate's codemod: rewrites single-GPU PyTorch scripts; never imports torch."""

__version__ = "0.1.0"

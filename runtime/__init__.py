"""torch-migrate's bundled training runtime (torch only): strategies, precision, checkpoints."""

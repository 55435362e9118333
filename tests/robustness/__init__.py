"""Robustness tests: the migrator never breaks a file, whatever it is given."""

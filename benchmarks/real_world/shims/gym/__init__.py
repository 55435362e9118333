"""Fake ``gym``: the fake ``gymnasium`` under its old name."""

from gymnasium import Box, CartPoleEnv, Discrete, make, spaces  # noqa: F401

__version__ = "0.0-fake"

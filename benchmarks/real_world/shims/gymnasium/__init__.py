"""Fake ``gymnasium``: ``make('CartPole-v1')`` with the classic cart-pole physics, run locally.

The reward threshold that "solves" the task is ``RW_GYM_REWARD_THRESHOLD`` (default 475, the
real one), so a scoreboard run can end after a few episodes instead of hundreds.
"""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

import numpy as np

__version__ = "0.0-fake"


class Discrete:
    def __init__(self, n: int) -> None:
        self.n = n
        self._rng = np.random.default_rng(0)

    def sample(self) -> int:
        return int(self._rng.integers(self.n))


class Box:
    def __init__(self, low: float, high: float, shape: tuple[int, ...]) -> None:
        self.low, self.high, self.shape, self.dtype = low, high, shape, np.float32


class CartPoleEnv:
    """Cart-pole balancing (Barto, Sutton & Anderson 1983), Euler integration, 500-step limit."""

    gravity, masscart, masspole, length, force_mag, tau = 9.8, 1.0, 0.1, 0.5, 10.0, 0.02
    theta_threshold, x_threshold, max_steps = 12 * 2 * math.pi / 360, 2.4, 500

    def __init__(self, render_mode: str | None = None) -> None:
        self.render_mode = render_mode
        self.action_space = Discrete(2)
        self.observation_space = Box(-np.inf, np.inf, (4,))
        threshold = float(os.environ.get("RW_GYM_REWARD_THRESHOLD", 475.0))
        self.spec = SimpleNamespace(id="CartPole-v1", reward_threshold=threshold,
                                    max_episode_steps=self.max_steps)
        self.np_random = np.random.default_rng()
        self.state = np.zeros(4)
        self.steps = 0

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.np_random = np.random.default_rng(seed)
            self.action_space._rng = np.random.default_rng(seed)
        self.state = self.np_random.uniform(low=-0.05, high=0.05, size=(4,))
        self.steps = 0
        return np.array(self.state, dtype=np.float32), {}

    def step(self, action: int):
        x, x_dot, theta, theta_dot = self.state
        force = self.force_mag if int(action) == 1 else -self.force_mag
        cos, sin = math.cos(theta), math.sin(theta)
        total_mass = self.masspole + self.masscart
        pml = self.masspole * self.length
        temp = (force + pml * theta_dot**2 * sin) / total_mass
        theta_acc = (self.gravity * sin - cos * temp) / (
            self.length * (4.0 / 3.0 - self.masspole * cos**2 / total_mass)
        )
        x_acc = temp - pml * theta_acc * cos / total_mass
        x, x_dot = x + self.tau * x_dot, x_dot + self.tau * x_acc
        theta, theta_dot = theta + self.tau * theta_dot, theta_dot + self.tau * theta_acc
        self.state = np.array([x, x_dot, theta, theta_dot])
        self.steps += 1
        terminated = bool(abs(x) > self.x_threshold or abs(theta) > self.theta_threshold)
        truncated = self.steps >= self.max_steps
        return np.array(self.state, dtype=np.float32), 1.0, terminated, truncated, {}

    def render(self):
        return None

    def close(self) -> None:
        return None


def make(env_id: str, **kwargs):
    if env_id.split("-")[0] != "CartPole":
        raise ValueError(f"fake gymnasium (torch-migrate scoreboard) only has CartPole, not {env_id!r}")
    return CartPoleEnv(render_mode=kwargs.get("render_mode"))


spaces = SimpleNamespace(Discrete=Discrete, Box=Box)

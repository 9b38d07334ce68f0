"""Plan inside the dream: an agent that acts in a real game by trying action sequences in a world.

`DreamPlanner.act(frame)` copies the real frame into `candidates` envs of the world's vector env
(WorldVectorEnv), dreams `horizon` steps of as many random action sequences with the world's
learned rewards and episode ends, and returns the first action of the sequence whose dream
earned the most (discounted; a dreamed episode's end stops its sum). This is random-shooting
model-predictive control, the simplest planner over a learned model (PlaNet and TD-MPC refine
it with CEM and a learned value): it needs a world trained with `genie2 train --learn-rewards`,
and sees no reward beyond its horizon, where it acts at random.

Dimension legend: n candidate plans, H horizon.
"""

from __future__ import annotations

import numpy as np

from genie2.env import WorldVectorEnv
from genie2.errors import InputError


class DreamPlanner:
    """Random-shooting MPC over a world: `act(frame) -> action id`. `env_kwargs` go to WorldVectorEnv
    (temperature, raster, compile, ...)."""

    def __init__(
        self, world, candidates: int = 64, horizon: int = 12, discount: float = 0.95, seed: int = 0, **env_kwargs
    ):
        for name, value in (("candidates", candidates), ("horizon", horizon)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name} must be a positive int, got {value!r}")
        if not 0 < discount <= 1:
            raise InputError(f"discount must be in (0, 1], got {discount!r}")
        self.envs = WorldVectorEnv(candidates, world, max_episode_steps=horizon + 1, **env_kwargs)
        if self.envs.world.model.outcomes is None:
            raise InputError("planning needs a world that learned rewards: train it with --learn-rewards")
        self.horizon, self.discount, self.rng = horizon, discount, np.random.default_rng(seed)

    def act(self, frame: np.ndarray) -> int:
        """The action to take from `frame` (uint8 h w 3, a real frame of the world's game)."""
        envs = self.envs
        envs.reset(seed=int(self.rng.integers(2**31)), options={"frame": frame})
        plans = self.rng.integers(0, envs.single_action_space.n, (envs.num_envs, self.horizon))  # n H
        returns, alive = np.zeros(envs.num_envs), np.ones(envs.num_envs, bool)
        for t in range(self.horizon):
            _, rewards, terminated, _, _ = envs.step(plans[:, t])
            returns += alive * rewards * self.discount**t
            alive &= ~terminated
        best = np.flatnonzero(returns == returns.max())
        return int(plans[self.rng.choice(best), 0])

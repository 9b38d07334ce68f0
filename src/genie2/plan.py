"""Plan inside the dream: an agent that acts in a real game by trying action sequences in a world.

`DreamPlanner.act(frame)` copies the real frame into `candidates` envs of the world's vector env
(WorldVectorEnv), dreams `horizon` steps of as many random action sequences with the world's
learned rewards and episode ends, and returns the first action of the sequence whose dream
earned the most (discounted; a dreamed episode's end stops its sum). This is random-shooting
model-predictive control, the simplest planner over a learned model (PlaNet and TD-MPC refine
it with CEM and a learned value): it needs a world trained with `genie2 train --learn-rewards`,
and sees no reward beyond its horizon, where it follows one random plan through. `RealPlanner` is the same planner
over copies of the real game (a perfect model): the ceiling a dream planner is measured against.

Dimension legend: n candidate plans, H horizon.
"""

from __future__ import annotations

import copy

import numpy as np

from genie2.env import WorldVectorEnv
from genie2.errors import InputError
from genie2.model.config import check_positive_int


class Shooting:
    """Random-shooting MPC's settings and its last chosen plan, shared by both planners: `choose`
    draws `candidates` plans of `horizon` actions (random_plans), the first being the rest of the
    plan chosen last step (warm start), and returns the first action of the one with the highest
    discounted return. Ties go to that kept plan, so where no plan sees a reward the agent follows one
    random plan through instead of re-drawing every step (a random walk that rarely goes far)."""

    def __init__(self, candidates: int, horizon: int, discount: float, seed: int, repeat: float):
        check_positive_int("candidates", candidates)
        check_positive_int("horizon", horizon)
        if not 0 < discount <= 1:
            raise InputError(f"discount must be in (0, 1], got {discount!r}")
        if not 0 <= repeat < 1:
            raise InputError(f"repeat (the chance a plan repeats its last action) must be in [0, 1), got {repeat!r}")
        self.candidates, self.horizon, self.discount, self.repeat = candidates, horizon, discount, repeat
        self.rng, self.plan = np.random.default_rng(seed), None  # plan: (H) the last chosen plan

    def choose(self, step, num_actions: int) -> int:
        """The first action of the best plan, stepped together by `step(actions n) -> (rewards n, ended n)`
        (a plan's return is summed until its episode ends)."""
        n, horizon = self.candidates, self.horizon
        plans = random_plans(n, num_actions, horizon, self.repeat, self.rng)  # n H
        if self.plan is not None and self.plan.max() < num_actions:
            plans[0, :-1] = self.plan[1:]
        returns, alive = np.zeros(n), np.ones(n, bool)
        for t in range(horizon):
            rewards, ended = step(plans[:, t])
            returns += alive * rewards * self.discount**t
            alive &= ~ended
        best = np.flatnonzero(returns == returns.max())
        chosen = 0 if self.plan is not None and best[0] == 0 else self.rng.choice(best)
        self.plan = plans[chosen]
        return int(self.plan[0])


class DreamPlanner(Shooting):
    """Random-shooting MPC over a world: `act(frame) -> action id`. `env_kwargs` go to WorldVectorEnv
    (temperature, raster, compile, ...)."""

    def __init__(
        self,
        world,
        candidates: int = 64,
        horizon: int = 12,
        discount: float = 0.95,
        seed: int = 0,
        repeat: float = 0.0,
        **env_kwargs,
    ):
        super().__init__(candidates, horizon, discount, seed, repeat)
        self.envs = WorldVectorEnv(candidates, world, max_episode_steps=horizon + 1, **env_kwargs)
        if self.envs.world.model.outcomes is None:
            raise InputError("planning needs a world that learned rewards: train it with --learn-rewards")

    def act(self, frame: np.ndarray) -> int:
        """The action to take from `frame` (uint8 h w 3, a real frame of the world's game)."""
        envs = self.envs
        envs.reset(seed=int(self.rng.integers(2**31)), options={"frame": frame})

        def step(actions):
            return envs.step(actions)[1:3]  # rewards and terminated: its episodes outlast the horizon

        return self.choose(step, envs.single_action_space.n)


class RealPlanner(Shooting):
    """Random-shooting MPC over copies of a real Gymnasium env: `act(env) -> action id`, planned as
    DreamPlanner plans but with the game itself as its model. Each copy draws its own randomness
    (reseeded from the planner's seed), so a stochastic game is a model, not a look at its next draw."""

    def __init__(
        self, candidates: int = 64, horizon: int = 12, discount: float = 0.95, seed: int = 0, repeat: float = 0.0
    ):
        super().__init__(candidates, horizon, discount, seed, repeat)

    def act(self, env) -> int:
        """The action to take in `env` (a gymnasium.Env mid-episode with a Discrete action space, left as it is)."""
        try:
            copies = [copy.deepcopy(env) for _ in range(self.candidates)]
        except (TypeError, copy.Error, NotImplementedError) as error:
            raise InputError(
                f"RealPlanner plans on copies of the env, and copy.deepcopy cannot copy it: {error}"
            ) from error
        for game in copies:
            game.unwrapped.np_random = np.random.default_rng(int(self.rng.integers(2**63)))

        def step(actions):
            rewards, ended = np.zeros(len(copies)), np.ones(len(copies), bool)  # an ended copy earns nothing more
            for i, (game, action) in enumerate(zip(copies, actions, strict=True)):
                if game is not None:
                    _, rewards[i], terminated, truncated, _ = game.step(int(action))
                    ended[i] = terminated or truncated
                    copies[i] = None if ended[i] else game
            return rewards, ended

        return self.choose(step, env.action_space.n)


def random_plans(n: int, num_actions: int, horizon: int, repeat: float, rng: np.random.Generator) -> np.ndarray:
    """n random plans of `horizon` actions (n H): each action repeats the one before with probability
    `repeat`, else is drawn uniformly, so a plan goes further than independent draws would."""
    plans = rng.integers(0, num_actions, (n, horizon))
    for t in range(1, horizon):
        keep = rng.random(n) < repeat
        plans[keep, t] = plans[keep, t - 1]
    return plans

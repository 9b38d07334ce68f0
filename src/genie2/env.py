"""A trained world as a Gymnasium environment: an agent acts, the world model dreams the next frame.

    import genie2, gymnasium
    env = gymnasium.make("genie2/World-v0", world="minigrid")  # a shipped world's name, or a checkpoint
    frame, info = env.reset(seed=0)  # from one of the world's start frames (options={"frame": ...}: yours)
    frame, reward, terminated, truncated, info = env.step(env.action_space.sample())
    envs = gymnasium.make_vec("genie2/World-v0", num_envs=32, world="minigrid")  # one batched session

Observations are the dreamed frames (uint8 h w 3), actions the world's action ids. The world
attends to its own window of past frames, so an endless episode runs in bounded time and memory;
`max_episode_steps` truncates it. A world trained with `genie2 train --learn-rewards` gives the
reward signs and episode ends it learned (genie2.model.outcomes); one without reports reward 0 and
never terminates (info["learned_reward"] is False). WorldVectorEnv steps all its envs
in one batched session and resets an env whose episode ended on the next step (Gymnasium's
next-step autoreset), restarting that row of the batch alone.

Dimension legend: n envs, h w frame height and width.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium
import numpy as np
import torch
from einops import rearrange
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from genie2.errors import InputError
from genie2.helpers import to_uint8
from genie2.model.config import check_positive_int
from genie2.model.decoding import Sampling
from genie2.world import World, load

NO_REWARD = "this world has no learned reward or episode ends: its env gives reward 0 and never terminates"


def open_world(world, max_episode_steps: int, temperature: float, render_mode: str | None) -> World:
    """The World behind an env (a World, a checkpoint folder or a shipped world's name), its options checked."""
    check_positive_int("max_episode_steps", max_episode_steps)
    if render_mode not in (None, "rgb_array"):
        raise InputError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")
    Sampling(temperature=temperature)  # refuses a bad temperature now, not at the first reset
    world = world if isinstance(world, World) else load(world)
    if world.model.num_actions is None:
        raise InputError("an env needs a world trained with actions (this one has num_actions=None)")
    if world.model.outcomes is None:
        warnings.warn(NO_REWARD, stacklevel=3)
    return world


def frame_space(world: World) -> spaces.Box:
    """The frames a world dreams: uint8 (h, w, 3)."""
    size = world.model.tokenizer.config.frame_size
    return spaces.Box(0, 255, (size, size, 3), np.uint8)


def start_frames(world: World, rng: np.random.Generator, options: dict | None, n: int) -> tuple[np.ndarray, list]:
    """n start frames (uint8 n h w 3) and their start indices: drawn from the world's start frames
    with `rng`, or as options give them: "start" (an index, or n) or "frame" (h w 3, or n h w 3)."""
    options, space = dict(options or {}), frame_space(world)
    unknown = sorted(set(options) - {"frame", "start"})
    if unknown:
        raise InputError(f"reset options are 'frame' and 'start', got {unknown}")
    if options.get("frame") is not None:
        frames = np.asarray(options["frame"])
        frames = np.repeat(frames[None], n, axis=0) if frames.shape == space.shape else frames
        if frames.shape != (n, *space.shape) or frames.dtype != np.uint8:
            raise InputError(
                f"options['frame'] must be uint8 {space.shape} (or {n} of them), got {frames.dtype} {frames.shape}"
            )
        return frames, [None] * n
    starts = world.start_frames
    if starts is None or len(starts) == 0:
        raise InputError("this world has no start frames: pass reset(options={'frame': uint8 (h, w, 3)})")
    given = options.get("start")
    index = rng.integers(len(starts), size=n) if given is None else np.broadcast_to(np.asarray(given), (n,))
    if index.dtype.kind not in "iu" or index.min() < 0 or index.max() >= len(starts):
        raise InputError(f"options['start'] must be an int in [0, {len(starts)}) (or {n} of them), got {given!r}")
    return starts[index], [int(i) for i in index]


def frames_of(session) -> np.ndarray:
    """A session's newest frames as uint8 (... h w 3)."""
    return rearrange(to_uint8(session.current_frame()).cpu().numpy(), "... c h w -> ... h w c")


def open_session(world: World, frames: np.ndarray, rng: np.random.Generator, temperature: float, kwargs: dict):
    """A batched session over `frames` (uint8 n h w 3), sampling with a generator seeded from `rng`."""
    generator = torch.Generator(world.model.device).manual_seed(int(rng.integers(2**62)))
    return world.session(unit_frames(world, frames), temperature=temperature, generator=generator, **kwargs)


def unit_frames(world: World, frames: np.ndarray) -> torch.Tensor:
    """uint8 frames (n h w 3) as a session takes them (n c h w in [0, 1])."""
    return rearrange(world._to_unit(frames), "1 c n h w -> n c h w")


def outcomes_of(session) -> tuple[np.ndarray, np.ndarray]:
    """The reward (float32 n) and terminated (bool n) of a session's newest frames: its world's learned
    reward signs and episode ends, or 0 and False for a world without them."""
    outcome = session.rollout.outcome()
    if outcome is None:
        return np.zeros(session.batch, np.float32), np.zeros(session.batch, bool)
    return outcome[0].cpu().numpy().astype(np.float32), outcome[1].cpu().numpy()


def check_actions(actions, space: spaces.Space) -> None:
    """Raise InputError unless `actions` belong to the action space."""
    if isinstance(actions, (bool, np.bool_)) or not space.contains(actions):
        n = space.n if isinstance(space, spaces.Discrete) else f"{space.nvec[0]}), one per env ({len(space.nvec)}"
        raise InputError(f"action must be an int in [0, {n}), got {actions!r}")


class WorldEnv(gymnasium.Env):
    """A `gymnasium.Env` over a World: `reset` starts from a start frame, `step(action)` dreams one frame.

    `world`: a World, a checkpoint folder, or the name of a shipped world ("minigrid", "crafter"). Frames are
    sampled at `temperature` (0: the most likely codes) with a generator seeded by `reset(seed=)`;
    `session_kwargs` go to the world's session (cond_scale, decode_steps, raster, compile)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        world: World | str | Path = "minigrid",
        max_episode_steps: int = 1000,
        temperature: float = 0.0,
        render_mode: str | None = "rgb_array",
        **session_kwargs,
    ):
        self.world = open_world(world, max_episode_steps, temperature, render_mode)
        self.observation_space, self.action_space = (
            frame_space(self.world),
            spaces.Discrete(self.world.num_actions),
        )
        self.max_episode_steps, self.temperature, self.render_mode = max_episode_steps, temperature, render_mode
        self.session_kwargs, self.session, self.frame, self.steps = session_kwargs, None, None, 0
        self.learned_reward = self.world.model.outcomes is not None  # else reward 0, never terminated

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode from one of the world's start frames (drawn with the env's seeded
        generator), or options["frame"] (uint8 h w 3) or options["start"] (an index of them)."""
        super().reset(seed=seed)
        frames, starts = start_frames(self.world, self.np_random, options, 1)
        self.session = open_session(self.world, frames, self.np_random, self.temperature, self.session_kwargs)
        self.steps, self.frame = 0, frames_of(self.session)[0]
        return self.frame.copy(), {"start": starts[0], "learned_reward": self.learned_reward}

    def step(self, action):
        """Dream the frame after `action` (an id of the action space); returns
        (frame, reward, terminated, truncated, info)."""
        if self.session is None:
            raise RuntimeError("call reset() before step()")
        check_actions(action, self.action_space)
        self.session.step(torch.tensor([int(action)]))
        self.steps += 1
        self.frame = frames_of(self.session)[0]
        rewards, ended = outcomes_of(self.session)
        truncated = self.steps >= self.max_episode_steps and not ended[0]
        return self.frame.copy(), float(rewards[0]), bool(ended[0]), truncated, {"learned_reward": self.learned_reward}

    def render(self):
        """The current frame (uint8 h w 3), or None before reset or without a render mode."""
        return None if self.frame is None or self.render_mode is None else self.frame.copy()


class WorldVectorEnv(gymnasium.vector.VectorEnv):
    """`num_envs` WorldEnvs in one batched session: observations (n h w 3), actions (n), next-step
    autoreset (an env whose episode ended restarts on the next step, ignoring its action)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10, "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(
        self,
        num_envs: int = 8,
        world: World | str | Path = "minigrid",
        max_episode_steps: int = 1000,
        temperature: float = 0.0,
        render_mode: str | None = "rgb_array",
        **session_kwargs,
    ):
        check_positive_int("num_envs", num_envs)
        self.world = open_world(world, max_episode_steps, temperature, render_mode)
        if self.world.max_context_frames is None:
            raise InputError("a vector env restarts envs within one session: its world needs max_context_frames")
        self.num_envs = num_envs
        self.single_observation_space = frame_space(self.world)
        self.single_action_space = spaces.Discrete(self.world.num_actions)
        self.observation_space = batch_space(self.single_observation_space, num_envs)
        self.action_space = batch_space(self.single_action_space, num_envs)
        self.max_episode_steps, self.temperature, self.render_mode = max_episode_steps, temperature, render_mode
        self.session_kwargs, self.session, self.frames, self.reset_frames = session_kwargs, None, None, None
        self.steps, self.ended = np.zeros(num_envs, np.int64), np.zeros(num_envs, bool)
        self.learned_reward = self.world.model.outcomes is not None  # else reward 0, never terminated

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start every env from a start frame drawn with the seeded generator (or as options say:
        "start", an index or one per env; "frame", a frame or one per env)."""
        super().reset(seed=seed)
        frames, starts = start_frames(self.world, self.np_random, options, self.num_envs)
        self.session = open_session(self.world, frames, self.np_random, self.temperature, self.session_kwargs)
        self.steps[:], self.ended[:], self.reset_frames = 0, False, frames  # restarts' frames without start frames
        self.frames = frames_of(self.session)
        starts = {"start": np.array(starts, dtype=object), "_start": np.ones(self.num_envs, bool)}
        return self.frames.copy(), self.info() | starts

    def step(self, actions):
        """Dream every env's next frame; envs whose episode ended last step restart instead (reward 0)."""
        if self.session is None:
            raise RuntimeError("call reset() before step()")
        actions = np.asarray(actions)
        check_actions(actions, self.action_space)
        self.session.step(torch.from_numpy(actions.astype(np.int64)))
        self.steps += 1
        info = self.info()
        if self.ended.any():
            if self.world.start_frames is None or len(self.world.start_frames) == 0:
                frames, starts = self.reset_frames[self.ended], [None] * int(self.ended.sum())  # where reset began
            else:
                frames, starts = start_frames(self.world, self.np_random, None, int(self.ended.sum()))
            self.session.restart(torch.from_numpy(self.ended), unit_frames(self.world, frames))
            self.steps[self.ended] = 0
            info["start"], info["_start"] = np.full(self.num_envs, None, dtype=object), self.ended.copy()
            info["start"][self.ended] = starts  # as a reset's info, for the envs that restarted
        rewards, terminated = outcomes_of(self.session)  # a restarted env's first frame: reward 0, not ended
        self.frames = frames_of(self.session)
        truncated = (self.steps >= self.max_episode_steps) & ~terminated
        self.ended = terminated | truncated
        return self.frames.copy(), rewards, terminated, truncated, info

    def info(self) -> dict:
        """Gymnasium's vector info, each key an array over the envs beside its mask "_key" (the envs it
        holds a value for): learned_reward, for every env."""
        return {
            "learned_reward": np.full(self.num_envs, self.learned_reward),
            "_learned_reward": np.ones(self.num_envs, bool),
        }

    def render(self):
        """Each env's current frame (a tuple of uint8 h w 3, as Gymnasium's vector envs give them), or
        None before reset or without a render mode."""
        return None if self.frames is None or self.render_mode is None else tuple(self.frames.copy())

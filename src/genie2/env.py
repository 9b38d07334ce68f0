"""A trained world as a Gymnasium environment: an agent acts, the world model dreams the next frame.

    import genie2, gymnasium
    env = gymnasium.make("genie2/World-v0", world="minigrid")  # a shipped world's name, or a checkpoint
    frame, info = env.reset(seed=0)  # from one of the world's start frames (options={"frame": ...}: yours)
    frame, reward, terminated, truncated, info = env.step(env.action_space.sample())

Observations are the dreamed frames (uint8 h w 3), actions the world's action ids. The world
attends to its own window of past frames, so an endless episode runs in bounded time and memory;
`max_episode_steps` truncates it. A world trained without reward and episode-end heads reports
reward 0 and never terminates (info["learned_reward"] is False).

Dimension legend: h w frame height and width.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium
import numpy as np
import torch
from einops import rearrange
from gymnasium import spaces

from genie2.errors import InputError
from genie2.helpers import to_uint8
from genie2.model.decoding import Sampling
from genie2.world import World, load


class WorldEnv(gymnasium.Env):
    """A `gymnasium.Env` over a World: `reset` starts from a start frame, `step(action)` dreams one frame.

    `world`: a World, a checkpoint folder, or the name of a shipped world ("minigrid"). Frames are
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
        if isinstance(max_episode_steps, bool) or not isinstance(max_episode_steps, int) or max_episode_steps < 1:
            raise InputError(f"max_episode_steps must be a positive int, got {max_episode_steps!r}")
        if render_mode not in (None, "rgb_array"):
            raise InputError(f"render_mode must be 'rgb_array' or None, got {render_mode!r}")
        Sampling(temperature=temperature)  # refuses a bad temperature now, not at the first reset
        self.world = world if isinstance(world, World) else load(world)
        model = self.world.model
        if model.num_actions is None:
            raise InputError("WorldEnv needs a world trained with actions (this one has num_actions=None)")
        size = model.tokenizer.config.frame_size
        self.observation_space = spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.action_space = spaces.Discrete(model.num_actions)
        self.max_episode_steps, self.temperature, self.render_mode = max_episode_steps, temperature, render_mode
        self.session_kwargs, self.session, self.frame, self.steps = session_kwargs, None, None, 0
        self.learned_reward = False  # no reward or episode-end heads yet: reward 0, never terminated
        warnings.warn("this world has no learned reward or episode ends: WorldEnv gives reward 0", stacklevel=2)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Start an episode from one of the world's start frames (drawn with the env's seeded
        generator), or options["frame"] (uint8 h w 3) or options["start"] (an index of them)."""
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = sorted(set(options) - {"frame", "start"})
        if unknown:
            raise InputError(f"reset options are 'frame' and 'start', got {unknown}")
        frame, start = options.get("frame"), options.get("start")
        if frame is None:
            starts = self.world.start_frames
            if starts is None or len(starts) == 0:
                raise InputError("this world has no start frames: pass reset(options={'frame': uint8 (h, w, 3)})")
            start = int(self.np_random.integers(len(starts))) if start is None else start
            if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or not 0 <= start < len(starts):
                raise InputError(f"options['start'] must be an int in [0, {len(starts)}), got {start!r}")
            frame = starts[start]
        frame = np.asarray(frame)
        if not self.observation_space.contains(frame):
            shape = self.observation_space.shape
            raise InputError(f"options['frame'] must be uint8 {shape}, got {frame.dtype} {frame.shape}")
        generator = torch.Generator(self.world.model.device).manual_seed(int(self.np_random.integers(2**62)))
        self.session = self.world.session(
            frame, temperature=self.temperature, generator=generator, **self.session_kwargs
        )
        self.steps = 0
        self.frame = self._shown()
        return self.frame.copy(), {"start": start, "learned_reward": self.learned_reward}

    def step(self, action):
        """Dream the frame after `action` (an id of the action space); returns
        (frame, reward, terminated, truncated, info)."""
        if self.session is None:
            raise RuntimeError("call reset() before step()")
        if isinstance(action, (bool, np.bool_)) or not self.action_space.contains(action):
            raise InputError(f"action must be an int in [0, {self.action_space.n}), got {action!r}")
        self.session.step(int(action))
        self.steps += 1
        self.frame = self._shown()
        truncated = self.steps >= self.max_episode_steps
        return self.frame.copy(), 0.0, False, truncated, {"learned_reward": self.learned_reward}

    def render(self):
        """The current frame (uint8 h w 3), or None before reset or without a render mode."""
        return None if self.frame is None or self.render_mode is None else self.frame.copy()

    def _shown(self) -> np.ndarray:
        """The session's newest frame as uint8 h w 3."""
        return rearrange(to_uint8(self.session.current_frame()).cpu().numpy(), "c h w -> h w c")

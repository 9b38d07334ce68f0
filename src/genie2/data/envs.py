"""Environments to collect from: named presets and any Gymnasium env id that renders frames.

Every env is seen through one small interface, `GameEnv`: `reset(seed) -> frame` and
`step(action) -> (frame, reward, terminated, truncated)`, frames as uint8 h w 3.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import numpy as np

from genie2.errors import InputError

DEFAULT_ENV = "minigrid"
MINIGRID_ACTIONS = ("left", "right", "forward", "pickup", "drop", "toggle", "done")


@dataclass(frozen=True)
class Preset:
    """A named environment: its Gymnasium id, how to make it, and its action names."""

    env_id: str
    frame_size: int = 64
    action_names: tuple[str, ...] | None = None  # None: the env's own (Discrete n -> "0".."n-1")
    make_kwargs: dict = field(default_factory=dict)
    extra: str | None = None  # the pip extra that installs it
    module: str | None = None  # imported first (registers the env ids)


MINIGRID_RENDER = dict(tile_size=8, highlight=False)

PRESETS: dict[str, Preset] = {
    # 8 px per tile: the 8x8 grid renders at 64x64 natively, no resizing. The world is drawn as it is,
    # without the agent's shaded view cone (highlight), which is the agent's partial view, not the world.
    "minigrid": Preset("MiniGrid-DoorKey-8x8-v0", 64, MINIGRID_ACTIONS, MINIGRID_RENDER, None, "minigrid"),
    "minigrid-empty": Preset("MiniGrid-Empty-8x8-v0", 64, MINIGRID_ACTIONS, MINIGRID_RENDER, None, "minigrid"),
    "breakout": Preset("ALE/Breakout-v5", 64, None, dict(frameskip=4), "atari", "ale_py"),
    "pong": Preset("ALE/Pong-v5", 64, None, dict(frameskip=4), "atari", "ale_py"),
    "doom-basic": Preset("VizdoomBasic-v1", 64, None, {}, "doom", "vizdoom.gymnasium_wrapper"),
    "doom-health": Preset("VizdoomHealthGathering-v1", 64, None, {}, "doom", "vizdoom.gymnasium_wrapper"),
    # 72 px: Crafter draws its 9x9 view at 8 px a tile (at 64 px, 7 px tiles and a 1 px seam), so each of the
    # tokenizer's 8x8 patches holds one tile, the same pixels wherever the view scrolls
    "crafter": Preset("crafter", 72, None, dict(size=(72, 72)), "crafter", "crafter"),
}


def resolve(name: str) -> Preset:
    """The preset called `name`, or an ad-hoc preset for a Gymnasium env id."""
    if not isinstance(name, str) or not name:
        raise InputError(f"env must be a preset name or a Gymnasium env id, got {name!r}")
    if name in PRESETS:
        return PRESETS[name]
    import gymnasium as gym

    module, _, env_id = name.rpartition(":")  # "package:EnvId", as gymnasium.make accepts
    if name.startswith("MiniGrid"):
        module = "minigrid"
    if module:
        try:
            importlib.import_module(module)  # registers its env ids
        except ImportError as error:
            raise InputError(f"env {name!r}: could not import {module!r} ({error})") from error
    if env_id not in gym.registry:
        raise InputError(
            f"unknown env {name!r}: use a preset ({', '.join(PRESETS)}) or a registered Gymnasium env id "
            "('package:EnvId' imports the package that registers it first)"
        )
    if env_id.startswith("MiniGrid"):
        return Preset(env_id, 64, MINIGRID_ACTIONS, MINIGRID_RENDER, None, "minigrid")  # as the presets render
    return Preset(env_id)


def _import(preset: Preset):
    """Import the module behind a preset, or say which extra installs it."""
    if preset.module is None:
        return None
    try:
        return importlib.import_module(preset.module)
    except ImportError as error:
        hint = f"pip install 'genie2[{preset.extra}]'" if preset.extra else f"pip install {preset.module}"
        raise ImportError(f"env {preset.env_id} needs {preset.module.split('.')[0]}: {hint}") from error


class GameEnv:
    """A Gymnasium env with a Discrete action space, seen as frames in and frames out."""

    def __init__(self, name: str):
        self.name, self.preset = name, resolve(name)
        module = _import(self.preset)
        if self.preset.env_id == "crafter":
            self.env = CrafterAdapter(module, **self.preset.make_kwargs)
        else:
            import gymnasium as gym

            if hasattr(module, "__name__") and module.__name__ == "ale_py":
                gym.register_envs(module)
            try:
                self.env = gym.make(self.preset.env_id, render_mode="rgb_array", **self.preset.make_kwargs)
            except (AssertionError, gym.error.Error) as error:
                raise InputError(
                    f"env {name!r} cannot render rgb_array frames, which genie2 records ({error})"
                ) from error
            if "rgb_array" not in self.env.metadata.get("render_modes", []):
                raise InputError(f"env {name!r} does not render rgb_array frames (it offers {self.env.metadata})")
        space = self.env.action_space
        if not hasattr(space, "n"):
            raise InputError(f"env {name!r} has action space {space}; genie2 collects from Discrete action spaces")
        self.num_actions = int(space.n)
        names = self.preset.action_names or _action_meanings(self.env) or tuple(str(i) for i in range(self.num_actions))
        self.action_names = tuple(names[: self.num_actions])

    def _frame(self) -> np.ndarray:
        frame = self.env.render()
        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[-1] != 3:
            shape = getattr(frame, "shape", type(frame).__name__)
            raise InputError(f"env {self.name!r} does not render rgb_array frames (got {shape})")
        return frame.astype(np.uint8, copy=False)

    def reset(self, seed: int) -> np.ndarray:
        """Start an episode; returns the first frame."""
        self.env.reset(seed=seed)
        return self._frame()

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool]:
        """Take an action; returns (frame, reward, terminated, truncated)."""
        _, reward, terminated, truncated, _ = self.env.step(int(action))
        return self._frame(), float(reward), bool(terminated), bool(truncated)

    def close(self) -> None:
        self.env.close()


def _action_meanings(env) -> tuple[str, ...] | None:
    """The env's own action names where it has them (Atari, Crafter)."""
    unwrapped = getattr(env, "unwrapped", env)
    if hasattr(unwrapped, "get_action_meanings"):
        return tuple(name.lower() for name in unwrapped.get_action_meanings())
    if isinstance(env, CrafterAdapter):
        return tuple(env.crafter.constants.actions)
    return None


class CrafterAdapter:
    """Crafter's own API (reset/step/render, seeds at construction) behind Gymnasium's."""

    def __init__(self, crafter, **kwargs):
        self.crafter, self.env, self.kwargs = crafter, None, kwargs  # kwargs: crafter.Env's (size, view, ...)
        self.action_space = crafter.Env(**kwargs).action_space

    def reset(self, seed: int):
        self.env = self.crafter.Env(seed=seed, **self.kwargs)
        return self.env.reset(), {}

    def render(self) -> np.ndarray:
        return self.env.render()

    def step(self, action: int):
        obs, reward, done, info = self.env.step(action)
        return obs, reward, done and info.get("discount", 0) == 0, done and info.get("discount", 0) != 0, info

    def close(self) -> None:
        pass

"""A trained world: `genie2.load()` gives a World, a Genie2 (with its tokenizer) behind uint8 frames.

`World.rollout(prompt, actions)` dreams the frames that follow real ones; `World.session(frame)`
plays one step at a time. Beside a world model's config.json and model.safetensors, a training
run saves the files a player needs without the dataset (`write_world_files`).

Dimension legend: k prompt frames, H horizon, h w frame height and width, a keys per step.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from safetensors.torch import load_file, save_file
from torch import Tensor

from genie2.checkpoint import CONFIG_FILE
from genie2.data.episode import DatasetInfo, atomic_write
from genie2.errors import InputError
from genie2.helpers import exists, to_uint8
from genie2.lam.mapping import MAP_FILE, ActionMap
from genie2.model.actions import check_actions
from genie2.model.decoding import Rollout, Sampling, context_window
from genie2.model.genie2 import Genie2
from genie2.model.session import WorldModelSession

# beside a world model: its dataset's description, start frames for players, its training config
WORLD_FILES = ("dataset.json", "start-frames.safetensors", "training.json")


def write_world_files(
    folder: str | Path, data: str | Path, training: dict, skip_corrupt: bool = False, info: DatasetInfo | None = None
) -> None:
    """Save what a world model needs to play without its dataset: the dataset's description (`info`,
    default its dataset.json: action names, env), a few validation start frames, and the training config."""
    from genie2.data.clips import start_frames

    folder = Path(folder)
    (info or DatasetInfo.load(data)).save(folder)
    frames = torch.from_numpy(start_frames(data, skip_corrupt=skip_corrupt))
    atomic_write(folder / WORLD_FILES[1], lambda tmp: save_file({"frames": frames}, str(tmp)))
    atomic_write(folder / WORLD_FILES[2], lambda tmp: tmp.write_text(json.dumps(training, indent=2)))


def read_world_files(folder: str | Path) -> dict:
    """What players read of write_world_files's files, where present: action_names, start_frames
    (uint8 n h w 3) and, for a world of latent actions, the hash of the LAM that labelled them
    (lam_sha256). (training.json is for people; Genie2.from_pretrained reads clip_frames there only
    for configs saved before max_context_frames was one.)"""
    info, frames = (Path(folder) / name for name in WORLD_FILES[:2])
    found = {}
    if info.is_file():
        described = json.loads(info.read_text())
        found["action_names"] = described["action_names"]
        found["lam_sha256"] = described.get("source", {}).get("latent_actions", {}).get("lam_sha256")
    if frames.is_file():
        found["start_frames"] = load_file(str(frames))["frames"].numpy()
    return found


class World:
    """A trained world model behind uint8 frames (h w 3): rollouts and play sessions."""

    def __init__(
        self,
        model: Genie2,
        max_context_frames: int | None = None,
        action_names: list[str] | None = None,
        start_frames: np.ndarray | None = None,
        action_map: ActionMap | None = None,
    ):
        if not exists(model.tokenizer):
            raise InputError("World needs a Genie2 with a tokenizer (frames in, frames out)")
        self.model = model.eval()
        self.max_context_frames = context_window(model, max_context_frames)  # default: the model's own
        self.action_names, self.start_frames = action_names, start_frames  # from the training data, if known
        # a world trained on latent actions, played with real ones: rollout maps them (action_names: the real)
        self.action_map = action_map
        if action_map is not None:
            if len(action_map.to_action) != model.num_actions:
                raise InputError(
                    f"the action map is for {len(action_map.to_action)} latent actions but the world has "
                    f"{model.num_actions}: make it with the LAM the world was trained on (genie2 map-actions)"
                )
            self.action_names = action_map.action_names

    def _to_unit(self, frames: Tensor | np.ndarray) -> Tensor:
        """uint8 frames (n h w 3) as the model's input (1 3 n h w) in [0, 1]."""
        frames = torch.as_tensor(np.asarray(frames))
        size = self.model.tokenizer.config.frame_size
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[1:] != (size, size, 3):
            raise InputError(f"frames must be uint8 (n, {size}, {size}, 3), got {frames.dtype} {tuple(frames.shape)}")
        return rearrange(frames.float() / 255, "n h w c -> 1 c n h w").to(self.model.device)

    @torch.no_grad()
    def rollout(
        self,
        prompt_frames,
        actions,
        temperature: float = 0.0,
        seed: int = 0,
        decode_steps: int | None = None,
        raster: str | None = None,
        cond_scale: float = 1.0,
    ) -> Tensor:
        """The H frames (uint8 H h w 3) after k real `prompt_frames` (uint8 k h w 3), given one
        action per frame of the whole clip (k + H entries, or (k + H, a) keys; -1: no key pressed).
        A world with an `action_map` takes real actions and plays their latent ones.
        A decoding="parallel" model fills each frame in `decode_steps` passes (None: its own), a raster one
        as `raster` says (None: its own; Sampling.raster); `cond_scale` above 1 guides toward the actions."""
        video = self._to_unit(prompt_frames)
        k = video.shape[2]
        given = np.asarray(actions.cpu() if isinstance(actions, Tensor) else actions)
        if given.dtype.kind not in "iu":
            raise InputError(f"actions must be integer action ids (-1: no key), got {given.dtype} values")
        actions = torch.from_numpy(given).long()
        actions = actions[:, None] if actions.ndim == 1 else actions
        if self.action_map is not None:  # real actions to the latent ones the model was trained on
            actions = self.action_map.from_actions(actions)
        if actions.ndim != 2 or actions.shape[0] <= k:
            raise InputError(
                f"actions needs one entry per frame: more than the {k} prompt frames, got {tuple(actions.shape)}"
            )
        actions = actions[None].to(self.model.device)  # 1 t a
        _, codes, _ = self.model.encode_state(video)
        generator = torch.Generator(device=self.model.device).manual_seed(seed)
        sampling = Sampling(
            temperature, cond_scale=cond_scale, generator=generator, decode_steps=decode_steps, raster=raster
        )
        model, steps = self.model, range(k, actions.shape[1])
        if exists(model.num_actions):
            actions = check_actions(
                actions, 1, actions.shape[1], model.num_actions, model.allow_multiple_actions, model.max_num_actions
            )
            prompt_actions, step_actions = actions[:, :k], [actions[:, t] for t in steps]
        else:  # a model without actions: the null token throughout, as in training
            prompt_actions, step_actions = None, [None for _ in steps]
        rollout = Rollout(model, codes, prompt_actions, sampling, sampling.guides(model), self.max_context_frames)
        dreamed = [rollout.step(step) for step in step_actions]
        frames = self.model.tokenizer.decode(torch.stack(dreamed, dim=1))[0]
        return to_uint8(frames).cpu()

    def session(self, frame=None, **kwargs) -> WorldModelSession:
        """A step-by-step session (frames c h w float in [0, 1]); `frame` may be uint8 h w 3. `kwargs` go
        to WorldModelSession (temperature, cond_scale, decode_steps, raster, compile, ...)."""
        if isinstance(frame, np.ndarray) or (isinstance(frame, Tensor) and frame.dtype == torch.uint8):
            frame = self._to_unit(torch.as_tensor(frame)[None])[0, :, 0]
        kwargs.setdefault("max_context_frames", self.max_context_frames)
        if self.action_map is not None:  # steps take real actions, played as their latent ones
            kwargs.setdefault("action_lookup", torch.tensor(self.action_map.from_action))
        return WorldModelSession(self.model, frame, **kwargs)

    @property
    def num_actions(self) -> int | None:
        """The actions a rollout or a session step takes: the map's real ones, else the model's."""
        return len(self.action_map.from_action) if self.action_map is not None else self.model.num_actions


PRETRAINED = Path(__file__).parent / "pretrained" / "minigrid-doorkey"
# the worlds in the package, by name; minigrid-latent learned its actions from frames alone (genie2 train-lam)
SHIPPED = {
    name: PRETRAINED.parent / folder
    for name, folder in (
        ("minigrid", "minigrid-doorkey"),
        ("crafter", "crafter"),
        ("minigrid-latent", "minigrid-latent"),
    )
}


def world_folder(checkpoint: str | Path | None = None) -> Path:
    """The folder of a world: `checkpoint` itself, or where the shipped world it names lives (SHIPPED;
    a folder of that name in the working directory comes first); None, the MiniGrid world."""
    named = isinstance(checkpoint, str) and checkpoint in SHIPPED and not Path(checkpoint).exists()
    return PRETRAINED if checkpoint is None else SHIPPED[checkpoint] if named else Path(checkpoint)


def load(checkpoint: str | Path | None = None, device: str = "cpu", **kwargs) -> World:
    """The world model at `checkpoint` (a `genie2 train` run folder or checkpoint folder, or the name
    of a shipped world: SHIPPED); by default the pretrained MiniGrid DoorKey world of the package."""
    checkpoint = world_folder(checkpoint)
    if not (checkpoint / CONFIG_FILE).is_file():
        if checkpoint in SHIPPED.values():
            raise FileNotFoundError(
                f"the shipped world {checkpoint.name} is missing from this install; reinstall genie2"
            )
        if not checkpoint.exists() and len(checkpoint.parts) == 1:
            raise InputError(
                f"no world named {str(checkpoint)!r} and no such folder: shipped worlds are {', '.join(SHIPPED)}, "
                "or give a world-model run or checkpoint folder from genie2 train"
            )
    found = read_world_files(checkpoint)
    names, frames = found.get("action_names"), found.get("start_frames")
    if (checkpoint / MAP_FILE).is_file():  # a world of latent actions, with the map to play it by real ones
        action_map = ActionMap.load(checkpoint)
        if action_map.lam_sha256 and found.get("lam_sha256") not in (None, action_map.lam_sha256):
            raise InputError(f"{checkpoint}'s action map was fitted on another LAM than its world was trained on")
        kwargs.setdefault("action_map", action_map)
    return World(Genie2.from_pretrained(checkpoint, device), action_names=names, start_frames=frames, **kwargs)

"""Play inside a world model one frame at a time: `reset(frame)`, then `step(action) -> frame`.

The session owns the decoding state (a Rollout with its key/value cache) and the codes of the
recent frames; players and `generate` share the same Rollout machinery.

Dimension legend: b batch, c channels, h w height and width, a keys pressed at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Integral

import torch
from einops import rearrange
from torch import Tensor

from genie2.errors import InputError
from genie2.helpers import exists
from genie2.model.actions import check_actions
from genie2.model.decoding import Rollout, Sampling, context_window


class WorldModelSession:
    """A live session over a Genie2: each `step(action)` dreams and returns the next frame.
    `compile=True` compiles the decode step (and the tokenizer's decoder) once (seconds) for ~2.5x
    faster frames on CPU."""

    def __init__(
        self,
        model,
        frame: Tensor | None = None,
        *,
        codes: Tensor | None = None,
        action: int | Sequence[int] | Tensor | None = None,
        temperature: float = 0.9,
        min_p: float | None = 0.1,
        cond_scale: float = 1.0,
        max_context_frames: int | None = None,
        generator: torch.Generator | None = None,
        compile: bool = False,
        decode_steps: int | None = None,
        raster: str | None = None,
        action_lookup: Tensor | None = None,
    ):
        self.model = model.eval()
        # the model's action for each action id `step` is given (a world of latent actions played with real ones)
        self.action_lookup = action_lookup
        self.sampling = Sampling(
            temperature, min_p, cond_scale, generator=generator, decode_steps=decode_steps, raster=raster
        )
        self.max_context_frames = context_window(model, max_context_frames)  # default: the model's own
        self.compile = compile
        self.guided = self.sampling.guides(model)
        self.rollout: Rollout | None = None
        if exists(frame) or exists(codes):
            self.reset(frame, codes=codes, action=action)

    @torch.no_grad()
    def reset(self, frame: Tensor | None = None, *, codes: Tensor | None = None, action=None) -> Tensor:
        """Start over from a frame (c h w or b c h w) or its codes (h w or b h w); returns the
        frame as the model sees it (decoded from its codes)."""
        if exists(frame) == exists(codes):
            raise InputError("reset needs exactly one of frame or codes")
        given = frame if exists(frame) else codes
        if not isinstance(given, Tensor):
            raise InputError(f"reset takes a torch.Tensor frame or codes, got {type(given).__name__}")
        self.unbatched = (frame.ndim == 3) if exists(frame) else (codes.ndim == 2)
        if exists(frame):
            frames = frame[None] if self.unbatched else frame
            if frames.ndim != 4:
                raise InputError(f"frame must be (c, h, w) or (b, c, h, w), got {tuple(frame.shape)}")
            _, codes, _ = self.model.encode_state(rearrange(frames.to(self.model.device), "b c h w -> b c 1 h w"))
        else:
            codes = codes[None] if self.unbatched else codes
            codes = self.model._check_codes(rearrange(codes.to(self.model.device), "b h w -> b 1 h w"), None)
        self.batch = codes.shape[0]
        actions = self._actions(action)
        self.rollout = Rollout(
            self.model,
            codes,
            actions[:, None] if exists(actions) else None,
            self.sampling,
            self.guided,
            self.max_context_frames,
            self.compile,
        )
        self.codes = [codes]
        return self.current_frame()

    @torch.no_grad()
    def configure(
        self,
        temperature: float | None = None,
        cond_scale: float | None = None,
        decode_steps: int | None = None,
        raster: str | None = None,
    ) -> None:
        """Change how codes are drawn from the next frame on (`decode_steps`: the passes per frame of a
        decoding="parallel" model; `raster`: how a raster one fills a frame, Sampling.raster). Guidance
        decodes a second, null-action row: switching it on reads the frames in view into that row,
        switching it off drops it, and the conditioned row's cache stays as it is either way."""
        s = self.sampling
        checked = Sampling(
            s.temperature if temperature is None else temperature,
            s.min_p,
            s.cond_scale if cond_scale is None else cond_scale,
            s.parallel_keep_frac,
            s.generator,
            s.decode_steps if decode_steps is None else decode_steps,
            s.raster if raster is None else raster,
        )
        for knob in ("temperature", "cond_scale", "decode_steps", "raster"):
            setattr(s, knob, getattr(checked, knob))
        guided = s.guides(self.model)
        if exists(self.rollout):  # the conditioned rows keep their cache; only the null-action rows change
            self.rollout.set_guided(guided, torch.cat(self.codes, dim=1))
        self.guided = guided

    @torch.no_grad()
    def step(self, action: int | Sequence[int] | Tensor | None = None) -> Tensor:
        """Dream the next frame given the action leading into it (an id, several ids, a tensor
        b or b a; None, [] or -1 press no key); returns it (c h w, or b c h w for a batch)."""
        if not exists(self.rollout):
            raise RuntimeError("call reset(frame) before step(action)")
        codes = self.rollout.step(self._actions(action))
        self.codes = (self.codes + [rearrange(codes, "b h w -> b 1 h w")])[-self._history :]
        return self.current_frame()

    @torch.no_grad()
    def restart(self, rows, frame: Tensor) -> Tensor:
        """Start the batch rows `rows` (b bool) over from `frame` (r c h w, one per restarted row), as
        `reset` would start them, while the other rows go on; returns the current frames (b c h w)."""
        if not exists(self.rollout):
            raise RuntimeError("call reset(frame) before restart(rows, frame)")
        video = rearrange(frame.to(self.model.device), "r c h w -> r c 1 h w")
        _, codes, _ = self.model.encode_state(video)
        rows = torch.as_tensor(rows, dtype=torch.bool, device=self.model.device)
        self.rollout.restart_rows(rows, codes[:, 0])
        self.codes = [c.clone() for c in self.codes]  # not in place: a caller may hold them
        for c in self.codes:  # every frame of a restarted row's history is its start frame
            c[rows] = codes
        return self.current_frame()

    @property
    def _history(self) -> int:
        """How many frames of codes the decoder may need."""
        return self.max_context_frames or len(self.codes) + 1

    @torch.no_grad()
    def current_frame(self) -> Tensor:
        """The newest frame, decoded."""
        frame = self.model._last_frame(self.codes, self.compile)
        return frame[0] if self.unbatched else frame

    def _looked_up(self, action: Tensor) -> Tensor:
        """Action ids (b a; -1 no key) as the model's own actions, through `action_lookup`."""
        count = len(self.action_lookup)
        if action.dtype.is_floating_point or action.dtype == torch.bool:
            raise InputError(f"action ids must be integers, got {action.dtype}")
        if ((action < -1) | (action >= count)).any():
            raise InputError(f"action ids must be in [0, {count}) or -1 (no key), got {action.tolist()}")
        lookup = self.action_lookup.to(action.device)
        return torch.where(action >= 0, lookup[action.clamp(min=0)], -1)

    def _actions(self, action) -> Tensor | None:
        """Normalise a user action into action ids (b a; -1 for no key), checked against the model;
        None for a model without actions."""
        model = self.model
        if model.num_actions is None:
            if action is not None:
                raise InputError("this world model has no actions (num_actions is None): step with None")
            return None
        if action is None:
            action = []
        if isinstance(action, Integral) and not isinstance(action, bool):  # numpy ints too (action_space.sample())
            action = [action]
        if not isinstance(action, Tensor):
            if isinstance(action, (str, bytes)) or not isinstance(action, Sequence):
                raise InputError(f"an action is an int id, a list of ids or a tensor, got {type(action).__name__}")
            bad = [k for k in action if isinstance(k, bool) or not isinstance(k, Integral)]
            if bad:
                raise InputError(f"action ids must be ints, got {bad!r} in {action!r}")
            action = torch.tensor([int(k) for k in action] or [-1], dtype=torch.long)
            action = action.expand(self.batch, -1)
        if action.ndim == 1:
            action = action[:, None] if action.shape[0] == self.batch and self.batch > 1 else action[None]
        if exists(self.action_lookup):
            action = self._looked_up(action)
        actions = check_actions(
            rearrange(action.to(model.device), "b a -> b 1 a"),
            self.batch,
            1,
            model.num_actions,
            model.allow_multiple_actions,
            model.max_num_actions,
        )
        return rearrange(actions, "b 1 a -> b a")

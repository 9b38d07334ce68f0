"""`Genie2.generate`: the reference's one-call rollout (optionally interactive, from standard
input), on the cached decoding of decoding.py. A mixin, as Hugging Face's GenerationMixin, so
the method lives on the model while the model file stays about the model.

Dimension legend: b batch, c channels, t time (frames), h w height and width, a keys pressed at once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from einops import rearrange
from torch import Tensor

from genie2.errors import InputError
from genie2.helpers import exists, guide, pad_actions
from genie2.model.decoding import Rollout, Sampling
from genie2.model.steps import compiled, frame_decode


class GenerationMixin:
    """generate(), guided logits (forward_with_cfg) and the decoding of the newest frame, for Genie2."""

    @torch.no_grad()
    def generate(
        self,
        image: Tensor,
        num_frames: int,
        filter_kwargs: dict | None = None,
        temperature: float = 0.9,
        init_action: int | list[int] | None = None,
        interactive: bool = False,
        interactive_save_last_frame: bool = True,
        cond_scale: float = 1.0,
        actions: Tensor | None = None,
        parallel_keep_frac: float = 0.0,
        interactive_save_path: str = "./last-frame.png",
        input_fn: Callable[[str], str] | None = None,
        print_fn: Callable[[str], None] | None = None,
        generator: torch.Generator | None = None,
        max_context_frames: int | None = None,
        compile: bool = False,
        decode_steps: int | None = None,
        raster: str | None = None,
    ):
        """Dream `num_frames` frames after `image` (b c h w); returns the video `b c (1 + num_frames) h w`
        (and the actions b t a when interactive). `actions` (b t or b t a, t = num_frames + 1) rolls
        out under given actions (-1: no key pressed), with classifier-free guidance when cond_scale != 1;
        with `init_action` only, the later steps press no key; with neither, the rollout is
        unconditioned (the null action token, as the training's action dropout). The model attends to
        at most `max_context_frames` past frames (default: the model's own window). `compile=True`
        compiles the decode step (seconds up front, about 2.5x faster per token on CPU). A
        decoding="parallel" model fills each frame in `decode_steps` passes (default: its own); a raster
        one as `raster` says (default: its own; Sampling.raster: "speculative" gives the same codes in fewer passes)."""
        if not isinstance(num_frames, int) or num_frames < 0:
            raise InputError(f"num_frames must be an int >= 0, got {num_frames!r}")
        if not isinstance(image, Tensor) or image.ndim != 4:
            raise InputError("image must be a batch of frames (b, c, h, w)")
        filter_kwargs = dict(filter_kwargs or {})
        if set(filter_kwargs) - {"min_p"}:
            raise InputError(f"filter_kwargs supports only min_p, got {sorted(filter_kwargs)}")
        if interactive:
            self._check_interactive(image.shape[0], actions, init_action)
        step_actions = self._step_actions(image.shape[0], num_frames, actions, init_action, interactive)
        min_p = filter_kwargs.get("min_p", 0.1)
        sampling = Sampling(temperature, min_p, cond_scale, parallel_keep_frac, generator, decode_steps, raster)
        was_training = self.training
        self.eval()
        try:
            _, prompt_codes, _ = self.encode_state(rearrange(image.to(self.device), "b c h w -> b c 1 h w"))
            first = step_actions[0][:, None] if exists(step_actions[0]) else None
            guided = exists(first) and cond_scale != 1
            rollout = Rollout(self, prompt_codes, first, sampling, guided, max_context_frames, compile)
            if interactive:
                save_path = interactive_save_path if interactive_save_last_frame else None
                codes = self._play_from_stdin(rollout, prompt_codes, step_actions, save_path, input_fn, print_fn)
            else:
                codes = [prompt_codes, *(rollout.step(a)[:, None] for a in step_actions[1:])]
            video = self.decode_codes(torch.cat(codes, dim=1))
        finally:
            self.train(was_training)
        if not interactive:
            return video
        return video, torch.stack([pad_actions(a, max(a.shape[-1] for a in step_actions)) for a in step_actions], 1)

    def forward_with_cfg(self, *args, actions=None, cond_scale=1.0, parallel_keep_frac=0.0, **kwargs):
        """Logits with classifier-free guidance; conditioned and null paths run as one batch."""
        kwargs.pop("return_loss", None)
        if not exists(actions) or cond_scale == 1:
            return self.forward(*args, actions=actions, return_loss=False, **kwargs)
        doubled = {
            key: torch.cat((value, value)) if isinstance(value, Tensor) else value for key, value in kwargs.items()
        }
        args = [torch.cat((arg, arg)) if isinstance(arg, Tensor) else arg for arg in args]
        b = actions.shape[0]
        drop = torch.arange(2 * b, device=self.device) >= b
        logits = self.forward(
            *args, actions=torch.cat((actions, actions)), drop_actions=drop, return_loss=False, **doubled
        )
        cond, null = rearrange(logits, "(g b) n l -> g (b n) l", g=2)  # guidance acts per token
        return rearrange(guide(cond, null, cond_scale, parallel_keep_frac), "(b n) l -> b n l", b=b)

    def _check_interactive(self, batch: int, actions, init_action) -> None:
        """Interactive play needs one video, a model with actions and an initial action."""
        if actions is not None:
            raise InputError("pass either actions or interactive=True, not both")
        if batch != 1:
            raise InputError(f"interactive generation plays one video at a time, got a batch of {batch}")
        if not exists(self.num_actions):
            raise InputError("interactive generation needs a model with actions (num_actions is None)")
        if init_action is None:
            raise InputError(f"interactive generation needs init_action, an id in [0, {self.num_actions})")

    def _step_actions(self, b: int, num_frames: int, actions, init_action, interactive: bool) -> list:
        """The actions of each of the 1 + num_frames steps (b a, -1 for no key), or None throughout
        for an unconditioned rollout (the null action token)."""
        if exists(actions) and init_action is not None:
            raise InputError("pass either actions (whose first entry is the initial action) or init_action")
        steps: list[Tensor | None] = [None] * (num_frames + 1)
        if exists(actions):
            steps = list(self._prepare_actions(actions, b, num_frames + 1, sort_actions=True).unbind(dim=1))
        elif init_action is not None:
            steps[0] = self._init_action(init_action).expand(b, -1)
        if not (any(exists(a) for a in steps) or interactive):
            return steps
        # a step without keys presses none (-1), as the first step of every training episode
        no_keys = torch.full((b, 1), -1, dtype=torch.long, device=self.device)
        return [a if exists(a) else no_keys for a in steps]

    def _init_action(self, init_action) -> Tensor:
        """The initial action as sorted distinct ids (1 a)."""
        if not exists(self.num_actions):
            raise InputError("init_action needs a model with actions (num_actions is None)")
        if isinstance(init_action, Tensor):
            init_action = init_action.tolist()
        ids = [init_action] if isinstance(init_action, int) else list(init_action)
        valid = [isinstance(i, int) and not isinstance(i, bool) and 0 <= i < self.num_actions for i in ids]
        if not ids or not all(valid):
            raise InputError(
                f"init_action must be an action id (or ids) in [0, {self.num_actions}), got {init_action!r}"
            )
        if len(ids) > self.max_num_actions:
            raise InputError(f"init_action has {len(ids)} keys; at most {self.max_num_actions} allowed")
        return torch.tensor([sorted(set(ids))], device=self.device)

    def _play_from_stdin(self, rollout, prompt_codes, step_actions, save_path, input_fn, print_fn) -> list[Tensor]:
        """The reference's interactive mode: prompt for each step's action ids, save the newest frame
        to `save_path` (None: do not) before each prompt and at the end. Fills `step_actions` in
        place (cut short when the player quits); returns the codes of every frame (b 1 h w each)."""
        from genie2.play.interactive import QuitInteractive, prompt_action, save_frame

        input_fn, print_fn = input_fn or input, print_fn or print  # looked up now, so tests can patch them
        codes, num_frames = [prompt_codes], len(step_actions) - 1
        for index in range(1, num_frames + 1):
            if exists(save_path):
                save_frame(self._last_frame(codes)[0], save_path)
            try:
                ids = prompt_action(
                    index, self.num_actions, self.allow_multiple_actions, self.max_num_actions, input_fn, print_fn
                )
            except QuitInteractive:
                print_fn(f"stopped after {index - 1} generated frames")
                del step_actions[index:]
                break
            step_actions[index] = torch.tensor([ids], device=self.device)
            codes.append(rollout.step(step_actions[index])[:, None])
        if exists(save_path):
            save_frame(self._last_frame(codes)[0], save_path)
        return codes

    def _last_frame(self, codes: list[Tensor], compile: bool = False) -> Tensor:
        """Decode the newest frame (b c h w); temporal models decode the history they need. With
        `compile`, a tokenizer's decoder runs compiled (steps.frame_decode)."""
        tokenizer = self.tokenizer
        temporal = self.need_recon_loss or self.is_video_enc_dec or (exists(tokenizer) and tokenizer.config.temporal)
        history = torch.cat(codes, dim=1) if temporal else codes[-1]
        if compile and exists(tokenizer):
            return compiled(self, frame_decode, *history.shape)(self, history)
        return self.decode_codes(history)[:, :, -1]

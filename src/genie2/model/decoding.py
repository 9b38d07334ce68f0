"""Cached generation over a key/value cache. A raster model samples a frame one code at a time
(each new token costs one position), or in whole-frame passes over a draft (`Sampling.raster`:
"speculative", exactly the codes of one at a time; "diagonal", at least one anti-diagonal a pass);
a parallel model fills a frame in K passes (genie2.model.masking). Classifier-free guidance runs
the action-conditioned and the null-action rows in one batch, each row with its own cache entries.

Dimension legend: b batch, t time (frames), h w latent height and width, a actions (keys) per
step, d feature, l logits. "keys" alone, in this file, are attention keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from einops import rearrange
from torch import Tensor

from genie2.errors import InputError
from genie2.helpers import exists, gumbel_noise
from genie2.model import rows
from genie2.model.config import check_positive_int
from genie2.model.masking import (
    block_causal,
    check_raster,
    decode_passes,
    hidden_after,
    keep_confident,
    raster_fill,
    settled,
)
from genie2.model.steps import compiled, frame_pass, token_step
from genie2.model.transformer import KVCache


def context_window(model, max_context_frames: int | None = None) -> int | None:
    """How many past frames a rollout attends to: `max_context_frames` when given, else the
    model's own window (`model.max_context_frames`, saved in its config; None there: all)."""
    if max_context_frames is None:
        return model.max_context_frames
    if isinstance(max_context_frames, bool) or not isinstance(max_context_frames, int) or max_context_frames < 1:
        raise InputError(f"max_context_frames must be a positive int (None: the model's), got {max_context_frames!r}")
    return max_context_frames


@dataclass
class Sampling:
    """How codes are drawn from the logits."""

    temperature: float = 0.9
    min_p: float | None = 0.1
    cond_scale: float = 1.0
    parallel_keep_frac: float = 0.0
    generator: torch.Generator | None = None
    decode_steps: int | None = None  # passes per frame of a decoding="parallel" model (None: the model's)
    raster: str | None = None  # how a raster model fills a frame, masking.RASTER_DECODINGS (None: the model's)

    def __post_init__(self):
        if not isinstance(self.temperature, (int, float)) or not 0 <= self.temperature < math.inf:
            raise InputError(f"temperature must be a finite number >= 0, got {self.temperature!r}")
        if not isinstance(self.cond_scale, (int, float)) or not math.isfinite(self.cond_scale):
            raise InputError(f"cond_scale must be a finite number, got {self.cond_scale!r}")
        if exists(self.min_p) and not 0.0 <= self.min_p <= 1.0:
            raise InputError(f"min_p must be in [0, 1] or None, got {self.min_p!r}")
        check_positive_int("decode_steps", self.decode_steps, allow_none=True)  # None: the model's
        check_raster(self.raster, allow_none=True)

    def guides(self, model) -> bool:
        """Whether rollouts of `model` run the null-action rows of guidance: a scale other than 1, and actions."""
        return self.cond_scale != 1 and exists(model.num_actions)


class Rollout:
    """Step-by-step decoding state for a batch of videos: the cache and the tokens still to feed.

    A token at (frame f, slot j) lives in cache slot num_meta + (f mod R) * k + j, where k is
    the slots per frame and R = max_context_frames + 1 (unbounded without a window), so the
    frames of a sliding window take turns in a ring of fixed size. With `compile=True` the
    one-token decode step runs through torch.compile (it pays off after a few hundred tokens)."""

    def __init__(
        self,
        model,
        prompt_codes: Tensor,
        prompt_actions: Tensor | None,
        sampling: Sampling,
        guided: bool,
        max_context_frames: int | None = None,
        compile: bool = False,
    ):
        max_context_frames = context_window(model, max_context_frames)
        if exists(max_context_frames) and prompt_codes.shape[1] > max_context_frames:  # older frames are out of view
            prompt_codes = prompt_codes[:, -max_context_frames:]
            prompt_actions = prompt_actions[:, -max_context_frames:] if exists(prompt_actions) else None
        self.model, self.sampling, self.guided = model, sampling, guided
        self.max_context_frames = max_context_frames
        b, t, h, w = prompt_codes.shape
        self.batch, self.latent_shape, self.num_frames = b, (h, w), t
        self.first_cached_frame = 0
        self.num_meta, self.slots_per_frame = model.num_meta_tokens, h * w + 1
        self.ring = max_context_frames + 1 if exists(max_context_frames) else None
        capacity = self.num_meta + (self.ring or 2 * (t + 1)) * self.slots_per_frame
        self.cache = KVCache(capacity, growable=self.ring is None)
        self.core = getattr(model.transformer, "fn", model.transformer)  # the transformer without meta tokens
        codebook = torch.arange(model.num_codes, device=model.device)
        self.code_tokens = model.latent_to_model(model.codes_to_latents(codebook))  # (l d) model input per code
        self.last_codes = rearrange(prompt_codes[:, -1], "b h w -> b (h w)")  # the first draft of a drafted step
        latents = model.codes_to_latents(prompt_codes)
        if guided:
            latents = torch.cat((latents, latents))
        tokens = model.frame_tokens(latents, self._action_tokens(prompt_actions, t))
        self.pending = (tokens, model.frame_positions(t, h * w))  # fed with the first frame's action token
        if compile and not exists(max_context_frames):
            raise InputError(
                "compile=True needs a bounded context: set max_context_frames (the cache has fixed shapes)"
            )
        shape = (b, guided, capacity)
        self.decode = compiled(model, token_step, *shape) if compile else token_step
        self.decode_frame = compiled(model, frame_pass, *shape) if compile else frame_pass
        self.meta_keys: list[Tensor] | None = None  # the meta tokens' keys as first cached
        self.row_start: Tensor | None = None  # (B) the frame each row started from, once rows restart
        self.last_features: Tensor | None = None  # (b d) after the newest frame's last code, once cached
        self.restarted: Tensor | None = None  # (b bool) rows restarted since the last step (restart_rows)

    def _action_tokens(self, actions: Tensor | None, t: int) -> Tensor:
        """Action tokens (B t d), the null-action rows appended when guiding."""
        embed = self.model.action_embed
        tokens = embed(actions, shape=(self.batch, t))
        if self.guided:
            tokens = torch.cat((tokens, embed(None, shape=(self.batch, t))))
        return tokens

    def _slots(self, pos: Tensor) -> Tensor:
        """Cache slots (n) of the tokens at positions `pos` (n 2: frame, slot)."""
        frame, slot = pos.long().unbind(-1)
        if exists(self.ring):
            frame = frame % self.ring
        return self.num_meta + frame * self.slots_per_frame + slot

    def _forward(self, tokens: Tensor, pos: Tensor, slots: Tensor, *step_args: Tensor):
        """Place, decode and commit tokens at cache `slots`, then draw the next code (token_step's
        outputs; `step_args` are its action, noise, knobs and forced); the first call also feeds
        the meta tokens."""
        if self.cache.length == 0:  # prefill: meta tokens and the prompt, once, outside compile
            self._place(slots, pos, with_meta=True)
            out = token_step(self, tokens, pos, *step_args, self.model.transformer)
        else:
            self.cache.place(slots)
            out = self.decode(self, tokens, pos, *step_args)
        self.cache.commit()
        return out

    def _place(self, slots: Tensor, pos: Tensor, with_meta: bool = False) -> None:
        """Place tokens at `slots` (n; positions `pos`, n 2), after the meta tokens when `with_meta`
        (the wrapped transformer prepends them). They see each other causally in raster mode, by
        frame in parallel mode (masking.block_causal)."""
        num_meta = self.num_meta if with_meta else 0
        if num_meta:
            slots = torch.cat((torch.arange(num_meta, device=slots.device), slots))
        within = block_causal(pos[:, 0].long(), num_meta) if self.model.decoding == "parallel" else None
        self.cache.place(slots, within)

    def _pass(self, tokens: Tensor, pos: Tensor, noise: Tensor, knobs: Tensor):
        """One whole-frame pass (frame_pass) over tokens at positions `pos`, placed but not committed:
        returns its outputs and how many meta tokens it placed first (the first pass feeds them and
        the prompt, outside compile), which the caller's cache.commit counts before what holds."""
        first = self.cache.length == 0
        self._place(self._slots(pos), pos, with_meta=first)
        if first:
            return frame_pass(self, tokens, pos, noise, knobs, self.model.transformer), self.num_meta
        return self.decode_frame(self, tokens, pos, noise, knobs), 0

    def _noise(self, n: int, b: int) -> Tensor:
        """Gumbel noise for the next n codes (n b l), drawn at once; zeros when sampling greedily."""
        s, shape = self.sampling, (n, b, self.model.num_codes)
        if s.temperature == 0:
            return torch.zeros(shape, device=self.model.device)
        return gumbel_noise(torch.empty(shape, device=self.model.device), generator=s.generator)

    def _knobs(self) -> Tensor:
        """The sampling settings a decode step takes as one tensor: temperature, cond_scale, parallel_keep_frac."""
        s = self.sampling
        knobs = [float(s.temperature), float(s.cond_scale), float(s.parallel_keep_frac)]
        return torch.tensor(knobs, device=self.model.device)

    def step(self, actions: Tensor | None, codes: Tensor | None = None, return_logits: bool = False):
        """Generate the next frame's codes (b h w) given the action ids pressed into it (b a, -1 for none;
        None only for a model without actions, or an unconditioned rollout: the null token).
        With `codes` (b h w) the frame is teacher-forced instead of sampled; `return_logits`
        also returns the logits of every code (b h w l)."""
        if self.model.decoding == "parallel":
            step = self._step_parallel
        elif raster_fill(self.model, self.sampling.raster) != "sequential":
            step = self._step_drafted
        else:
            step = self._step_sequential
        out = step(actions, codes, return_logits)
        self.restarted = None  # every row has dreamed a frame since its restart
        return out

    def _step_sequential(self, actions: Tensor | None, codes: Tensor | None, return_logits: bool):
        """step() one code at a time, in raster order."""
        model = self.model
        (h, w), b = self.latent_shape, self.batch
        n = h * w
        # this frame's positions and cache slots, worked out at once: the action token, then codes 1..n
        action, positions, head, head_pos = self._frame_start(actions, self.num_frames)
        slots = self._slots(positions)
        tokens, pos = torch.cat((head, action), dim=1), torch.cat((head_pos, positions[:1]))  # the prompt first
        placed = self._slots(pos)
        if exists(codes):
            forced = rearrange(codes, "b h w -> (h w) b").contiguous()
        else:
            forced = torch.full((n, b), -1, dtype=torch.long, device=model.device)
        noise, knobs = self._noise(n, b), self._knobs()
        sampled, all_logits = [], []
        for i in range(n):  # token i (the action token, then codes 1..n-1) gives code i + 1
            code, logits, tokens, _ = self._forward(tokens, pos, placed, action, noise[i], knobs, forced[i])
            sampled.append(code)
            all_logits.append(logits)
            pos, placed = positions[i + 1 : i + 2], slots[i + 1 : i + 2]
        # the last code goes into the cache now, while it still sees the frames its siblings saw
        self.last_features = self._forward(tokens, pos, placed, action, noise[-1], knobs, forced[-1])[3]
        self.num_frames += 1
        self._forget_old_frames()
        self.last_codes = torch.stack(sampled, dim=-1)
        codes = rearrange(self.last_codes, "b (h w) -> b h w", h=h)
        if not return_logits:
            return codes
        return codes, rearrange(torch.stack(all_logits, dim=1), "b (h w) l -> b h w l", h=h)

    def _step_parallel(self, actions: Tensor | None, codes: Tensor | None, return_logits: bool):
        """`step` for a decoding="parallel" model: K passes over the cache, each drawing every hidden
        code and keeping the most confident (masking.hidden_after of them stay hidden), then one pass
        that caches the frame. Teacher-forced, one pass (all hidden) gives the logits."""
        model, frame, s = self.model, self.num_frames, self.sampling
        (h, w), b = self.latent_shape, self.batch
        n, steps = h * w, 1 if exists(codes) else decode_passes(model, s.decode_steps)
        action, positions, head, head_pos = self._frame_start(actions, frame)
        knobs, noise = self._knobs(), rearrange(self._noise(steps * n, b), "(k s) b l -> k b s l", k=steps)
        drawn = torch.zeros(b, n, dtype=torch.long, device=model.device)
        hidden = torch.ones(b, n, dtype=torch.bool, device=model.device)
        for step in range(steps):
            tokens, pos = torch.cat((head, self._draft(action, drawn, hidden)), dim=1), torch.cat((head_pos, positions))
            (new, confidence, logits, _), meta = self._pass(tokens, pos, noise[step], knobs)
            self.cache.commit(meta + head.shape[1])  # the prompt, on the first pass
            head, head_pos = action[:, :0], positions[:0]
            still = keep_confident(new, confidence, hidden, hidden_after(step, steps, n))
            drawn, hidden = torch.where(hidden & ~still, new, drawn), still
        drawn = rearrange(codes, "b h w -> b (h w)").to(drawn) if exists(codes) else drawn
        self._cache_frame(action, positions, drawn, knobs)
        return self._finish(drawn, logits, return_logits)

    def _step_drafted(self, actions: Tensor | None, codes: Tensor | None, return_logits: bool):
        """`step` for a raster model in whole-frame passes (Sampling.raster "speculative", "diagonal"):
        each pass feeds the frame as drafted (its settled codes; the last pass's draws elsewhere, the
        previous frame's codes at first) and settles codes (masking.settled) until all are. The last
        pass caches the frame when it fed every code as settled, else one more pass does. Teacher-forced,
        one pass."""
        (h, w), b = self.latent_shape, self.batch
        action, positions, head, head_pos = self._frame_start(actions, self.num_frames)
        knobs, noise = self._knobs(), rearrange(self._noise(h * w, b), "s b l -> b s l")  # as one at a time
        fed = self.last_codes if codes is None else rearrange(codes, "b h w -> b (h w)").to(self.last_codes)
        known = torch.full_like(fed, codes is not None, dtype=torch.bool)
        row_ids, col_ids = torch.arange(h, device=fed.device), torch.arange(w, device=fed.device)
        diagonal = rearrange(row_ids[:, None] + col_ids, "h w -> (h w)")  # each code's anti-diagonal
        logits, passes = None, 0
        while passes == 0 or not known.all():
            tokens, pos = torch.cat((head, self._draft(action, fed, None)), dim=1), torch.cat((head_pos, positions))
            (drawn, _, new, self.last_features), meta = self._pass(tokens, pos, noise, knobs)
            frontier = diagonal <= passes if raster_fill(self.model, self.sampling.raster) == "diagonal" else None
            now = settled(drawn, fed, known, frontier)
            logits = new if logits is None else torch.where((now & ~known)[..., None], new, logits)
            settled_codes = torch.where(known, fed, drawn)
            whole = bool(now.all()) and torch.equal(settled_codes, fed)  # every input as it stays
            self.cache.commit(meta + head.shape[1] + (positions.shape[0] if whole else 0))
            head, head_pos = action[:, :0], positions[:0]
            fed, known, passes = settled_codes, now, passes + 1
        if not whole:
            self._cache_frame(action, positions, fed, knobs)
        return self._finish(fed, logits, return_logits)

    def _frame_start(self, actions: Tensor | None, frame: int):
        """A step's action token (B 1 d), the frame's positions (k 2), and what its first forward feeds
        before the frame: the prompt, still pending on the first step (B n d, n 2), else nothing."""
        action = self._action_tokens(rearrange(actions, "b a -> b 1 a") if exists(actions) else None, 1)
        positions = self.model.frame_positions(1, self.slots_per_frame - 1, start=frame)
        head, head_pos = self.pending if exists(self.pending) else (action[:, :0], positions[:0])
        self.pending = None
        return action, positions, head, head_pos

    def _cache_frame(self, action: Tensor, positions: Tensor, codes: Tensor, knobs: Tensor) -> None:
        """One more pass, over the frame's final codes (b s), that caches it while it sees the frames
        its codes saw."""
        noise = torch.zeros(self.batch, codes.shape[1], self.model.num_codes, device=self.model.device)
        (*_, self.last_features), meta = self._pass(self._draft(action, codes, None), positions, noise, knobs)
        self.cache.commit(meta + positions.shape[0])

    def outcome(self) -> tuple[Tensor, Tensor] | None:
        """The newest dreamed frame's reward sign (b float: -1, 0, 1) and whether its episode ended there
        (b bool), from the model's outcome heads; None without them (learn_rewards) or before a step. Rows
        restarted since the last step (restart_rows) are at an episode's first frame: reward 0, not ended."""
        if self.model.outcomes is None or self.last_features is None:
            return None
        sign, ended = self.model.outcomes.predict(self.last_features)
        if exists(self.restarted):
            sign, ended = sign.masked_fill(self.restarted, 0.0), ended & ~self.restarted
        return sign, ended

    def _finish(self, codes: Tensor, logits: Tensor, return_logits: bool):
        """End a whole-frame step whose frame (codes b s) is cached: returns the codes (b h w), with their
        logits (b h w l) when asked."""
        self.last_codes = codes
        self.num_frames += 1
        self._forget_old_frames()
        codes = rearrange(codes, "b (h w) -> b h w", h=self.latent_shape[0])
        return (codes, rearrange(logits, "b (h w) l -> b h w l", h=self.latent_shape[0])) if return_logits else codes

    def _draft(self, action: Tensor, codes: Tensor, hidden: Tensor | None) -> Tensor:
        """A frame's tokens (B k d) as frame_tokens makes them: its action token (B 1 d), then each
        code's (b s) token, or the mask token where `hidden` (b s), plus the action when the model adds it."""
        tokens = self.code_tokens[codes]
        if exists(hidden):
            tokens = torch.where(hidden[..., None], self.model.mask_token.to(tokens.dtype), tokens)
        tokens = torch.cat((tokens, tokens)) if self.guided else tokens
        tokens = tokens + action if self.model.add_action_to_codes else tokens
        return torch.cat((action, tokens), dim=1)

    set_guided = rows.set_guided  # switch guidance's null-action rows on or off (genie2.model.rows)
    restart_rows = rows.restart_rows  # start some rows over from a new frame (a vector env's reset)

    def prefill(self) -> None:
        """Feed the prompt into the cache now (after the meta tokens), as the first step would."""
        if not exists(self.pending):
            return
        tokens, pos = self.pending
        first = self.cache.length == 0
        self._place(self._slots(pos), pos, with_meta=first)
        (self.model.transformer if first else self.core)(tokens, pos=pos, cache=self.cache)
        self.cache.commit()
        self.pending = None

    def _forget_old_frames(self) -> None:
        """Keep at most max_context_frames frames in the cache, so an endless session runs in
        constant memory and time. The meta tokens move along to sit just before the oldest
        kept frame, where training put them (relative to the first frame of a clip)."""
        if not exists(self.max_context_frames):
            return
        device = self.model.device
        while self.num_frames - self.first_cached_frame > self.max_context_frames:
            oldest = torch.tensor([[self.first_cached_frame, 0]], device=device)
            self.cache.forget(self._slots(oldest) + torch.arange(self.slots_per_frame, device=device))
            self.first_cached_frame += 1
            self._move_meta()

    def _move_meta(self) -> None:
        """Rotate the meta tokens' keys (from their first keys, so no error piles up) to sit just before
        each row's oldest visible frame: the oldest cached, or the frame the row restarted from."""
        if self.num_meta == 0:
            return
        device = self.model.device
        meta = torch.arange(self.num_meta, device=device)
        if self.meta_keys is None:
            self.meta_keys = [keys[..., meta, :].clone() for keys in self.cache.keys]
        first = torch.tensor([self.first_cached_frame], device=device)
        first = first if self.row_start is None else torch.maximum(self.row_start, first)  # (1 or B)
        cos, sin = self.core.rotary(torch.stack((first, torch.zeros_like(first)), dim=-1).float())
        self.cache.set_keys(meta, self.meta_keys, (cos[:, None, None], sin[:, None, None]))  # per row: B 1 1 r

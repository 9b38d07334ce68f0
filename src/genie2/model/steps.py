"""The decoding steps a Rollout runs, each whole so that it compiles as one graph: one code
(`token_step`, raster order) or one pass over a whole frame (`frame_pass`); the tokenizer's decode
of the newest frame (`frame_decode`); and `compiled`, which compiles a step once per model.

Dimension legend: b batch (B: with the null-action rows when guiding), s codes per frame, n tokens,
d feature, l logits.
"""

from __future__ import annotations

import types
import weakref
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from einops import rearrange
from torch import Tensor

from genie2.helpers import exists, guide, min_p_filter

if TYPE_CHECKING:
    from genie2.model.decoding import Rollout

_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def draw(logits: Tensor, min_p: float | None, temperature: Tensor, noise: Tensor) -> Tensor:
    """One code per row (b) from logits (b l): min-p filter, then Gumbel-max with the given
    Gumbel noise (b l); a temperature (0-d tensor) of 0 is argmax."""
    if exists(min_p):
        logits = min_p_filter(logits, min_p)
    logits = logits.float()  # bf16 noise would be too coarse
    hot = temperature > 0
    return torch.where(hot, logits / torch.where(hot, temperature, 1.0) + noise, logits).argmax(dim=-1)


def token_step(
    rollout: Rollout,
    tokens: Tensor,
    pos: Tensor,
    action: Tensor,
    noise: Tensor,
    knobs: Tensor,
    forced: Tensor,
    transformer=None,
):
    """One decoding step, whole: feed placed tokens (B n d) to the cached transformer, guide the
    next code's logits, draw the code (or take `forced` (b), where >= 0) and embed it for the next
    step (adding the frame's action token `action` (B 1 d) when the model does). Returns code (b),
    logits (b l), the tokens to feed next (B 1 d) and the last token's features (b d: the outcome
    heads read a frame's last code's). The settings come as a tensor (`knobs`: temperature,
    cond_scale, parallel_keep_frac), so changing them never recompiles."""
    model, transformer = rollout.model, transformer or rollout.core
    features = transformer(tokens, pos=pos, cache=rollout.cache)[:, -1]
    logits = model.code_logits(features)
    if rollout.guided:
        logits = guide(*logits.chunk(2), knobs[1], knobs[2])
    code = torch.where(forced >= 0, forced, draw(logits, rollout.sampling.min_p, knobs[0], noise))
    tokens = rollout.code_tokens[code][:, None]
    tokens = torch.cat((tokens, tokens)) if rollout.guided else tokens
    return code, logits, tokens + action if model.add_action_to_codes else tokens, features[: rollout.batch]


def frame_pass(rollout: Rollout, tokens: Tensor, pos: Tensor, noise: Tensor, knobs: Tensor, transformer=None):
    """One pass over a whole frame, whole: feed placed tokens (B n d), the last s + 1 of them a draft
    frame (its action token, then its s codes); guide each code's logits (a parallel model's from its
    own slot, a raster model's from the slot before), draw one code each (with Gumbel noise b s l)
    and score it by its log-probability. Returns codes (b s), confidence (b s), logits (b s l) and the
    last token's features (b d)."""
    model, transformer, s = rollout.model, transformer or rollout.core, noise.shape[1]
    out = transformer(tokens, pos=pos, cache=rollout.cache)
    logits = model.code_logits(out[:, -s:] if model.decoding == "parallel" else out[:, -s - 1 : -1])
    if rollout.guided:  # per code, as in token_step
        cond, null = rearrange(logits, "(g b) s l -> g (b s) l", g=2)
        logits = rearrange(guide(cond, null, knobs[1], knobs[2]), "(b s) l -> b s l", s=s)
    codes = draw(logits, rollout.sampling.min_p, knobs[0], noise)
    confidence = logits.float().log_softmax(dim=-1).gather(-1, codes[..., None])[..., 0]
    return codes, confidence, logits, out[: rollout.batch, -1]


def frame_decode(model, codes: Tensor) -> Tensor:
    """The newest frame (b c h w, in [0, 1]) of codes (b t h w), through the model's tokenizer without
    its input checks (the codes are the model's own draws), so that it compiles as one graph: its small
    convolutions then run as fused kernels called from C++, where eager calls each from Python."""
    tokenizer = model.tokenizer
    frames = tokenizer.decode_latents(tokenizer.codes_to_latents(codes))[:, -1].clamp(0, 1)
    return rearrange(frames, "b h w c -> b c h w")


def compiled(model, step: Callable, *shape) -> Callable:
    """A decoding step (token_step, frame_pass) compiled for one model and one `shape` (the rollout's
    rows and cache size). Its shapes stay fixed, so it compiles once (then comes from torch's on-disk
    cache), and once more when a rollout first restarts rows (rows.restart_rows: the cache's mask
    becomes per row); a rollout of another shape gets its own copy, so many batch sizes never hit
    dynamo's recompile limit. Each copy of the function's code has its own compiled graphs, which
    lets us skip the per-call module guards (~5% per token): a rollout runs its model in eval mode
    and does not change it."""
    steps = _COMPILED.setdefault(model, {})
    key = (step.__name__, *shape)
    if key not in steps:
        code, defaults = step.__code__.replace(), step.__defaults__
        fn = types.FunctionType(code, step.__globals__, step.__name__, defaults)
        skip = getattr(torch.compiler, "skip_guard_on_all_nn_modules_unsafe", None)  # torch >= 2.8
        options = dict(guard_filter_fn=skip) if skip else {}
        if model.device.type == "cpu":
            options["cpp_wrapper"] = True  # kernels called from C++, not Python: ~1.2x faster tokens on CPU
        steps[key] = torch.compile(fn, dynamic=False, options=options)
    return steps[key]

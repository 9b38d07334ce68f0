"""Which codes a decoding pass over a whole frame keeps. Mostly the parallel ("MaskGIT") mode:
which codes of a frame are hidden in training, which attention a frame's tokens get, and which
codes a pass keeps; and, for a raster model decoded in whole-frame passes, which codes a pass
settles (`settled`).

In this mode a frame's tokens (its action token, then its s codes) see each other and every
earlier frame (block-causal attention); hidden codes enter as a learned mask token, and each code
slot predicts its own code. Training hides a cosine-scheduled share of each frame's codes (at
least one) after the first frame; decoding starts from an all-hidden frame and, in K passes over
the same key/value cache, keeps the most confident draws until none is hidden (Chang et al.,
MaskGIT, arXiv 2202.04200; Genie, arXiv 2402.15391).

Dimension legend: b batch, t time (frames), s codes per frame, k slots per frame (s + 1),
n tokens, m meta tokens, l logits.
"""

from __future__ import annotations

import math

import torch
from einops import rearrange, repeat
from torch import Tensor

from genie2.errors import InputError
from genie2.helpers import exists

DECODINGS = ("raster", "parallel")
RASTER_DECODINGS = ("sequential", "speculative", "diagonal")  # how a rollout fills a raster model's frame


def check_raster(raster, allow_none: bool = False) -> None:
    """Raise InputError unless `raster` names one of RASTER_DECODINGS (or is None where allowed: the model's)."""
    if raster not in RASTER_DECODINGS and not (allow_none and raster is None):
        raise InputError(f"raster must be one of {', '.join(RASTER_DECODINGS)}, got {raster!r}")


def hidden_after(step: int, steps: int, s: int) -> int:
    """Codes of s still hidden after pass `step` (0-based) of `steps`: the cosine schedule, none after the last."""
    return math.floor(s * math.cos(math.pi / 2 * (step + 1) / steps))


def decode_passes(model, decode_steps: int | None) -> int | None:
    """The passes per frame a rollout of `model` makes: `decode_steps`, else the model's own, for a
    decoding="parallel" model; None for a raster one (it ignores them)."""
    return (decode_steps or model.decode_steps) if model.decoding == "parallel" else None


def raster_fill(model, raster: str | None) -> str | None:
    """How a rollout of `model` fills a frame: `raster`, else the model's own, for a decoding="raster"
    model; None for a parallel one (it decodes in passes)."""
    return (raster or model.raster) if model.decoding == "raster" else None


def training_mask(b: int, t: int, s: int, device, generator: torch.Generator | None = None) -> Tensor:
    """Which codes training hides (b t s bool): per frame after the first, a cosine-scheduled share
    cos(pi u / 2), u uniform, of its s codes and at least one, at random places."""
    u = torch.rand(b, t, 1, device=device, generator=generator)
    hidden = (torch.cos(math.pi / 2 * u) * s).ceil().clamp(min=1)
    ranks = torch.rand(b, t, s, device=device, generator=generator).argsort(dim=-1).argsort(dim=-1)
    mask = ranks < hidden
    mask[:, 0] = False  # the first frame is the prompt: always seen whole
    return mask


def hidden_codes(decoding: str, hidden: Tensor | None, shape: tuple, draw: bool, device) -> Tensor | None:
    """The hidden codes (b t s) of a forward over frames of `shape` (b, t, s): as given (b t h w
    bool), else a training draw when `draw`; None in raster mode."""
    if decoding == "raster":
        if exists(hidden):
            raise InputError("hidden is for decoding='parallel' models; this one decodes in raster order")
        return None
    if not exists(hidden):
        return training_mask(*shape, device) if draw else None
    ok = isinstance(hidden, Tensor) and hidden.dtype == torch.bool and hidden.ndim == 4
    if not ok or hidden.shape[:2] != shape[:2]:
        got = f"{hidden.dtype} {tuple(hidden.shape)}" if isinstance(hidden, Tensor) else type(hidden).__name__
        raise InputError(f"hidden must be a bool tensor (b, t, h, w) with (b, t) = {shape[:2]}, got {got}")
    return rearrange(hidden.to(device), "b t h w -> b t (h w)")


def block_causal(frames: Tensor, num_meta: int = 0) -> Tensor:
    """Attention mask (n n bool, True: may attend) for tokens of the given frame indices (n): each
    token sees the tokens of its own and earlier frames; `num_meta` meta tokens lead, seen by all."""
    frames = torch.cat((frames.new_full((num_meta,), -1), frames))
    return rearrange(frames, "j -> 1 j") <= rearrange(frames, "i -> i 1")


def frame_mask(t: int, k: int, num_meta: int = 0, device=None) -> Tensor:
    """block_causal for t whole frames of k slots each."""
    return block_causal(repeat(torch.arange(t, device=device), "t -> (t k)", k=k), num_meta)


def keep_confident(codes: Tensor, confidence: Tensor, hidden: Tensor, num_hidden: int) -> Tensor:
    """After a pass: which codes (b s) stay hidden, `num_hidden` of the still-hidden ones with the
    least confident draws; the codes already kept stay kept."""
    if num_hidden <= 0:
        return torch.zeros_like(hidden)
    confidence = confidence.masked_fill(~hidden, math.inf)  # kept codes are never hidden again
    lowest = confidence.topk(num_hidden, dim=-1, largest=False).indices
    return torch.zeros_like(hidden).scatter_(-1, lowest, True)


def settled(drawn: Tensor, fed: Tensor, known: Tensor, frontier: Tensor | None = None) -> Tensor:
    """After a whole-frame pass of a raster model: which codes (b s) are settled. A code's draw
    holds when every code before it was fed as it stays (settled already, or drawn as fed), so
    settling from the left gives exactly the codes of one-at-a-time decoding; `frontier` (s bool:
    diagonal decoding) settles those codes whatever came before them."""
    final = known | (fed == drawn)
    holds = torch.cat((torch.ones_like(final[:, :1]), final[:, :-1]), dim=1).long().cumprod(dim=1).bool()
    return known | holds | frontier if exists(frontier) else known | holds

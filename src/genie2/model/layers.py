"""Small layers of the world model: causal temporal convolutions (the tokenizer's too) and
learned meta tokens.

Dimension legend: b batch, c channels, t time, h w height and width, d feature, m meta tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from genie2.errors import InputError
from genie2.helpers import exists


class CausalConv3d(nn.Module):
    """3d convolution over (t, h, w) with a kernel that spans time only, causal along time."""

    def __init__(self, dim: int, dim_out: int, kernel_size: int, bias: bool = False):
        super().__init__()
        if not isinstance(kernel_size, int) or kernel_size < 1:
            raise InputError(f"kernel_size must be a positive int, got {kernel_size!r}")
        self.time_pad = kernel_size - 1
        self.conv = nn.Conv3d(dim, dim_out, (kernel_size, 1, 1), bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """x: b c t h w -> b c_out t h w, frame t seeing frames <= t only."""
        return self.conv(F.pad(x, (0, 0, 0, 0, self.time_pad, 0)))


def apply_temporal(conv: nn.Module, latents: Tensor) -> Tensor:
    """Apply a temporal conv to latents (b t h w d); nn.Identity (no temporal convs) leaves them as they are."""
    if isinstance(conv, nn.Identity):
        return latents
    return rearrange(conv(rearrange(latents, "b t h w d -> b d t h w")), "b d t h w -> b t h w d")


class MetaTokenWrapper(nn.Module):
    """Prepend learned meta tokens (Hymba, arXiv 2411.13676) and strip them from the output.
    Cached decoding feeds them once, on its first forward, then calls the wrapped `fn` directly."""

    def __init__(self, fn: nn.Module, num_meta_tokens: int):
        super().__init__()
        if not isinstance(num_meta_tokens, int) or num_meta_tokens < 1:
            raise InputError(f"num_meta_tokens must be a positive int, got {num_meta_tokens!r}")
        self.fn = fn
        self.dim = fn.dim
        self.meta_tokens = nn.Parameter(torch.randn(num_meta_tokens, fn.dim) * 0.02)

    def forward(self, x: Tensor, *args, pos: Tensor | None = None, **kwargs) -> Tensor:
        """Run `fn` on [meta tokens, x] (b (m + n) d) and return the outputs of x (b n d)."""
        num_meta = self.meta_tokens.shape[0]
        meta = repeat(self.meta_tokens, "m d -> b m d", b=x.shape[0]).to(x.dtype)
        if exists(pos):  # meta tokens sit at position -1 on every axis
            pos = torch.cat((pos.new_full((num_meta, pos.shape[-1]), -1.0), pos), dim=0)
            kwargs["pos"] = pos
        return self.fn(torch.cat((meta, x), dim=1), *args, **kwargs)[:, num_meta:]

"""A causal transformer on scaled_dot_product_attention with a key/value cache.

It honours the x-transformers options the reference turns on: value residual (ResFormer,
arXiv 2410.17897) with a learned per-token mix, GLU feed-forward, RMSNorm and several
residual streams (static hyper-connections, arXiv 2409.19606). Positions are given per token
on one or more axes (time, space) and enter through multi-axis rotary embeddings.

Dimension legend: b batch, n query tokens, m cached + new keys, h heads, d feature,
s residual streams, a position axes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import einsum, rearrange, repeat
from torch import Tensor, nn

from genie2.errors import InputError
from genie2.helpers import exists

SUPPORTED_TRANSFORMER_KWARGS = frozenset(
    {
        "depth",
        "heads",
        "attn_dim_head",
        "ff_mult",
        "ff_glu",
        "use_rmsnorm",
        "add_value_residual",
        "learned_value_residual_mix",
        "num_residual_streams",
        "attn_dropout",
        "ff_dropout",
        "rotary_theta",
    }
)


def check_transformer_kwargs(kwargs: dict, name: str = "transformer_kwargs") -> None:
    """Raise a clear error for a transformer option this implementation does not support."""
    if not isinstance(kwargs, dict):
        raise InputError(f"{name} must be a dict, got {type(kwargs).__name__}")
    unknown = sorted(set(kwargs) - SUPPORTED_TRANSFORMER_KWARGS)
    if unknown:
        raise InputError(
            f"{name} has unsupported keys {unknown}; supported keys are {sorted(SUPPORTED_TRANSFORMER_KWARGS)}"
        )


class KVCache:
    """Keys and values of every layer in a fixed number of slots (b h m d each), and which slots
    hold a token. The caller places each forward's tokens (`place`), so a sliding window reuses
    the slots of forgotten frames like a ring, and every decode step has the same shapes (which
    is what lets the step be compiled)."""

    def __init__(self, capacity: int, growable: bool = False):
        if not isinstance(capacity, int) or capacity < 1:
            raise InputError(f"cache capacity must be a positive int, got {capacity!r}")
        self.capacity, self.growable = capacity, growable
        self.keys: list[Tensor] = []
        self.values: list[Tensor] = []
        self.filled: Tensor | None = None  # (m) bool
        self.slots: Tensor | None = None  # (n) where the next forward's tokens go
        self.mask: Tensor | None = None  # (n m, or b 1 n m once rows are hidden) what each of them may attend to
        self.hidden: Tensor | None = None  # (b m) slots a row may not see (its frames before a restart)
        self.length = 0

    def place(self, slots: Tensor, within: Tensor | None = None) -> None:
        """Put the next forward's n tokens at `slots` (n, empty slots); each token sees the filled
        slots and, of the new tokens, those `within` (n n bool) allows: by default those up to itself."""
        n = slots.shape[0]
        if self.filled is None:
            self.filled = torch.zeros(self.capacity, dtype=torch.bool, device=slots.device)
        if self.growable and int(slots.max()) >= self.capacity:
            self.grow(2 * int(slots.max()) + 1)
        mask = self.filled.expand(n, -1).clone()
        mask[:, slots] = within if exists(within) else torch.ones(n, n, dtype=torch.bool, device=slots.device).tril()
        if exists(self.hidden):  # what is written now is every row's own
            self.hidden[:, slots] = False
            mask = mask & ~rearrange(self.hidden, "b m -> b 1 1 m")
        self.slots, self.mask = slots, mask

    def hide(self, rows: Tensor, keep: Tensor) -> None:
        """Hide every filled slot but `keep` (n) from `rows` (r ids) until a later `place` writes the slot again."""
        if self.hidden is None:
            self.hidden = torch.zeros(self.keys[0].shape[0], self.capacity, dtype=torch.bool, device=keep.device)
        hide = self.filled.clone()
        hide[keep] = False
        self.hidden[rows] = hide

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Write the placed tokens' keys and values (b h n d) for `layer`; return every slot's
        keys and values and the attention mask (n m)."""
        if layer == len(self.keys):
            shape = (*k.shape[:-2], self.capacity, k.shape[-1])
            self.keys.append(k.new_zeros(shape))
            self.values.append(v.new_zeros(shape))
        self.keys[layer].index_copy_(-2, self.slots, k)
        self.values[layer].index_copy_(-2, self.slots, v)
        return self.keys[layer], self.values[layer], self.mask

    def commit(self, count: int | None = None) -> None:
        """Mark the placed slots (the first `count` of them) as filled once every layer has written
        them; the others stay free, so a draft the next forward replaces is never attended to."""
        slots = self.slots if count is None else self.slots[:count]
        self.filled[slots] = True
        self.length += slots.shape[0]

    def forget(self, slots: Tensor) -> None:
        """Free `slots` (n): their tokens are no longer attended to and may be overwritten."""
        self.length -= int(self.filled[slots].sum())
        self.filled[slots] = False

    def grow(self, capacity: int) -> None:
        """Make room for `capacity` slots, keeping what is stored."""
        extra = capacity - self.capacity
        if extra <= 0:
            return
        pad = lambda t: F.pad(t, (0, 0, 0, extra))  # noqa: E731
        self.keys, self.values = [pad(t) for t in self.keys], [pad(t) for t in self.values]
        if exists(self.filled):
            self.filled = F.pad(self.filled, (0, extra))
        if exists(self.hidden):
            self.hidden = F.pad(self.hidden, (0, extra))
        self.capacity = capacity

    def set_keys(self, slots: Tensor, keys: list[Tensor], rotation: tuple[Tensor, Tensor]) -> None:
        """Store `keys` (one b h n d per layer) at `slots`, rotated by a rotary (cos, sin)."""
        for layer, new in enumerate(keys):
            self.keys[layer][..., slots, :] = apply_rotary(rotation, new)

    def nbytes(self) -> int:
        """Bytes held by the cache buffers."""
        return sum(t.numel() * t.element_size() for t in (*self.keys, *self.values))


class RMSNorm(nn.Module):
    """RMS normalisation with a learned gain."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = dim**0.5
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1) * self.scale * self.gamma


class RotaryEmbedding(nn.Module):
    """Rotary embeddings over several position axes, each axis rotating its own slice of dims."""

    def __init__(self, dim_head: int, num_axes: int = 1, theta: float = 10000.0):
        super().__init__()
        dim_per_axis = (dim_head // num_axes) // 2 * 2
        if dim_per_axis < 2:
            raise InputError(f"attn_dim_head {dim_head} is too small for {num_axes} rotary axes")
        freqs = 1.0 / theta ** (torch.arange(0, dim_per_axis, 2).float() / dim_per_axis)
        self.register_buffer("freqs", freqs, persistent=False)
        self.num_axes = num_axes

    def forward(self, pos: Tensor) -> tuple[Tensor, Tensor]:
        """Cosines and sines (n, rotated dims) for positions `pos` (n a)."""
        if pos.ndim != 2 or pos.shape[-1] != self.num_axes:
            raise InputError(f"positions must be (n, {self.num_axes}), got {tuple(pos.shape)}")
        angles = einsum(pos.double(), self.freqs.double(), "n a, f -> n a f")  # exact for long sessions
        angles = repeat(angles, "n a f -> n (a f r)", r=2)
        return angles.cos().float(), angles.sin().float()


def apply_rotary(rotation: tuple[Tensor, Tensor], t: Tensor) -> Tensor:
    """Rotate the leading dims of `t` (b h n d) by (cos, sin) (n r each); the rest pass through."""
    cos, sin = rotation
    rot_dim = cos.shape[-1]
    t_rot = t[..., :rot_dim]
    pairs = t_rot.unflatten(-1, (-1, 2))
    rotated_half = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    t_rot = t_rot * cos.to(t.dtype) + rotated_half * sin.to(t.dtype)
    if rot_dim == t.shape[-1]:
        return t_rot
    return torch.cat((t_rot, t[..., rot_dim:]), dim=-1)


class Attention(nn.Module):
    """Causal multi-head self-attention with an optional cache and value residual."""

    def __init__(self, dim, heads, dim_head, dropout=0.0, value_residual=False, learned_mix=False):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.to_qkv = nn.Linear(dim, 3 * heads * dim_head, bias=False)
        self.to_out = nn.Linear(heads * dim_head, dim, bias=False)
        self.value_residual = value_residual
        self.to_mix = nn.Linear(dim, heads) if value_residual and learned_mix else None

    def forward(self, x, rotation=None, first_values=None, cache=None, layer=0, mask=None):
        b, n, _ = x.shape
        q, k, v = self.to_qkv(x).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)  # qkv b h n d
        orig_v = v
        if self.value_residual and exists(first_values):
            if exists(self.to_mix):
                mix = rearrange(self.to_mix(x).sigmoid(), "b n h -> b h n 1")
                v = v.lerp(first_values, mix)
            else:
                v = 0.5 * (v + first_values)
        if exists(rotation):
            q, k = apply_rotary(rotation, torch.stack((q, k))).unbind(0)

        is_causal = n > 1 and not exists(mask)
        if exists(cache):
            k, v, mask = cache.append(layer, k, v)
            is_causal = False
        out = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal, dropout_p=self.dropout * self.training
        )
        return self.to_out(out.transpose(1, 2).reshape(b, n, -1)), orig_v


class FeedForward(nn.Module):
    """Feed-forward block, optionally gated (GEGLU)."""

    def __init__(self, dim, mult=4, glu=False, dropout=0.0):
        super().__init__()
        inner = int(dim * mult)
        self.glu = glu
        self.proj_in = nn.Linear(dim, inner * (2 if glu else 1))
        self.proj_out = nn.Sequential(nn.Dropout(dropout), nn.Linear(inner, dim))

    def forward(self, x):
        x = self.proj_in(x)
        if self.glu:
            x, gate = x.chunk(2, dim=-1)
            x = x * F.gelu(gate)
        else:
            x = F.gelu(x)
        return self.proj_out(x)


class Residual(nn.Module):
    """Static hyper-connections over s residual streams; with one stream a plain residual."""

    def __init__(self, num_streams: int, layer_index: int):
        super().__init__()
        self.num_streams = num_streams
        if num_streams > 1:
            read = torch.zeros(num_streams)
            read[layer_index % num_streams] = 1.0
            self.read = nn.Parameter(read)
            self.mix = nn.Parameter(torch.eye(num_streams))
            self.write = nn.Parameter(torch.ones(num_streams))

    def forward(self, streams: Tensor, branch) -> tuple[Tensor, ...]:
        """Run `branch` on the read-out of `streams` (b n s d) and write its output back."""
        if self.num_streams == 1:
            out, *rest = branch(streams[..., 0, :])
            return (streams + out.unsqueeze(-2), *rest)
        # matmuls rather than einsum: this runs per layer per decoded token
        out, *rest = branch(torch.matmul(self.read, streams))  # (s) @ (b n s d) -> b n d
        if streams.shape[1] == 1:  # one decoded token: compiles to a fused kernel, not a matmul call (~5% a frame)
            mixed = (self.mix[:, :, None] * streams[..., None, :]).sum(dim=-3)  # (s t 1) * (b 1 s 1 d) -> b 1 t d
        else:
            mixed = torch.matmul(self.mix.t(), streams)  # (t s) @ (b n s d) -> b n t d
        return (mixed + out.unsqueeze(-2) * self.write[:, None], *rest)


class Transformer(nn.Module):
    """Pre-norm causal transformer; `forward(x, pos, cache)` returns the final normed features."""

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int = 8,
        attn_dim_head: int = 64,
        ff_mult: float = 4,
        ff_glu: bool = False,
        use_rmsnorm: bool = False,
        add_value_residual: bool = False,
        learned_value_residual_mix: bool = False,
        num_residual_streams: int = 1,
        attn_dropout: float = 0.0,
        ff_dropout: float = 0.0,
        rotary_theta: float = 10000.0,
        rotary_axes: int = 1,
    ):
        super().__init__()
        for name, value in dict(
            dim=dim, depth=depth, heads=heads, attn_dim_head=attn_dim_head, num_residual_streams=num_residual_streams
        ).items():
            if not isinstance(value, int) or value < 1:
                raise InputError(f"transformer {name} must be a positive int, got {value!r}")
        self.dim, self.num_streams = dim, num_residual_streams
        norm = RMSNorm if use_rmsnorm else nn.LayerNorm
        self.rotary = RotaryEmbedding(attn_dim_head, rotary_axes, rotary_theta)
        self.layers = nn.ModuleList()
        for i in range(depth):
            attn = Attention(dim, heads, attn_dim_head, attn_dropout, add_value_residual, learned_value_residual_mix)
            ff = FeedForward(dim, ff_mult, ff_glu, ff_dropout)
            self.layers.append(
                nn.ModuleList(
                    [
                        norm(dim),
                        attn,
                        Residual(num_residual_streams, 2 * i),
                        norm(dim),
                        ff,
                        Residual(num_residual_streams, 2 * i + 1),
                    ]
                )
            )
        self.final_norm = norm(dim)

    def forward(
        self, x: Tensor, pos: Tensor | None = None, cache: KVCache | None = None, mask: Tensor | None = None
    ) -> Tensor:
        """Attend causally over `x` (b n d); positions `pos` are (n a). With a cache, `x` goes to
        the slots placed beforehand and attends to the filled ones; the caller commits them.
        Without one, `mask` (n n bool, True: may attend) replaces the causal mask."""
        if exists(mask) and exists(cache):
            raise InputError("pass a mask or a cache, not both: the cache brings its own mask")
        rotation = self.rotary(pos) if exists(pos) else None
        streams = repeat(x, "b n d -> b n s d", s=self.num_streams)
        first_values = None
        for layer, (attn_norm, attn, attn_res, ff_norm, ff, ff_res) in enumerate(self.layers):
            streams, values = attn_res(
                streams, lambda t: attn(attn_norm(t), rotation, first_values, cache, layer, mask)
            )
            first_values = values if first_values is None else first_values
            (streams,) = ff_res(streams, lambda t: (ff(ff_norm(t)),))
        return self.final_norm(streams.sum(dim=-2))

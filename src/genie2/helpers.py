"""Small tensor helpers shared by the model code: the seed's building blocks and sampling.

Dimension legend: b batch, n sequence, d feature, l logits (codebook entries).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from einops import pack, unpack
from torch import Tensor

from genie2.errors import InputError


def exists(v) -> bool:
    """True when `v` is not None."""
    return v is not None


def default(v, d):
    """`v` when it exists, else `d`."""
    return v if exists(v) else d


def resolve_device(name: str | None) -> torch.device:
    """The device a user named: "cpu" or "cuda" (None: cuda when there is one), checked so that a
    missing GPU or a misspelt name is a clear InputError, not an error from deep inside torch."""
    try:
        device = torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))
    except RuntimeError as error:
        raise InputError(f"--device {name!r} is not a device: pass cpu or cuda") from error
    if device.type not in ("cpu", "cuda") or (device.type == "cuda" and device.index not in (None, 0)):
        raise InputError(f"--device {device}: pass cpu or cuda (choose the GPU with CUDA_VISIBLE_DEVICES=N)")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: this machine has no CUDA GPU; leave --device out or pass cpu")
    return device


def to_uint8(frames: Tensor) -> Tensor:
    """Frames of floats in [0, 1] (any shape) as uint8 0-255, clamped and rounded."""
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8)


def pad_actions(actions: Tensor, width: int) -> Tensor:
    """Pad the keys of each step (the last axis, ... a) with -1 (no key) up to `width`."""
    return F.pad(actions, (0, width - actions.shape[-1]), value=-1)


def l2norm(t: Tensor, dim: int = -1) -> Tensor:
    """Unit-normalise `t` along `dim`."""
    return F.normalize(t, dim=dim, p=2)


def pack_one(t: Tensor, pattern: str) -> tuple[Tensor, Callable[..., Tensor]]:
    """Pack one tensor with an einops pattern; return it and the function that undoes it."""
    packed, packed_shape = pack([t], pattern)

    def inverse(out: Tensor, inv_pattern: str | None = None) -> Tensor:
        return unpack(out, packed_shape, default(inv_pattern, pattern))[0]

    return packed, inverse


def project(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Split `x` into parts parallel and orthogonal to `y`, per batch element, in float64."""
    dtype = x.dtype
    x, inverse = pack_one(x, "b *")
    y, _ = pack_one(y, "b *")
    x, y = x.double(), y.double()
    unit = l2norm(y, dim=-1)
    parallel = (x * unit).sum(dim=-1, keepdim=True) * unit
    orthogonal = x - parallel
    return inverse(parallel).to(dtype), inverse(orthogonal).to(dtype)


def guide(logits: Tensor, null_logits: Tensor, cond_scale: float, parallel_keep_frac: float = 0.0):
    """Classifier-free guidance. Past 1 it keeps only part of the update parallel to the logits
    (adaptive projected guidance, arXiv 2410.02416); from 0 to 1 it interpolates plainly, so
    cond_scale 0 is the unconditional (null-action) distribution and 1 the conditional one."""
    logits, null_logits = logits.log_softmax(dim=-1), null_logits.log_softmax(dim=-1)  # drop the free offset
    update = logits - null_logits
    parallel, orthogonal = project(update, logits)
    # arithmetic, not `if`: cond_scale may be a tensor inside the compiled decode step
    keep = parallel_keep_frac + (1.0 - parallel_keep_frac) * (cond_scale < 1)
    update = parallel * keep + orthogonal
    return logits + update * (cond_scale - 1.0)


# sampling


def log(t: Tensor, eps: float = 1e-20) -> Tensor:
    """Logarithm clamped away from zero."""
    return torch.log(t.clamp(min=eps))


def gumbel_noise(t: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Standard Gumbel noise shaped like `t`."""
    noise = torch.rand(t.shape, device=t.device, dtype=t.dtype, generator=generator)
    return -log(-log(noise))


def gumbel_sample(
    logits: Tensor,
    temperature: float = 1.0,
    dim: int = -1,
    keepdim: bool = True,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sample indices from `logits` by the Gumbel-max trick; temperature 0 is greedy argmax."""
    if temperature < 0:
        raise InputError(f"temperature must be >= 0, got {temperature}")
    logits = logits.float()  # bf16 noise would be too coarse and clipped
    if temperature == 0:
        return logits.argmax(dim=dim, keepdim=keepdim)
    noise = gumbel_noise(logits, generator=generator)
    return (logits / temperature + noise).argmax(dim=dim, keepdim=keepdim)


def gumbel_softmax(logits: Tensor, temperature: float = 1.0, dim: int = -1) -> Tensor:
    """The relaxed (differentiable) Gumbel-softmax distribution over `dim`."""
    if temperature <= 0:
        raise InputError(f"gumbel_softmax needs temperature > 0, got {temperature}")
    return ((logits + gumbel_noise(logits)) / temperature).softmax(dim=dim)


def min_p_filter(logits: Tensor, min_p: float = 0.1) -> Tensor:
    """Min-p filtering (arXiv 2407.01082): drop tokens below `min_p` times the top probability."""
    if not 0.0 <= min_p <= 1.0:
        raise InputError(f"min_p must be in [0, 1], got {min_p}")
    probs = logits.softmax(dim=-1)
    limit = min_p * probs.amax(dim=-1, keepdim=True)
    return logits.masked_fill(probs < limit, float("-inf"))


@contextmanager
def frozen(quantizer):
    """Quantize without updating the codebook (VQ's EMA and dead-code replacement run in train mode)."""
    was_training = quantizer.training
    quantizer.eval()
    try:
        yield
    finally:
        quantizer.train(was_training)

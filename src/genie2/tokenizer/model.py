"""The frame tokenizer: a convolutional VQ autoencoder that turns frames into codes and back.

    frames (b t H W 3, uint8 or float in [0, 1])  --encode-->  codes (b t h w, ints)
    codes  --decode-->  frames (b t H W 3, float in [0, 1])

with h = H / f and w = W / f for the downsampling factor f = 2 ** len(channels).
Quantization is vector-quantize-pytorch's VQ (rotation trick, EMA codebook, dead-code
replacement) or FSQ. With `temporal=True`, causal temporal convolutions around the
quantizer let codes see earlier frames (the reference's add_temporal_convs idea).

Dimension legend: b batch, t time, c channels, H W frame size, h w latent size, d latent
feature, n flattened tokens.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from einops import rearrange, reduce
from torch import Tensor, nn
from vector_quantize_pytorch import FSQ, VectorQuantize

from genie2.checkpoint import Pretrained, config_from_dict
from genie2.errors import InputError
from genie2.helpers import frozen
from genie2.model.layers import CausalConv3d, apply_temporal

QUANTIZERS = ("vq", "fsq")
ENCODERS = ("patch", "conv")


@dataclass
class TokenizerConfig:
    """Everything that defines a tokenizer; saved as config.json beside its weights."""

    frame_size: int = 64
    channels: tuple[int, ...] = (32, 64, 128)  # one stage each: downsampling 2 ** len(channels)
    res_blocks: int = 2  # residual blocks at the latent resolution
    # "patch": each code sees only its own f x f patch, so a change in one place of a frame changes
    # one code (what a world model predicts best); "conv": strided convs whose codes see most of
    # the frame, so moving one object changes codes everywhere (the default before this option)
    encoder: str = "patch"
    dim_latent: int = 32
    quantizer: str = "vq"  # "vq" or "fsq"
    codebook_size: int = 256  # vq entries
    fsq_levels: tuple[int, ...] = (8, 5, 5, 5)  # fsq: 1000 codes
    commitment_weight: float = 0.25
    ema_decay: float = 0.9
    dead_code_threshold: float = 2.0  # vq entries used less than this (EMA count) are re-seeded
    # the loss adds the mean error of the worst `hard_tile_share` of each batch's f x f tiles, times
    # `hard_tile_weight`: a small sprite (MiniGrid's agent covers 1.5% of a frame) is learnt as early as
    # the walls it barely moves the mean loss of
    hard_tile_share: float = 0.0
    hard_tile_weight: float = 1.0
    temporal: bool = False
    temporal_conv_kernel_size: int = 3

    RENAMED: ClassVar[dict] = {"temporal_kernel": "temporal_conv_kernel_size"}  # its name before 2026-12-01
    LEGACY: ClassVar[dict] = {"encoder": "conv"}  # saved before the option existed: they were trained so

    def __post_init__(self):
        self.channels, self.fsq_levels = tuple(self.channels), tuple(self.fsq_levels)
        if self.encoder not in ENCODERS:
            raise InputError(f"encoder must be one of {ENCODERS}, got {self.encoder!r}")
        if self.quantizer not in QUANTIZERS:
            raise InputError(f"quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}")
        if not self.channels or any(not isinstance(c, int) or c < 1 for c in self.channels):
            raise InputError(f"channels must be positive ints, got {self.channels!r}")
        if not 0.0 <= self.hard_tile_share <= 1.0:
            raise InputError(f"hard_tile_share must be in [0, 1], got {self.hard_tile_share!r}")
        if self.frame_size % self.downsample:
            raise InputError(f"frame_size {self.frame_size} must be divisible by the downsampling {self.downsample}")

    @property
    def downsample(self) -> int:
        return 2 ** len(self.channels)

    @property
    def latent_size(self) -> int:
        return self.frame_size // self.downsample

    @property
    def num_codes(self) -> int:
        return self.codebook_size if self.quantizer == "vq" else math.prod(self.fsq_levels)


class ResBlock(nn.Module):
    """ReLU -> k x k conv -> ReLU -> 1x1 conv, plus the input (as in VQ-VAE, arXiv 1711.00937)."""

    def __init__(self, dim: int, kernel: int = 3):
        super().__init__()
        conv = nn.Conv2d(dim, dim, kernel, padding=kernel // 2)
        self.net = nn.Sequential(nn.ReLU(), conv, nn.ReLU(), nn.Conv2d(dim, dim, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


class Encoder(nn.Module):
    """Frames (b 3 H W) in [-1, 1] to latents (b d h w). "conv": strided convs, then residual
    blocks at the latent resolution. "patch": one linear map of each f x f patch, then residual
    blocks of 1x1 convs, so each latent depends on its own patch alone."""

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        dim = config.channels[-1]
        layers: list[nn.Module] = []
        if config.encoder == "patch":
            layers.append(nn.Conv2d(3, dim, config.downsample, stride=config.downsample))
            layers += [ResBlock(dim, kernel=1) for _ in range(config.res_blocks)]
        else:
            chans = (3, *config.channels)
            for dim_in, dim_out in zip(chans[:-1], chans[1:], strict=True):
                layers += [nn.Conv2d(dim_in, dim_out, 4, stride=2, padding=1), nn.ReLU()]
            layers.append(nn.Conv2d(dim, dim, 3, padding=1))
            layers += [ResBlock(dim) for _ in range(config.res_blocks)]
        layers += [nn.ReLU(), nn.Conv2d(dim, config.dim_latent, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Decoder(nn.Module):
    """Latents (b d h w) to frames (b 3 H W) in [-1, 1] (unclamped); the encoder mirrored."""

    def __init__(self, config: TokenizerConfig):
        super().__init__()
        chans = (*config.channels[::-1], 3)
        layers: list[nn.Module] = [nn.Conv2d(config.dim_latent, chans[0], 3, padding=1)]
        layers += [ResBlock(chans[0]) for _ in range(config.res_blocks)]
        for dim_in, dim_out in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.ReLU(), nn.ConvTranspose2d(dim_in, dim_out, 4, stride=2, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def to_unit_frames(frames: Tensor, frame_size: int) -> Tensor:
    """Check frames (... H W 3, uint8 or float in [0, 1]) and return float (... H W 3) in [0, 1]."""
    if not isinstance(frames, Tensor):
        raise InputError(f"frames must be a torch.Tensor, got {type(frames).__name__}")
    if frames.ndim < 3 or frames.shape[-1] != 3 or frames.shape[-3:-1] != (frame_size, frame_size):
        raise InputError(
            f"frames must be (..., {frame_size}, {frame_size}, 3) RGB, channels last, got {tuple(frames.shape)}"
        )
    if frames.dtype == torch.uint8:
        return frames.float() / 255
    if not frames.dtype.is_floating_point:
        raise InputError(f"frames must be uint8 or float in [0, 1], got {frames.dtype}")
    if frames.numel() and (frames.min() < -0.01 or frames.max() > 1.01):
        raise InputError(
            f"float frames must be in [0, 1], got [{float(frames.min()):.3g}, {float(frames.max()):.3g}]; "
            "divide 0-255 values by 255 or pass uint8"
        )
    return frames.float()


class Tokenizer(Pretrained, nn.Module):
    """A VQ autoencoder for frames: `encode(frames) -> codes`, `decode(codes) -> frames`."""

    KIND, NAME = "genie2-tokenizer", "tokenizer"

    def __init__(self, config: TokenizerConfig | None = None, **overrides):
        super().__init__()
        config = config or TokenizerConfig(**overrides)
        self.config = config
        self.encoder, self.decoder = Encoder(config), Decoder(config)
        self.pre_quant, self.post_quant = nn.Identity(), nn.Identity()
        if config.temporal:
            kernel = config.temporal_conv_kernel_size
            self.pre_quant = CausalConv3d(config.dim_latent, config.dim_latent, kernel)
            self.post_quant = CausalConv3d(config.dim_latent, config.dim_latent, kernel)
        if config.quantizer == "vq":
            self.quantizer = VectorQuantize(
                dim=config.dim_latent,
                codebook_size=config.codebook_size,
                decay=config.ema_decay,
                commitment_weight=config.commitment_weight,
                threshold_ema_dead_code=config.dead_code_threshold,
                kmeans_init=False,  # training seeds it from the warmed-up encoder (init_codebook)
                rotation_trick=True,  # arXiv 2410.06424
            )
        else:
            self.quantizer = FSQ(list(config.fsq_levels), dim=config.dim_latent)

    @property
    def num_codes(self) -> int:
        return self.config.num_codes

    @property
    def latent_shape(self) -> tuple[int, int]:
        return self.config.latent_size, self.config.latent_size

    def encode_latents(self, frames: Tensor) -> Tensor:
        """Frames (b t H W 3) to continuous latents (b t h w d), before quantization."""
        unit = to_unit_frames(frames, self.config.frame_size)
        if unit.ndim != 5:
            raise InputError(f"frames must be (b, t, H, W, 3), got {tuple(frames.shape)}")
        b = unit.shape[0]
        x = rearrange(unit.to(self.device) * 2 - 1, "b t h w c -> (b t) c h w")
        latents = rearrange(self.encoder(x), "(b t) d h w -> b t h w d", b=b)
        return apply_temporal(self.pre_quant, latents)

    def quantize(self, latents: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Latents (b t h w d) to (quantized latents, codes b t h w, commitment loss)."""
        b, t, h, w, _ = latents.shape
        flat = rearrange(latents, "b t h w d -> b (t h w) d")
        if self.config.quantizer == "vq":
            quantized, codes, loss = self.quantizer(flat)
        else:
            quantized, codes = self.quantizer(flat)
            loss = flat.new_zeros(())
        unflat = lambda x: rearrange(x, "b (t h w) ... -> b t h w ...", t=t, h=h)  # noqa: E731
        return unflat(quantized), unflat(codes), loss

    def codes_to_latents(self, codes: Tensor) -> Tensor:
        """Codebook latents (... d) of codes (...)."""
        if self.config.quantizer == "vq":
            return self.quantizer.get_output_from_indices(codes)
        flat = self.quantizer.indices_to_codes(codes.reshape(1, -1))  # FSQ reads 3d+ indices as channel-first maps
        return flat.reshape(*codes.shape, -1)

    def decode_latents(self, latents: Tensor) -> Tensor:
        """Quantized latents (b t h w d) to frames (b t H W 3) in [0, 1] (unclamped)."""
        b = latents.shape[0]
        latents = apply_temporal(self.post_quant, latents)
        x = self.decoder(rearrange(latents, "b t h w d -> (b t) d h w"))
        return rearrange(x, "(b t) c h w -> b t h w c", b=b) * 0.5 + 0.5

    @torch.no_grad()
    def encode(self, frames: Tensor) -> Tensor:
        """Frames (b t H W 3 or t H W 3; uint8, or float in [0, 1]) to codes (b t h w / t h w)."""
        single = isinstance(frames, Tensor) and frames.ndim == 4
        with frozen(self.quantizer):
            _, codes, _ = self.quantize(self.encode_latents(frames[None] if single else frames))
        return codes[0] if single else codes

    @torch.no_grad()
    def decode(self, codes: Tensor) -> Tensor:
        """Codes (b t h w or t h w) to frames (b t H W 3 / t H W 3), float in [0, 1]."""
        if not isinstance(codes, Tensor) or codes.dtype.is_floating_point or codes.ndim not in (3, 4):
            raise InputError("codes must be an integer tensor (b, t, h, w) or (t, h, w)")
        if codes.numel() and (codes.min() < 0 or codes.max() >= self.num_codes):
            raise InputError(f"codes must be in [0, {self.num_codes}), got [{int(codes.min())}, {int(codes.max())}]")
        single = codes.ndim == 3
        frames = self.decode_latents(self.codes_to_latents((codes[None] if single else codes).to(self.device)))
        frames = frames.clamp(0, 1)
        return frames[0] if single else frames

    @torch.no_grad()
    def init_codebook(self, latents: Tensor, batch_tokens: int = 1024, iters: int = 10) -> None:
        """Seed the VQ codebook from encoder latents (n d): k-means++ picks far-apart seeds, so
        rare but distinct patterns (a small sprite) get entries of their own, then Lloyd steps."""
        if self.config.quantizer != "vq":
            return
        size = self.config.codebook_size
        generator = torch.Generator(device=latents.device).manual_seed(0)
        centers = latents[torch.randint(len(latents), (1,), generator=generator, device=latents.device)]
        nearest = torch.cdist(latents, centers).squeeze(-1) ** 2
        for _ in range(1, size):
            pick = torch.multinomial(nearest + 1e-12, 1, generator=generator)
            centers = torch.cat((centers, latents[pick]))
            nearest = torch.minimum(nearest, ((latents - latents[pick]) ** 2).sum(-1))
        for _ in range(iters):
            assign = torch.cdist(latents, centers).argmin(-1)
            counts = torch.bincount(assign, minlength=size).float()
            sums = torch.zeros_like(centers).index_add_(0, assign, latents)
            centers = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centers)
        # EMA statistics as if each entry had been used in proportion to its cluster, at the scale of a
        # training batch and never below the dead-code threshold, so the seeds are not replaced at once
        per_batch = counts / counts.sum() * batch_tokens
        sizes = per_batch.clamp(min=2 * self.config.dead_code_threshold)
        codebook = self.quantizer._codebook
        codebook.embed.copy_(centers[None])
        codebook.cluster_size.copy_(sizes[None])
        codebook.embed_avg.copy_((centers * sizes[:, None])[None])
        codebook.initted.fill_(True)

    def forward(self, frames: Tensor, quantize: bool = True) -> tuple[Tensor, dict]:
        """Training loss on frames (b t H W 3) and its parts (recon L1 + MSE, commitment);
        quantize=False trains the plain autoencoder (a warm-up before the codebook exists)."""
        target = to_unit_frames(frames, self.config.frame_size).to(self.device)
        latents = self.encode_latents(frames)
        if quantize:
            quantized, codes, commit = self.quantize(latents)
        else:
            quantized, codes, commit = (
                latents,
                latents.new_zeros(latents.shape[:-1], dtype=torch.long),
                latents.sum() * 0,
            )
        recon = self.decode_latents(quantized)
        l1, mse = F.l1_loss(recon, target), F.mse_loss(recon, target)
        hard = self.hard_tile_loss(recon, target)
        loss = l1 + mse + commit + self.config.hard_tile_weight * hard
        parts = dict(l1=l1.detach(), mse=mse.detach(), commit=commit.detach(), hard=hard.detach())
        return loss, dict(parts, codes=codes, recon=recon.detach())

    def hard_tile_loss(self, recon: Tensor, target: Tensor) -> Tensor:
        """Mean L1 of the worst `hard_tile_share` of the f x f tiles of frames (b t H W 3); 0 when off."""
        share, f = self.config.hard_tile_share, self.config.downsample
        if share <= 0:
            return recon.new_zeros(())
        errors = reduce((recon - target).abs(), "b t (h p) (w q) c -> (b t h w)", "mean", p=f, q=f)
        return errors.topk(max(1, int(share * errors.numel()))).values.mean()

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def checkpoint_config(self) -> dict:
        """The config as config.json holds it."""
        return asdict(self.config)

    @classmethod
    def from_checkpoint_config(cls, config: dict, folder: Path) -> Tokenizer:
        """A tokenizer for a saved config."""
        return cls(config_from_dict(TokenizerConfig, config))


def codebook_stats(codes: Tensor, num_codes: int) -> dict:
    """Usage (fraction of entries used) and perplexity of a set of codes."""
    counts = torch.bincount(codes.flatten().long(), minlength=num_codes).float()
    probs = counts / counts.sum().clamp(min=1)
    entropy = -(probs * probs.clamp(min=1e-12).log()).sum()
    return dict(usage=float((counts > 0).float().mean()), perplexity=float(entropy.exp()))


__all__ = ["Tokenizer", "TokenizerConfig", "codebook_stats"]

"""The latent action model (LAM): a small vocabulary of actions discovered from how frames change.

    frames t, t+1 (b 2 H W 3)  --infer-->  latent action ids (b,), K of them (Genie 1's idea, arXiv 2402.15391)
    frame t + latent action    --predict-->  frame t+1

An inverse-dynamics encoder sees both frames (and their difference) and names the change with one of K
codes; a forward-dynamics decoder must rebuild frame t+1 from frame t and that code alone. The code is the
only way the next frame reaches the decoder, and K is small (8 codes: 3 bits), so it carries what changed,
not what the frame shows: the action. The decoder predicts the change (frame t+1 - frame t), and pixels
that change weigh `change_weight` times more in its loss, so the few pixels a move changes are not
drowned by the many it leaves alone. Against collapse onto one code: vector-quantize-pytorch re-seeds codes
used less than `dead_code_threshold` (EMA count) from the batch; `collapse` reports a collapsed vocabulary.

A bottleneck alone does not make a code mean the same action everywhere. MiniGrid's agent turns and moves
relative to its heading, and a LAM over its frames names the heading the agent ends up with ("faces up"),
which is one turn from one heading and the other from another. `symmetry="rot90"` asks the action read
from a pair to predict the pair turned by a random number of quarter turns too, so a code must mean the
same under any turn of the board: "turn left", not "face up" (the README's "Learning from video without
actions" measures both).

Dimension legend: b batch, t time, c channels, H W frame size, h w feature map size, d action feature,
k latent actions.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from einops import rearrange, reduce
from torch import Tensor, nn
from vector_quantize_pytorch import FSQ, VectorQuantize

from genie2.checkpoint import Pretrained, config_from_dict
from genie2.errors import InputError
from genie2.helpers import frozen
from genie2.tokenizer.model import QUANTIZERS, ResBlock, codebook_stats, to_unit_frames

SYMMETRIES = ("none", "rot90")


@dataclass
class LAMConfig:
    """Everything that defines a latent action model; saved as config.json beside its weights."""

    frame_size: int = 64
    channels: tuple[int, ...] = (32, 64, 128)  # strided stages of both convolutional trunks
    res_blocks: int = 1  # residual blocks at the lowest resolution, in each trunk
    num_latent_actions: int = 8  # vq: the vocabulary size K (fsq: the product of fsq_levels)
    dim_action: int = 16
    quantizer: str = "vq"  # "vq" or "fsq"
    fsq_levels: tuple[int, ...] = (2, 2, 2)  # fsq: 8 latent actions
    commitment_weight: float = 0.25
    ema_decay: float = 0.9
    dead_code_threshold: float = 2.0  # vq codes used less than this (EMA count) are re-seeded; 0: never
    change_weight: float = 10.0  # pixels that change between the frames weigh 1 + this in the loss
    # what the game's actions do not change under: "rot90", the frame turned by quarter turns (MiniGrid,
    # whose actions turn and move relative to the agent's heading); "none" (screen-relative moves: Crafter)
    symmetry: str = "none"

    def __post_init__(self):
        self.channels, self.fsq_levels = tuple(self.channels), tuple(self.fsq_levels)
        if self.quantizer not in QUANTIZERS:
            raise InputError(f"quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}")
        if not self.channels or any(not isinstance(c, int) or c < 1 for c in self.channels):
            raise InputError(f"channels must be positive ints, got {self.channels!r}")
        if self.frame_size % self.downsample:
            raise InputError(f"frame_size {self.frame_size} must be divisible by the downsampling {self.downsample}")
        if self.quantizer == "vq" and (not isinstance(self.num_latent_actions, int) or self.num_latent_actions < 2):
            raise InputError(f"num_latent_actions must be an int >= 2, got {self.num_latent_actions!r}")
        if self.symmetry not in SYMMETRIES:
            raise InputError(f"symmetry must be one of {SYMMETRIES}, got {self.symmetry!r}")
        if self.change_weight < 0:
            raise InputError(f"change_weight must be >= 0, got {self.change_weight!r}")

    @property
    def downsample(self) -> int:
        return 2 ** len(self.channels)

    @property
    def num_actions(self) -> int:
        """K, the latent actions there are."""
        return self.num_latent_actions if self.quantizer == "vq" else math.prod(self.fsq_levels)


def trunk(config: LAMConfig, dim_in: int) -> nn.Sequential:
    """Strided convs from `dim_in` channels at H x W to channels[-1] at H/f x W/f, then residual blocks."""
    chans, layers = (dim_in, *config.channels), []
    for a, b in zip(chans[:-1], chans[1:], strict=True):
        layers += [nn.Conv2d(a, b, 4, stride=2, padding=1), nn.ReLU()]
    layers += [ResBlock(config.channels[-1]) for _ in range(config.res_blocks)]
    return nn.Sequential(*layers)


class LatentActionModel(Pretrained, nn.Module):
    """Frames to latent actions (`infer`) and back (`predict`); `forward` is the training loss."""

    KIND, NAME = "genie2-lam", "latent action model"

    def __init__(self, config: LAMConfig | None = None, **overrides):
        super().__init__()
        config = config or LAMConfig(**overrides)
        self.config = config
        size, dim = config.frame_size // config.downsample, config.channels[-1]
        self.inverse = trunk(config, 6)  # frame t+1 and its difference from frame t
        self.to_action = nn.Linear(2 * dim, config.dim_action)
        if config.quantizer == "vq":
            self.quantizer = VectorQuantize(
                dim=config.dim_action,
                codebook_size=config.num_latent_actions,
                decay=config.ema_decay,
                commitment_weight=config.commitment_weight,
                threshold_ema_dead_code=config.dead_code_threshold,
                kmeans_init=True,  # seeded from the first batch's actions
                rotation_trick=True,
            )
        else:
            symmetric = any(level == 2 for level in config.fsq_levels)  # FSQ needs it for two-level axes
            self.quantizer = FSQ(list(config.fsq_levels), dim=config.dim_action, preserve_symmetry=symmetric)
        self.forward_trunk = trunk(config, 3)
        self.action_to_scale_shift = nn.Linear(config.dim_action, 2 * dim)  # FiLM of frame t's features
        self.action_to_map = nn.Linear(config.dim_action, dim * size * size)  # and a map added where it acts
        chans, layers = (*config.channels[::-1], 3), [ResBlock(dim)]
        for a, b in zip(chans[:-1], chans[1:], strict=True):
            layers += [nn.ReLU(), nn.ConvTranspose2d(a, b, 4, stride=2, padding=1)]
        self.up = nn.Sequential(*layers)

    @property
    def num_actions(self) -> int:
        """K, the latent actions there are."""
        return self.config.num_actions

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _unit(self, frames: Tensor) -> Tensor:
        """Frames (b t H W 3; uint8 or float in [0, 1]) as (b t 3 H W) in [-1, 1] on the model's device."""
        unit = to_unit_frames(frames, self.config.frame_size)
        if unit.ndim != 5 or unit.shape[1] < 2:
            raise InputError(f"frames must be (b, t >= 2, H, W, 3), got {tuple(frames.shape)}")
        return rearrange(unit.to(self.device) * 2 - 1, "b t h w c -> b t c h w")

    def encode(self, prev: Tensor, next: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Frame pairs (b 3 H W each, in [-1, 1]) to (action features b d, ids b, commitment loss)."""
        features = self.inverse(torch.cat((next, next - prev), dim=1))
        pooled = torch.cat((reduce(features, "b c h w -> b c", "mean"), reduce(features, "b c h w -> b c", "max")), 1)
        actions = self.to_action(pooled)  # pooled over the frame: what changed, wherever it did
        if self.config.quantizer == "vq":
            quantized, ids, commit = self.quantizer(actions[:, None])
            return quantized[:, 0], ids[:, 0], commit
        quantized, ids = self.quantizer(actions[:, None])
        return quantized[:, 0], ids[:, 0], actions.new_zeros(())

    def action_features(self, ids: Tensor) -> Tensor:
        """The features (b d) of latent action ids (b)."""
        if self.config.quantizer == "vq":
            return self.quantizer.get_output_from_indices(ids)
        return self.quantizer.indices_to_codes(ids[:, None])[:, 0]

    def decode(self, prev: Tensor, actions: Tensor) -> Tensor:
        """Frame t (b 3 H W, in [-1, 1]) and action features (b d) to the predicted frame t+1 (same form)."""
        features = self.forward_trunk(prev)
        scale, shift = rearrange(self.action_to_scale_shift(actions), "b (two c) -> two b c 1 1", two=2)
        where = rearrange(self.action_to_map(actions), "b (c h w) -> b c h w", h=features.shape[2], w=features.shape[3])
        return prev + self.up(features * (1 + scale) + shift + where)

    def forward(self, frames: Tensor) -> tuple[Tensor, dict]:
        """Training loss on consecutive frame pairs (b 2 H W 3) and its parts (change-weighted MSE,
        commitment) with the ids (b) the encoder chose."""
        video = self._unit(frames)
        quantized, ids, commit = self.encode(video[:, 0], video[:, 1])
        if self.config.symmetry == "rot90":  # the action read from the pair must also predict the pair turned
            video = turn(video, torch.randint(0, 4, (len(video),), device=video.device))
        prev, next = video[:, 0], video[:, 1]
        pred = self.decode(prev, quantized)
        changed = ((next - prev).abs().amax(1, keepdim=True) > 1 / 255).float()  # b 1 H W
        weight = 1 + self.config.change_weight * changed
        recon = (weight * (pred - next) ** 2).sum() / (weight.sum() * 3)
        loss = recon + commit
        return loss, dict(recon=recon.detach(), commit=commit.detach(), ids=ids.detach(), changed=changed.mean())

    @torch.no_grad()
    def infer(self, frames: Tensor, batch_size: int = 256) -> Tensor:
        """The latent action (int64) between each pair of consecutive frames: (t H W 3) -> (t - 1,),
        or (b t H W 3) -> (b, t - 1); uint8 or float in [0, 1]."""
        frames = torch.as_tensor(frames)
        single = frames.ndim == 4
        frames = frames[None] if single else frames
        if frames.ndim != 5 or frames.shape[1] < 2:
            raise InputError(
                f"frames must be (t >= 2, H, W, 3) or (b, t >= 2, H, W, 3), got {getattr(frames, 'shape', None)}"
            )
        ids = []
        with frozen(self.quantizer):  # windows of batch_size + 1 frames: a long video never sits whole on the device
            for start in range(0, frames.shape[1] - 1, batch_size):
                video = self._unit(frames[:, start : start + batch_size + 1])
                prev, next = (rearrange(x, "b t c h w -> (b t) c h w") for x in (video[:, :-1], video[:, 1:]))
                ids.append(rearrange(self.encode(prev, next)[1], "(b t) -> b t", b=len(frames)))
        ids = torch.cat(ids, dim=1).long().cpu()
        return ids[0] if single else ids

    @torch.no_grad()
    def predict(self, frames: Tensor, ids: Tensor) -> Tensor:
        """Frames t (b H W 3; uint8 or float in [0, 1]) under latent actions (b) to frames t+1 (b H W 3)
        as floats in [0, 1]."""
        if not isinstance(ids, Tensor) or ids.dtype.is_floating_point or ids.ndim != 1 or len(ids) != len(frames):
            raise InputError("ids must be one integer latent action per frame, a tensor (b,)")
        if ids.numel() and (ids.min() < 0 or ids.max() >= self.num_actions):
            raise InputError(
                f"latent actions are ids in [0, {self.num_actions}), got [{int(ids.min())}, {int(ids.max())}]"
            )
        prev = self._unit(torch.stack((frames, frames), dim=1))[:, 0]
        pred = self.decode(prev, self.action_features(ids.to(self.device)))
        return rearrange(pred.clamp(-1, 1) * 0.5 + 0.5, "b c h w -> b h w c")

    def to_actions(self, ids: Tensor) -> Tensor:
        """The real actions of latent action ids (any shape), by the map `load_lam` found beside the LAM."""
        if getattr(self, "action_map", None) is None:
            raise InputError(
                "this LAM has no action map: make one with `genie2 map-actions --lam LAM --data LABELLED --out LAM`"
            )
        return self.action_map.to_actions(ids)

    def checkpoint_config(self) -> dict:
        """The config as config.json holds it."""
        return asdict(self.config)

    @classmethod
    def from_checkpoint_config(cls, config: dict, folder: Path) -> LatentActionModel:
        """A latent action model for a saved config."""
        return cls(config_from_dict(LAMConfig, config))


SHIPPED_LAMS = {"minigrid": Path(__file__).parents[1] / "pretrained" / "minigrid-lam"}


def lam_folder(name_or_path: str | Path | None = None) -> Path:
    """The folder of a LAM: a shipped one by name (SHIPPED_LAMS; None: minigrid; a folder of that name in
    the working directory comes first) or the folder given."""
    name = "minigrid" if name_or_path is None else name_or_path
    named = isinstance(name, str) and name in SHIPPED_LAMS and not Path(name).exists()
    folder = SHIPPED_LAMS[name] if named else Path(name)
    if not folder.is_dir():
        shipped = ", ".join(SHIPPED_LAMS)
        raise InputError(f"no LAM named {str(name)!r} and no such folder: shipped LAMs are {shipped}, or give a folder")
    return folder


def load_lam(name_or_path: str | Path | None = None, device: str = "cpu") -> LatentActionModel:
    """A latent action model in eval mode: a shipped one by name (SHIPPED_LAMS; None: minigrid) or a
    `genie2 train-lam` folder, with its action map (`to_actions`) where action-map.json lies beside it."""
    from genie2.lam.mapping import MAP_FILE, ActionMap

    folder = lam_folder(name_or_path)
    lam = LatentActionModel.from_pretrained(folder, device).eval()
    lam.action_map = ActionMap.load(folder) if (folder / MAP_FILE).is_file() else None
    return lam


def turn(video: Tensor, quarters: Tensor) -> Tensor:
    """Each clip (b t c H W) turned by its number of quarter turns (b,) counter-clockwise."""
    return torch.stack([torch.rot90(clip, int(k), dims=(-2, -1)) for clip, k in zip(video, quarters, strict=True)])


def vocabulary_stats(ids: Tensor, num_actions: int) -> dict:
    """How a set of latent actions uses the vocabulary: usage, perplexity (1: one code; K: all alike)
    and the share of the most used code."""
    stats = codebook_stats(ids, num_actions)
    counts = torch.bincount(ids.flatten().long(), minlength=num_actions)
    return dict(stats, top_share=float(counts.max() / counts.sum().clamp(min=1)))


def collapse(stats: dict) -> str | None:
    """A sentence when `vocabulary_stats` show a collapsed vocabulary (one code takes 90% of the steps, or
    the perplexity is under 1.5), else None."""
    if stats["top_share"] > 0.9 or stats["perplexity"] < 1.5:
        return (
            f"the latent actions collapsed: one code takes {stats['top_share']:.0%} of the steps "
            f"(perplexity {stats['perplexity']:.2f}); train longer, raise change_weight, or check that the "
            "frames change"
        )
    return None


__all__ = ["LAMConfig", "LatentActionModel", "collapse", "load_lam", "vocabulary_stats"]

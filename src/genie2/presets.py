"""Named configurations: functions that return a config, overridable from the command line."""

from __future__ import annotations

from typing import ClassVar

from genie2.checkpoint import config_from_dict
from genie2.errors import InputError
from genie2.tokenizer.model import TokenizerConfig


class PresetConfig:
    """A training-config dataclass built from a named preset or from its saved JSON."""

    PRESETS: ClassVar[dict] = {}

    @classmethod
    def preset(cls, name: str, **overrides):
        """A preset by name with some fields overridden (None values are ignored)."""
        if name not in cls.PRESETS:
            raise InputError(f"unknown preset {name!r}; presets: {sorted(cls.PRESETS)}")
        values = cls.PRESETS[name]()
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    @classmethod
    def from_dict(cls, data: dict):
        """Rebuild from saved JSON (as every saved config: see checkpoint.config_from_dict)."""
        return config_from_dict(cls, data)


def tokenizer_tiny() -> dict:
    """For tests: a few thousand parameters, trains in seconds."""
    model = TokenizerConfig(channels=(8, 16, 16), res_blocks=1, dim_latent=8, codebook_size=32)
    return dict(model=model, steps=60, batch_size=8)


def tokenizer_cpu() -> dict:
    """The default: 64x64 frames to 8x8 codes with the patch encoder, 0.63M parameters. Half of each
    batch is drawn so every distinct patch shows about as often as the floor, no code is re-seeded as
    dead (a rare sprite's code would be), the worst 2% of each batch's tiles weigh in the loss again,
    and the autoencoder warms up for 80% of the steps, then seeds one code per distinct patch: on the
    demo's data this drew the agent where without them it was a smudge (README, The tokenizer)."""
    model = TokenizerConfig(channels=(32, 64, 128), codebook_size=256, hard_tile_share=0.02, dead_code_threshold=0.0)
    return dict(model=model, steps=8000, batch_size=16, lr=2e-3, ae_warmup=0.8, rare_share=0.5)


def tokenizer_crafter_cpu() -> dict:
    """Crafter at 72x72 (the preset's size: 8 px tiles): 9x9 codes, one per tile, from a codebook of 1,024
    (a tile kind at each light level of Crafter's day and night), otherwise the cpu recipe."""
    values = tokenizer_cpu()
    values["model"].codebook_size = 1024
    return values


def tokenizer_gpu() -> dict:
    """A wider tokenizer for a GPU."""
    model = TokenizerConfig(channels=(64, 128, 256), res_blocks=4, codebook_size=1024)
    return dict(model=model, steps=20000, batch_size=64, lr=4e-4)


TOKENIZER_PRESETS = {
    "tiny": tokenizer_tiny,
    "cpu": tokenizer_cpu,
    "crafter-cpu": tokenizer_crafter_cpu,
    "gpu": tokenizer_gpu,
}


def world_tiny() -> dict:
    """For tests: a one-layer world model that trains in seconds."""
    model = dict(dim=32, depth=1, heads=2, attn_dim_head=16, num_meta_tokens=1)
    return dict(model=model, steps=20, batch_size=4, clip_frames=4, checkpoint_every=10, eval_every=10)


def world_cpu() -> dict:
    """The default demo model: dim 192, 4 layers (about 3M parameters); small enough to train on
    2 CPU cores and to play at over 10 frames/s there (8x8 codes, compiled decoding). Its code
    tokens carry their frame's action: on the demo's data that read the keys within 700 steps
    (delta PSNR 1.07 dB at step 8), where the reference's one action token had not (0.0 dB)."""
    model = dict(dim=192, depth=4, heads=6, attn_dim_head=32, num_meta_tokens=4, add_action_to_codes=True)
    return dict(model=model, steps=3000, batch_size=8, clip_frames=8, lr=1e-3)


def world_crafter_cpu() -> dict:
    """Crafter on 2 CPU cores: the cpu model over 9x9 codes (the crafter-cpu tokenizer's), eval rollouts
    less often (a Crafter rollout costs 81 passes a frame)."""
    values = world_cpu()
    values.update(steps=2000, eval_every=1000)
    return values


def world_gpu_small() -> dict:
    """A single-GPU model: dim 512, 8 layers."""
    model = dict(dim=512, depth=8, heads=8, attn_dim_head=64, num_meta_tokens=8)
    return dict(model=model, steps=20000, batch_size=32, clip_frames=16, lr=6e-4)


def world_gpu_base() -> dict:
    """A larger model for several GPUs: dim 768, 12 layers."""
    model = dict(dim=768, depth=12, heads=12, attn_dim_head=64, num_meta_tokens=16)
    return dict(model=model, steps=100000, batch_size=64, clip_frames=16, lr=4e-4)


WORLD_PRESETS = {
    "tiny": world_tiny,
    "cpu": world_cpu,
    "crafter-cpu": world_crafter_cpu,
    "gpu-small": world_gpu_small,
    "gpu-base": world_gpu_base,
}


def lam_tiny() -> dict:
    """For tests: a latent action model that trains in seconds."""
    model = dict(channels=(8, 16), num_latent_actions=4, dim_action=8)
    return dict(model=model, steps=20, batch_size=8, checkpoint_every=10, eval_every=10, val_pairs=32)


def lam_cpu() -> dict:
    """The default latent action model: 8 latent actions, about 1M parameters, 3,000 steps of 64 frame
    pairs (about 20 minutes on 2 CPU cores at 64x64)."""
    return dict(steps=3000, batch_size=64)


LAM_PRESETS = {"tiny": lam_tiny, "cpu": lam_cpu}

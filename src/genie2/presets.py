"""Named configurations: functions that return a config, overridable from the command line."""

from __future__ import annotations

from genie2.tokenizer import TokenizerConfig


def tokenizer_tiny() -> dict:
    """For tests: a few thousand parameters, trains in seconds."""
    model = TokenizerConfig(channels=(8, 16, 16), res_blocks=1, dim_latent=8, codebook_size=32)
    return dict(model=model, steps=60, batch_size=8)


def tokenizer_cpu() -> dict:
    """The default: 64x64 frames to 8x8 codes, 1.2M parameters, ~12 minutes on 2 CPU cores."""
    return dict(model=TokenizerConfig(channels=(32, 64, 128), codebook_size=256), steps=8000, batch_size=16, lr=2e-3)


def tokenizer_gpu() -> dict:
    """A wider tokenizer for a GPU."""
    model = TokenizerConfig(channels=(64, 128, 256), res_blocks=4, codebook_size=1024)
    return dict(model=model, steps=20000, batch_size=64, lr=4e-4)


TOKENIZER_PRESETS = {"tiny": tokenizer_tiny, "cpu": tokenizer_cpu, "gpu": tokenizer_gpu}

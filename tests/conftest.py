"""Shared tiny models for the tests."""

import pytest
import torch

from genie2 import Genie2

torch.set_num_threads(2)


def tiny(**kwargs) -> Genie2:
    """A small Genie2 on identity encoder/decoder over 16-dim latents."""
    config = dict(
        dim=64,
        dim_latent=16,
        num_actions=5,
        depth=2,
        heads=4,
        attn_dim_head=16,
        vq_codebook_size=32,
        num_meta_tokens=4,
        latent_channel_first=True,
    )
    config.update(kwargs)
    return Genie2(**config)


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)

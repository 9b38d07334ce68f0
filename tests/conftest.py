"""Shared tiny models for the tests."""

import pytest
import torch

from genie2 import Genie2
from genie2.tokenizer.model import Tokenizer, TokenizerConfig
from genie2.world import World

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


def tiny_world(num_actions: int) -> World:
    """A random 16x16 world (tokenizer and all); each is its own model, so its compiled steps are its own
    (they are cached per model)."""
    tokenizer = Tokenizer(
        TokenizerConfig(frame_size=16, channels=(8, 16), res_blocks=1, dim_latent=8, codebook_size=16)
    )
    return World(Genie2.from_tokenizer(tokenizer, dim=32, depth=1, heads=2, attn_dim_head=16, num_actions=num_actions))


@pytest.fixture(autouse=True)
def seed():
    torch.manual_seed(0)

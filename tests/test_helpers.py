"""The seed's building blocks: packing, projection, sampling, meta tokens, causal convs."""

import pytest
import torch
from torch import nn

from genie2 import (
    CausalConv3d,
    MetaTokenWrapper,
    default,
    exists,
    guide,
    gumbel_sample,
    gumbel_softmax,
    l2norm,
    min_p_filter,
    pack_one,
    project,
)
from genie2.model.transformer import Transformer


def test_exists_default_l2norm():
    assert exists(0) and not exists(None)
    assert default(None, 3) == 3 and default(0, 3) == 0
    assert torch.allclose(l2norm(torch.randn(4, 7)).norm(dim=-1), torch.ones(4))


def test_pack_one_round_trip():
    t = torch.randn(2, 3, 4, 5)
    packed, inverse = pack_one(t, "b * d")
    assert packed.shape == (2, 12, 5)
    assert torch.equal(inverse(packed), t)


def test_project_per_batch_element_in_float64():
    x, y = torch.randn(3, 4, 5), torch.randn(3, 4, 5)
    parallel, orthogonal = project(x, y)
    assert parallel.dtype == x.dtype
    assert torch.allclose(parallel + orthogonal, x, atol=1e-6)
    dots = (orthogonal.double() * y.double()).flatten(1).sum(-1)
    assert dots.abs().max() < 1e-5
    # batch elements are independent
    p0, _ = project(x[:1], y[:1])
    assert torch.allclose(p0, parallel[:1], atol=1e-6)


def test_gumbel_sample_greedy_at_zero_temperature():
    logits = torch.randn(8, 100)
    assert torch.equal(gumbel_sample(logits, temperature=0.0), logits.argmax(-1, keepdim=True))
    assert gumbel_sample(logits, temperature=0.0, keepdim=False).shape == (8,)


def test_gumbel_sample_follows_distribution():
    logits = torch.log(torch.tensor([0.7, 0.2, 0.1]))
    samples = gumbel_sample(logits.expand(20000, 3), temperature=1.0, keepdim=False)
    freq = torch.bincount(samples, minlength=3).float() / samples.numel()
    assert torch.allclose(freq, torch.tensor([0.7, 0.2, 0.1]), atol=0.02)
    with pytest.raises(ValueError):
        gumbel_sample(logits, temperature=-1.0)


def test_gumbel_softmax_is_a_distribution():
    probs = gumbel_softmax(torch.randn(4, 10), temperature=0.5)
    assert torch.allclose(probs.sum(-1), torch.ones(4))


def test_min_p_filter_keeps_tokens_above_fraction_of_top():
    probs = torch.tensor([[0.5, 0.3, 0.04, 0.16]])
    filtered = min_p_filter(probs.log(), min_p=0.1)
    assert torch.isinf(filtered[0, 2]) and not torch.isinf(filtered[0, [0, 1, 3]]).any()
    assert torch.isfinite(min_p_filter(probs.log(), min_p=0.0)).all()
    with pytest.raises(ValueError):
        min_p_filter(probs, min_p=2.0)


def test_meta_token_wrapper_keeps_length_and_uses_small_random_tokens():
    net = Transformer(dim=32, depth=1, heads=2, attn_dim_head=16)
    wrapped = MetaTokenWrapper(net, num_meta_tokens=3)
    assert wrapped.meta_tokens.abs().max() < 0.2 and wrapped.meta_tokens.std() > 0
    x = torch.randn(2, 5, 32)
    assert wrapped(x).shape == x.shape
    # the meta tokens change the output: they are really attended to
    assert not torch.allclose(wrapped(x), net(x))
    with pytest.raises(ValueError):
        MetaTokenWrapper(net, num_meta_tokens=0)


def test_causal_conv3d_is_causal_in_time_only():
    conv = CausalConv3d(4, 6, kernel_size=3)
    x = torch.randn(1, 4, 5, 2, 3)
    out = conv(x)
    assert out.shape == (1, 6, 5, 2, 3)
    x2 = x.clone()
    x2[:, :, 3:] = torch.randn_like(x2[:, :, 3:])  # change the future
    assert torch.allclose(conv(x2)[:, :, :3], out[:, :, :3])
    assert not torch.allclose(conv(x2)[:, :, 3:], out[:, :, 3:])
    x3 = x.clone()
    x3[..., 0, 0] += 1.0  # one pixel: no spatial mixing
    diff = (conv(x3) - out).abs().sum(dim=(0, 1, 2))
    assert diff[0, 0] > 0 and diff.flatten()[1:].max() == 0
    with pytest.raises(ValueError):
        CausalConv3d(4, 4, kernel_size=0)
    assert isinstance(conv.conv, nn.Conv3d)


def test_guide_ignores_a_constant_logit_offset_and_is_identity_at_scale_one():
    logits, null = torch.randn(3, 8), torch.randn(3, 8)
    guided = guide(logits, null, 3.0).softmax(-1)
    assert torch.allclose(guided, guide(logits + 5.0, null - 2.0, 3.0).softmax(-1), atol=1e-5)
    assert torch.allclose(guide(logits, null, 1.0).softmax(-1), logits.softmax(-1), atol=1e-6)


def test_gumbel_sample_in_bf16_keeps_the_temperature():
    logits = torch.zeros(20000, 4)
    logits[:, 0] = 2.0
    samples = gumbel_sample(logits.bfloat16(), temperature=1.0, keepdim=False)
    expected = torch.tensor(2.0).exp() / (torch.tensor(2.0).exp() + 3)
    assert abs((samples == 0).float().mean() - expected) < 0.02


def test_psnr_ssim_match_known_pairs():
    from genie2.evaluate import psnr_ssim

    frames = torch.randint(0, 256, (2, 16, 16, 3), dtype=torch.uint8)
    psnr, ssim = psnr_ssim(frames, frames)
    assert torch.all(psnr == 100.0) and torch.allclose(ssim, torch.ones(2))
    shifted = (frames.int() + 10).clamp(0, 255).to(torch.uint8)
    mse = ((shifted.float() - frames.float()) / 255).pow(2).flatten(1).mean(1)
    assert torch.allclose(psnr_ssim(shifted, frames)[0], 10 * torch.log10(1 / mse), atol=1e-3)


def test_resolve_device_gives_clear_errors():
    import pytest
    import torch

    from genie2.helpers import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    for name in ("gpu", "cuda:1", "mps"):
        with pytest.raises(ValueError, match="pass cpu or cuda"):
            resolve_device(name)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU"):
            resolve_device("cuda")

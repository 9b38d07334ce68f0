"""One test per defect of the reference genie2-pytorch (numbered as in issue 2)."""

import copy

import pytest
import torch

from conftest import tiny
from genie2 import Genie2


def test_1_multiple_actions_with_action_head_builds_and_trains():
    model = tiny(allow_multiple_actions=True, max_num_actions=3, cfg_train_action_dropout=0.0)
    actions = torch.tensor([[[1, 3, -1], [0, -1, -1], [4, 2, 1]], [[-1, -1, -1], [2, 2, -1], [3, -1, -1]]])
    loss, (_, _, action_loss) = model(torch.randn(2, 16, 3, 2, 2), actions=actions)
    loss.backward()
    assert action_loss > 0
    head = model.to_action_pred
    assert head.to_logits.weight.grad is not None and head.to_logits.weight.grad.abs().sum() > 0


def test_2_padded_frames_do_not_affect_the_loss():
    model = tiny(cfg_train_action_dropout=0.0, add_temporal_convs=True)
    video, actions = torch.randn(2, 16, 4, 2, 2), torch.randint(0, 5, (2, 4))
    lens = torch.tensor([2, 4])
    other = video.clone()
    other[0, :, 2:] = torch.randn_like(other[0, :, 2:]) * 10  # change only the padding
    other_actions = actions.clone()
    other_actions[0, 2:] = (other_actions[0, 2:] + 1) % 5

    a, b = copy.deepcopy(model), copy.deepcopy(model)
    loss_a, parts_a = a(video, actions=actions, video_time_len=lens)
    loss_b, parts_b = b(other, actions=other_actions, video_time_len=lens)
    assert torch.isfinite(loss_a)
    assert torch.allclose(loss_a, loss_b) and all(torch.allclose(x, y) for x, y in zip(parts_a, parts_b, strict=True))
    loss_a.backward()
    loss_b.backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        if pa.grad is not None:
            assert torch.allclose(pa.grad, pb.grad, atol=1e-6), name
    assert torch.allclose(a.vq.codebook, b.vq.codebook)  # padding does not move the EMA codebook

    # the valid frames are supervised: a clip cut at its length gives the same losses
    model.eval()
    (_, (state_cut, _, action_cut)) = model(video[:1, :, :2], actions=actions[:1, :2])
    (_, (state_pad, _, action_pad)) = model(video[:1], actions=actions[:1], video_time_len=torch.tensor([2]))
    assert torch.allclose(state_cut, state_pad) and torch.allclose(action_cut, action_pad)


def test_2_no_padding_gives_a_finite_loss_equal_to_no_lengths():
    model = tiny().eval()
    video, actions = torch.randn(2, 16, 3, 2, 2), torch.randint(0, 5, (2, 3))
    full, _ = model(video, actions=actions, video_time_len=torch.tensor([3, 3]))
    plain, _ = model(video, actions=actions)
    assert torch.isfinite(full) and torch.allclose(full, plain)


def test_3_temporal_recon_loss_counts_without_the_action_loss():
    model = tiny(add_temporal_convs=True, action_autoregressive_loss_weight=0.0)
    loss, _ = model(torch.randn(2, 16, 3, 2, 2))
    loss.backward()
    grad = model.post_vq_transform.conv.weight.grad  # only the reconstruction loss reaches it
    assert grad is not None and grad.abs().sum() > 0


def test_4_generate_uses_given_actions_and_guidance():
    model = tiny().eval()
    image = torch.randn(2, 16, 2, 2)
    actions = torch.randint(0, 5, (2, 4))
    torch.manual_seed(0)
    with_actions = model.generate(image, 3, actions=actions, temperature=0.0)
    without = model.generate(image, 3, temperature=0.0)
    other = model.generate(image, 3, actions=(actions + 1) % 5, temperature=0.0)
    guided = model.generate(image, 3, actions=actions, temperature=0.0, cond_scale=4.0)
    assert not torch.equal(with_actions, without)
    assert not torch.equal(with_actions, other)
    assert not torch.equal(with_actions, guided)
    multi = tiny(allow_multiple_actions=True).eval()
    out = multi.generate(image, 3, actions=torch.randint(-1, 5, (2, 4, 3)), cond_scale=2.0)
    assert out.shape == (2, 16, 4, 2, 2)
    with pytest.raises(ValueError, match="one entry per frame"):
        model.generate(image, 3, actions=torch.randint(0, 5, (2, 3)))


def test_5_non_square_latent_maps_generate():
    model = tiny().eval()
    assert model.generate(torch.randn(1, 16, 2, 5), 2).shape == (1, 16, 3, 2, 5)
    assert model.generate(torch.randn(1, 16, 3, 1), 2).shape == (1, 16, 3, 3, 1)


def test_6_unconditional_model_and_forward_without_actions():
    model = Genie2(
        dim=64, dim_latent=16, depth=1, heads=2, attn_dim_head=16, vq_codebook_size=16, latent_channel_first=True
    )
    assert model.num_actions is None and model.to_action_pred is None
    loss, (_, _, action_loss) = model(torch.randn(1, 16, 2, 2, 2))
    loss.backward()
    assert action_loss == 0
    assert model.generate(torch.randn(1, 16, 2, 2), 2).shape == (1, 16, 3, 2, 2)
    with pytest.raises(ValueError, match="unconditional"):
        model(torch.randn(1, 16, 2, 2, 2), actions=torch.zeros(1, 2, dtype=torch.long))
    conditioned = tiny()
    loss, (_, _, action_loss) = conditioned(torch.randn(1, 16, 2, 2, 2))  # head exists, no actions
    assert torch.isfinite(loss) and action_loss == 0


def test_7_generation_positions_equal_training_positions():
    """Covered in depth by test_cached_decoding_equals_full_forward; here on one odd shape."""
    model = tiny().eval()
    image = torch.randn(1, 16, 3, 2)
    actions = torch.randint(0, 5, (1, 3))
    video = model.generate(image, 2, actions=actions, temperature=0.0)
    _, codes, _ = model.encode_state(video)
    logits = model(state_codes=codes, actions=actions, return_loss=False)
    assert torch.equal(logits.argmax(-1).view_as(codes)[:, 1:], codes[:, 1:])


def test_8_multi_action_padding_is_not_label_zero():
    model = tiny(allow_multiple_actions=True, max_num_actions=4, cfg_train_action_dropout=0.0).eval()
    video = torch.randn(1, 16, 3, 2, 2)
    padded = torch.tensor([[[2, -1], [1, -1], [3, 4]]])
    wider = torch.nn.functional.pad(padded, (0, 2), value=-1)
    as_zero = padded.clamp(min=0)
    loss = lambda acts: model(video, actions=acts)[1][2]  # noqa: E731
    assert torch.allclose(loss(padded), loss(wider))
    assert not torch.allclose(loss(padded), loss(as_zero))
    single = tiny(cfg_train_action_dropout=0.0).eval()
    loss = lambda acts, frames=3: single(video[:, :, :frames], actions=acts)[1][2]  # noqa: E731
    missing = loss(torch.tensor([[1, 2, -1]]))  # the label of frame 2 is unknown: ignored
    assert torch.allclose(missing, loss(torch.tensor([[1, 2]]), frames=2))
    assert not torch.allclose(missing, loss(torch.tensor([[1, 2, 0]])))


def test_9_tokens_of_a_frame_get_distinct_positions(monkeypatch):
    model = tiny().eval()
    pos = model.frame_positions(2, 4)
    assert len({tuple(p) for p in pos.tolist()}) == 10  # (frame, slot) unique for every token
    assert pos[:5, 0].eq(0).all() and pos[:5, 1].tolist() == [0, 1, 2, 3, 4]
    codes = torch.randint(0, 32, (1, 2, 2, 2))
    logits = model(state_codes=codes, return_loss=False)
    # the reference's behaviour: one position per frame; the model must notice the difference
    one_per_frame = lambda t, s, start=0: torch.stack(  # noqa: E731
        (torch.arange(start, start + t).repeat_interleave(s + 1), torch.zeros(t * (s + 1))), dim=-1
    ).float()
    monkeypatch.setattr(model, "frame_positions", one_per_frame)
    assert not torch.allclose(model(state_codes=codes, return_loss=False), logits, atol=1e-4)


def test_10_first_token_of_a_frame_sees_its_action():
    model = tiny().eval()
    codes = torch.randint(0, 32, (1, 3, 2, 2))
    a = model(state_codes=codes, actions=torch.tensor([[0, 1, 2]]), return_loss=False)
    b = model(state_codes=codes, actions=torch.tensor([[0, 4, 2]]), return_loss=False)
    assert torch.allclose(a[:, :4], b[:, :4])
    assert not torch.allclose(a[:, 4], b[:, 4])


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(actions=torch.randint(0, 5, (2, 2))), ValueError),  # wrong time length
        (dict(actions=torch.randint(0, 5, (3, 3))), ValueError),  # wrong batch
        (dict(actions=torch.full((2, 3), 5)), ValueError),  # id out of range
        (dict(actions=torch.full((2, 3), -2)), ValueError),
        (dict(actions=torch.randint(0, 5, (2, 3, 2))), ValueError),  # several keys, not allowed
        (dict(actions=torch.rand(2, 3)), TypeError),  # float actions
        (dict(actions=torch.zeros(2, 3, 1, 1, dtype=torch.long)), ValueError),
        (dict(video_time_len=torch.tensor([0, 3])), ValueError),
        (dict(video_time_len=torch.tensor([4, 3])), ValueError),
        (dict(time_seq_len=5), ValueError),
    ],
)
def test_11_bad_forward_input_raises_clear_errors(kwargs, error):
    model = tiny()
    with pytest.raises(error):
        model(torch.randn(2, 16, 3, 2, 2), **kwargs)


def test_11_bad_codes_state_and_config_raise_clear_errors():
    model = tiny()
    with pytest.raises(ValueError, match="exactly one"):
        model()
    with pytest.raises(ValueError, match="exactly one"):
        model(torch.randn(1, 16, 2, 2, 2), state_codes=torch.zeros(1, 2, 2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\[0, 32\)"):
        model(state_codes=torch.full((1, 2, 2, 2), 32))
    with pytest.raises(TypeError):
        model(state_codes=torch.rand(1, 2, 2, 2))
    with pytest.raises(ValueError, match="time_seq_len"):
        model(state_codes=torch.zeros(1, 7, dtype=torch.long), time_seq_len=2)
    with pytest.raises(ValueError, match="video tensor"):
        model(torch.randn(16, 2, 2, 2))
    with pytest.raises(ValueError, match="latent_channel_first"):
        tiny(latent_channel_first=False)(torch.randn(1, 16, 2, 2, 2))
    with pytest.raises(ValueError, match="max_num_actions"):
        tiny(allow_multiple_actions=True, max_num_actions=2)(
            torch.randn(1, 16, 2, 2, 2), actions=torch.zeros(1, 2, 3, dtype=torch.long)
        )
    with pytest.raises(ValueError, match="unsupported keys"):
        tiny(transformer_kwargs=dict(ff_glu=True, cross_attend=True))
    with pytest.raises(ValueError, match="unsupported keys"):
        tiny(action_transformer_kwargs=dict(attn_flash=True))
    with pytest.raises(ValueError, match="Genie2 arguments"):
        tiny(transformer_kwargs=dict(depth=3))
    with pytest.raises(ValueError):
        tiny(vq_kwargs=dict(heads=2))
    with pytest.raises(ValueError):
        tiny(dim=0)
    with pytest.raises(ValueError):
        tiny(add_temporal_convs=True, is_video_enc_dec=True)


def test_11_odd_types_raise_clear_errors():
    model = tiny()
    video = torch.randn(1, 16, 2, 2, 2)
    with pytest.raises(TypeError, match="actions"):
        model(video, actions=[[1, 2]])
    with pytest.raises(TypeError, match="state_codes"):
        model(state_codes=[[1, 2]])
    with pytest.raises(TypeError, match="state_codes"):
        model(state_codes=torch.ones(1, 2, 2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="no keys"):
        model(video, actions=torch.zeros(1, 2, 0, dtype=torch.long))
    with pytest.raises(ValueError, match="non-empty"):
        model(torch.randn(1, 16, 0, 2, 2))
    loss, _ = model(video.double())  # float64 frames are cast, not a dtype crash
    assert torch.isfinite(loss)
    unconditional = tiny(num_actions=None)
    with pytest.raises(ValueError, match="num_actions is None"):
        unconditional.generate(torch.randn(1, 16, 2, 2), 2, init_action=0)
    with pytest.raises(ValueError, match="num_actions is None"):
        unconditional.generate(torch.randn(1, 16, 2, 2), 2, interactive=True, init_action=0)
    with pytest.raises(ValueError, match="init_action"):
        model.generate(torch.randn(1, 16, 2, 2), 2, init_action=True)
    with pytest.raises(ValueError, match="either actions"):
        model.generate(torch.randn(1, 16, 2, 2), 1, init_action=1, actions=torch.zeros(1, 2, dtype=torch.long))
    assert model.generate(torch.randn(1, 16, 2, 2), 1, init_action=torch.tensor(2)).shape == (1, 16, 2, 2, 2)


def test_11_bad_generate_input_raises_clear_errors():
    model = tiny()
    image = torch.randn(2, 16, 2, 2)
    with pytest.raises(ValueError, match="one video at a time"):
        model.generate(image, 2, interactive=True, init_action=0)
    with pytest.raises(ValueError, match="init_action"):
        model.generate(image[:1], 2, interactive=True)
    with pytest.raises(ValueError, match="init_action"):
        model.generate(image[:1], 2, interactive=True, init_action=9)
    with pytest.raises(ValueError, match="num_frames"):
        model.generate(image, -1)
    with pytest.raises(ValueError, match="temperature"):
        model.generate(image, 1, temperature=-1.0)
    with pytest.raises(ValueError, match="min_p"):
        model.generate(image, 1, filter_kwargs=dict(top_k=3))
    with pytest.raises(ValueError, match="frames"):
        model.generate(torch.randn(16, 2, 2), 1)

"""Genie2 invariants: causality, cached == full decoding, shapes, learning, reproducibility."""

import pytest
import torch

from conftest import tiny
from genie2.model.actions import order_actions
from genie2.model.decoding import Rollout, Sampling


def random_codes(b=2, t=4, h=2, w=3, size=32):
    return torch.randint(0, size, (b, t, h, w))


@pytest.mark.parametrize("h, w", [(1, 1), (2, 3), (4, 4)])
def test_shapes_for_latent_maps(h, w):
    model = tiny()
    video = torch.randn(2, 16, 3, h, w)
    loss, (state_loss, commit_loss, action_loss) = model(video, actions=torch.randint(0, 5, (2, 3)))
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    logits = model(state_codes=random_codes(2, 3, h, w), return_loss=False)
    assert logits.shape == (2, 3 * h * w, 32)
    generated = model.generate(video[:, :, 0], num_frames=3)
    assert generated.shape == (2, 16, 4, h, w)


def test_causality_of_codes_and_actions():
    model = tiny().eval()
    codes, actions = random_codes(), torch.randint(0, 5, (2, 4))
    logits = model(state_codes=codes, actions=actions, return_loss=False)
    s = 6
    for i in (0, 5, 6, 13, 23):
        changed = codes.clone().flatten(1)
        changed[:, i] = (changed[:, i] + 1) % 32
        out = model(state_codes=changed.view_as(codes), actions=actions, return_loss=False)
        assert torch.allclose(out[:, : i + 1], logits[:, : i + 1], atol=1e-5), i
        if i + 1 < out.shape[1]:
            assert not torch.allclose(out[:, i + 1 :], logits[:, i + 1 :], atol=1e-5)
    for t in (1, 3):
        changed = actions.clone()
        changed[:, t] = (changed[:, t] + 1) % 5
        out = model(state_codes=codes, actions=changed, return_loss=False)
        assert torch.allclose(out[:, : t * s], logits[:, : t * s], atol=1e-5)
        # every code of frame t, the first included, sees actions[:, t]
        assert not torch.allclose(out[:, t * s], logits[:, t * s], atol=1e-5)


def cached_logits(model, codes, actions, cond_scale=1.0):
    """Logits of frames 1.. by the cached step-by-step path, teacher-forced on `codes`."""
    guided = actions is not None and cond_scale != 1
    rollout = Rollout(
        model, codes[:, :1], None if actions is None else actions[:, :1], Sampling(cond_scale=cond_scale), guided
    )
    out = []
    for t in range(1, codes.shape[1]):
        step_actions = None if actions is None else actions[:, t]
        _, logits = rollout.step(step_actions, codes=codes[:, t], return_logits=True)
        out.append(logits)
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("h, w", [(1, 1), (2, 3), (3, 2)])
@pytest.mark.parametrize("meta", [0, 4])
@pytest.mark.parametrize("mode", ["none", "single", "multi", "cfg", "multi-cfg"])
def test_cached_decoding_equals_full_forward(h, w, meta, mode):
    multi = mode.startswith("multi")
    model = tiny(num_meta_tokens=meta, allow_multiple_actions=multi).eval()
    b, t = 2, 4
    codes = random_codes(b, t, h, w)
    actions = None
    if mode != "none":
        actions = torch.randint(-1, 5, (b, t, 3)) if multi else torch.randint(0, 5, (b, t))
    cond_scale = 2.5 if mode.endswith("cfg") else 1.0
    full = model.forward_with_cfg(state_codes=codes, actions=actions, cond_scale=cond_scale)
    full = full.view(b, t, h, w, -1)[:, 1:]
    sorted_actions = None
    if actions is not None:
        sorted_actions = order_actions(actions if multi else actions[..., None])
    cached = cached_logits(model, codes, sorted_actions, cond_scale)
    assert (cached - full).abs().max() <= 1e-4


@pytest.mark.parametrize("mode", ["single", "multi-cfg"])
def test_action_added_to_codes_decodes_like_the_full_forward(mode):
    """add_action_to_codes: every code token carries its frame's action, in training and decoding alike."""
    multi = mode.startswith("multi")
    model = tiny(allow_multiple_actions=multi, add_action_to_codes=True).eval()
    b, t, h, w = 2, 4, 2, 3
    codes = random_codes(b, t, h, w)
    actions = torch.randint(-1, 5, (b, t, 3)) if multi else torch.randint(0, 5, (b, t))
    cond_scale = 2.5 if mode.endswith("cfg") else 1.0
    full = model.forward_with_cfg(state_codes=codes, actions=actions, cond_scale=cond_scale)
    full = full.view(b, t, h, w, -1)[:, 1:]
    cached = cached_logits(model, codes, order_actions(actions if multi else actions[..., None]), cond_scale)
    assert (cached - full).abs().max() <= 1e-4
    plain = tiny(allow_multiple_actions=multi).eval()
    plain.load_state_dict(model.state_dict())  # the same weights without the option see other inputs
    other = plain.forward_with_cfg(state_codes=codes, actions=actions, cond_scale=cond_scale)
    assert (other.view(b, t, h, w, -1)[:, 1:] - full).abs().max() > 1e-3
    with pytest.raises(TypeError, match="add_action_to_codes"):
        tiny(add_action_to_codes=1)


def test_generate_follows_the_full_forward_greedily():
    model = tiny().eval()
    image = torch.randn(1, 16, 2, 2)
    actions = torch.randint(0, 5, (1, 4))
    video = model.generate(image, num_frames=3, actions=actions, temperature=0.0)
    _, codes, _ = model.encode_state(video)
    logits = model(state_codes=codes, actions=actions, return_loss=False)
    greedy = logits.argmax(-1).view_as(codes)
    assert torch.equal(greedy[:, 1:], codes[:, 1:])


def test_seeded_runs_are_reproducible():
    results = []
    for _ in range(2):
        torch.manual_seed(7)
        model = tiny()
        video = torch.randn(2, 16, 3, 2, 2)
        loss, _ = model(video, actions=torch.randint(0, 5, (2, 3)))
        torch.manual_seed(11)
        generated = model.generate(video[:, :, 0], num_frames=3)
        results.append((loss.detach(), generated))
    assert torch.equal(results[0][0], results[1][0])
    assert torch.equal(results[0][1], results[1][1])
    model, image = tiny(), torch.randn(1, 16, 2, 2)
    a = model.generate(image, 4, generator=torch.Generator().manual_seed(3))
    b = model.generate(image, 4, generator=torch.Generator().manual_seed(3))
    c = model.generate(image, 4, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def train(model, batch_fn, steps, lr=3e-3):
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        loss, breakdown = model(**batch_fn())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return breakdown


def test_tiny_model_overfits_one_batch():
    model = tiny(cfg_train_action_dropout=0.0)
    actions = torch.randint(0, 5, (2, 3))
    actions[:, 0] = torch.tensor([0, 1])  # the first code of a clip is known only from its action
    batch = dict(state_codes=random_codes(2, 3, 2, 2), actions=actions)
    first, *_ = model(**batch)[1]
    state_loss, _, action_loss = train(model, lambda: batch, steps=150)
    assert state_loss < 0.05 * first
    model.eval()
    logits = model(**batch, return_loss=False)
    assert torch.equal(logits.argmax(-1), batch["state_codes"].flatten(1))


def test_learns_frames_that_are_a_function_of_the_action():
    """codes[t, j] = f(actions[t], j): each token, the first of a frame included, is learnable
    only with the frame's action and the token's spatial position."""
    model = tiny(cfg_train_action_dropout=0.0, vq_codebook_size=32)
    h, w = 2, 2
    table = torch.randperm(32)[: 5 * h * w].view(5, h * w)

    def batch():
        actions = torch.randint(0, 5, (16, 4))
        codes = table[actions].view(16, 4, h, w)
        return dict(state_codes=codes, actions=actions)

    train(model, batch, steps=250)
    model.eval()
    data = batch()
    predicted = model(**data, return_loss=False).argmax(-1).view(16, 4, h * w)
    accuracy = (predicted == data["state_codes"].view(16, 4, h * w)).float().mean(dim=(0, 1))
    assert accuracy.min() == 1.0, accuracy  # every spatial position, the first included


def test_generate_rolls_out_under_given_actions():
    model = tiny(cfg_train_action_dropout=0.0)
    h, w = 2, 2
    table = torch.randperm(32)[: 5 * h * w].view(5, h * w)

    def batch():
        actions = torch.randint(0, 5, (16, 4))
        return dict(state_codes=table[actions].view(16, 4, h, w), actions=actions)

    train(model, batch, steps=250)
    actions = torch.tensor([[0, 3, 1, 4]])
    image = model.decode_codes(table[actions[:, :1]].view(1, 1, h, w))[:, :, 0]
    video = model.generate(image, num_frames=3, actions=actions, temperature=0.0)
    _, codes, _ = model.encode_state(video)
    assert torch.equal(codes.flatten(2), table[actions])
    guided = model.generate(image, num_frames=3, actions=actions, temperature=0.0, cond_scale=3.0)
    _, codes, _ = model.encode_state(guided)
    assert torch.equal(codes.flatten(2), table[actions])


def test_one_config_builds_the_model_and_round_trips_through_a_checkpoint(tmp_path):
    import json

    from genie2 import Genie2, Genie2Config

    config = Genie2Config(dim=32, dim_latent=8, num_actions=3, depth=1, heads=2, attn_dim_head=8, vq_codebook_size=16)
    model = Genie2(config=config)
    assert model.config is config and model.config == Genie2(**_fields(config)).config
    with pytest.raises(ValueError, match="not both"):
        Genie2(32, 8, config=config)
    model.save_pretrained(tmp_path / "m")
    saved = json.loads((tmp_path / "m" / "config.json").read_text())
    assert saved["kind"] == "genie2-world-model" and saved["tokenizer"] is None
    assert Genie2.from_pretrained(tmp_path / "m").config == config
    saved["a_key_from_the_future"] = 1
    (tmp_path / "m" / "config.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError, match="a_key_from_the_future"):
        Genie2.from_pretrained(tmp_path / "m")


def _fields(config) -> dict:
    from dataclasses import asdict

    return asdict(config)


def test_a_tokenizer_saved_under_old_key_names_loads(tmp_path):
    import json

    from genie2 import Tokenizer

    tokenizer = Tokenizer(frame_size=16, channels=(8,), res_blocks=1, dim_latent=4, codebook_size=8, temporal=True)
    tokenizer.save_pretrained(tmp_path / "t")
    saved = json.loads((tmp_path / "t" / "config.json").read_text())
    saved["temporal_kernel"] = saved.pop("temporal_conv_kernel_size")  # as written before 2026-12-01
    (tmp_path / "t" / "config.json").write_text(json.dumps(saved))
    loaded = Tokenizer.from_pretrained(tmp_path / "t")
    assert loaded.config == tokenizer.config
    frames = torch.rand(1, 2, 16, 16, 3)
    assert torch.equal(loaded.encode(frames), tokenizer.eval().encode(frames))


def test_a_damaged_or_mismatched_checkpoint_names_its_file(tmp_path):
    import json

    from genie2 import Genie2

    model = Genie2(dim=16, dim_latent=4, depth=1, heads=1, attn_dim_head=8, vq_codebook_size=8)
    model.save_pretrained(tmp_path / "m")
    config, weights = tmp_path / "m" / "config.json", tmp_path / "m" / "model.safetensors"
    good_config, good_weights = config.read_text(), weights.read_bytes()
    config.write_text(good_config[:-40])
    with pytest.raises(ValueError, match="config.json is damaged"):
        Genie2.from_pretrained(tmp_path / "m")
    config.write_text(good_config)
    weights.write_bytes(good_weights[: len(good_weights) // 2])
    with pytest.raises(ValueError, match="model.safetensors is damaged"):
        Genie2.from_pretrained(tmp_path / "m")
    weights.write_bytes(good_weights)
    config.write_text(json.dumps({**json.loads(good_config), "dim": 24}))
    with pytest.raises(ValueError, match="does not hold the weights its config.json describes"):
        Genie2.from_pretrained(tmp_path / "m")

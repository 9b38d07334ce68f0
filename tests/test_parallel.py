"""The parallel ("MaskGIT") decoding mode: its masks, its training forward, and decoding that
equals its uncached definition, cached and compiled."""

import pytest
import torch

from conftest import tiny
from genie2 import Genie2
from genie2.model.decoding import Rollout, Sampling
from genie2.model.masking import block_causal, hidden_after, keep_confident, training_mask
from genie2.model.session import WorldModelSession


def parallel(**kwargs) -> Genie2:
    return tiny(decoding="parallel", **kwargs).eval()


def test_the_schedule_hides_fewer_codes_each_pass_and_none_after_the_last():
    for steps in (1, 2, 4, 8, 16):
        counts = [hidden_after(step, steps, 64) for step in range(steps)]
        assert counts == sorted(counts, reverse=True) and counts[-1] == 0 and counts[0] < 64
    assert hidden_after(0, 8, 64) == 62 and hidden_after(3, 8, 64) == 45  # 64 cos(pi / 16), 64 cos(pi / 4)


def test_training_hides_at_least_one_code_of_every_frame_but_the_first():
    mask = training_mask(256, 4, 16, "cpu", torch.Generator().manual_seed(0))
    assert not mask[:, 0].any() and (mask[:, 1:].sum(-1) >= 1).all()
    share = mask[:, 1:].float().mean()
    assert 0.55 < share < 0.72  # the mean of cos(pi u / 2) is 2 / pi = 0.64


def test_block_causal_lets_a_frame_see_itself_and_the_past_only():
    mask = block_causal(torch.tensor([0, 0, 1, 1]), num_meta=1)
    expected = torch.tensor(
        [[1, 0, 0, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]], dtype=torch.bool
    )
    assert torch.equal(mask, expected)


def test_keep_confident_keeps_the_most_confident_hidden_codes():
    hidden = torch.tensor([[True, True, False, True]])
    confidence = torch.tensor([[0.1, 0.9, 0.0, 0.5]])
    assert keep_confident(None, confidence, hidden, 1).tolist() == [[True, False, False, False]]
    assert not keep_confident(None, confidence, hidden, 0).any()


def test_a_frame_sees_its_own_visible_codes_and_not_the_next_frame():
    model = parallel()
    codes = torch.randint(0, 32, (1, 3, 2, 2))
    actions = torch.randint(0, 5, (1, 3, 1))
    hidden = torch.zeros(1, 3, 2, 2, dtype=torch.bool)
    hidden[:, 1, 0, 0] = True
    logits = model(state_codes=codes, actions=actions, return_loss=False, hidden=hidden)
    later, same = codes.clone(), codes.clone()
    later[:, 2] = (later[:, 2] + 1) % 32
    same[:, 1, 1, 1] = (same[:, 1, 1, 1] + 1) % 32
    frame_1 = slice(4, 8)
    assert torch.allclose(
        logits[:, frame_1], model(state_codes=later, actions=actions, return_loss=False, hidden=hidden)[:, frame_1]
    )
    changed = model(state_codes=same, actions=actions, return_loss=False, hidden=hidden)[:, 4]
    assert not torch.allclose(logits[:, 4], changed)  # code (1, 0, 0) reads its frame's visible codes
    hidden_code = codes.clone()
    hidden_code[:, 1, 0, 0] = (hidden_code[:, 1, 0, 0] + 1) % 32  # a hidden code's value is never read
    assert torch.allclose(logits, model(state_codes=hidden_code, actions=actions, return_loss=False, hidden=hidden))


def test_the_training_loss_is_over_hidden_codes_and_trains_the_mask_token():
    model = tiny(decoding="parallel").train()
    codes = torch.randint(0, 32, (2, 3, 2, 2))
    loss, (state_loss, _, _) = model(state_codes=codes, actions=torch.randint(0, 5, (2, 3, 1)))
    loss.backward()
    assert torch.isfinite(state_loss) and model.mask_token.grad.abs().sum() > 0


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="decoding"):
        tiny(decoding="diagonal")
    with pytest.raises(ValueError, match="decode_steps"):
        tiny(decoding="parallel", decode_steps=0)
    with pytest.raises(ValueError, match="decode_steps"):
        Sampling(decode_steps=0)
    with pytest.raises(ValueError, match="hidden"):
        tiny().eval()(state_codes=torch.zeros(1, 2, 2, 2, dtype=torch.long), return_loss=False,
                      hidden=torch.zeros(1, 2, 2, 2, dtype=torch.bool))  # fmt: skip
    with pytest.raises(ValueError, match="hidden"):
        parallel()(state_codes=torch.zeros(1, 2, 2, 2, dtype=torch.long), return_loss=False, hidden=torch.zeros(1, 2))


@pytest.mark.parametrize("meta, window", [(0, None), (3, None), (0, 2), (3, 2)])
def test_cached_teacher_forced_logits_equal_the_full_forward(meta, window):
    """Each cached frame's logits, with all its codes hidden, equal a full forward over the frames
    in view (with a sliding window, one layer: then cached keys depend on their token alone)."""
    model = parallel(num_meta_tokens=meta, depth=1 if window else 2, max_context_frames=window)
    codes = torch.randint(0, 32, (2, 6, 2, 2))
    actions = torch.randint(0, 5, (2, 6, 1))
    rollout = Rollout(model, codes[:, :1], actions[:, :1], Sampling(), False)
    for t in range(1, 6):
        _, cached = rollout.step(actions[:, t], codes=codes[:, t], return_logits=True)
        start = max(0, t - window) if window else 0
        hidden = torch.zeros(2, t + 1 - start, 2, 2, dtype=torch.bool)
        hidden[:, -1] = True
        view = slice(start, t + 1)
        full = model(state_codes=codes[:, view], actions=actions[:, view], return_loss=False, hidden=hidden)
        assert (cached.flatten(1, 2) - full[:, -4:]).abs().max() < 1e-4, t


def test_with_a_sliding_window_every_frame_is_cached_seeing_the_frames_its_codes_saw():
    """At any depth each frame's tokens see the W frames before it, when drawn and when cached: teacher-
    forced logits equal a forward over the whole video under a banded block-causal mask."""
    model, window, frames = parallel(depth=3, num_meta_tokens=0), 2, 6
    codes = torch.randint(0, 32, (1, frames, 2, 2))
    actions = torch.randint(0, 5, (1, frames, 1))
    rollout = Rollout(model, codes[:, :1], actions[:, :1], Sampling(), False, max_context_frames=window)
    frame = torch.arange(frames).repeat_interleave(5)  # 5 slots a frame: the action token, then 4 codes
    band = (frame[None, :] <= frame[:, None]) & (frame[None, :] >= frame[:, None] - window)
    for t in range(1, frames):
        _, cached = rollout.step(actions[:, t], codes=codes[:, t], return_logits=True)
        hidden = torch.zeros(1, t + 1, 4, dtype=torch.bool)
        hidden[:, -1] = True  # the frame decoded now, all hidden; the ones before as cached
        latents = model.codes_to_latents(codes[:, : t + 1])
        tokens = model.frame_tokens(latents, model.action_embed(actions[:, : t + 1]), hidden)
        n = 5 * (t + 1)
        features = model.transformer(tokens, pos=model.frame_positions(t + 1, 4), mask=band[:n, :n])
        full = model.code_logits(features[:, -4:])
        assert (cached.flatten(1, 2) - full).abs().max() < 1e-4, t


def uncached_decode(model, codes, actions, steps):
    """Greedy parallel decoding of frame t + 1 as defined: full forwards over every frame, each pass
    fixing the most confident hidden codes (codes: b t h w known so far)."""
    b, t, h, w = codes.shape
    draft = torch.zeros(b, 1, h, w, dtype=torch.long)
    hidden = torch.ones(b, h * w, dtype=torch.bool)
    for step in range(steps):
        mask = torch.zeros(b, t + 1, h, w, dtype=torch.bool)
        mask[:, -1] = hidden.view(b, h, w)
        logits = model(state_codes=torch.cat((codes, draft), 1), actions=actions, return_loss=False, hidden=mask)
        logits = logits[:, -h * w :]
        drawn = logits.argmax(-1)
        confidence = logits.log_softmax(-1).gather(-1, drawn[..., None])[..., 0]
        still = keep_confident(drawn, confidence, hidden, hidden_after(step, steps, h * w))
        flat = draft.view(b, h * w)
        flat[hidden & ~still] = drawn[hidden & ~still]
        hidden = still
    return draft[:, 0]


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_cached_decoding_equals_its_uncached_definition(steps):
    model = parallel(num_meta_tokens=2, max_context_frames=None)
    codes = torch.randint(0, 32, (2, 1, 2, 2))
    actions = torch.randint(0, 5, (2, 4, 1))
    rollout = Rollout(model, codes, actions[:, :1], Sampling(temperature=0.0, decode_steps=steps), False)
    for t in range(1, 4):
        expected = uncached_decode(model, codes, actions[:, : t + 1], steps)
        got = rollout.step(actions[:, t])
        assert torch.equal(got, expected), t
        codes = torch.cat((codes, got[:, None]), dim=1)


def test_compiled_parallel_decoding_equals_eager_with_guidance():
    model = parallel(num_meta_tokens=2, add_action_to_codes=True)
    codes = torch.randint(0, 32, (1, 1, 2, 2))
    actions = torch.randint(0, 5, (1, 5, 1))
    frames, logits = [], []
    for compile in (False, True):
        sampling = Sampling(temperature=0.0, cond_scale=2.0, decode_steps=2)
        rollout = Rollout(model, codes, actions[:, :1], sampling, True, 2, compile=compile)
        out = [rollout.step(actions[:, t], return_logits=True) for t in range(1, 5)]
        frames.append(torch.stack([c for c, _ in out]))
        logits.append(torch.stack([lg for _, lg in out]))
    assert torch.equal(frames[0], frames[1]) and (logits[0] - logits[1]).abs().max() < 1e-4


def test_decode_steps_is_a_live_setting_of_the_session(monkeypatch):
    import genie2.model.decoding as decoding

    passes = []
    real = decoding.frame_pass
    monkeypatch.setattr(decoding, "frame_pass", lambda *args, **kw: passes.append(1) or real(*args, **kw))
    model = parallel(decode_steps=4)
    session = WorldModelSession(model, torch.randn(16, 2, 2), max_context_frames=3)
    session.rollout.decode_frame = decoding.frame_pass  # eager, through the counting wrapper
    session.step(0)
    assert len(passes) == 4 + 1  # the model's passes, then one that caches the frame
    session.configure(decode_steps=1)
    session.step(1)
    assert len(passes) == 5 + 1 + 1
    with pytest.raises(ValueError, match="decode_steps"):
        session.configure(decode_steps=-2)


def test_a_parallel_model_saves_and_loads_with_its_mode(tmp_path):
    model = parallel(decode_steps=3, max_context_frames=4)
    model.save_pretrained(tmp_path / "m")
    loaded = Genie2.from_pretrained(tmp_path / "m").eval()
    assert loaded.decoding == "parallel" and loaded.decode_steps == 3
    assert torch.equal(loaded.mask_token, model.mask_token)
    frame = torch.randn(1, 16, 2, 2)
    a = model.generate(frame, num_frames=2, actions=torch.tensor([[0, 1, 2]]), temperature=0.0)
    b = loaded.generate(frame, num_frames=2, actions=torch.tensor([[0, 1, 2]]), temperature=0.0, decode_steps=3)
    assert torch.equal(a, b)

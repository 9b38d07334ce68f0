"""Every path agrees: training's forward, generate, Rollout, the session, World.rollout and the
play server condition on the same history in the same way and give the same logits."""

import numpy as np
import pytest
import torch
from einops import rearrange

from conftest import tiny
from genie2 import Genie2
from genie2.helpers import guide
from genie2.model.decoding import Rollout, Sampling
from genie2.model.session import WorldModelSession
from genie2.tokenizer.model import Tokenizer, TokenizerConfig
from genie2.world import World


@pytest.fixture
def world_model():
    """A small random world model over a (random) 16x16 tokenizer: frames in, frames out."""
    tokenizer = Tokenizer(
        TokenizerConfig(frame_size=16, channels=(8, 16), res_blocks=1, dim_latent=8, codebook_size=16)
    )
    model = Genie2.from_tokenizer(tokenizer, dim=32, depth=2, heads=2, attn_dim_head=16, num_actions=5)
    return model.eval()


@pytest.fixture
def recorded(monkeypatch):
    """Every Rollout.step's codes and logits, in order, whoever calls it."""
    steps = []
    original = Rollout.step

    def step(self, actions, codes=None, return_logits=False):
        sampled, logits = original(self, actions, codes, return_logits=True)
        steps.append((sampled, logits))
        return (sampled, logits) if return_logits else sampled

    monkeypatch.setattr(Rollout, "step", step)
    return steps


def take(steps: list) -> tuple[torch.Tensor, torch.Tensor]:
    """The recorded codes (1 t h w) and logits (1 t h w l) so far, then forget them."""
    codes = torch.stack([c for c, _ in steps], dim=1)
    logits = torch.stack([logit for _, logit in steps], dim=1)
    steps.clear()
    return codes, logits


# the history every path plays: no key into the first frame (as every episode starts), keys, and no key again
KEYS = [-1, 2, -1, 0, 3]


def test_no_action_means_one_thing_on_every_path(world_model, recorded):
    """-1, None and [] are "no key pressed" (the action token with no keys) everywhere, as in training."""
    from genie2.play.protocol import PlayerConfig, PlayServer

    model = world_model
    frame = torch.randint(0, 256, (16, 16, 3), dtype=torch.uint8)
    unit = rearrange(frame.float() / 255, "h w c -> c h w")
    steps = len(KEYS) - 1
    actions = torch.tensor([KEYS])

    model.generate(unit[None], steps, actions=actions, temperature=0.0)
    paths = {"generate": take(recorded)}
    session = WorldModelSession(model, unit, temperature=0.0)  # no action into the first frame
    for given in (2, None, [0], torch.tensor([3])):
        session.step(given)
    paths["session"] = take(recorded)
    session = WorldModelSession(model, unit, action=[], temperature=0.0)
    for given in ([2], [], 0, [3]):
        session.step(given)
    paths["session []"] = take(recorded)
    World(model).rollout(frame[None].numpy(), np.array(KEYS))
    paths["World.rollout"] = take(recorded)
    server = PlayServer(World(model), frame[None].numpy(), None, PlayerConfig(temperature=0.0))
    server.players["tab"] = None
    server.handle("tab", {"type": "reset", "start": 0})
    for key in KEYS[1:]:
        server.handle("tab", {"type": "step", "keys": [key] if key >= 0 else []})
    paths["server"] = take(recorded)

    codes, logits = paths["generate"]
    for name, (other_codes, other_logits) in paths.items():
        assert torch.equal(other_codes, codes), name
        assert (other_logits - logits).abs().max() < 1e-5, name
    # ... and they are training's logits for that history, teacher-forced
    _, prompt, _ = model.encode_state(rearrange(frame, "h w c -> 1 c 1 h w"))
    full = model(state_codes=torch.cat((prompt, codes), dim=1), actions=actions, return_loss=False)
    full = rearrange(full, "b (t s) l -> b t s l", t=len(KEYS))[:, 1:]
    assert (full - logits.flatten(2, 3)).abs().max() < 1e-4


def test_configure_keeps_what_the_model_is_conditioned_on(world_model, recorded):
    """Switching guidance on and off re-reads the history with the same keys, no-key steps included."""
    model = world_model
    unit = torch.rand(3, 16, 16)
    session = WorldModelSession(model, unit, temperature=0.0)
    session.step(2), session.step(None)
    session.configure(cond_scale=2.0)
    session.step(0)
    session.configure(cond_scale=1.0)
    session.step(None)
    codes, logits = take(recorded)
    _, prompt, _ = model.encode_state(rearrange(unit, "c h w -> 1 c 1 h w"))
    history = torch.cat((prompt, codes), dim=1)
    actions = torch.tensor([[-1, 2, -1, 0, -1]])
    plain = rearrange(model(state_codes=history, actions=actions, return_loss=False), "b (t s) l -> b t s l", t=5)
    guided = model.forward_with_cfg(state_codes=history, actions=actions, cond_scale=2.0)
    guided = rearrange(guided, "b (t s) l -> b t s l", t=5)
    logits = logits.flatten(2, 3)
    for step, expected in enumerate((plain, plain, guided, plain)):
        assert (logits[:, step] - expected[:, step + 1]).abs().max() < 1e-4, step


@pytest.mark.parametrize("decoding", ["raster", "parallel"])
@torch.no_grad()
def test_moving_the_guidance_slider_leaves_the_conditioned_history_alone(decoding):
    """Far past the window, switching guidance on for a frame and off again does not touch what the
    conditioned row cached: it equals a session that was handed that frame's codes, never guided
    (a parallel model's newest frame, not cached yet when the slider moves, included)."""
    model = tiny(num_meta_tokens=3, max_context_frames=2, decoding=decoding).eval()
    image, keys = torch.randn(16, 2, 3), [1, 4, 0, 2, 3, 1, 0]
    switched, plain = (WorldModelSession(model, image, temperature=0.0) for _ in range(2))
    for session in (switched, plain):
        for key in keys[:5]:
            session.step(key)
    switched.configure(cond_scale=3.0)
    guided_codes, guided = switched.rollout.step(switched._actions(keys[5]), return_logits=True)
    switched.configure(cond_scale=1.0)
    _, unguided = plain.rollout.step(plain._actions(keys[5]), codes=guided_codes, return_logits=True)
    assert (guided - unguided).abs().max() > 1e-3  # the guided frame was guided
    after_switch = switched.rollout.step(switched._actions(keys[6]), return_logits=True)[1]
    never_switched = plain.rollout.step(plain._actions(keys[6]), return_logits=True)[1]
    assert (after_switch - never_switched).abs().max() < 1e-5  # float noise of a batch of 2 vs 1


def test_guidance_switched_on_late_equals_guidance_read_from_the_same_window(recorded):
    """The null-action rows that switching guidance on adds are those of a rollout that reads the
    frames in view afresh: its guided logits equal the full forward with guidance over that window."""
    model = tiny(num_meta_tokens=3, max_context_frames=2, depth=1).eval()
    session = WorldModelSession(model, torch.randn(16, 2, 3), temperature=0.0)
    for key in (1, 4, 0, 2):
        session.step(key)
    session.configure(cond_scale=3.0)
    window = torch.cat(session.codes, dim=1)
    session.step(3)
    codes, logits = take(recorded)
    history = torch.cat((window, codes[:, -1:]), dim=1)  # depth 1: the cache holds what a fresh read would
    actions = torch.tensor([[0, 2, 3]])
    guided = model.forward_with_cfg(state_codes=history, actions=actions, cond_scale=3.0)
    guided = rearrange(guided, "b (t s) l -> b t s l", t=3)[:, -1]
    assert (logits[:, -1].flatten(1, 2) - guided).abs().max() < 1e-4


@pytest.mark.parametrize("depth", [1, 3])
def test_sliding_window_gives_every_code_of_a_frame_the_same_past(depth):
    """With a window of W frames, every token of frame t (its last code included, which is cached
    after its siblings) sees frames t - W .. t: a banded mask over the whole video, at any depth."""
    model = tiny(depth=depth, num_meta_tokens=0).eval()
    window, frames = 2, 7
    codes = torch.randint(0, 32, (1, frames, 2, 2))
    actions = torch.randint(-1, 5, (1, frames, 1))
    rollout = Rollout(model, codes[:, :1], actions[:, :1], Sampling(), False, max_context_frames=window)
    cached = torch.stack([rollout.step(actions[:, t], codes[:, t], True)[1] for t in range(1, frames)], dim=1)

    tokens = model.frame_tokens(model.codes_to_latents(codes), model.action_embed(actions))
    frame = torch.arange(frames).repeat_interleave(5)  # 5 slots a frame: the action token, then 4 codes
    causal = torch.ones(len(frame), len(frame), dtype=torch.bool).tril()
    mask = causal & (frame[None, :] >= frame[:, None] - window)
    features = model.transformer(tokens, pos=model.frame_positions(frames, 4), mask=mask)
    full = model.code_logits(rearrange(features, "b (t k) d -> b t k d", t=frames)[:, 1:, :-1])
    assert (cached.flatten(2, 3) - full).abs().max() < 1e-4


def test_the_context_window_is_saved_with_the_model(tmp_path):
    model = tiny(max_context_frames=3).eval()
    model.save_pretrained(tmp_path / "world")
    loaded = Genie2.from_pretrained(tmp_path / "world")
    assert loaded.max_context_frames == 3
    session = WorldModelSession(loaded, torch.randn(16, 2, 2))
    assert session.max_context_frames == 3 and session.rollout.max_context_frames == 3
    assert WorldModelSession(loaded, torch.randn(16, 2, 2), max_context_frames=5).max_context_frames == 5
    with pytest.raises(ValueError, match="max_context_frames"):
        tiny(max_context_frames=0)


def test_the_shipped_world_rolls_out_the_same_however_it_is_loaded(recorded):
    """Genie2.from_pretrained + generate and genie2.load().rollout: the same window, the same frames."""
    import genie2
    from genie2.world import PRETRAINED

    world = genie2.load()
    model = Genie2.from_pretrained(PRETRAINED)
    assert model.max_context_frames == world.max_context_frames == 7  # clip_frames - 1 of its training
    steps = 24
    frame = torch.from_numpy(world.start_frames[0])
    actions = torch.tensor([[-1] + [i % 3 for i in range(steps)]])  # left, right, forward, ...
    dreamed = world.rollout(frame[None].numpy(), actions[0].numpy())
    video = model.generate(rearrange(frame, "h w c -> 1 c h w"), steps, actions=actions, temperature=0.0)
    generated = (rearrange(video[0, :, 1:], "c t h w -> t h w c") * 255).round().to(torch.uint8)
    assert torch.equal(generated, dreamed)


def test_guidance_zero_is_the_unconditional_distribution():
    model = tiny().eval()
    codes = torch.randint(0, 32, (1, 3, 2, 2))
    actions = torch.randint(0, 5, (1, 3))
    null = model(state_codes=codes, return_loss=False).log_softmax(-1)  # no actions: the null token
    cond = model(state_codes=codes, actions=actions, return_loss=False).log_softmax(-1)
    for keep in (0.0, 0.5):
        zero = model.forward_with_cfg(state_codes=codes, actions=actions, cond_scale=0.0, parallel_keep_frac=keep)
        one = model.forward_with_cfg(state_codes=codes, actions=actions, cond_scale=1.0, parallel_keep_frac=keep)
        assert (zero.log_softmax(-1) - null).abs().max() < 1e-5, keep
        assert (one.log_softmax(-1) - cond).abs().max() < 1e-5, keep
    # between 0 and 1 it interpolates; past 1 it extrapolates (projected, the reference's APG)
    half = guide(cond, null, torch.tensor(0.5), torch.tensor(0.0))
    assert (half - (cond + null) / 2).abs().max() < 1e-5


def test_uint8_frames_are_frames(world_model):
    """generate and the session take uint8 frames as they take float ones divided by 255."""
    frame = torch.randint(0, 256, (1, 3, 16, 16), dtype=torch.uint8)
    as_uint8 = world_model.generate(frame, 2, temperature=0.0, init_action=1)
    as_float = world_model.generate(frame.float() / 255, 2, temperature=0.0, init_action=1)
    assert torch.equal(as_uint8, as_float)


def test_session_takes_numpy_action_ids():
    session = WorldModelSession(tiny(), torch.randn(16, 2, 2), temperature=0.0)
    assert session.step(np.int64(3)).shape == (16, 2, 2) and session.step([np.int32(1)]).shape == (16, 2, 2)


@pytest.mark.parametrize("bad", [[1.7], [True], 2.0, "2", [[1]]])
def test_session_refuses_actions_that_are_not_ids(bad):
    session = WorldModelSession(tiny(), torch.randn(16, 2, 2))
    with pytest.raises((TypeError, ValueError), match="action"):
        session.step(bad)


def test_a_guided_rollout_dreams_what_guided_generate_dreams(world_model):
    """World.rollout(cond_scale=...) (what eval measures) guides as generate does (what play runs), and
    guidance changes the frames, so the scale is not dropped on the way."""
    frame = torch.randint(0, 256, (16, 16, 3), dtype=torch.uint8)
    actions = torch.tensor([[-1, 2, 0, 4, 1]])
    world, unit = World(world_model), rearrange(frame.float() / 255, "h w c -> 1 c h w")
    dreamed = {s: world.rollout(frame[None].numpy(), actions[0].numpy(), cond_scale=s) for s in (1.0, 3.0)}
    video = world_model.generate(unit, 4, actions=actions, temperature=0.0, cond_scale=3.0)
    generated = (rearrange(video[0, :, 1:], "c t h w -> t h w c") * 255).round().to(torch.uint8)
    assert torch.equal(generated, dreamed[3.0])
    assert not torch.equal(dreamed[1.0], dreamed[3.0])

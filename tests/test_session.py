"""The step-by-step session and the bounded context window."""

import pytest
import torch

from conftest import tiny, tiny_world
from genie2.model.decoding import Rollout, Sampling
from genie2.model.session import WorldModelSession
from genie2.model.steps import compiled, frame_decode, frame_pass, token_step


@pytest.mark.parametrize("meta", [0, 3])
def test_sliding_window_equals_full_forward_over_the_window(meta):
    """With one layer, cached keys depend only on their token and position, so a slid window
    must equal a fresh full forward over the frames it keeps (meta tokens moved along)."""
    model = tiny(depth=1, num_meta_tokens=meta).eval()
    window, frames = 2, 7
    codes = torch.randint(0, 32, (1, frames, 2, 2))
    actions = torch.randint(0, 5, (1, frames, 1))
    rollout = Rollout(model, codes[:, :1], actions[:, :1], Sampling(), False, max_context_frames=window)
    for t in range(1, frames):
        _, cached = rollout.step(actions[:, t], codes=codes[:, t], return_logits=True)
        start = max(0, t - window)
        full = model(state_codes=codes[:, start : t + 1], actions=actions[:, start : t + 1], return_loss=False)
        assert (cached.flatten(1, 2) - full[:, -4:]).abs().max() < 1e-4, t


def test_two_hundred_frames_keep_memory_and_work_flat():
    """An endless session runs in constant memory and does the same work every frame: the cache
    keeps its size and every decode step attends over the same number of slots (the speed that
    follows is measured by benchmarks/generate.py, not timed here)."""
    model = tiny().eval()
    session = WorldModelSession(model, torch.randn(16, 2, 2), max_context_frames=4)
    lengths, sizes, attended = [], [], []
    for t in range(200):
        session.step(t % 5)
        lengths.append(session.rollout.cache.length)
        sizes.append(session.rollout.cache.nbytes())
        attended.append(tuple(session.rollout.cache.mask.shape))
    assert len(set(lengths[10:])) == 1 and len(set(sizes[10:])) == 1 and len(set(attended[10:])) == 1
    assert len(session.codes) <= 4


def test_session_matches_generate_and_returns_frames():
    model = tiny().eval()
    image = torch.randn(1, 16, 2, 3)
    actions = torch.randint(0, 5, (1, 5))
    video = model.generate(image, 4, actions=actions, temperature=0.0)
    session = WorldModelSession(model, image[0], action=int(actions[0, 0]), temperature=0.0)
    frames = [session.step(int(a)) for a in actions[0, 1:]]
    assert frames[0].shape == (16, 2, 3)
    assert torch.allclose(torch.stack(frames, dim=1), video[0, :, 1:])
    first = session.reset(image[0])
    assert torch.allclose(first, video[0, :, 0])
    batched = WorldModelSession(model, image.expand(2, -1, -1, -1), temperature=0.0)
    assert batched.step(torch.tensor([1, 2])).shape == (2, 16, 2, 3)


def test_session_rejects_bad_use():
    model = tiny()
    session = WorldModelSession(model)
    with pytest.raises(RuntimeError, match="reset"):
        session.step(0)
    session.reset(torch.randn(16, 2, 2))
    with pytest.raises(ValueError):
        session.step(7)
    with pytest.raises(ValueError):
        session.step([1, 2])  # several keys on a single-action model
    with pytest.raises(ValueError):
        session.reset(torch.randn(2, 2))
    with pytest.raises(ValueError):
        session.reset()
    with pytest.raises(TypeError, match="torch.Tensor"):
        session.reset(codes=[[1, 2], [3, 4]])
    with pytest.raises(ValueError, match="max_context_frames"):
        WorldModelSession(model, torch.randn(16, 2, 2), max_context_frames=0)


@pytest.mark.parametrize("add_action_to_codes", [False, True])
def test_compiled_decoding_equals_eager(add_action_to_codes):
    """The compiled decode step is the same computation: same logits, teacher-forced, with CFG."""
    model = tiny(num_meta_tokens=2, add_action_to_codes=add_action_to_codes).eval()
    codes = torch.randint(0, 32, (1, 4, 2, 2))
    actions = torch.randint(0, 5, (1, 4, 1))
    logits = []
    for compile in (False, True):
        rollout = Rollout(model, codes[:, :1], actions[:, :1], Sampling(cond_scale=2.0), True, 2, compile=compile)
        logits.append(torch.cat([rollout.step(actions[:, t], codes[:, t], True)[1] for t in range(1, 4)]))
    assert (logits[0] - logits[1]).abs().max() < 1e-4


def test_compiled_sampling_equals_eager_and_settings_never_recompile():
    """Sampling runs inside the compiled step: the same seed draws the same codes as eager, and
    moving the temperature or guidance sliders reuses the compiled graphs."""
    model = tiny().eval()
    image = torch.randn(16, 2, 2)

    def play(compile: bool) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(3)
        session = WorldModelSession(
            model, image, temperature=0.9, max_context_frames=4, generator=generator, compile=compile
        )
        frames = [session.step(a) for a in (0, 3, 1)]
        session.configure(temperature=0.5)
        return frames + [session.step(2)]

    eager = play(False)
    torch._dynamo.utils.counters.clear()
    compiled = play(True)
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert graphs > 0
    assert all(torch.equal(a, b) for a, b in zip(eager, compiled, strict=True))
    session = WorldModelSession(model, image, temperature=0.9, cond_scale=2.0, max_context_frames=4, compile=True)
    session.step(0), session.step(3)  # the first frame after reset is prefilled, the second compiles all shapes
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    for temperature, cond_scale in ((0.0, 3.0), (1.3, 1.5), (0.2, 2.5)):
        session.configure(temperature=temperature, cond_scale=cond_scale)
        session.step(1)
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs


def test_compiled_steps_of_two_models_do_not_mix():
    """Each model has its own compiled graphs, even with identical shapes."""
    codes = torch.randint(0, 32, (1, 3, 2, 2))
    actions = torch.randint(0, 5, (1, 3, 1))
    for residual in (True, False):
        model = tiny(transformer_kwargs=dict(add_value_residual=residual, ff_glu=True, use_rmsnorm=True)).eval()
        logits = []
        for compile in (False, True):
            rollout = Rollout(model, codes[:, :1], actions[:, :1], Sampling(), False, 2, compile=compile)
            logits.append(torch.cat([rollout.step(actions[:, t], codes[:, t], True)[1] for t in range(1, 3)]))
        assert (logits[0] - logits[1]).abs().max() < 1e-4, residual


def test_each_rollout_shape_gets_its_own_compiled_step():
    """Rollouts of many batch sizes (a vector env per env count) never share one compiled function,
    so they never reach dynamo's recompile limit and fall back to eager."""
    model = tiny().eval()
    first = compiled(model, token_step, 2, False, 40)
    assert compiled(model, token_step, 2, False, 40) is first
    others = {compiled(model, token_step, b, False, 40) for b in range(3, 12)}
    others.add(compiled(model, token_step, 2, True, 40))
    assert first not in others and len(others) == 10
    assert compiled(model, frame_pass, 2, False, 40) is not first


def test_compile_needs_a_bounded_context():
    model = tiny(max_context_frames=None).eval()  # a model that attends to every past frame
    with pytest.raises(ValueError, match="max_context_frames"):
        Rollout(model, torch.zeros(1, 1, 2, 2, dtype=torch.long), None, Sampling(), False, None, compile=True)


def test_configure_changes_sampling_and_rebuilding_the_cache_from_history_changes_nothing():
    model = tiny().eval()
    image, actions = torch.randn(16, 2, 3), [1, 4, 0, 2, 3]

    def play(switch: bool):
        # (a window the frames fit in: once frames slide out, cached keys still carry what they saw,
        # which re-reading the window cannot reproduce)
        session = WorldModelSession(model, image, action=actions[0], temperature=0.0, max_context_frames=8)
        frames = [session.step(a) for a in actions[1:4]]
        if switch:  # guidance on then off: the cache is rebuilt twice from the recent frames and keys
            session.configure(cond_scale=3.0)
            assert session.guided and session.sampling.cond_scale == 3.0
            session.configure(cond_scale=1.0)
        return frames + [session.step(actions[4])]

    assert torch.allclose(torch.stack(play(False)), torch.stack(play(True)), atol=1e-5)
    session = WorldModelSession(model, image, temperature=0.0)
    session.configure(temperature=0.5)
    assert session.sampling.temperature == 0.5
    with pytest.raises(ValueError, match="temperature"):
        session.configure(temperature=-1.0)
    assert session.sampling.temperature == 0.5  # a refused change changes nothing


@pytest.mark.parametrize(
    "setting", [dict(temperature=float("nan")), dict(temperature=float("inf")), dict(cond_scale=float("nan"))]
)
def test_sampling_refuses_settings_that_are_not_finite(setting):
    from genie2.model.decoding import Sampling

    with pytest.raises(ValueError, match="finite"):
        Sampling(**setting)


def test_a_compiled_session_decodes_the_same_frames_through_its_tokenizer():
    """compile=True also compiles the tokenizer's decode of each frame (steps.frame_decode): the frames
    equal eager decoding's, from reset on."""
    model = tiny_world(num_actions=3).model
    frame = torch.rand(3, 16, 16)
    played = []
    for compile in (False, True):
        session = WorldModelSession(model, frame, temperature=0.0, max_context_frames=3, compile=compile)
        played.append(torch.stack([session.current_frame()] + [session.step(a) for a in (0, 2, 1, 1)]))
    assert (played[0] - played[1]).abs().max() < 1e-5
    codes = session.codes[-1]
    assert torch.allclose(frame_decode(model, codes), model.decode_codes(codes)[:, :, -1], atol=1e-6)

"""A raster model decoded in whole-frame passes over a draft (Sampling.raster): "speculative" gives
exactly the codes of one-at-a-time decoding, "diagonal" settles at least one anti-diagonal a pass."""

import pytest
import torch

import genie2.model.decoding as decoding
from conftest import tiny
from genie2.model.decoding import Rollout, Sampling
from genie2.model.masking import settled


def rollout_frames(model, raster, frames=4, guided=False, window=3, temperature=0.9, seed=0, compile=False, b=2):
    """`frames` sampled frames (b t h w) and their logits from one seeded rollout."""
    torch.manual_seed(1)
    codes = torch.randint(0, 32, (b, 2, 2, 3))
    actions = torch.randint(0, 5, (b, frames + 2, 1))
    generator = torch.Generator().manual_seed(seed)
    sampling = Sampling(temperature=temperature, cond_scale=2.0 if guided else 1.0, generator=generator, raster=raster)
    rollout = Rollout(model, codes, actions[:, :2], sampling, guided, window, compile=compile)
    out = [rollout.step(actions[:, t], return_logits=True) for t in range(2, frames + 2)]
    return torch.stack([c for c, _ in out], dim=1), torch.stack([lg for _, lg in out], dim=1)


def test_settled_keeps_draws_whose_codes_before_were_fed_as_they_stay():
    fed = torch.tensor([[5, 1, 2, 3]])
    drawn = torch.tensor([[4, 1, 9, 3]])  # code 0 was fed wrong: its draw holds, the ones after it do not
    known = torch.zeros(1, 4, dtype=torch.bool)
    assert settled(drawn, fed, known).tolist() == [[True, False, False, False]]
    known[0, 0] = True  # settled last pass (as 4): now codes 1 and 2 hold, code 3 came after a wrong 2
    assert settled(drawn, torch.tensor([[4, 1, 2, 3]]), known).tolist() == [[True, True, True, False]]
    frontier = torch.tensor([False, False, False, True])
    assert settled(drawn, fed, torch.zeros_like(known), frontier).tolist() == [[True, False, False, True]]


@pytest.mark.parametrize("guided", [False, True])
@pytest.mark.parametrize("meta", [0, 4])
def test_speculative_decoding_gives_exactly_the_codes_of_one_at_a_time(guided, meta):
    model = tiny(num_meta_tokens=meta, add_action_to_codes=True).eval()
    with torch.no_grad():
        codes, logits = rollout_frames(model, "sequential", guided=guided)
        fast, fast_logits = rollout_frames(model, "speculative", guided=guided)
    assert torch.equal(codes, fast)
    assert (logits - fast_logits).abs().max() < 1e-4


def test_modes_switch_mid_rollout_without_changing_the_codes():
    model = tiny().eval()
    codes = torch.randint(0, 32, (1, 1, 2, 2))
    actions = torch.randint(0, 5, (1, 6, 1))
    got = []
    for modes in (["sequential"] * 5, ["speculative", "sequential", "speculative", "speculative", "sequential"]):
        sampling = Sampling(temperature=0.0)
        rollout = Rollout(model, codes, actions[:, :1], sampling, False, 3)
        frames = []
        for t, mode in enumerate(modes, start=1):
            sampling.raster = mode  # a live setting: the next frame decodes this way
            frames.append(rollout.step(actions[:, t]))
        got.append(torch.stack(frames))
    assert torch.equal(got[0], got[1])


def test_passes_per_frame(monkeypatch):
    passes, real = [], decoding.frame_pass
    monkeypatch.setattr(decoding, "frame_pass", lambda *args, **kw: passes.append(1) or real(*args, **kw))
    model = tiny().eval()
    codes = torch.randint(0, 32, (1, 1, 3, 4))
    counts = {}
    for raster in ("speculative", "diagonal"):
        rollout = Rollout(model, codes, None, Sampling(temperature=0.0, raster=raster), False, 3)
        with torch.no_grad():
            first = rollout.step(torch.tensor([[1]]))
            passes.clear()
            rollout.step(torch.tensor([[1]]), codes=first)  # teacher-forced: one pass
            assert len(passes) == 1
            passes.clear()
            rollout.step(torch.tensor([[2]]))
        counts[raster] = len(passes)
    # one pass at least per anti-diagonal (diagonal) or per code (speculative), and maybe one that caches the frame
    assert 1 <= counts["diagonal"] <= 3 + 4 - 1 + 1
    assert 1 <= counts["speculative"] <= 12 + 1


def test_compiled_speculative_decoding_equals_eager():
    model = tiny(num_meta_tokens=2).eval()
    with torch.no_grad():
        eager = rollout_frames(model, "speculative", frames=3, guided=True, temperature=0.0, b=1)
        fast = rollout_frames(model, "speculative", frames=3, guided=True, temperature=0.0, b=1, compile=True)
    assert torch.equal(eager[0], fast[0]) and (eager[1] - fast[1]).abs().max() < 1e-4


def test_an_unknown_raster_decoding_is_refused():
    with pytest.raises(ValueError, match="raster must be one of sequential, speculative, diagonal"):
        Sampling(raster="jacobi")


def test_the_session_switches_the_raster_decoding_live_and_refuses_an_unknown_one():
    from genie2.model.session import WorldModelSession

    model = tiny().eval()
    frame = torch.randn(16, 2, 2)
    sequential = WorldModelSession(model, frame, temperature=0.0, max_context_frames=3)
    drafted = WorldModelSession(model, frame, temperature=0.0, max_context_frames=3, raster="speculative")
    for t in range(3):
        assert torch.equal(sequential.step(t), drafted.step(t))
        drafted.configure(raster=["sequential", "speculative", "diagonal"][t])  # exact ones while compared
    with pytest.raises(ValueError, match="raster must be one of"):
        drafted.configure(raster="fast")
    assert drafted.sampling.raster == "diagonal"  # a refused setting changes nothing


def test_the_cli_offers_the_decodings_the_model_knows():
    """The CLI spells its choices out (it imports no torch before a verb runs): they must not drift."""
    from genie2.flags import SHARED
    from genie2.model.masking import RASTER_DECODINGS

    assert tuple(SHARED["--raster"]["choices"]) == RASTER_DECODINGS


def test_a_world_decodes_as_its_config_says_unless_a_rollout_asks_otherwise(monkeypatch, tmp_path):
    from genie2.model.genie2 import Genie2

    passes, real = [], decoding.frame_pass
    monkeypatch.setattr(decoding, "frame_pass", lambda *args, **kw: passes.append(1) or real(*args, **kw))
    tiny(raster="diagonal").save_pretrained(tmp_path)
    model = Genie2.from_pretrained(tmp_path).eval()  # the choice is saved with the world
    assert model.raster == "diagonal"
    codes = torch.randint(0, 32, (1, 1, 3, 4))
    with torch.no_grad():
        for raster, whole_frame in ((None, True), ("sequential", False)):
            passes.clear()
            Rollout(model, codes, None, Sampling(temperature=0.0, raster=raster), False, 3).step(torch.tensor([[1]]))
            assert bool(passes) == whole_frame  # None: the world's own (diagonal), in whole-frame passes
    with pytest.raises(ValueError, match="raster must be one of"):
        tiny(raster="jacobi")
